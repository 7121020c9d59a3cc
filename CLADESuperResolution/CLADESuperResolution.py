"""CLADE Super-Resolution: Slicer module (thin wiring; the logic is in CLADESuperResolutionLib).

Super-resolves thick-slice MRI/CT volumes with a CLADE network and trains new networks, both in a
worker process so Slicer stays responsive. Everything testable lives in
``CLADESuperResolutionLib`` (pytest with slicer-core); this file only connects it to Qt.
"""

import enum
import logging
import os
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from CLADESuperResolutionLib import CoreLocator, ModelCatalog, SampleVolume
from CLADESuperResolutionLib.Dependencies import (
    PYTORCH_EXTENSION_MISSING,
    TORCH_REQUIREMENT,
    DependencyInstaller,
    isInstalled,
)
from CLADESuperResolutionLib.Devices import (
    describeDevices,
    describePackages,
    probeCommand,
    probeResult,
)
from CLADESuperResolutionLib.InputValidation import validateInputVolume, validateTrainingInputs
from CLADESuperResolutionLib.SuperResolutionLogic import (
    SuperResolutionJob,
    SuperResolutionOptions,
    pythonExecutable,
    superResolveInProcess,
)
from CLADESuperResolutionLib.Training import PRESETS, TrainingJob, TrainingOptions
from CLADESuperResolutionLib.WorkerProcess import WorkerProcess
from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Minimum, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: QSettings key holding the model files trained from this module (newest first).
TRAINED_MODELS_SETTING = "CLADE/TrainedModels"
#: Milliseconds between two drains of a worker's events.
POLL_INTERVAL_MS = 200
#: Documentation of the extension (README section); the repository URL lives in CMakeLists.txt.
DOCUMENTATION_URL = "https://github.com/clade-sr/SlicerCLADE#3d-slicer"

#: Parameter-node fields kept in sync with their widget by this module, not by connectGui:
#: Slicer's parameterNodeWrapper binds a ctkPathLineEdit only to a ``pathlib.Path`` field, which
#: cannot be empty (``Path("")`` is ``"."``, shown as "." in the field), so paths are ``str``;
#: the model list is filled at run time (shipped + trained models), so its choice is a ``str``.
MANUAL_FIELDS = {
    "model": "modelSelector",
    "modelFile": "modelFileSelector",
    "trainingFolder": "trainingFolderSelector",
    "trainingOutputFolder": "trainingOutputFolderSelector",
}


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
    import SampleData

    try:
        coreDir = CoreLocator.coreDir()
    except RuntimeError as error:
        logging.warning(str(error))
        return
    iconsDir = Path(__file__).resolve().parent / "Resources" / "Icons"
    arguments = SampleVolume.sampleDataSourceArguments(coreDir, iconsDir)
    if arguments is None:
        return
    SampleData.SampleDataLogic.registerCustomSampleDataSource(**arguments)


def torchAvailable():
    """PyTorch importable (checked without importing it)."""
    return isInstalled("torch")


class LRPlane(enum.Enum):
    """Low-resolution plane the network runs in (values are the core's names)."""

    AUTO = "auto"
    BOTH = "both"
    SAGITTAL = "sagittal"
    CORONAL = "coronal"
    AXIAL = "axial"

    def label(self):
        return {"auto": "Auto (sagittal when possible)", "both": "Both LR planes (average)"}.get(
            self.value, self.value.capitalize()
        )


