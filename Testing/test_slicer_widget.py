"""The module's widget class itself, on the real MRML scene (slicer-core) with stand-in widgets.

slicer-core has MRML and ``slicer.util`` but no Qt, no ``slicer.app`` and no
``slicer.parameterNodeWrapper`` (that lives in the Slicer application, next to its Qt GUI
connectors). So, to run the real ``CLADESuperResolutionWidget`` code:

* the widgets of the .ui are stand-ins that keep the state the module reads and writes (text,
  enabled, current index, current path...) and emit the signals the module connects to;
* the parameter node class is a test double of ``parameterNodeWrapper`` that stores each field
  in the scripted module node the way Slicer's serializers do (read in Slicer's source:
  enums by member name, numbers and strings with ``str``, nodes as node references), so saving
  and reloading a real scene exercises the real MRML persistence. ``connectGui`` (binding the
  SlicerParameterName widgets) cannot run without Qt; the fields the module binds itself
  (``MANUAL_FIELDS``: paths and the model choice) are exercised here.
"""

from __future__ import annotations

import ast
import contextlib
import enum
import sys
import textwrap
import time
import types
import typing
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "CLADESuperResolution"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "CLADESuperResolution.ui"

slicer = pytest.importorskip("slicer")


# -- stand-in widgets ------------------------------------------------------------------------


def acceptedArguments(slot, given):
    """PythonQt passes a slot only as many signal arguments as it takes."""
    import inspect

    parameters = inspect.signature(slot).parameters.values()
    if any(p.kind == p.VAR_POSITIONAL for p in parameters):
        return given
    return min(
        given, sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters)
    )


def notifyingProperty(attribute, signal):
    """A Qt property kept in ``attribute`` that emits ``signal`` with the new value on a change."""

    def setValue(self, value):
        if value != getattr(self, attribute):
            setattr(self, attribute, value)
            self.emit(signal, value)

    return property(lambda self: getattr(self, attribute), setValue)


class Widget:
    """State and signals of a Qt widget, as far as the module uses them."""

    def __init__(self, name):
        self.name = name
        self.enabled = True
        self.visible = True
        self.text = ""
        self.toolTip = ""
        self._slots = {}
        self._blocked = False
        self.qtProperties = {}

    def connect(self, signal, slot):
        self._slots.setdefault(signal.split("(")[0], []).append(slot)

    def disconnect(self, signal, slot):
        self._slots[signal.split("(")[0]].remove(slot)

    def property(self, name):
        """Qt's dynamic properties of the .ui (SlicerParameterName)."""
        return self.qtProperties.get(name)

    def emit(self, signal, *args):
        if not self._blocked:
            for slot in self._slots.get(signal, []):
                slot(*args[: acceptedArguments(slot, len(args))])

    def blockSignals(self, blocked):
        self._blocked = bool(blocked)

    def show(self):
        self.visible = True

    def hide(self):
        self.visible = False

    def setVisible(self, visible):
        self.visible = bool(visible)

    def click(self):
        self.emit("clicked", False)


class ComboBox(Widget):
    def __init__(self, name):
        super().__init__(name)
        self.items = []
        self._index = -1

    def addItem(self, text):
        self.items.append(text)
        if self._index < 0:
            self.currentIndex = 0

    def clear(self):
        self.items = []
        self._index = -1

    @property
    def count(self):
        return len(self.items)

    currentIndex = notifyingProperty("_index", "currentIndexChanged")


class PathLineEdit(Widget):
    def __init__(self, name):
        super().__init__(name)
        self._path = ""

    currentPath = notifyingProperty("_path", "currentPathChanged")

    def type(self, text):
        """A user typing ``text`` one key at a time (ctkPathLineEdit emits on every key)."""
        for end in range(1, len(text) + 1):
            self.currentPath = text[:end]


class PlainTextEdit(Widget):
    def __init__(self, name):
        super().__init__(name)
        self.lines = []

    def appendPlainText(self, line):
        self.lines.append(line)

    def clear(self):
        self.lines = []


class CheckableNodeComboBox(Widget):
    def __init__(self, name):
        super().__init__(name)
        self.checked = []

    def checkedNodes(self):
        return list(self.checked)


