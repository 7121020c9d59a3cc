"""CLADE model files: generator weights plus a metadata record, loaded without running code.

Format (``.pt``, written by ``torch.save``, read by ``torch.load(..., weights_only=True)`` so no
pickled code is ever executed)::

    {
      "format": "clade-model",
      "format_version": 1,
      "metadata": {                       # plain JSON-compatible values only
        "name": "mri",                    # short name
        "modality": "MR",                 # "MR" or "CT" (free text for other uses)
        "architecture": {"base_filters": 64, "n_blocks": 6, "upsample": "transpose",
                         "residual": false},  # residual: optional, default false
        "normalisation": {"kind": "percentile", "low": 0.5, "high": 99.5},
        "patch_size": 32,
        "default_stride": 12,
        "trained": true,                  # false for random weights (tests, plumbing demos)
        "training": {...},                # the recipe: data, loss weights, epochs, ... (free form)
        "clade_version": "0.1.0",
        "created": "2026-11-25T03:00:00+00:00"
      },
      "state_dict": {parameter name: tensor}   # float32 or float16 (loaded as float32)
    }
"""

from __future__ import annotations

import datetime
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__
from .atomic_files import write_atomically
from .errors import CladeError
from .networks import ResnetGenerator
from .normalisation import NormalisationRecipe

FORMAT_NAME = "clade-model"
FORMAT_VERSION = 1
PATCH_SIZE = 32
_ARCHITECTURE_KEYS = ("base_filters", "n_blocks", "upsample")
#: Bounds on the architecture a model file may ask for, checked before the network is built:
#: an edited or hostile file asking for millions of filters would otherwise make torch try to
#: allocate terabytes. The shipped models use 64 filters and 6 blocks; 256 x 32 is a
#: generator of about 1.2e9 parameters (4.8 GB in float32), well past any sensible model.
ARCHITECTURE_LIMITS = {"base_filters": (1, 256), "n_blocks": (0, 32)}


@dataclass
class LoadedModel:
    """A generator ready for inference and the metadata it came with."""

    generator: ResnetGenerator
    metadata: dict
    path: Path | None = None

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", "unnamed"))

    @property
    def trained(self) -> bool:
        return bool(self.metadata.get("trained", True))

    @property
    def normalisation(self) -> NormalisationRecipe:
        return NormalisationRecipe.from_dict(self.metadata["normalisation"])

    @property
    def default_stride(self) -> int:
        return int(self.metadata.get("default_stride", 12))


def make_metadata(
    name: str,
    modality: str,
    *,
    base_filters: int = 64,
    n_blocks: int = 6,
    upsample: str = "transpose",
    residual: bool = False,
    normalisation: NormalisationRecipe | None = None,
    default_stride: int = 12,
    trained: bool = True,
    training: dict | None = None,
) -> dict:
    """Build a complete metadata record.

    Example:
        >>> make_metadata("mri", "MR", base_filters=8, n_blocks=1)["architecture"]
        {'base_filters': 8, 'n_blocks': 1, 'upsample': 'transpose', 'residual': False}
    """
    return {
        "name": name,
        "modality": modality,
        "architecture": {
            "base_filters": base_filters,
            "n_blocks": n_blocks,
            "upsample": upsample,
            "residual": bool(residual),
        },
        "normalisation": (normalisation or NormalisationRecipe()).to_dict(),
        "patch_size": PATCH_SIZE,
        "default_stride": int(default_stride),
        "trained": bool(trained),
        "training": training or {},
        "clade_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def architecture_of(metadata: dict) -> dict:
    """The generator's keyword arguments that ``metadata["architecture"]`` describes (files of
    earlier versions lack ``upsample`` and ``residual``: their generators had neither choice).

    Example:
        >>> architecture_of({"architecture": {"base_filters": 8, "n_blocks": 1}})
        {'base_filters': 8, 'n_blocks': 1, 'upsample': 'transpose', 'residual': False}
    """
    arch = metadata["architecture"]
    return {
        "base_filters": int(arch["base_filters"]),
        "n_blocks": int(arch["n_blocks"]),
        "upsample": str(arch.get("upsample", "transpose")),
        "residual": bool(arch.get("residual", False)),
    }


def build_generator(metadata: dict) -> ResnetGenerator:
    """Instantiate the generator described by ``metadata["architecture"]``."""
    return ResnetGenerator(**architecture_of(metadata))


def save_model(
    path: str | os.PathLike, generator: torch.nn.Module, metadata: dict, half: bool = False
) -> Path:
    """Write a model file atomically (temporary name, then rename).

    ``half=True`` stores the weights as float16 to halve the file size.

    Example:
        >>> import tempfile, os
        >>> meta = make_metadata("tiny", "MR", base_filters=4, n_blocks=1, trained=False)
        >>> path = os.path.join(tempfile.mkdtemp(), "tiny.pt")
        >>> load_model(save_model(path, build_generator(meta), meta)).name
        'tiny'
    """
    path = Path(path)
    _validate_metadata(metadata, path)
    state = {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
        for k, v in generator.state_dict().items()
    }
    record = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "metadata": metadata,
        "state_dict": state,
    }
    write_atomically(path, lambda name: torch.save(record, name))
    return path