class Device(enum.Enum):
    """Compute device (values are the core's names)."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"

    def label(self):
        return {"auto": "Auto", "cpu": "CPU", "cuda": "CUDA GPU"}[self.value]


class Tiling(enum.Enum):
    """How the network covers each slice (values are the core's names)."""

    AUTO = "auto"
    SLICES = "slices"
    PATCHES = "patches"

    def label(self):
        return {
            "auto": "Auto (model default)",
            "slices": "Whole slices (fast)",
            "patches": "Overlapping patches (paper)",
        }[self.value]


class Ensemble(enum.Enum):
    """Test-time ensemble (values are the core's names)."""

    AUTO = "auto"
    NONE = "none"
    FLIPS2 = "flips2"
    FLIPS = "flips"

    def label(self):
        return {
            "auto": "Auto (model default)",
            "none": "None",
            "flips2": "Left-right flip (mean of 2)",
            "flips": "In-plane flips (mean of 4)",
        }[self.value]


class Precision(enum.Enum):
    """Arithmetic of the network (values are the core's names)."""

    AUTO = "auto"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"

    def label(self):
        return {
            "auto": "Auto (bfloat16 where supported)",
            "float32": "float32",
            "bfloat16": "bfloat16",
        }[self.value]


class Preset(enum.Enum):
    """Training preset (values are the core's names)."""

    MRI = "mri"
    CT = "ct"

    def label(self):
        return self.name


@parameterNodeWrapper
class CLADESuperResolutionParameterNode:
    """Module state, saved with the scene. Bound to the .ui through SlicerParameterName."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    model: str = ""  # shipped model name or model file path; "" = the first shipped model
    modelFile: str = ""
    adaptSteps: Annotated[int, WithinRange(0, 5000)] = 0  # 0: no adaptation to the volume
    plane: LRPlane = LRPlane.AUTO
    device: Device = Device.AUTO
    tiling: Tiling = Tiling.AUTO
    stride: Annotated[int, WithinRange(0, 32)] = 0  # patches only; 0: the model's default
    ensemble: Ensemble = Ensemble.AUTO
    precision: Precision = Precision.AUTO
    trainingFolder: str = ""
    preset: Preset = Preset.MRI
    lambdaCyc: Annotated[float, Minimum(0.0)] = 1.0
    lambdaIdent: Annotated[float, Minimum(0.0)] = 1.0
    lambdaGmap: Annotated[float, Minimum(0.0)] = 5.0
    epochs: Annotated[int, WithinRange(1, 1000)] = 10
    batchSize: Annotated[int, WithinRange(1, 4096)] = 4
    patchesPerSlice: Annotated[int, WithinRange(1, 64)] = 4
    validationVolume: vtkMRMLScalarVolumeNode
    trainingOutputFolder: str = ""


class CLADESuperResolutionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Qt wiring: parameter node, buttons that turn into Cancel, timers draining the workers."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.job = None
        self.trainingJob = None
        self.deviceProbe = None
        self.deviceInfo = None
        self.plotNodes = None
        self._lastPreset = None
        self._shownLogLines = 0
        self._comparison = None
        #: Outcome of the last run, shown under the button while nothing needs fixing.
        self.runMessage = ""
        self.trainingMessage = ""
        self.modelChoices = []
        self.shippedNames = []
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.timeout.connect(self.onTimer)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/CLADESuperResolution.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = CLADESuperResolutionLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.reinstallTorchButton.connect("clicked(bool)", self.onReinstallTorch)
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.trainingVolumesSelector.connect("checkedNodesChanged()", self.updateButtons)
        self.ui.deviceSelector.connect("currentIndexChanged(int)", self.updateDeviceInfo)
        self.ui.fadeSlider.connect("valueChanged(double)", self.onFadeChanged)
        for field, widgetName in MANUAL_FIELDS.items():
            if widgetName.endswith("FileSelector") or widgetName.endswith("FolderSelector"):
                getattr(self.ui, widgetName).connect(
                    "currentPathChanged(QString)",
                    lambda path, field=field: self.onPathChanged(field, path),
                )
        self.ui.progressBar.hide()
        self.ui.trainingProgressBar.hide()
        self.ui.compareFrame.hide()
        self.refreshModels()
        self.initializeParameterNode()

    def cleanup(self):
        self.cancelJobs()
        if self.deviceProbe is not None:
            self.deviceProbe.cancel()
        self.timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self.startDeviceProbe()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified
            )

    def onSceneStartClose(self, caller, event):
        # The jobs also watch the scene; cancelling here as well resets the buttons at once.
        self.cancelJobs()
        self._comparison = None
        self.ui.compareFrame.hide()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and validateInputVolume(first)[0]:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified
            )
        self._parameterNode = parameterNode
        if self._parameterNode:
            # Remembered so that only a user's change of preset resets the loss weights, not
            # opening a scene saved with custom weights.
            self._lastPreset = self._parameterNode.preset
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified
            )
        self.onParameterNodeModified()

    def onParameterNodeModified(self, caller=None, event=None):
        """The fields connectGui does not bind (MANUAL_FIELDS) follow the node, then the buttons."""
        if self._parameterNode:
            for field, widgetName in MANUAL_FIELDS.items():
                widget = getattr(self.ui, widgetName)
                value = getattr(self._parameterNode, field)
                if field == "model":
                    self.selectModel(value)
                elif widget.currentPath != value:
                    widget.currentPath = value
        self.updateButtons()

    def onPathChanged(self, field, path):
        if self._parameterNode and getattr(self._parameterNode, field) != path:
            setattr(self._parameterNode, field, path)

    # -- models and devices ----------------------------------------------------------------------

    def trainedModelPaths(self):
        value = qt.QSettings().value(TRAINED_MODELS_SETTING) or []
        # QSettings gives back a one-element list as a plain string.
        return [value] if isinstance(value, str) else [p for p in value if p]

    def refreshModels(self, select=None):
        """Fill the model list: shipped models, trained models, then 'Model file...'."""
        manifest = self.logic.manifestPath()
        self.modelChoices = ModelCatalog.modelChoices(manifest, self.trainedModelPaths())
        self.shippedNames = [c.value for c in self.modelChoices if c.kind == ModelCatalog.SHIPPED]
        combo = self.ui.modelSelector
        combo.blockSignals(True)
        combo.clear()
        for choice in self.modelChoices:
            combo.addItem(choice.label)
        combo.addItem("Model file...")
        combo.blockSignals(False)
        if select is not None and self._parameterNode:
            self._parameterNode.model = str(select)  # selects it through the node
        else:
            self.selectModel(self._parameterNode.model if self._parameterNode else "")

    def selectModel(self, value):
        """Show ``value`` (a shipped name or model path; "" = the first) in the model list."""
        combo = self.ui.modelSelector
        values = [c.value for c in self.modelChoices]
        if value in values:
            index = values.index(value)
        elif value:
            index = len(self.modelChoices)  # "Model file...": the path is in modelFile
        else:
            index = 0 if self.modelChoices else len(self.modelChoices)
        if combo.currentIndex != index:
            combo.blockSignals(True)
            combo.currentIndex = index
            combo.blockSignals(False)
        self.updateModelWidgets()

    def onModelChanged(self, index=None):
        """The user picked an entry: the node remembers it (saved with the scene)."""
        index = self.ui.modelSelector.currentIndex
        if self._parameterNode:
            if 0 <= index < len(self.modelChoices):
                self._parameterNode.model = self.modelChoices[index].value
            else:
                self._parameterNode.model = self._parameterNode.modelFile or ModelCatalog.FILE
        self.updateModelWidgets()

    def updateModelWidgets(self):
        self.ui.modelFileSelector.setVisible(
            self.ui.modelSelector.currentIndex >= len(self.modelChoices)
        )
        choice = self.currentModelChoice() if self._parameterNode else None
        stride = None
        if choice is not None and choice.kind == ModelCatalog.SHIPPED:
            stride = self.logic.shippedDefaultStride(choice.value)
        self.ui.strideSpinBox.specialValueText = (
            f"model default ({stride})" if stride else "model default"
        )
        self.updateButtons()

    def currentModelChoice(self):
        index = self.ui.modelSelector.currentIndex
        if 0 <= index < len(self.modelChoices):
            return self.modelChoices[index]
        path = self._parameterNode.modelFile if self._parameterNode else ""
        if not path:
            return None
        return ModelCatalog.ModelChoice(ModelCatalog.FILE, path, path)

    def startDeviceProbe(self, refresh=False):
        """Ask a worker process what torch sees (never imported in Slicer's own process)."""
        if self.deviceProbe is not None or (self.deviceInfo is not None and not refresh):
            self.updateDeviceInfo()
            return
        self.deviceInfo = None
        if torchAvailable():
            try:
                self.deviceProbe = WorkerProcess(probeCommand(pythonExecutable()))
                self.deviceProbe.start()
                self.timer.start()
            except OSError as error:
                logging.warning("CLADE: could not check the PyTorch devices: %s", error)
                self.deviceProbe = None
        self.updateDeviceInfo()

    def onDeviceProbeEvents(self):
        events = self.deviceProbe.drainEvents()
        info = probeResult(events)
        if info is not None:
            self.deviceInfo = info
        if self.deviceProbe.finished:
            self.deviceProbe = None
            if self.deviceInfo is None:
                self.deviceInfo = {"torch": None, "error": "the check did not finish"}
        self.updateDeviceInfo()

    def updateDeviceInfo(self, index=None):
        """Show the GPU name and memory for the selected device, and the PyTorch status."""
        labels = describeDevices(self.deviceInfo)
        # The combo box lists the Device members in order (filled by connectGui); read it rather
        # than the parameter node, which may be updated after this slot runs.
        devices = list(Device)
        current = self.ui.deviceSelector.currentIndex
        value = devices[current].value if 0 <= current < len(devices) else "auto"
        self.ui.deviceInfoLabel.text = labels.get(value, "")
        self.ui.packagesLabel.text = describePackages(self.deviceInfo, torchAvailable())

    # -- validation ------------------------------------------------------------------------------

    def updateButtons(self, caller=None, event=None):
        """Enable the buttons only when the run can start; otherwise say why next to them.

        Runs on every parameter change (every keystroke in a path field): it only reads.
        """
        if not self._parameterNode:
            return
        if self._parameterNode.preset != self._lastPreset:
            self._lastPreset = self._parameterNode.preset
            # A scene being loaded brings its own (maybe custom) loss weights with its preset.
            if not slicer.mrmlScene.IsImporting():
                self.applyPresetDefaults()
        self.ui.strideSpinBox.enabled = self._parameterNode.tiling != Tiling.SLICES
        if self.job is None:
            ok, why = validateInputVolume(self._parameterNode.inputVolume)
            if ok:
                ok, why = ModelCatalog.validateModelChoice(
                    self.currentModelChoice(), self.shippedNames
                )
            if ok and self._parameterNode.outputVolume is self._parameterNode.inputVolume:
                ok, why = False, "Choose an output volume other than the input (the input is kept)."
            self.ui.applyButton.enabled = ok
            self.ui.applyButton.toolTip = why or "Super-resolve the input volume."
            self.ui.statusLabel.text = why or self.runMessage
        if self.trainingJob is None:
            ok, why = validateTrainingInputs(
                self.ui.trainingVolumesSelector.checkedNodes(),
                self._parameterNode.trainingFolder,
                self._parameterNode.trainingOutputFolder,
                self._parameterNode.validationVolume,
            )
            self.ui.trainButton.enabled = ok
            self.ui.trainButton.toolTip = why or "Train a new model."
            self.ui.trainingStatusLabel.text = why or self.trainingMessage

    # -- super-resolve ---------------------------------------------------------------------------

    def dependencyInstaller(self):
        return DependencyInstaller(
            confirm=slicer.util.confirmOkCancelDisplay,
            installTorch=installTorchWithPyTorchUtils,
            pipInstall=slicer.util.pip_install,
            canInstallTorch=pyTorchUtilsAvailable,
            busy=slicer.util.WaitCursor,
        )

    def ensureDependencies(self):
        ok, why = self.dependencyInstaller().ensure()
        if not ok:
            slicer.util.warningDisplay(why)  # the only message: the installer shows none
        self.startDeviceProbe(refresh=True)
        return ok

    def onReinstallTorch(self):
        """Packages section: reinstall PyTorch through the PyTorch extension."""
        if not pyTorchUtilsAvailable():
            slicer.util.warningDisplay(PYTORCH_EXTENSION_MISSING)
            return
        if not slicer.util.confirmOkCancelDisplay(
            "Reinstall PyTorch with the PyTorch extension? It picks the build that matches "
            "this computer's GPU driver; restart Slicer afterwards."
        ):
            return
        import PyTorchUtils

        logic = PyTorchUtils.PyTorchUtilsLogic()
        with slicer.util.tryWithErrorDisplay("PyTorch could not be reinstalled.", waitCursor=True):
            if torchAvailable():
                logic.uninstallTorch()
            logic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT)
        self.startDeviceProbe(refresh=True)

    def startJob(self, makeJob, failureTitle):
        """Make and start a job; None (after one error box) when either step fails.

        The caller's button is reset because nothing is assigned until the job runs (Slicer's
        tryWithErrorDisplay re-raises, so code after it would never run on a failure).
        """
        try:
            with slicer.util.WaitCursor():
                job = makeJob()
                job.start()
        except Exception as error:
            logging.exception("CLADE: %s", failureTitle)
            slicer.util.errorDisplay(f"{failureTitle}\n\n{error}")
            return None
        return job

    def onApplyButton(self):
        if self.job is not None:
            self.job.cancel()
            self.onJobEvents()
            return
        if not self.ensureDependencies():
            return
        p = self._parameterNode
        options = SuperResolutionOptions(
            model=self.currentModelChoice().argument,
            stride=p.stride or None,
            plane=p.plane.value,
            device=p.device.value,
            adaptSteps=p.adaptSteps,
            tiling=p.tiling.value,
            ensemble=p.ensemble.value,
            precision=p.precision.value,
        )
        self.job = self.startJob(
            lambda: SuperResolutionJob(
                p.inputVolume, options, outputNode=p.outputVolume, tempRoot=slicer.app.temporaryPath
            ),
            "Could not start the super-resolution.",
        )
        if self.job is None:
            self.updateButtons()
            return
        self.ui.applyButton.text = "Cancel"
        self.ui.applyButton.enabled = True
        self.ui.progressBar.value = 0
        self.ui.progressBar.format = "Starting (loading PyTorch and the model): %p%"
        self.ui.progressBar.show()
        self.ui.logText.clear()
        self._shownLogLines = 0
        self.runMessage = ""
        self.ui.statusLabel.text = ""
        self.timer.start()

    def onTimer(self):
        if self.job is not None:
            self.onJobEvents()
        if self.trainingJob is not None:
            self.onTrainingEvents()
        if self.deviceProbe is not None:
            self.onDeviceProbeEvents()
        if self.job is None and self.trainingJob is None and self.deviceProbe is None:
            self.timer.stop()

    def onJobEvents(self):
        job = self.job
        job.poll()
        for line in job.logLines[self._shownLogLines :]:
            self.ui.logText.appendPlainText(line)
        self._shownLogLines = len(job.logLines)
        self.ui.progressBar.value = int(100 * job.fraction)
        if job.stageLabel:
            eta = job.etaSeconds
            left = f" (about {formatSeconds(eta)} left)" if eta else ""
            self.ui.progressBar.format = f"{job.stageLabel}: %p%{left}"
        if not job.done:
            return
        self.job = None
        self.ui.applyButton.text = "Super-resolve"
        self.ui.progressBar.hide()
        if job.state == job.SUCCEEDED:
            self.runMessage = job.summary or "Done."
            self._parameterNode.outputVolume = job.outputNode
            self.showComparison(job.inputNode, job.outputNode)
        elif job.state == job.CANCELLED:
            self.runMessage = job.errorMessage
        else:
            self.runMessage = "Failed: see the log and the error message."
            slicer.util.errorDisplay(job.errorMessage)
        self.updateButtons()

    def showComparison(self, inputNode, outputNode):
        """Input below, output above in every slice view; the slider fades between them."""
        self._comparison = (inputNode.GetID(), outputNode.GetID())
        slicer.util.setSliceViewerLayers(
            background=inputNode, foreground=outputNode, foregroundOpacity=1.0, fit=True
        )
        self.ui.fadeSlider.value = 1.0
        self.ui.compareFrame.show()

    def onFadeChanged(self, value):
        if self._comparison is not None:
            slicer.util.setSliceViewerLayers(foregroundOpacity=float(value))

    # -- training --------------------------------------------------------------------------------

    def applyPresetDefaults(self):
        """Set the loss weights and batch size of the chosen preset (the paper's grid search)."""
        preset = PRESETS[self._parameterNode.preset.value]
        with slicer.util.NodeModify(self._parameterNode):
            self._parameterNode.lambdaCyc = preset["lambdaCyc"]
            self._parameterNode.lambdaIdent = preset["lambdaIdent"]
            self._parameterNode.lambdaGmap = preset["lambdaGmap"]
            self._parameterNode.batchSize = preset["batchSize"]

    def onTrainButton(self):
        if self.trainingJob is not None:
            self.trainingJob.cancel()
            self.onTrainingEvents()
            return
        if not self.ensureDependencies():
            return
        p = self._parameterNode
        options = TrainingOptions(
            preset=p.preset.value,
            epochs=p.epochs,
            batchSize=p.batchSize,
            lambdaCyc=p.lambdaCyc,
            lambdaIdent=p.lambdaIdent,
            lambdaGmap=p.lambdaGmap,
            patchesPerSlice=p.patchesPerSlice,
        )
        self.trainingJob = self.startJob(
            lambda: TrainingJob(
                self.ui.trainingVolumesSelector.checkedNodes(),
                p.trainingFolder,
                p.trainingOutputFolder,
                options,
                validationNode=p.validationVolume,
                tempRoot=slicer.app.temporaryPath,
            ),
            "Could not start the training.",
        )
        if self.trainingJob is None:
            self.updateButtons()
            return
        self.plotNodes = None
        self.trainingMessage = ""
        self.ui.trainButton.text = "Cancel training"
        self.ui.trainButton.enabled = True
        self.ui.trainingProgressBar.value = 0
        self.ui.trainingProgressBar.show()
        self.timer.start()

    def onTrainingEvents(self):
        job = self.trainingJob
        events = job.poll()
        if any(e.get("event") in ("step", "validation") for e in events):
            firstTime = self.plotNodes is None
            self.plotNodes = job.curves.updateNodes(slicer.mrmlScene, self.plotNodes)
            if firstTime:
                slicer.modules.plots.logic().ShowChartInLayout(self.plotNodes["chart"])
        curves = job.curves
        self.ui.trainingProgressBar.value = int(100 * curves.progress)
        eta = curves.etaSeconds
        self.ui.trainingProgressBar.format = (
            f"%p% (about {formatSeconds(eta)} left)" if eta else "%p%"
        )
        if curves.lastEpoch:
            speed = f", {curves.patchesPerSecond:.0f} patches/s" if curves.patchesPerSecond else ""
            self.ui.trainingStatusLabel.text = f"Epoch {curves.lastEpoch}{speed}"
        if not job.done:
            return
        self.trainingJob = None
        self.ui.trainButton.text = "Start training"
        self.ui.trainingProgressBar.hide()
        if job.state == job.SUCCEEDED and job.models:
            paths = [str(m) for m in job.models]
            previous = [p for p in self.trainedModelPaths() if p not in paths]
            qt.QSettings().setValue(TRAINED_MODELS_SETTING, paths + previous)
            self.trainingMessage = f"Done: {paths[0]} added to the model list."
            self.refreshModels(select=paths[0])
        elif job.state == job.SUCCEEDED:
            self.trainingMessage = "Training finished but exported no model file."
        elif job.state == job.CANCELLED:
            self.trainingMessage = job.errorMessage
        else:
            self.trainingMessage = "Training failed: see the error message."
            slicer.util.errorDisplay(job.errorMessage)
        self.updateButtons()

    def cancelJobs(self):
        for job in (self.job, self.trainingJob):
            if job is not None:
                job.cancel()
        if self.job is not None:
            self.onJobEvents()
        if self.trainingJob is not None:
            self.onTrainingEvents()


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


def formatSeconds(seconds):
    seconds = int(round(seconds or 0))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


class CLADESuperResolutionLogic(ScriptedLoadableModuleLogic):
    """Super-resolution without the GUI (scripts, batch mode, other modules).

    Example (Slicer's Python console)::

        import SampleData
        logic = slicer.util.getModuleLogic("CLADESuperResolution")
        inputNode = SampleData.downloadSample("CLADEPelvisT2Thick")
        outputNode = logic.process(inputNode, model="mri", stride=16)
        print(outputNode.GetName(), outputNode.GetImageData().GetDimensions())
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return CLADESuperResolutionParameterNode(super().getParameterNode())

    def manifestPath(self):
        return CoreLocator.coreDir() / "models" / "manifest.json"

    def shippedDefaultStride(self, name):
        for entry in ModelCatalog.shippedModels(self.manifestPath()):
            if entry.get("name") == name:
                return entry.get("default_stride")
        return None

    def process(
        self,
        inputVolume,
        outputVolume=None,
        model="mri",
        stride=None,
        plane="auto",
        device="auto",
        progress=None,
        cancel=None,
        tiling="auto",
        ensemble="auto",
        precision="auto",
        adaptSteps=0,
    ):
        """Super-resolve ``inputVolume`` in this process and return the output volume node.

        Runs ``CLADE.pipeline.run`` (the same pipeline as ``clade super-resolve``).
        ``outputVolume`` None creates ``<input name>_CLADE``. The input node is not modified.
        ``progress(info)`` receives ``CLADE.pipeline.PipelineProgress`` (``stage``,
        ``fraction``, ``eta_seconds``); ``cancel()`` returning True stops the run
        (``CLADE.errors.Cancelled`` is raised, no node is made).
        """
        options = SuperResolutionOptions(
            model=model,
            stride=stride,
            plane=plane,
            device=device,
            tiling=tiling,
            ensemble=ensemble,
            precision=precision,
            adaptSteps=adaptSteps,
        )
        outputNode, result = superResolveInProcess(
            inputVolume, options, outputVolume, progress=progress, cancel=cancel
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
            self.delayDisplay(
                "Skipped: PyTorch is not installed (install the PyTorch extension "
                "to run this test)."
            )
            return
        self.setUp()
        self.test_SuperResolveSample()
        self.setUp()
        self.test_WorkerJobOnSample()

    def _loadSample(self):
        import numpy as np

        coreDir = CoreLocator.coreDir()
        path = SampleVolume.samplePath(coreDir)
        self.assertTrue(path.is_file(), f"The sample volume is missing: {path}")
        registerSampleData()
        import SampleData

        inputNode = SampleData.downloadSample(SampleVolume.SAMPLE_NAME)
        self.assertIsNotNone(inputNode)
        return inputNode, np.array(slicer.util.arrayFromVolume(inputNode)), self._matrix(inputNode)

    @staticmethod
    def _matrix(node):
        import numpy as np

        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])

    def _checkOutput(self, inputNode, inputArray, inputMatrix, outputNode):
        import numpy as np

        from CLADE.geometry import detect_thick_axis

        # The input is untouched.
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(inputNode), inputArray)
        np.testing.assert_allclose(self._matrix(inputNode), inputMatrix)
        # The output follows the isotropic-grid rule: thick extent kept, fine spacing, same axes.
        spacing = np.array(inputNode.GetSpacing())
        axis = detect_thick_axis(tuple(spacing))
        fine = min(s for i, s in enumerate(spacing) if i != axis)
        outSpacing = np.array(outputNode.GetSpacing())
        inDims = inputNode.GetImageData().GetDimensions()
        outDims = outputNode.GetImageData().GetDimensions()
        expected = max(1, round(inDims[axis] * spacing[axis] / fine))
        self.assertEqual(outDims[axis], expected)
        self.assertAlmostEqual(outDims[axis] * outSpacing[axis], inDims[axis] * spacing[axis], 3)
        for i in range(3):
            if i != axis:
                self.assertEqual(outDims[i], inDims[i])
        outMatrix = self._matrix(outputNode)
        inDirections = inputMatrix[:3, :3] / spacing
        np.testing.assert_allclose(outMatrix[:3, :3] / outSpacing, inDirections, atol=1e-6)
        self.assertTrue(np.isfinite(slicer.util.arrayFromVolume(outputNode)).all())

    def test_SuperResolveSample(self):
        self.delayDisplay("Loading the sample")
        inputNode, inputArray, inputMatrix = self._loadSample()
        logic = CLADESuperResolutionLogic()
        names = [e["name"] for e in ModelCatalog.shippedModels(logic.manifestPath())]
        self.assertTrue(names, "No shipped model is installed.")
        model = "mri" if "mri" in names else names[0]
        self.delayDisplay(f"Super-resolving with the shipped model {model!r} (whole slices)")
        outputNode = logic.process(inputNode, model=model, tiling="slices", ensemble="none")
        self._checkOutput(inputNode, inputArray, inputMatrix, outputNode)
        self.delayDisplay("Test passed")

    def test_WorkerJobOnSample(self):
        inputNode, inputArray, inputMatrix = self._loadSample()
        names = [
            e["name"]
            for e in ModelCatalog.shippedModels(CLADESuperResolutionLogic().manifestPath())
        ]
        self.assertTrue(names, "No shipped model is installed.")
        self.delayDisplay("Super-resolving in a worker process")
        job = SuperResolutionJob(
            inputNode,
            SuperResolutionOptions(model=names[0], tiling="slices", ensemble="none"),
            tempRoot=slicer.app.temporaryPath,
        )
        job.start()
        # Sleeps between polls (a bare poll loop would spin one core at 100 %).
        job.wait(timeout=600, processEvents=slicer.app.processEvents)
        self.assertEqual(job.state, job.SUCCEEDED, job.errorMessage)
        self._checkOutput(inputNode, inputArray, inputMatrix, job.outputNode)
        self.assertFalse(os.path.exists(job.tempDir))
        self.delayDisplay("Test passed")