class Slider(Widget):
    def __init__(self, name):
        super().__init__(name)
        self.value = 1.0


def standInUi():
    classes = {
        "QComboBox": ComboBox,
        "ctkPathLineEdit": PathLineEdit,
        "QPlainTextEdit": PlainTextEdit,
        "qMRMLCheckableNodeComboBox": CheckableNodeComboBox,
        "ctkSliderWidget": Slider,
    }
    root = ET.parse(UI_FILE).getroot()
    widgets = {}
    for element in root.iter("widget"):
        cls = classes.get(element.get("class"), Widget)
        widget = widgets[element.get("name")] = cls(element.get("name"))
        for prop in element.findall("property"):  # the .ui's initial text and state
            if prop.get("name") == "text" and prop.find("string") is not None:
                widget.text = prop.findtext("string") or ""
            elif prop.get("name") == "enabled":
                widget.enabled = prop.findtext("bool") == "true"
            elif prop.get("name") == "SlicerParameterName":
                widget.qtProperties["SlicerParameterName"] = prop.findtext("string")
            elif prop.get("name") == "value" and prop.find("double") is not None:
                widget.value = float(prop.findtext("double"))
    for widget in widgets.values():
        widget.value = getattr(widget, "value", 0)
        widget.format = ""
        widget.specialValueText = ""
    return types.SimpleNamespace(**widgets)


# -- parameterNodeWrapper double -------------------------------------------------------------


def parameterNodeWrapperDouble(cls):
    """Typed fields stored in the wrapped vtkMRMLScriptedModuleNode like Slicer's serializers."""
    hints = typing.get_type_hints(cls, include_extras=True)
    defaults = {name: getattr(cls, name, None) for name in hints}

    def baseType(hint):
        return typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint

    class Wrapped:
        def __init__(self, node):
            object.__setattr__(self, "parameterNode", node)
            for name, hint in hints.items():
                if not self._isNode(hint) and not node.GetParameter(name):
                    setattr(
                        self,
                        name,
                        defaults[name] if defaults[name] is not None else baseType(hint)(),
                    )

        @staticmethod
        def _isNode(hint):
            return isinstance(baseType(hint), type) and issubclass(
                baseType(hint), slicer.vtkMRMLNode
            )

        def __getattr__(self, name):
            hint = hints[name]
            node = self.parameterNode
            if self._isNode(hint):
                return node.GetNodeReference(name)
            raw = node.GetParameter(name)
            kind = baseType(hint)
            if isinstance(kind, type) and issubclass(kind, enum.Enum):
                return kind[raw]
            if kind is bool:  # stored as "True"/"False", as Slicer's bool serializer does
                return raw == "True"
            return kind(raw)

        def __setattr__(self, name, value):
            hint = hints[name]
            node = self.parameterNode
            if self._isNode(hint):
                node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
            elif isinstance(value, enum.Enum):
                node.SetParameter(name, value.name)
            else:
                node.SetParameter(name, str(value))

        def connectGui(self, ui):
            return object()

        def connectParametersToGui(self, mapping):
            return object()

        def disconnectGui(self, tag):
            pass

        def AddObserver(self, *args):
            return self.parameterNode.AddObserver(*args)

        def RemoveObserver(self, *args):
            return self.parameterNode.RemoveObserver(*args)

        def StartModify(self):
            return self.parameterNode.StartModify()

        def EndModify(self, wasModifying):
            return self.parameterNode.EndModify(wasModifying)

    Wrapped.__name__ = cls.__name__
    Wrapped.__annotations__ = cls.__annotations__
    for name, value in defaults.items():
        setattr(Wrapped, f"default_{name}", value)
    return Wrapped


# -- the module with its Slicer-application stand-ins -----------------------------------------


class Dialogs:
    def __init__(self):
        self.shown = []
        self.answer = True
        self.cursorDepth = 0

    def error(self, text, *args, **kwargs):
        self.shown.append(("error", text))

    def warning(self, text, *args, **kwargs):
        self.shown.append(("warning", text))

    def confirm(self, text, *args, **kwargs):
        assert self.cursorDepth == 0, "a question asked under the wait cursor"
        self.shown.append(("confirm", text))
        return self.answer

    @contextlib.contextmanager
    def waitCursor(self, show=True):
        self.cursorDepth += 1
        try:
            yield
        finally:
            self.cursorDepth -= 1


