"""Find the CLADE core package from the Slicer module, in every layout it is run from.

The core is the plain Python package ``CLADE/``. It can sit in three places:

1. Installed extension and build tree: ``CLADE/`` is installed next to the scripted module, in
   ``lib/Slicer-X.Y/qt-scripted-modules/`` (see the top-level ``CMakeLists.txt``). That folder is
   on Slicer's ``sys.path`` already.
2. Source checkout (module added to Slicer's "additional module paths"): ``CLADE/`` is the sibling
   of the ``CLADESuperResolution/`` folder.
3. A pip-installed ``clade-sr`` package in Slicer's Python.

``CLADE_CORE_PATH`` in the environment, when set, wins (a folder that contains ``CLADE/``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

#: Environment variable naming a folder that contains the ``CLADE/`` package.
CORE_PATH_VARIABLE = "CLADE_CORE_PATH"

_MODULE_DIR = Path(__file__).resolve().parent.parent  # the folder holding CLADESuperResolution.py


def candidateCoreParents(moduleDir: Path = _MODULE_DIR) -> list[Path]:
    """Folders that may contain ``CLADE/``, most specific first."""
    candidates = []
    if os.environ.get(CORE_PATH_VARIABLE):
        candidates.append(Path(os.environ[CORE_PATH_VARIABLE]))
    candidates += [moduleDir, moduleDir.parent]
    return candidates


def findCoreParent(moduleDir: Path = _MODULE_DIR) -> Path | None:
    """The folder containing the ``CLADE/`` package, or None when only a pip install may exist."""
    for folder in candidateCoreParents(moduleDir):
        if (folder / "CLADE" / "__init__.py").is_file():
            return folder.resolve()
    spec = importlib.util.find_spec("CLADE")
    if spec is not None and spec.origin:
        return Path(spec.origin).resolve().parent.parent
    return None


def ensureCoreImportable(moduleDir: Path = _MODULE_DIR) -> Path:
    """Put the core's parent folder on ``sys.path`` (if needed) and return it.

    Raises RuntimeError with a user sentence when the core cannot be found.
    """
    parent = findCoreParent(moduleDir)
    if parent is None:
        raise RuntimeError(
            "The CLADE core package was not found next to the module: reinstall the CLADE "
            "extension."
        )
    if str(parent) not in sys.path:
        sys.path.insert(0, str(parent))
    return parent


def coreDir(moduleDir: Path = _MODULE_DIR) -> Path:
    """The ``CLADE/`` package folder itself."""
    return ensureCoreImportable(moduleDir) / "CLADE"


def workerEnvironment(baseEnvironment: dict | None = None, moduleDir: Path = _MODULE_DIR) -> dict:
    """Environment for a worker subprocess: the caller's, with the core on ``PYTHONPATH``."""
    environment = dict(os.environ if baseEnvironment is None else baseEnvironment)
    parent = str(ensureCoreImportable(moduleDir))
    existing = environment.get("PYTHONPATH", "")
    parts = [parent] + [p for p in existing.split(os.pathsep) if p and p != parent]
    environment["PYTHONPATH"] = os.pathsep.join(parts)
    # Progress lines must reach the reader thread as they are printed, not when a buffer fills.
    environment["PYTHONUNBUFFERED"] = "1"
    return environment
