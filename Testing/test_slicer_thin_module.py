"""The thin CLADESuperResolution.py, imported with stand-ins for the Qt-only Slicer modules.

Outside the Slicer application there is no ``qt``, ``slicer.app`` or ``ScriptedLoadableModule``;
minimal stand-ins let the module file load so its Logic, helpers and the Slicer self-test run on
the real MRML scene (slicer-core). The stand-ins only replace GUI plumbing, never the logic.
"""

from __future__ import annotations

import enum
import sys
import types
import unittest
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "CLADESuperResolution"

slicer = pytest.importorskip("slicer")


@pytest.fixture
def thinModule(monkeypatch, tmp_path):
    qt = types.ModuleType("qt")
    qt.QTimer = object
    qt.QSettings = object
    monkeypatch.setitem(sys.modules, "qt", qt)

    sl = types.ModuleType("slicer.ScriptedLoadableModule")

    class Base:
        def __init__(self, *args):
            pass

    class Logic(Base):
        def getParameterNode(self):
            return slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")

    class Test(unittest.TestCase):
        def delayDisplay(self, message, *args):
            pass

    sl.ScriptedLoadableModule = sl.ScriptedLoadableModuleWidget = Base
    sl.ScriptedLoadableModuleLogic = Logic
    sl.ScriptedLoadableModuleTest = Test
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", sl)

    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = lambda cls: cls
    pnw.Minimum = pnw.Maximum = pnw.WithinRange = lambda *args: None
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", pnw)

    app = types.SimpleNamespace(
        temporaryPath=str(tmp_path), connect=lambda *a: None, processEvents=lambda: None
    )
    monkeypatch.setattr(slicer, "app", app, raising=False)

    # Sample Data stand-in: loads the registered file the way Slicer's volume reader does
    # (LPS file -> RAS node), with our conversion.
    sampleData = types.ModuleType("SampleData")
    registered = {}

    class SampleDataLogic:
        @staticmethod
        def registerCustomSampleDataSource(**kwargs):
            registered[kwargs["sampleName"]] = kwargs

    def downloadSample(name):
        import SimpleITK as sitk
        from CLADESuperResolutionLib.VolumeConversion import updateVolumeNodeFromImage

        source = registered[name]
        path = source["uris"][len("file://") :]
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", source["nodeNames"])
        updateVolumeNodeFromImage(node, sitk.ReadImage(path))
        node.CreateDefaultDisplayNodes()
        return node

    sampleData.SampleDataLogic = SampleDataLogic
    sampleData.downloadSample = downloadSample
    sampleData.registered = registered
    monkeypatch.setitem(sys.modules, "SampleData", sampleData)

    monkeypatch.syspath_prepend(str(MODULE_DIR))
    slicer.mrmlScene = slicer.vtkMRMLScene()
    import importlib

    sys.modules.pop("CLADESuperResolution", None)
    module = importlib.import_module("CLADESuperResolution")
    yield module
    sys.modules.pop("CLADESuperResolution", None)
    slicer.mrmlScene.Clear(1)


def test_module_loads_without_torch_and_enums_match_the_core(thinModule):
    from CLADE.geometry import PLANE_NAMES

    assert {p.value for p in thinModule.LRPlane} == {"auto", "both", *PLANE_NAMES}
    assert [d.value for d in thinModule.Device] == ["auto", "cpu", "cuda"]
    assert {p.value for p in thinModule.Preset} == set(thinModule.PRESETS)
    assert all(
        isinstance(m.label(), str)
        for e in (thinModule.LRPlane, thinModule.Device, thinModule.Preset)
        for m in e
    )
    assert [t.value for t in thinModule.Tiling] == ["auto", "slices", "patches"]
    from CLADE.inference import ENSEMBLES, TILINGS

    assert [e.value for e in thinModule.Ensemble] == ["auto", *ENSEMBLES]
    assert [t.value for t in thinModule.Tiling] == ["auto", *TILINGS]
    from CLADE.device import PRECISIONS

    assert [p.value for p in thinModule.Precision] == list(PRECISIONS)
    from CLADESuperResolutionLib import SuperResolutionLogic

    assert SuperResolutionLogic.TILINGS == tuple(t.value for t in thinModule.Tiling)
    assert SuperResolutionLogic.ENSEMBLES == tuple(e.value for e in thinModule.Ensemble)
    assert SuperResolutionLogic.PRECISIONS == tuple(p.value for p in thinModule.Precision)
    fields = thinModule.CLADESuperResolutionParameterNode.__annotations__
    assert issubclass(type(thinModule.CLADESuperResolutionParameterNode.plane), enum.Enum)
    assert "inputVolume" in fields and "trainingOutputFolder" in fields
    assert thinModule.formatSeconds(3725) == "1 h 02 min"
    assert thinModule.formatSeconds(75) == "1 min 15 s"


