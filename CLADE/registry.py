"""The shipped models, by name, and how a ``--model`` argument is resolved.

Shipped model files live in ``CLADE/models/`` next to ``manifest.json``, which lists each model's
name, file, SHA-256 and a short description. The checksum is verified on every load, so a
damaged or tampered file is refused instead of silently giving wrong images.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CladeError

if TYPE_CHECKING:  # torch loads only when a model does, so listing models stays light
    from .model_file import LoadedModel

MODELS_DIR = Path(__file__).resolve().parent / "models"
MANIFEST_PATH = MODELS_DIR / "manifest.json"


def read_manifest(manifest_path: Path = MANIFEST_PATH) -> list[dict]:
    """The manifest's model entries (``name``, ``file``, ``sha256``, ``description``, ...).

    Example:
        >>> isinstance(read_manifest(), list)
        True
    """
    with open(manifest_path, encoding="utf-8") as handle:
        return list(json.load(handle)["models"])


def shipped_model_names(manifest_path: Path = MANIFEST_PATH) -> list[str]:
    """Names usable as ``--model NAME``.

    Example:
        >>> all(isinstance(n, str) for n in shipped_model_names())
        True
    """
    return [entry["name"] for entry in read_manifest(manifest_path)]


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_model(
    name_or_path: str | os.PathLike,
    device: str = "cpu",
    manifest_path: Path = MANIFEST_PATH,
) -> LoadedModel:
    """Load a shipped model by name (checking its checksum) or a model file by path.

    Example:
        >>> resolve_model("mri").metadata["modality"]
        'MR'
        >>> resolve_model("no-such-model")
        Traceback (most recent call last):
        ...
        CLADE.errors.CladeError: Unknown model 'no-such-model': give a model file path or one of the shipped models (ct, ct-large, mri, mri-large).
    """
    from .model_file import load_model

    text = str(name_or_path)
    entries = {entry["name"]: entry for entry in read_manifest(manifest_path)}
    if text in entries:
        entry = entries[text]
        path = manifest_path.parent / entry["file"]
        if not path.is_file():
            raise CladeError(
                f"The shipped model {text!r} is missing its file {path.name}: reinstall CLADE."
            )
        if sha256_of(path) != entry["sha256"]:
            raise CladeError(
                f"The shipped model file {path.name} does not match its checksum in the manifest "
                "(damaged or modified): reinstall CLADE."
            )
        return load_model(path, device)
    shipped = ", ".join(entries) or "none shipped yet"
    if not text.strip():
        raise CladeError(
            f"The model name is empty: give a model file path or a shipped model ({shipped})."
        )
    if Path(text).is_dir():
        raise CladeError(
            f"The model {text} is a folder: give a model file (.pt) in it, or a shipped model "
            f"({shipped})."
        )
    if Path(text).exists() and not Path(text).is_file():
        raise CladeError(
            f"The model {text} is not a regular file (a device or pipe): give a model file (.pt)."
        )
    if Path(text).suffix or os.sep in text or Path(text).exists():
        return load_model(text, device)
    raise CladeError(
        f"Unknown model {text!r}: give a model file path or one of the shipped models ({shipped})."
    )


#: How a model runs where its manifest entry says nothing else: whole slices, no ensemble
#: (chosen by measurement on held-out volumes, models/cards/inference.md).
DEFAULT_INFERENCE = {"tiling": "slices", "ensemble": "none"}


def inference_defaults(model: LoadedModel, manifest_path: Path = MANIFEST_PATH) -> dict:
    """``tiling`` and ``ensemble`` a model runs with by default: its manifest entry's
    ``inference`` record for a shipped model file, :data:`DEFAULT_INFERENCE` otherwise.

    Example:
        >>> inference_defaults(resolve_model("mri"))["tiling"] in ("slices", "patches")
        True
    """
    defaults = dict(DEFAULT_INFERENCE)
    path = getattr(model, "path", None)
    if path is None:
        return defaults
    for entry in read_manifest(manifest_path):
        shipped = (manifest_path.parent / entry["file"]).resolve()
        if Path(path).resolve() == shipped:
            defaults.update(entry.get("inference", {}))
    return defaults