@pytest.fixture
def module(monkeypatch, tmp_path):
    qt = types.ModuleType("qt")

    class QTimer:
        def __init__(self):
            self.active = False
            self.timeout = types.SimpleNamespace(connect=lambda slot: None)

        def setInterval(self, ms):
            pass

        def start(self):
            self.active = True

        def stop(self):
            self.active = False

    settings = {}

    class QSettings:
        def value(self, key):
            return settings.get(key)

        def setValue(self, key, value):
            settings[key] = value

    qt.QTimer, qt.QSettings = QTimer, QSettings
    monkeypatch.setitem(sys.modules, "qt", qt)

    sl = types.ModuleType("slicer.ScriptedLoadableModule")

    class Base:
        def __init__(self, parent=None):
            self.parent = parent

    class Widget(Base):
        def setup(self):
            self.layout = types.SimpleNamespace(addWidget=lambda widget: None)

        def resourcePath(self, relative):
            return str(MODULE_DIR / "Resources" / relative)

    class Logic(Base):
        def getParameterNode(self):
            node = slicer.mrmlScene.GetSingletonNode(
                "CLADESuperResolution", "vtkMRMLScriptedModuleNode"
            )
            if node is None:
                node = slicer.vtkMRMLScriptedModuleNode()
                node.SetSingletonTag("CLADESuperResolution")
                node.SetName("CLADESuperResolution")
                node = slicer.mrmlScene.AddNode(node)
            return node

    class Test(unittest.TestCase):
        def delayDisplay(self, message, *args):
            pass

    sl.ScriptedLoadableModule = Base
    sl.ScriptedLoadableModuleWidget = Widget
    sl.ScriptedLoadableModuleLogic = Logic
    sl.ScriptedLoadableModuleTest = Test
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", sl)

    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = parameterNodeWrapperDouble
    pnw.Minimum = pnw.Maximum = pnw.WithinRange = lambda *args: None
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", pnw)

    app = types.SimpleNamespace(
        temporaryPath=str(tmp_path / "temp"),
        connect=lambda *a: None,
        processEvents=lambda: None,
        layoutManager=lambda: None,
        testingEnabled=lambda: True,
    )
    (tmp_path / "temp").mkdir()
    monkeypatch.setattr(slicer, "app", app, raising=False)

    dialogs = Dialogs()
    monkeypatch.setattr(slicer.util, "errorDisplay", dialogs.error)
    monkeypatch.setattr(slicer.util, "warningDisplay", dialogs.warning)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", dialogs.confirm)
    monkeypatch.setattr(slicer.util, "WaitCursor", dialogs.waitCursor)
    monkeypatch.setattr(
        slicer.util, "loadUI", lambda path: types.SimpleNamespace(setMRMLScene=lambda scene: None)
    )
    ui = standInUi()
    monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda widget: ui)

    monkeypatch.syspath_prepend(str(MODULE_DIR))
    slicer.mrmlScene = slicer.vtkMRMLScene()
    import importlib

    sys.modules.pop("CLADESuperResolution", None)
    loaded = importlib.import_module("CLADESuperResolution")
    loaded.testDialogs = dialogs
    loaded.testUi = ui
    loaded.testSettings = settings
    loaded.testWidgets = []
    yield loaded
    for widget in loaded.testWidgets:
        widget.cleanup()  # cancels jobs and removes the widget's scene observers
    sys.modules.pop("CLADESuperResolution", None)
    slicer.mrmlScene.Clear(1)


def makeWidget(module):
    widget = module.CLADESuperResolutionWidget(types.SimpleNamespace(isEntered=True))
    widget.setup()
    module.testWidgets.append(widget)
    return widget


def thickNode(name="thick", shape=(8, 36, 40)):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(2)
    array = (gaussian_filter(rng.normal(size=shape), 1.5) * 400 + 100).astype(np.float32)
    return slicer.util.addVolumeFromArray(
        array, ijkToRAS=np.diag([-1.0, -1.0, 4.0, 1.0]), name=name
    )