def read_clade_record(path: Path, format_name: str, version: int, **sentences: str) -> dict:
    """Read a CLADE torch file (model or checkpoint) safely, ``weights_only=True``: never
    unpickling code, whatever the file holds.

    ``sentences`` are the :class:`CladeError` messages for each way it can be unusable:
    ``missing``, ``pickled`` (Python objects other than tensors), ``damaged`` (not a torch file
    at all), ``foreign`` (no ``format_name`` marker) and ``other_version`` (``{version}`` is the
    file's).

    Example:
        >>> read_clade_record(Path("/no/such.pt"), "x", 1, missing="No file.")
        Traceback (most recent call last):
        ...
        CLADE.errors.CladeError: No file.
    """
    if not path.is_file():
        raise CladeError(sentences["missing"])
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CladeError(sentences["pickled"]) from None
    except Exception:  # noqa: BLE001 - any failure to parse a foreign file is a user error
        raise CladeError(sentences["damaged"]) from None
    if not isinstance(record, dict) or record.get("format") != format_name:
        raise CladeError(sentences["foreign"])
    if record.get("format_version") != version:
        found = str(record.get("format_version"))
        raise CladeError(sentences["other_version"].replace("{version}", found))
    return record


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model file safely (``weights_only=True``) and check metadata against weights.

    Raises :class:`CladeError` for a missing, corrupt or foreign file, a file with pickled code,
    and metadata that does not describe the stored weights.
    """
    path = Path(path)
    record = read_clade_record(
        path,
        FORMAT_NAME,
        FORMAT_VERSION,
        missing=f"The model file {path} does not exist: check the path or use a model name.",
        pickled=f"{path} is not a CLADE model file (it holds Python objects other than "
        "weights, which are never loaded for safety): use a model file saved by CLADE.",
        damaged=f"{path} is corrupt or not a CLADE model file: download or export it again.",
        foreign=f"{path} is not a CLADE model file (no CLADE format marker): use a model file "
        "saved by CLADE.",
        other_version=f"{path} uses model format version {{version}}, but this CLADE reads "
        f"version {FORMAT_VERSION}: upgrade CLADE.",
    )
    metadata = record.get("metadata")
    _validate_metadata(metadata, path)
    generator = build_generator(metadata)
    state = record.get("state_dict")
    if not isinstance(state, dict):
        raise CladeError(f"{path} holds no weights: export the model again.")
    state = {
        k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v
        for k, v in state.items()
    }
    for key, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                # A network with NaN or infinite weights outputs NaNs everywhere: a damaged
                # file or a diverged training, never a usable model.
                raise CladeError(
                    f"{path} holds {bad} NaN or infinite weights (in {key}): the model is "
                    "damaged or its training diverged; use another model file."
                )
    try:
        generator.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError):
        raise CladeError(
            f"The weights in {path} do not match the architecture its metadata describes "
            f"({metadata['architecture']}): the file is damaged or was edited."
        ) from None
    return LoadedModel(generator.to(device).eval(), metadata, path)


def _validate_metadata(metadata, path: Path) -> None:
    problem = None
    if not isinstance(metadata, dict):
        problem = "it has no metadata record"
    else:
        missing = [
            k for k in ("name", "modality", "architecture", "normalisation") if k not in metadata
        ]
        arch = metadata.get("architecture")
        if missing:
            problem = f"its metadata lacks {', '.join(missing)}"
        elif not isinstance(arch, dict) or any(k not in arch for k in _ARCHITECTURE_KEYS):
            problem = "its architecture record is incomplete"
        elif not _whole_in(metadata.get("patch_size", PATCH_SIZE), PATCH_SIZE, PATCH_SIZE):
            problem = f"it was made for {metadata['patch_size']}-pixel patches, not {PATCH_SIZE}"
        elif _architecture_problem(arch):
            problem = _architecture_problem(arch)
        elif not _whole_in(metadata.get("default_stride", 12), 1, PATCH_SIZE):
            problem = (
                f"its default stride {metadata.get('default_stride')!r} is not a whole number "
                f"from 1 to {PATCH_SIZE}"
            )
        else:
            try:
                NormalisationRecipe.from_dict(metadata["normalisation"])
                build_generator({"architecture": {**arch, "base_filters": 1, "n_blocks": 0}})
            except (CladeError, KeyError, TypeError, ValueError):
                problem = "its normalisation or architecture record is invalid"
    if problem:
        raise CladeError(f"{path} is not a valid CLADE model file: {problem}.")


def _whole_in(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _architecture_problem(arch: dict) -> str | None:
    """Why ``arch`` asks for a network CLADE will not build, or None.

    Example:
        >>> _architecture_problem({"base_filters": 10**6, "n_blocks": 6})
        'its architecture asks for base_filters = 1000000, outside 1 to 256'
    """
    for key, (low, high) in ARCHITECTURE_LIMITS.items():
        if not _whole_in(arch.get(key), low, high):
            return f"its architecture asks for {key} = {arch.get(key)!r}, outside {low} to {high}"
    return None
