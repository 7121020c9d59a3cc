"""Super-resolve tab: each run its own node beside its input; one device check per session;
the Packages section's reinstall when torch is loaded in Slicer's process.

Real MRML scene (slicer-core), the stand-in widgets and worker of ``test_slicer_widget``.
"""

# ruff: noqa: F811 (the fixtures imported from test_slicer_widget are parameters here)
from __future__ import annotations

import sys
import types

import pytest
from test_slicer_widget import (  # noqa: F401 (fixtures)
    makeWidget,
    module,
    runTimer,
    standInJobs,
    thickNode,
    volumeNames,
)

slicer = pytest.importorskip("slicer")


def superResolve(widget, ui):
    ui.applyButton.click()
    assert widget.job is not None, ui.statusLabel.text
    runTimer(widget, lambda: widget.job is None)


def inFolder(hierarchy, node, name):
    folder = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), name)
    hierarchy.CreateItem(folder, node)  # what Slicer's subject-hierarchy plugins do on load
    return folder


def test_each_run_makes_its_own_node_named_after_its_input_beside_it(module, standInJobs):
    """Before: the first result became the output selection, so the second run overwrote it
    (still named after the first input)."""
    first, second = thickNode("first"), thickNode("second")
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    folders = {"first": inFolder(hierarchy, first, "Patient 1")}
    folders["second"] = inFolder(hierarchy, second, "Patient 2")
    widget = makeWidget(module)
    ui = module.testUi
    widget.superResolve.deviceInfo = {"torch": "2", "cuda_available": False}
    p = widget._parameterNode
    p.inputVolume = first
    superResolve(widget, ui)
    superResolve(widget, ui)
    p.inputVolume = second
    superResolve(widget, ui)
    assert p.outputVolume is None
    outputs = ["first_CLADE", "first_CLADE_1", "second_CLADE"]
    assert volumeNames() == sorted(["first", "second", *outputs])
    for name in outputs:
        item = hierarchy.GetItemByDataNode(slicer.mrmlScene.GetFirstNodeByName(name))
        assert hierarchy.GetItemParent(item) == folders[name.split("_")[0]], name
    # Overwriting is an explicit choice: the chosen node is filled, nothing new is made.
    chosen = slicer.mrmlScene.GetFirstNodeByName("first_CLADE")
    p.inputVolume, p.outputVolume = second, chosen
    superResolve(widget, ui)
    assert volumeNames() == sorted(["first", "second", *outputs])
    assert widget.superResolve.lastOutputNode is chosen
    assert "first_CLADE" in ui.statusLabel.text


def test_one_device_check_per_session_not_one_per_click(module, standInJobs):
    """Before: every Apply started a new worker importing torch (1-3 s of CPU per click)."""
    thickNode()
    widget = makeWidget(module)
    ui = module.testUi
    widget.superResolve.deviceInfo = {"torch": "2", "cuda_available": False}  # checked once
    for _ in range(2):
        ui.applyButton.click()
        assert widget.deviceProbe is None
        runTimer(widget, lambda: widget.job is None)
    widget.enter()
    assert widget.deviceProbe is None


class PyTorchUtilsStandIn:
    def __init__(self, calls):
        self.calls = calls

    def PyTorchUtilsLogic(self):
        calls = self.calls
        return types.SimpleNamespace(
            uninstallTorch=lambda: calls.append("uninstall"),
            installTorch=lambda **kwargs: calls.append("install"),
        )


def test_reinstall_with_torch_loaded_in_slicer_asks_for_a_restart_first(module, monkeypatch):
    """Before: it uninstalled torch while Slicer had it loaded (PyTorchUtils.installTorch ends
    with ``import torch``), which fails on Windows (locked files)."""
    from CLADESuperResolutionLib import PackagesSection

    calls = []
    monkeypatch.setitem(sys.modules, "PyTorchUtils", PyTorchUtilsStandIn(calls))
    monkeypatch.setattr(PackagesSection, "pyTorchUtilsAvailable", lambda: True)
    monkeypatch.setattr(slicer.util, "restart", lambda: calls.append("restart"), raising=False)
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", lambda *a, **k: _noContext())
    widget = makeWidget(module)
    widget.superResolve.deviceInfo = {"torch": "2"}
    monkeypatch.setattr(PackagesSection, "torchLoadedInSlicer", lambda: True)
    module.testUi.reinstallTorchButton.click()
    assert calls == ["restart"]
    assert module.testDialogs.shown == [("confirm", PackagesSection.RESTART_FIRST)]
    # In a fresh session (torch not loaded yet) the reinstall goes ahead.
    monkeypatch.setattr(PackagesSection, "torchLoadedInSlicer", lambda: False)
    module.testUi.reinstallTorchButton.click()
    assert calls[1:] == ["uninstall", "install"]


def test_the_packages_line_says_when_torch_is_loaded_in_slicer(module, monkeypatch):
    from CLADESuperResolutionLib import PackagesSection

    widget = makeWidget(module)
    widget.superResolve.deviceInfo = {"torch": "2.13.0", "cuda": None}
    monkeypatch.setattr(PackagesSection, "torchLoadedInSlicer", lambda: True)
    widget.superResolve.updateDeviceInfo()
    text = module.testUi.packagesLabel.text
    assert text.startswith("PyTorch 2.13.0") and text.endswith(PackagesSection.LOADED_NOTE)
    monkeypatch.setattr(PackagesSection, "torchLoadedInSlicer", lambda: False)
    widget.superResolve.updateDeviceInfo()
    assert PackagesSection.LOADED_NOTE not in module.testUi.packagesLabel.text


def _noContext():
    import contextlib

    return contextlib.nullcontext()


def test_torch_loaded_is_read_from_this_process():
    from CLADESuperResolutionLib import PackagesSection

    assert PackagesSection.torchLoadedInSlicer() == ("torch" in sys.modules)