#: A stand-in ``clade super-resolve --progress json`` worker: the protocol of the contract,
#: the input copied as the output (written under a temporary name, then renamed).
STAND_IN_WORKER = textwrap.dedent("""
    import json, os, sys, time
    import SimpleITK as sitk
    args = sys.argv[1:]
    assert args[0] == "super-resolve" and args[args.index("--progress") + 1] == "json", args
    source, target = args[1], args[2]
    delay = float(os.environ.get("STAND_IN_DELAY", "0"))
    def emit(**event):
        print(json.dumps(event), flush=True)
    emit(event="log", level="info", message="model tiny on cpu, tiling " + args[args.index("--tiling") + 1])
    if os.environ.get("STAND_IN_FAIL"):
        emit(event="error", message="The model file x.pt does not exist: choose another.")
        sys.exit(2)
    for stage, share in (("resample", 0.1), ("infer", 0.8), ("write", 0.1)):
        for done in range(1, 4):
            emit(event="progress", stage=stage, done=done, total=3, fraction=0.3 * done,
                 eta_seconds=1.0, message="")
            time.sleep(delay)
    sitk.WriteImage(sitk.ReadImage(source), target + ".part.nrrd")
    os.replace(target + ".part.nrrd", target)
    if "--error-map" in args:  # a map of the output's size: the output's value / 10
        errors = sitk.ReadImage(target) / 10.0
        sitk.WriteImage(sitk.Cast(errors, sitk.sitkFloat32), args[args.index("--error-map") + 1])
    emit(event="done", output=target, summary="8x36x40 -> 32x36x40", stats={"seconds": 0.1})
""")


@pytest.fixture
def standInJobs(module, monkeypatch, tmp_path):
    """Make the widget's jobs run the stand-in worker instead of ``python -m CLADE``."""
    script = tmp_path / "standin.py"
    script.write_text(STAND_IN_WORKER)
    real = module.SuperResolutionJob

    def makeJob(*args, **kwargs):
        return real(*args, launcher=[sys.executable, str(script)], **kwargs)

    monkeypatch.setattr(module, "SuperResolutionJob", makeJob)
    return script


def runTimer(widget, until, timeout=60):
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        widget.onTimer()
        time.sleep(0.02)


def volumeNames():
    scene = slicer.mrmlScene
    return sorted(
        scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode").GetName()
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))
    )


# -- tests -----------------------------------------------------------------------------------


def test_button_goes_idle_running_done_and_shows_stage_log_and_comparison(
    module, standInJobs, tmp_path, monkeypatch
):
    monkeypatch.setenv("STAND_IN_DELAY", "0.15")  # each stage is seen by a timer tick
    node = thickNode()
    composite = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    widget = makeWidget(module)
    ui = module.testUi
    assert widget._parameterNode.inputVolume is node
    assert ui.applyButton.enabled and ui.applyButton.text == "Super-resolve"
    ui.applyButton.click()
    assert widget.job is not None and ui.applyButton.text == "Cancel" and ui.applyButton.enabled
    formats = set()

    def finished():
        formats.add(ui.progressBar.format.split(":")[0])
        return widget.job is None

    runTimer(widget, finished)
    assert {"Resampling", "Super-resolving", "Writing"} <= formats
    assert ui.applyButton.text == "Super-resolve" and ui.applyButton.enabled
    assert not ui.progressBar.visible
    assert ui.logText.lines == ["model tiny on cpu, tiling auto"]
    output = widget.superResolve.lastOutputNode
    assert output.GetName() == "thick_CLADE" and volumeNames() == ["thick", "thick_CLADE"]
    # Input and output overlaid in the slice views, the fade slider shown and working.
    assert composite.GetBackgroundVolumeID() == node.GetID()
    assert composite.GetForegroundVolumeID() == output.GetID()
    assert ui.compareFrame.visible
    ui.fadeSlider.emit("valueChanged", 0.25)
    assert composite.GetForegroundOpacity() == pytest.approx(0.25)
    assert list((tmp_path / "temp").iterdir()) == []
    assert module.testDialogs.shown == []


