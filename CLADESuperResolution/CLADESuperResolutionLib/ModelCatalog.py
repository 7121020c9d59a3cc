"""The models a user can pick: shipped ones (by name), trained ones and any model file.

Shipped names come from the core's ``CLADE/models/manifest.json``, read here as plain JSON
because importing ``CLADE.registry`` would import torch, which may not be installed yet when the
module opens.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

#: Kinds of model choice.
SHIPPED, FILE = "shipped", "file"


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model list: a shipped name or a model file path."""

    kind: str
    value: str
    label: str

    @property
    def argument(self) -> str:
        """What to pass as ``--model`` to the worker / CLI."""
        return self.value


def shippedModels(manifestPath) -> list[dict]:
    """Manifest entries whose model file is present (``name``, ``description``, ...)."""
    manifestPath = Path(manifestPath)
    try:
        entries = json.loads(manifestPath.read_text(encoding="utf-8"))["models"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [e for e in entries if (manifestPath.parent / e.get("file", "")).is_file()]


def shippedDefaultStride(manifestPath, name) -> int | None:
    """The patch stride the manifest gives the shipped model ``name`` (None: none given)."""
    for entry in shippedModels(manifestPath):
        if entry.get("name") == name:
            return entry.get("default_stride")
    return None


def modelChoices(manifestPath, trainedModelPaths=()) -> list[ModelChoice]:
    """Shipped models first, then trained model files that still exist (newest first given)."""
    choices = []
    for entry in shippedModels(manifestPath):
        description = entry.get("description", "")
        label = f"{entry['name']} (shipped)" + (f": {description}" if description else "")
        choices.append(ModelChoice(SHIPPED, entry["name"], label))
    seen = set()
    for path in trainedModelPaths:
        path = Path(path)
        if path.is_file() and str(path) not in seen:
            seen.add(str(path))
            choices.append(
                ModelChoice(FILE, str(path), f"{path.parent.name}/{path.name} (trained)")
            )
    return choices


def validateModelChoice(choice: ModelChoice | None, shippedNames=()) -> tuple[bool, str]:
    """Cheap checks before a run; the worker does the full check (checksum, metadata, weights)."""
    if choice is None or not choice.value:
        if not shippedNames:
            return False, (
                "No model is shipped with this version: choose a model file (Browse) or train "
                "one in the Train tab."
            )
        return False, "Choose a model."
    if choice.kind == SHIPPED:
        if choice.value not in shippedNames:
            return False, f"The shipped model {choice.value!r} is not installed: reinstall CLADE."
        return True, ""
    return validateModelFile(choice.value)


def validateModelFile(path) -> tuple[bool, str]:
    """A model file must exist and be a torch (zip) archive; anything else is foreign."""
    if not path or not str(path).strip():
        return False, "Choose a model file."
    path = Path(path)
    if not path.is_file():
        return False, f"The model file {path} does not exist: choose another."
    if not zipfile.is_zipfile(path):
        return False, f"{path.name} is not a CLADE model file: choose a .pt file saved by CLADE."
    return True, ""


def exportedModels(outputFolder) -> list[Path]:
    """Model files a training run exported in ``outputFolder``: the best one first."""
    folder = Path(outputFolder)
    if not folder.is_dir():
        return []
    # checkpoint.pt holds the whole training state (both generators, discriminators,
    # optimisers), not a model file: it is never offered as a model.
    files = [
        p
        for p in folder.glob("*.pt")
        if not p.name.startswith(".") and not p.name.startswith("checkpoint")
    ]
    return sorted(
        files, key=lambda p: (0 if "best" in p.stem else 1 if "final" in p.stem else 2, p.name)
    )


#: Settings key holding the model files trained from the module (newest first).
TRAINED_MODELS_SETTING = "CLADE/TrainedModels"


def trainedModelPaths(settings) -> list[str]:
    """Model files trained from the module, newest first (``settings``: a QSettings)."""
    value = settings.value(TRAINED_MODELS_SETTING) or []
    # QSettings gives back a one-element list as a plain string.
    return [value] if isinstance(value, str) else [p for p in value if p]


def rememberTrainedModels(settings, paths) -> None:
    """Put ``paths`` first in the trained models' list (kept across sessions)."""
    paths = [str(p) for p in paths]
    previous = [p for p in trainedModelPaths(settings) if p not in paths]
    settings.setValue(TRAINED_MODELS_SETTING, paths + previous)