def test_logic_process_returns_new_node_and_keeps_input(thinModule, tiny_model_path):
    array = np.random.default_rng(0).normal(100, 20, size=(8, 36, 40)).astype(np.float32)
    node = slicer.util.addVolumeFromArray(
        array, ijkToRAS=np.diag([-1.0, 1.0, 4.0, 1.0]), name="thick"
    )
    logic = thinModule.CLADESuperResolutionLogic()
    stages = []
    output = logic.process(
        node,
        model=str(tiny_model_path),
        tiling="patches",
        stride=16,
        device="cpu",
        progress=lambda info: stages.append(info.stage),
    )
    assert "infer" in stages
    assert output is not node and output.GetName() == "thick_CLADE"
    assert slicer.util.arrayFromVolume(output).shape == (32, 36, 40)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), array)
    with pytest.raises(ValueError, match="isotropic"):
        iso = slicer.util.addVolumeFromArray(np.ones((20, 20, 20), np.float32), name="iso")
        logic.process(iso, model=str(tiny_model_path))


def test_sample_registration_and_torch_installation_through_pytorchutils(thinModule, monkeypatch):
    thinModule.registerSampleData()
    registered = sys.modules["SampleData"].registered
    assert Path(registered["CLADEPelvisT2Thick"]["uris"][len("file://") :]).is_file()
    assert Path(registered["CLADEPelvisT2Thick"]["thumbnailFileName"]).is_file()
    # Registered with the file's checksum (before: none), which Sample Data verifies.
    import hashlib

    sample = Path(registered["CLADEPelvisT2Thick"]["uris"][len("file://") :])
    assert registered["CLADEPelvisT2Thick"]["checksums"] == (
        "SHA256:" + hashlib.sha256(sample.read_bytes()).hexdigest()
    )

    calls = []
    fake = types.ModuleType("PyTorchUtils")

    class PyTorchUtilsLogic:
        def installTorch(
            self,
            askConfirmation=False,
            forceComputationBackend=None,
            torchVersionRequirement=None,
            torchvisionVersionRequirement=None,
        ):
            calls.append((askConfirmation, torchVersionRequirement))
            return "torch-module"

    fake.PyTorchUtilsLogic = PyTorchUtilsLogic
    monkeypatch.setitem(sys.modules, "PyTorchUtils", fake)
    assert thinModule.installTorchWithPyTorchUtils(">=2.1") == "torch-module"
    assert calls == [(False, ">=2.1")]


@pytest.mark.slow
def test_slicer_self_test_runs_on_the_shipped_model(thinModule, monkeypatch, all_cores):
    """The ScriptedLoadableModuleTest itself (real shipped model, worker process), on the
    central 64 x 64 voxels of the sample's slices: the same checks at a sixth of the cost."""
    from CLADESuperResolutionLib import ModelCatalog
    from CLADESuperResolutionLib.VolumeConversion import (
        imageFromVolumeNode,
        updateVolumeNodeFromImage,
    )

    download = sys.modules["SampleData"].downloadSample

    def centralCrop(name):
        node = download(name)
        updateVolumeNodeFromImage(node, imageFromVolumeNode(node)[48:112, 48:112, :])
        return node

    monkeypatch.setattr(sys.modules["SampleData"], "downloadSample", centralCrop)

    logic = thinModule.CLADESuperResolutionLogic()
    assert ModelCatalog.shippedModels(logic.manifestPath()), "no shipped model in the manifest"
    test = thinModule.CLADESuperResolutionTest()
    test.runTest()


def test_slicer_self_test_passes_without_torch_on_the_build_machines(thinModule, monkeypatch):
    """The extension build machines have no PyTorch: the self-test says it skipped, it does not
    fail (before: it tried to run the network and failed)."""
    monkeypatch.setattr(thinModule, "isInstalled", lambda name: name != "torch")
    shown = []
    test = thinModule.CLADESuperResolutionTest()
    monkeypatch.setattr(test, "delayDisplay", lambda message, *args: shown.append(message))
    test.runTest()
    assert shown and shown[0].startswith("Skipped: PyTorch is not installed")
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 0


def test_slicer_self_test_code_with_the_tiny_model(thinModule, tiny_model_path, monkeypatch):
    """Same self-test code, with the tiny model standing in for the shipped one (a path is
    accepted wherever a shipped name is), so its checks are exercised before models ship."""
    from CLADESuperResolutionLib import ModelCatalog

    monkeypatch.setattr(
        ModelCatalog, "shippedModels", lambda manifest: [{"name": str(tiny_model_path)}]
    )
    test = thinModule.CLADESuperResolutionTest()
    test.setUp()
    # The in-process half only: the worker half is the same job code that
    # test_slicer_worker.py runs, and the full sample costs ~10 s per run on 2 cores.
    test.test_SuperResolveSample()
    assert slicer.mrmlScene.GetFirstNodeByName("CLADEPelvisT2Thick_CLADE") is not None