def test_error_map_checkbox_adds_the_map_over_the_result_with_its_own_opacity(
    module, standInJobs, tmp_path
):
    node = thickNode()
    composite = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    widget = makeWidget(module)
    ui = module.testUi
    ui.applyButton.click()  # first without the map: no map slider
    runTimer(widget, lambda: widget.job is None)
    assert not ui.errorOpacitySlider.visible
    assert composite.GetForegroundVolumeID() == widget.superResolve.lastOutputNode.GetID()
    widget._parameterNode.errorMap = True  # the checkbox (bound by SlicerParameterName)
    ui.applyButton.click()
    assert "--error-map" in widget.job.worker.command
    runTimer(widget, lambda: widget.job is None)
    from CLADESuperResolutionLib import ErrorMapDisplay

    output = widget.superResolve.lastOutputNode
    mapNode = ErrorMapDisplay.errorMapNodeOf(output)
    assert output.GetName() == "thick_CLADE_1" and mapNode is not None
    assert sorted(volumeNames()) == ["thick", "thick_CLADE", "thick_CLADE_1", mapNode.GetName()]
    # The map, in the output's units, over the result, at the map slider's opacity.
    assert composite.GetBackgroundVolumeID() == output.GetID()
    assert composite.GetForegroundVolumeID() == mapNode.GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.5)
    assert ui.errorOpacitySlider.visible and ui.compareFrame.visible
    ui.errorOpacitySlider.emit("valueChanged", 0.8)
    assert composite.GetForegroundOpacity() == pytest.approx(0.8)
    # The fade slider goes back to input and output; the map slider brings the map back.
    ui.fadeSlider.emit("valueChanged", 0.3)
    assert composite.GetBackgroundVolumeID() == node.GetID()
    assert composite.GetForegroundVolumeID() == output.GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.3)
    ui.errorOpacitySlider.emit("valueChanged", 0.6)
    assert composite.GetForegroundVolumeID() == mapNode.GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.6)


def test_cancel_returns_to_idle_and_leaves_no_node_and_no_file(
    module, standInJobs, tmp_path, monkeypatch
):
    monkeypatch.setenv("STAND_IN_DELAY", "0.5")
    thickNode()
    widget = makeWidget(module)
    ui = module.testUi
    ui.applyButton.click()
    runTimer(widget, lambda: widget.job.fraction > 0)
    ui.applyButton.click()  # Cancel
    assert widget.job is None
    assert ui.applyButton.text == "Super-resolve" and ui.applyButton.enabled
    assert ui.statusLabel.text.startswith("Cancelled")
    assert volumeNames() == ["thick"]
    assert list((tmp_path / "temp").iterdir()) == []


def test_a_worker_error_is_one_dialog_with_its_sentence_and_the_button_comes_back(
    module, standInJobs, monkeypatch
):
    monkeypatch.setenv("STAND_IN_FAIL", "1")
    thickNode()
    widget = makeWidget(module)
    ui = module.testUi
    ui.applyButton.click()
    runTimer(widget, lambda: widget.job is None)
    assert module.testDialogs.shown == [
        ("error", "The model file x.pt does not exist: choose another.")
    ]
    assert ui.logText.lines[-1] == "Error: The model file x.pt does not exist: choose another."
    assert ui.applyButton.text == "Super-resolve" and ui.applyButton.enabled
    assert volumeNames() == ["thick"]


def test_a_start_that_fails_leaves_the_button_working(module, monkeypatch, tmp_path):
    """Before: the job was assigned before start() inside tryWithErrorDisplay, which re-raises,
    so the button stayed a dead "Cancel" until the module was reloaded."""
    thickNode()
    real = module.SuperResolutionJob
    monkeypatch.setattr(
        module,
        "SuperResolutionJob",
        lambda *a, **k: real(*a, launcher=[str(tmp_path / "no-such-python")], **k),
    )
    widget = makeWidget(module)
    ui = module.testUi
    ui.applyButton.click()
    assert widget.job is None
    assert [kind for kind, _ in module.testDialogs.shown] == ["error"]
    assert "Could not start the super-resolution" in module.testDialogs.shown[0][1]
    assert ui.applyButton.text == "Super-resolve" and ui.applyButton.enabled
    assert not ui.progressBar.visible
    assert list((tmp_path / "temp").iterdir()) == []
    # And the next click tries again (the button is not stuck).
    ui.applyButton.click()
    assert len(module.testDialogs.shown) == 2


