"""The Packages section and the first-use install: PyTorch through the PyTorch extension.

``DependencyInstaller`` (``Dependencies.py``) decides what to install; this is its Slicer side:
the real Slicer functions it is given, the one message shown when it refuses, and the section's
"Reinstall PyTorch" button. No Qt import here.

CLADE itself never imports torch in Slicer's process (its device check and its runs are worker
processes), but the PyTorch extension does: ``PyTorchUtilsLogic.installTorch`` ends with
``import torch`` (SlicerPyTorch, PyTorchUtils.py) and other modules may import it too. Once torch
is loaded, its files are in use: uninstalling it fails on Windows (locked DLLs) and a new
version would not be used before a restart. So "Reinstall PyTorch" asks for a restart first
when torch is loaded (:func:`torchLoadedInSlicer`).
"""

from __future__ import annotations

import sys

import slicer

from .Dependencies import (
    PYTORCH_EXTENSION_MISSING,
    TORCH_REQUIREMENT,
    DependencyInstaller,
    isInstalled,
)


def pyTorchUtilsAvailable():
    """The PyTorch extension's PyTorchUtils module is there (checked without importing it)."""
    return isInstalled("PyTorchUtils")


def installTorchWithPyTorchUtils(requirement):
    """Install torch through the PyTorch extension; None when the user declined."""
    import PyTorchUtils

    # Our own question was already asked (and answered yes) by DependencyInstaller.
    return PyTorchUtils.PyTorchUtilsLogic().installTorch(
        askConfirmation=False, torchVersionRequirement=requirement
    )


RESTART_FIRST = (
    "PyTorch is loaded in Slicer (the PyTorch extension imports it when it installs it), so "
    "its files are in use and cannot be replaced now. Restart Slicer, then click Reinstall "
    "PyTorch before running anything. Restart now?"
)


#: Added to the Packages line while torch is loaded in Slicer's process.
LOADED_NOTE = (
    "It is loaded in Slicer (the PyTorch extension imported it): restart Slicer before "
    "reinstalling it."
)


def torchLoadedInSlicer() -> bool:
    """torch is imported in this process (by PyTorchUtils or another module, never by CLADE)."""
    return "torch" in sys.modules


#: Optional packages declined (or not installable) in this Slicer session: asked once.
DECLINED_THIS_SESSION = set()


def slicerInstaller():
    """A DependencyInstaller that asks and installs through Slicer."""
    return DependencyInstaller(
        confirm=slicer.util.confirmOkCancelDisplay,
        installTorch=installTorchWithPyTorchUtils,
        pipInstall=slicer.util.pip_install,
        canInstallTorch=pyTorchUtilsAvailable,
        busy=slicer.util.WaitCursor,
        declined=DECLINED_THIS_SESSION,
    )


class PackagesSection:
    """First-use installs and the Packages section (``host``: the module widget)."""

    def __init__(self, host):
        self.host = host

    def connectSignals(self):
        self.host.ui.reinstallTorchButton.connect("clicked(bool)", self.onReinstallTorch)

    def ensure(self, installer, action) -> bool:
        """What ``action`` ("super-resolve", "train") needs is there, installed if asked."""
        ok, why = installer.ensure(action)
        if not ok:
            slicer.util.warningDisplay(why)  # the only message: the installer shows none
        # One device check per session: again only when something was just installed.
        self.host.superResolve.startDeviceProbe(refresh=bool(installer.installed))
        return ok

    def onReinstallTorch(self):
        """Reinstall PyTorch through the PyTorch extension."""
        if not pyTorchUtilsAvailable():
            slicer.util.warningDisplay(PYTORCH_EXTENSION_MISSING)
            return
        if torchLoadedInSlicer():
            if slicer.util.confirmOkCancelDisplay(RESTART_FIRST):
                slicer.util.restart()
            return
        if not slicer.util.confirmOkCancelDisplay(
            "Reinstall PyTorch with the PyTorch extension? It picks the build that matches "
            "this computer's GPU driver; restart Slicer afterwards."
        ):
            return
        import PyTorchUtils

        logic = PyTorchUtils.PyTorchUtilsLogic()
        with slicer.util.tryWithErrorDisplay("PyTorch could not be reinstalled.", waitCursor=True):
            if isInstalled("torch"):
                logic.uninstallTorch()
            logic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT)
        self.host.superResolve.startDeviceProbe(refresh=True)
