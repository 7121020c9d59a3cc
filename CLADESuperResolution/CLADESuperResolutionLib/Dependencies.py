"""Installing what CLADE needs inside Slicer, only when the user first asks for it.

PyTorch comes from the PyTorch extension (``PyTorchUtils``), which picks the build that matches
the GPU driver; the core's other packages come from pip with ``>=`` bounds (the same bounds as
``pyproject.toml``; a test checks they agree). numpy and SimpleITK are never (re)installed:
Slicer ships them, and replacing them breaks Slicer itself. Only what the action needs is
required: super-resolving needs torch and scipy (Slicer ships scipy too), so an offline Slicer
with torch super-resolves; matplotlib (the training plot, ``training.png``) is optional, asked
for once per session before a training, and a refusal or a failed (offline) install only means
no plot file. tqdm draws the ``clade`` command's bars and is never needed here (the workers run
with ``--progress json`` or ``--quiet``).

All side effects go through callables passed to :class:`DependencyInstaller`, so this is tested
without Slicer and the thin module passes the real Slicer functions. Nothing here imports torch:
its version is read from the installed package's metadata.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import re

#: Minimum torch version the core needs (``pyproject.toml``).
TORCH_MINIMUM = "2.1"
TORCH_REQUIREMENT = ">=" + TORCH_MINIMUM

#: Import name -> pip requirement every action needs besides torch. Never numpy / SimpleITK.
PIP_REQUIREMENTS = {"scipy": "scipy>=1.10"}

MATPLOTLIB_QUESTION = (
    "Install matplotlib (about 10 MB) so the training also saves its plot (training.png in the "
    "output folder)? Without it the training runs the same; only that file is missing."
)
#: Import name -> (pip requirement, question): offered, never required.
#: matplotlib draws the training plot (``CLADE/training/plot.py``).
OPTIONAL_REQUIREMENTS = {"matplotlib": ("matplotlib>=3.6", MATPLOTLIB_QUESTION)}
#: The optional packages each action offers.
ACTION_OPTIONAL = {"super-resolve": (), "train": ("matplotlib",)}
#: In ``pyproject.toml`` for the ``clade`` command only (its progress bars).
CLI_ONLY = ("tqdm",)

#: Packages Slicer ships and that must never be installed over.
NEVER_INSTALL = ("numpy", "SimpleITK")


def requirementsFor(action: str) -> list[str]:
    """pip requirements ``action`` ("super-resolve" or "train") cannot run without.

    Example:
        >>> requirementsFor("super-resolve")
        ['scipy>=1.10']
    """
    if action not in ACTION_OPTIONAL:
        raise ValueError(f"unknown action {action!r}")
    return [req for name, req in PIP_REQUIREMENTS.items() if name not in NEVER_INSTALL]


def isInstalled(importName: str) -> bool:
    """True when ``importName`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(importName) is not None
    except (ImportError, ValueError):
        return False


def installedVersion(distribution: str) -> str | None:
    """Version of an installed distribution from its metadata (never imports it)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def versionAtLeast(version: str, minimum: str) -> bool:
    """Compare the leading numbers of two versions (``2.13.0+cpu`` >= ``2.1``).

    Example:
        >>> versionAtLeast("2.13.0+cpu", "2.1"), versionAtLeast("2.0.1", "2.1")
        (True, False)
    """

    def numbers(text):
        match = re.match(r"\d+(\.\d+)*", text.strip())
        return tuple(int(part) for part in match.group(0).split(".")) if match else ()

    have, need = numbers(version), numbers(minimum)
    width = max(len(have), len(need))
    return have + (0,) * (width - len(have)) >= need + (0,) * (width - len(need))


TORCH_QUESTION = (
    "CLADE needs PyTorch, which is not installed yet. Install it now with the PyTorch "
    "extension? This downloads about 1 to 3 GB and can take several minutes."
)
TORCH_UPDATE_QUESTION = (
    "CLADE needs PyTorch {minimum} or newer, and PyTorch {version} is installed. Update it now "
    "with the PyTorch extension? This downloads about 1 to 3 GB; restart Slicer afterwards."
)
TORCH_DECLINED = (
    "CLADE cannot run without PyTorch " + TORCH_MINIMUM + " or newer: click again to install "
    "it, or install it from the PyTorch Utils module."
)
PYTORCH_EXTENSION_MISSING = (
    "CLADE needs the PyTorch extension to install PyTorch: install 'PyTorch' from the "
    "Extensions Manager, restart Slicer and try again."
)


class DependencyInstaller:
    """Make sure torch and the core's packages are importable, asking before installing torch.

    :param confirm: ``confirm(question) -> bool`` (Slicer: ``slicer.util.confirmOkCancelDisplay``)
    :param installTorch: ``installTorch(requirement) -> module or None`` (PyTorchUtils)
    :param pipInstall: ``pipInstall("pkg>=x other>=y")`` (``slicer.util.pip_install``)
    :param isInstalled: ``isInstalled(importName) -> bool``
    :param canInstallTorch: ``() -> bool``, whether the PyTorch extension is there
    :param torchVersion: ``() -> str | None``, the installed torch version
    :param busy: context manager shown while installing (Slicer: ``slicer.util.WaitCursor``);
        never around a question, so the cursor is normal over every dialog.
    :param declined: import names of optional packages already declined or failed (a set kept
        for the session, so the question is asked once)
    """

    def __init__(
        self,
        confirm,
        installTorch,
        pipInstall,
        isInstalled=isInstalled,
        canInstallTorch=lambda: True,
        torchVersion=lambda: installedVersion("torch"),
        busy=contextlib.nullcontext,
        declined=None,
    ):
        self.confirm = confirm
        self.installTorch = installTorch
        self.pipInstall = pipInstall
        self.isInstalled = isInstalled
        self.canInstallTorch = canInstallTorch
        self.torchVersion = torchVersion
        self.busy = busy
        self.declined = set() if declined is None else declined
        #: What this installer installed (torch, pip requirements): the device check reruns
        #: only then.
        self.installed = []

    def missingRequirements(self, action: str = "super-resolve") -> list[str]:
        """pip requirements ``action`` needs that are not importable (torch excluded)."""
        return [
            req
            for name, req in PIP_REQUIREMENTS.items()
            if req in requirementsFor(action) and not self.isInstalled(name)
        ]

    def torchInstalled(self) -> bool:
        return self.isInstalled("torch")

    def torchQuestion(self) -> str | None:
        """The question to ask before installing torch; None when a good torch is there."""
        if not self.torchInstalled():
            return TORCH_QUESTION
        version = self.torchVersion()
        if version and not versionAtLeast(version, TORCH_MINIMUM):
            return TORCH_UPDATE_QUESTION.format(minimum=TORCH_MINIMUM, version=version)
        return None

    def ensure(self, action: str = "super-resolve") -> tuple[bool, str]:
        """Install what ``action`` needs; ``(False, why)`` when the user declined or it failed.

        ``why`` is the only message to show: nothing else is displayed on the way. Optional
        packages are offered afterwards; declining them or failing to install them (offline)
        never stops the action.
        """
        question = self.torchQuestion()
        if question is not None:
            if not self.canInstallTorch():
                return False, PYTORCH_EXTENSION_MISSING
            if not self.confirm(question):
                return False, TORCH_DECLINED
            try:
                with self.busy():
                    torch = self.installTorch(TORCH_REQUIREMENT)
                self.installed.append("torch")
            except Exception as error:  # any installer failure is reported, not raised
                return False, f"PyTorch could not be installed ({error}): see the Python console."
            if torch is None:
                return False, TORCH_DECLINED
        missing = self.missingRequirements(action)
        if missing:
            try:
                with self.busy():
                    self.pipInstall(" ".join(missing))
                self.installed += missing
            except Exception as error:
                return False, (
                    f"Could not install {', '.join(missing)} ({error}): check the network and try "
                    "again."
                )
        self.offerOptional(action)
        return True, ""

    def offerOptional(self, action: str) -> None:
        """Ask once per session for each optional package ``action`` can use."""
        for name in ACTION_OPTIONAL[action]:
            if name in self.declined or self.isInstalled(name):
                continue
            requirement, question = OPTIONAL_REQUIREMENTS[name]
            if not self.confirm(question):
                self.declined.add(name)
                continue
            try:
                with self.busy():
                    self.pipInstall(requirement)
                self.installed.append(requirement)
            except Exception as error:  # offline: the action runs without it
                self.declined.add(name)
                logging.warning("CLADE: %s could not be installed (%s).", requirement, error)