def test_validation_on_every_keystroke_writes_nothing_to_disk(module, tmp_path):
    """Before: each keystroke in Output folder made a folder (mkdir(parents=True))."""
    thickNode()
    widget = makeWidget(module)
    ui = module.testUi
    target = tmp_path / "runs" / "pelvis"
    ui.trainingOutputFolderSelector.type(str(target))
    assert widget._parameterNode.trainingOutputFolder == str(target)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "r").exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "temp"]
    ui.trainingVolumesSelector.checked = [slicer.mrmlScene.GetFirstNodeByName("thick")]
    widget.updateButtons()
    assert ui.trainButton.enabled and not (tmp_path / "runs").exists()


def test_path_fields_are_empty_not_a_dot(module):
    """Before: Path fields defaulted to Path() and showed "." at start and after clearing."""
    widget = makeWidget(module)
    ui = module.testUi
    for name in ("modelFileSelector", "trainingFolderSelector", "trainingOutputFolderSelector"):
        assert getattr(ui, name).currentPath == "", name
    ui.trainingFolderSelector.currentPath = "/data/cohort"
    assert widget._parameterNode.trainingFolder == "/data/cohort"
    ui.trainingFolderSelector.currentPath = ""
    assert widget._parameterNode.trainingFolder == ""
    assert ui.trainingFolderSelector.currentPath == ""
    assert "Select training volumes" in ui.trainingStatusLabel.text


def test_scene_save_and_reload_keeps_every_setting_and_the_chosen_model(
    module, tmp_path, tiny_model_path
):
    node = thickNode()
    widget = makeWidget(module)
    ui = module.testUi
    p = widget._parameterNode
    choices = [c.value for c in widget.modelChoices]
    assert choices, "no shipped model in the manifest"
    chosen = choices[-1]
    ui.modelSelector.currentIndex = choices.index(chosen)
    assert p.model == chosen
    settings = {
        "adaptSteps": 300,
        "stride": 8,
        "plane": module.LRPlane.CORONAL,
        "device": module.Device.CPU,
        "tiling": module.Tiling.PATCHES,
        "ensemble": module.Ensemble.FLIPS,
        "precision": module.Precision.FLOAT32,
        "preset": module.Preset.CT,
        "epochs": 7,
        "patchesPerSlice": 3,
        "trainingFolder": str(tmp_path),
        "trainingOutputFolder": str(tmp_path / "out"),
    }
    for name, value in settings.items():
        setattr(p, name, value)
    p.lambdaGmap = 2.5  # after the preset (a preset change resets the loss weights)
    p.modelFile = str(tiny_model_path)
    p.validationVolume = node
    scenePath = tmp_path / "scene.mrml"
    slicer.mrmlScene.SetURL(str(scenePath))
    assert slicer.mrmlScene.Commit()
    ids = (node.GetID(),)

    slicer.mrmlScene.Clear(0)
    widget.onSceneEndClose(None, None)
    slicer.mrmlScene.SetURL(str(scenePath))
    assert slicer.mrmlScene.Connect()
    widget.initializeParameterNode()
    p = widget._parameterNode
    for name, value in settings.items():
        assert getattr(p, name) == value, name
    assert p.lambdaGmap == 2.5 and p.modelFile == str(tiny_model_path)
    assert p.validationVolume.GetID() == ids[0] and p.inputVolume.GetID() == ids[0]
    assert p.model == chosen
    assert ui.modelSelector.currentIndex == choices.index(chosen)
    assert ui.trainingFolderSelector.currentPath == str(tmp_path)

    # A model file chosen through "Model file..." comes back too.
    ui.modelSelector.currentIndex = len(choices)
    ui.modelFileSelector.currentPath = str(tiny_model_path)
    assert widget.currentModelChoice().value == str(tiny_model_path)


