"""CLADE Super-Resolution: Slicer module (the module, its parameter node and the wiring).

Super-resolves thick-slice MRI/CT with a CLADE network and trains new networks, in a worker process
so Slicer stays responsive. Each tab's behaviour (``CLADESuperResolutionLib``: ``SuperResolveTab``,
``TrainTab``) and all other logic live in the Lib (pytest with slicer-core); this file wires them.
"""

import logging
from pathlib import Path
from typing import Annotated

import qt
import slicer
from CLADESuperResolutionLib import CoreLocator, SampleVolume, SelfTest
from CLADESuperResolutionLib.Dependencies import isInstalled
from CLADESuperResolutionLib.Devices import describeDevices  # noqa: F401 (tests read it here)
from CLADESuperResolutionLib.InputValidation import validateInputVolume
from CLADESuperResolutionLib.JobStart import startJob
from CLADESuperResolutionLib.PackagesSection import (
    PackagesSection,
    installTorchWithPyTorchUtils,  # noqa: F401 (scripts and tests read it here)
    pyTorchUtilsAvailable,  # noqa: F401
    slicerInstaller,
)
from CLADESuperResolutionLib.ParameterBinding import ParameterBinding
from CLADESuperResolutionLib.Parameters import (
    Device,
    Ensemble,
    LRPlane,
    Precision,
    Preset,
    StartFrom,
    Tiling,
)
from CLADESuperResolutionLib.SuperResolutionLogic import (
    SuperResolutionJob,
    SuperResolutionOptions,
    superResolveInProcess,
)
from CLADESuperResolutionLib.SuperResolveTab import SuperResolveTab
from CLADESuperResolutionLib.Training import PRESETS, TrainingJob  # noqa: F401 (PRESETS: tests)
from CLADESuperResolutionLib.TrainTab import TrainTab
from CLADESuperResolutionLib.WorkerProcess import formatSeconds  # noqa: F401 (tests read it)
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: Largest loss weight the Train tab accepts (the .ui's spin boxes say the same; a test checks).
LOSS_WEIGHT_MAXIMUM = 1000.0
#: Milliseconds between two drains of a worker's events.
POLL_INTERVAL_MS = 200
#: Documentation of the extension (README section); the repository URL lives in CMakeLists.txt.
DOCUMENTATION_URL = "https://github.com/clade-sr/SlicerCLADE#3d-slicer"


class CLADESuperResolution(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "CLADE Super-Resolution"
        self.parent.categories = ["Filtering.Super-Resolution"]
        self.parent.dependencies = []  # PyTorchUtils is used only when it is there (first Apply)
        self.parent.contributors = ["The CLADE developers"]
        self.parent.helpText = (
            "Super-resolve anisotropic (thick-slice) MRI and CT volumes onto an isotropic grid "
            "with CLADE, an unpaired CycleGAN-style network, and train new models on your own "
            f'volumes. See the <a href="{DOCUMENTATION_URL}">documentation</a>.'
        )
        self.parent.acknowledgementText = (
            "Method: Pascale et al., CLADE: Cycle Loss Augmented Degradation Enhancement for "
            "Unpaired Super-Resolution of Anisotropic Medical Images."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Add the thick-slice pelvis sample (shipped with the CLADE core) to Sample Data."""
    SampleVolume.registerSampleData(Path(__file__).resolve().parent / "Resources" / "Icons")


def torchAvailable():
    """PyTorch importable (checked without importing it)."""
    return isInstalled("torch")


@parameterNodeWrapper
class CLADESuperResolutionParameterNode:
    """Module state, saved with the scene. Bound to the .ui through SlicerParameterName."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    model: str = ""  # shipped model name or model file path; "" = the first shipped model
    modelFile: str = ""
    adaptSteps: Annotated[int, WithinRange(-1, 5000)] = -1  # -1: auto, 0: off, N: N steps
    errorMap: bool = False  # also estimate where the result may be wrong (a second node)
    plane: LRPlane = LRPlane.AUTO
    device: Device = Device.AUTO
    tiling: Tiling = Tiling.AUTO
    stride: Annotated[int, WithinRange(0, 32)] = 0  # patches only; 0: the model's default
    ensemble: Ensemble = Ensemble.AUTO
    precision: Precision = Precision.AUTO
    trainingFolder: str = ""
    preset: Preset = Preset.MRI
    startFrom: StartFrom = StartFrom.NEW
    # A bounded range: with Minimum alone Slicer's spin-box connector sets the maximum to
    # infinity (QDoubleSpinBoxCtkSliderWidgetToFloatConnector), overriding the .ui's.
    lambdaCyc: Annotated[float, WithinRange(0.0, LOSS_WEIGHT_MAXIMUM)] = 1.0
    lambdaIdent: Annotated[float, WithinRange(0.0, LOSS_WEIGHT_MAXIMUM)] = 1.0
    lambdaGmap: Annotated[float, WithinRange(0.0, LOSS_WEIGHT_MAXIMUM)] = 5.0
    epochs: Annotated[int, WithinRange(1, 1000)] = 10
    batchSize: Annotated[int, WithinRange(1, 4096)] = 4
    patchesPerSlice: Annotated[int, WithinRange(1, 64)] = 4
    validationVolume: vtkMRMLScalarVolumeNode
    trainingOutputFolder: str = ""


class CLADESuperResolutionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Qt wiring: the parameter node, the two tabs (CLADESuperResolutionLib), one timer."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self.binding = None
        self.superResolve = None
        self.train = None
        self.packages = None
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.timeout.connect(self.onTimer)

    # The tabs' state, read by scripts and tests through the widget.
    job = property(lambda self: self.superResolve.job)
    trainingJob = property(lambda self: self.train.job)
    deviceProbe = property(lambda self: self.superResolve.deviceProbe)
    modelChoices = property(lambda self: self.superResolve.modelChoices)
    parameterNode = property(lambda self: self._parameterNode)

    def currentModelChoice(self):
        return self.superResolve.currentModelChoice()

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CLADESuperResolution.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CLADESuperResolutionLogic()
        # Jobs are made through this module's names, looked up at each run (tests replace them).
        self.superResolve = SuperResolveTab(
            self, lambda *a, **k: SuperResolutionJob(*a, **k), qt.QSettings
        )
        self.train = TrainTab(self, lambda *a, **k: TrainingJob(*a, **k), qt.QSettings)
        self.packages = PackagesSection(self)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.superResolve.connectSignals()
        self.train.connectSignals()
        self.packages.connectSignals()
        self.binding = ParameterBinding(self.ui, self.superResolve.selectModel, self.updateButtons)
        self.superResolve.refreshModels()
        self.initializeParameterNode()

    def cleanup(self):
        self.cancelJobs()
        self.timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self.superResolve.startDeviceProbe()

    def exit(self):
        # The GUI stays connected while the module is hidden: disconnecting on exit and
        # reconnecting on enter reset the settings before Slicer 5.10 (see ParameterBinding).
        pass

    def onSceneStartClose(self, caller, event):
        self.superResolve.onSceneStartClose()
        self.train.onSceneStartClose()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- the parameter node ----------------------------------------------------------------------

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and validateInputVolume(first)[0]:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, parameterNode):
        """Connect ``parameterNode`` to the GUI, once per node (ParameterBinding says why)."""
        if self.binding.isBoundTo(parameterNode):
            return
        self._parameterNode = parameterNode
        if parameterNode is not None:
            self.train.rememberPreset()
        self.binding.bind(parameterNode)

    def updateButtons(self, caller=None, event=None):
        """Each tab's button and reason; runs on every parameter change, so it only reads."""
        if not self._parameterNode:
            return
        self.train.followPreset()
        self.superResolve.updateButton()
        self.train.updateButton()

    # -- shared by the tabs: dependencies, jobs, the timer ---------------------------------------

    def dependencyInstaller(self):
        return slicerInstaller()

    def ensureDependencies(self, action="super-resolve"):
        return self.packages.ensure(self.dependencyInstaller(), action)

    def startJob(self, makeJob, failureTitle):
        return startJob(makeJob, failureTitle)

    def onTimer(self):
        if not (self.superResolve.poll() | self.train.poll()):
            self.timer.stop()

    def cancelJobs(self):
        self.superResolve.cancel()
        self.train.cancel()


class CLADESuperResolutionLogic(ScriptedLoadableModuleLogic):
    """Super-resolution without the GUI (scripts, batch mode, other modules).

    Example (Slicer's Python console)::

        import SampleData
        logic = slicer.util.getModuleLogic("CLADESuperResolution")
        inputNode = SampleData.downloadSample("CLADEPelvisT2Thick")
        outputNode = logic.process(inputNode, model="mri", stride=16)
        print(outputNode.GetName(), outputNode.GetImageData().GetDimensions())
    """

    def getParameterNode(self):
        return CLADESuperResolutionParameterNode(super().getParameterNode())

    def manifestPath(self):
        return CoreLocator.coreDir() / "models" / "manifest.json"

    def process(self, inputVolume, outputVolume=None, progress=None, cancel=None, **settings):
        """Super-resolve ``inputVolume`` in this process and return the output volume node.

        Runs ``CLADE.pipeline.run`` (the same pipeline as ``clade super-resolve``).
        ``settings`` are ``SuperResolutionOptions`` fields (``model="mri"``, ``stride``,
        ``plane``, ``device``, ``tiling``, ``ensemble``, ``precision``, ``adaptSteps``).
        ``outputVolume`` None creates ``<input name>_CLADE``. The input node is not modified.
        ``progress(info)`` receives ``CLADE.pipeline.PipelineProgress`` (``stage``,
        ``fraction``, ``eta_seconds``); ``cancel()`` returning True stops the run
        (``CLADE.errors.Cancelled`` is raised, no node is made).
        """
        options = SuperResolutionOptions(**settings)
        outputNode, result = superResolveInProcess(
            inputVolume, options, outputVolume, progress, cancel
        )
        logging.info("CLADE: %s", result.summary())
        return outputNode


class CLADESuperResolutionTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: sample -> shipped model at a coarse stride -> output geometry."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        if not torchAvailable():
            # The extension build machines have no PyTorch (it comes from the PyTorch extension
            # at first use): there is nothing to run the network with, which is not a failure.
            self.delayDisplay("Skipped: PyTorch is not installed (install the PyTorch extension).")
            return
        self.setUp()
        self.test_SuperResolveSample()
        self.setUp()
        self.test_WorkerJobOnSample()

    def test_SuperResolveSample(self):
        SelfTest.superResolveSample(self, CLADESuperResolutionLogic(), registerSampleData)

    def test_WorkerJobOnSample(self):
        SelfTest.workerJobOnSample(self, CLADESuperResolutionLogic(), registerSampleData)
