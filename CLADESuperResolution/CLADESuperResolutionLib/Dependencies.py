"""Installing what CLADE needs inside Slicer, only when the user first asks for it.

PyTorch comes from the PyTorch extension (``PyTorchUtils``), which picks the build that matches
the GPU driver; other packages come from pip with ``>=`` bounds. numpy and SimpleITK are never
(re)installed: Slicer ships them, and replacing them breaks Slicer itself.

All side effects go through callables passed to :class:`DependencyInstaller`, so this is tested
without Slicer and the thin module passes the real Slicer functions.
"""

from __future__ import annotations

import importlib.util

#: Minimum torch version the core needs (``pyproject.toml``).
TORCH_REQUIREMENT = ">=2.1"

#: Import name -> pip requirement for the core's other dependencies. Never numpy / SimpleITK.
PIP_REQUIREMENTS = {
    "scipy": "scipy>=1.10",
    "tqdm": "tqdm>=4.60",
}

#: Packages Slicer ships and that must never be installed over.
NEVER_INSTALL = ("numpy", "SimpleITK")


def isInstalled(importName: str) -> bool:
    """True when ``importName`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(importName) is not None
    except (ImportError, ValueError):
        return False


TORCH_QUESTION = (
    "CLADE needs PyTorch, which is not installed yet. Install it now with the PyTorch "
    "extension? This downloads about 1 to 3 GB and can take several minutes."
)
TORCH_DECLINED = (
    "CLADE cannot run without PyTorch: click again to install it, or install it from the "
    "PyTorch Utils module."
)


class DependencyInstaller:
    """Make sure torch and the core's packages are importable, asking before installing torch.

    :param confirm: ``confirm(question) -> bool`` (Slicer: ``slicer.util.confirmOkCancelDisplay``)
    :param installTorch: ``installTorch(requirement) -> module or None`` (PyTorchUtils)
    :param pipInstall: ``pipInstall("pkg>=x other>=y")`` (``slicer.util.pip_install``)
    :param isInstalled: ``isInstalled(importName) -> bool``
    """

    def __init__(self, confirm, installTorch, pipInstall, isInstalled=isInstalled):
        self.confirm = confirm
        self.installTorch = installTorch
        self.pipInstall = pipInstall
        self.isInstalled = isInstalled

    def missingRequirements(self) -> list[str]:
        """pip requirements of packages that are not importable (torch excluded)."""
        return [req for name, req in PIP_REQUIREMENTS.items()
                if name not in NEVER_INSTALL and not self.isInstalled(name)]

    def torchInstalled(self) -> bool:
        return self.isInstalled("torch")

    def ensure(self) -> tuple[bool, str]:
        """Install what is missing; ``(False, why)`` when the user declined or it failed."""
        if not self.torchInstalled():
            if not self.confirm(TORCH_QUESTION):
                return False, TORCH_DECLINED
            try:
                torch = self.installTorch(TORCH_REQUIREMENT)
            except Exception as error:  # any installer failure is reported, not raised
                return False, f"PyTorch could not be installed ({error}): see the Python console."
            if torch is None:
                return False, TORCH_DECLINED
        missing = self.missingRequirements()
        if missing:
            try:
                self.pipInstall(" ".join(missing))
            except Exception as error:
                return False, (
                    f"Could not install {', '.join(missing)} ({error}): check the network and try "
                    "again."
                )
        return True, ""