def test_device_list_and_packages_come_from_a_worker_process(module):
    widget = makeWidget(module)
    ui = module.testUi
    widget.enter()
    assert widget.deviceProbe is not None  # torch is installed here: probed in a worker
    runTimer(widget, lambda: widget.deviceProbe is None, timeout=120)
    import torch

    assert ui.packagesLabel.text.startswith(f"PyTorch {torch.__version__}")
    expected = module.describeDevices(
        {"torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    )
    if not torch.cuda.is_available():
        assert ui.deviceInfoLabel.text == expected["auto"] == "Auto (CPU: no CUDA GPU found)"


def test_the_module_never_imports_torch_in_slicers_process():
    """Before: entering the module imported torch (1-3 s freeze) to fill the device list."""
    files = [
        MODULE_DIR / "CLADESuperResolution.py",
        *(MODULE_DIR / "CLADESuperResolutionLib").glob("*.py"),
    ]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] == "torch" for n in names), path.name


def test_missing_pytorch_extension_is_one_message_and_no_question(module):
    """Before: an error box from the installer, then a warning box from the module."""
    from CLADESuperResolutionLib import Dependencies

    widget = makeWidget(module)
    installer = widget.dependencyInstaller()
    assert installer.canInstallTorch is module.pyTorchUtilsAvailable
    installer.isInstalled = lambda name: name != "torch"
    widget.dependencyInstaller = lambda: installer
    assert not module.pyTorchUtilsAvailable()  # no PyTorch extension here
    assert widget.ensureDependencies() is False
    assert module.testDialogs.shown == [("warning", Dependencies.PYTORCH_EXTENSION_MISSING)]


def test_install_question_is_never_under_the_wait_cursor(module):
    """Before: the whole check ran inside WaitCursor, so the question showed a busy cursor."""
    from CLADESuperResolutionLib import Dependencies

    widget = makeWidget(module)
    dialogs = module.testDialogs
    depths = []
    installer = widget.dependencyInstaller()
    installer.isInstalled = lambda name: name not in ("torch", "scipy")
    installer.canInstallTorch = lambda: True
    installer.installTorch = lambda requirement: depths.append(dialogs.cursorDepth) or object()
    installer.pipInstall = lambda requirements: depths.append(dialogs.cursorDepth)
    widget.dependencyInstaller = lambda: installer
    assert widget.ensureDependencies() is True  # Dialogs.confirm asserts depth 0
    assert [kind for kind, _ in dialogs.shown] == ["confirm"]
    assert dialogs.shown[0][1] == Dependencies.TORCH_QUESTION
    assert depths == [1, 1]  # busy while installing


def test_output_selector_offers_no_generic_create_new():
    """A generic "Create new Volume" makes a node named "Volume"; the none entry already says
    a new volume named after the input is made."""
    root = ET.parse(UI_FILE).getroot()
    selector = next(w for w in root.iter("widget") if w.get("name") == "outputSelector")
    properties = {p.get("name"): p for p in selector.findall("property")}
    assert properties["addEnabled"].findtext("bool") == "false"
    assert properties["noneEnabled"].findtext("bool") == "true"
    assert "named after the input" in properties["noneDisplay"].findtext("string")


def test_advanced_section_holds_tiling_stride_ensemble_precision_and_the_error_map():
    root = ET.parse(UI_FILE).getroot()
    advanced = next(w for w in root.iter("widget") if w.get("name") == "advancedCollapsibleButton")
    assert advanced.get("class") == "ctkCollapsibleButton"
    bound = {
        p.findtext("string")
        for w in advanced.iter("widget")
        for p in w.findall("property")
        if p.get("name") == "SlicerParameterName"
    }
    assert bound == {"tiling", "stride", "ensemble", "precision", "errorMap"}


def test_a_training_start_that_fails_leaves_the_train_button_working(module, monkeypatch, tmp_path):
    node = thickNode()
    real = module.TrainingJob
    monkeypatch.setattr(
        module,
        "TrainingJob",
        lambda *a, **k: real(*a, python=str(tmp_path / "no-such-python"), **k),
    )
    widget = makeWidget(module)
    ui = module.testUi
    ui.trainingVolumesSelector.checked = [node]
    ui.trainingOutputFolderSelector.currentPath = str(tmp_path / "run")
    assert ui.trainButton.enabled
    ui.trainButton.click()
    assert widget.trainingJob is None
    assert [kind for kind, _ in module.testDialogs.shown] == ["error"]
    assert ui.trainButton.text == "Start training" and ui.trainButton.enabled
    assert not any(p.name.startswith("CLADE-train-") for p in (tmp_path / "temp").iterdir())
