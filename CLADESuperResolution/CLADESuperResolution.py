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
from CLADESuperResolutionLib.Dependencies import DependencyInstaller, isInstalled
from CLADESuperResolutionLib.Devices import describeDevices
from CLADESuperResolutionLib.InputValidation import validateInputVolume, validateTrainingInputs
from CLADESuperResolutionLib.SuperResolutionLogic import (
    SuperResolutionJob,
    SuperResolutionOptions,
    superResolveInProcess,
)
from CLADESuperResolutionLib.Training import PRESETS, TrainingJob, TrainingOptions
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
            'volumes. See the <a href="https://github.com/clade-sr/CLADE">documentation</a>.'
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


class LRPlane(enum.Enum):
    """Low-resolution plane the network runs in (values are the core's names)."""

    AUTO = "auto"
    BOTH = "both"
    SAGITTAL = "sagittal"
    CORONAL = "coronal"
    AXIAL = "axial"

    def label(self):
        return {"auto": "Auto (sagittal when possible)", "both": "Both LR planes (average)"}.get(
            self.value, self.value.capitalize())


class Device(enum.Enum):
    """Compute device (values are the core's names)."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"

    def label(self):
        return {"auto": "Auto", "cpu": "CPU", "cuda": "CUDA GPU"}[self.value]


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
    modelFile: Path
    stride: Annotated[int, WithinRange(0, 32)] = 0  # 0: the model's default
    adaptSteps: Annotated[int, WithinRange(0, 5000)] = 0  # 0: no adaptation to the volume
    plane: LRPlane = LRPlane.AUTO
    device: Device = Device.AUTO
    trainingFolder: Path
    preset: Preset = Preset.MRI
    lambdaCyc: Annotated[float, Minimum(0.0)] = 1.0
    lambdaIdent: Annotated[float, Minimum(0.0)] = 1.0
    lambdaGmap: Annotated[float, Minimum(0.0)] = 5.0
    epochs: Annotated[int, WithinRange(1, 1000)] = 10
    batchSize: Annotated[int, WithinRange(1, 4096)] = 4
    patchesPerSlice: Annotated[int, WithinRange(1, 64)] = 4
    validationVolume: vtkMRMLScalarVolumeNode
    trainingOutputFolder: Path


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
        self.plotNodes = None
        self._lastPreset = None
        self._deviceLabels = None
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
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.trainingVolumesSelector.connect("checkedNodesChanged()", self.updateButtons)
        self.ui.deviceSelector.connect("currentIndexChanged(int)", self.updateDeviceInfo)
        self.ui.progressBar.hide()
        self.ui.trainingProgressBar.hide()
        self.refreshModels()
        self.initializeParameterNode()

    def cleanup(self):
        self.cancelJobs()
        self.timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self.updateDeviceInfo()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def onSceneStartClose(self, caller, event):
        # The jobs also watch the scene; cancelling here as well resets the buttons at once.
        self.cancelJobs()
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
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            # Remembered so that only a user's change of preset resets the loss weights, not
            # opening a scene saved with custom weights.
            self._lastPreset = self._parameterNode.preset
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self.updateButtons()

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
        index = 0
        if select is not None:
            index = next((i for i, c in enumerate(self.modelChoices) if c.value == str(select)), 0)
        combo.currentIndex = index if self.modelChoices else combo.count - 1
        combo.blockSignals(False)
        self.onModelChanged()

    def currentModelChoice(self):
        index = self.ui.modelSelector.currentIndex
        if 0 <= index < len(self.modelChoices):
            return self.modelChoices[index]
        path = str(self._parameterNode.modelFile) if self._parameterNode and self._parameterNode.modelFile else ""
        if not path or path == ".":
            return None
        return ModelCatalog.ModelChoice(ModelCatalog.FILE, path, path)

    def onModelChanged(self, index=None):
        self.ui.modelFileSelector.setVisible(self.ui.modelSelector.currentIndex >= len(self.modelChoices))
        choice = self.currentModelChoice() if self._parameterNode else None
        if choice is not None and choice.kind == ModelCatalog.SHIPPED:
            stride = self.logic.shippedDefaultStride(choice.value)
            self.ui.strideSpinBox.specialValueText = f"model default ({stride})" if stride else "model default"
        else:
            self.ui.strideSpinBox.specialValueText = "model default"
        self.updateButtons()

    def updateDeviceInfo(self, index=None, refresh=False):
        """Show the GPU name and memory for the selected device."""
        if self._deviceLabels is None or refresh:
            torchModule = None
            if isInstalled("torch"):
                # Importing torch costs a second or two: only once it is installed, and once.
                try:
                    import torch as torchModule
                except Exception:
                    torchModule = None
            self._deviceLabels = describeDevices(torchModule)
        # The combo box lists the Device members in order (filled by connectGui); read it rather
        # than the parameter node, which may be updated after this slot runs.
        devices = list(Device)
        current = self.ui.deviceSelector.currentIndex
        value = devices[current].value if 0 <= current < len(devices) else "auto"
        self.ui.deviceInfoLabel.text = self._deviceLabels.get(value, "")

    # -- validation ------------------------------------------------------------------------------

    def updateButtons(self, caller=None, event=None):
        """Enable the buttons only when the run can start; otherwise say why next to them."""
        if not self._parameterNode:
            return
        if self._parameterNode.preset != self._lastPreset:
            self._lastPreset = self._parameterNode.preset
            self.applyPresetDefaults()
        if self.job is None:
            ok, why = validateInputVolume(self._parameterNode.inputVolume)
            if ok:
                ok, why = ModelCatalog.validateModelChoice(self.currentModelChoice(), self.shippedNames)
            if ok and self._parameterNode.outputVolume is self._parameterNode.inputVolume:
                ok, why = False, "Choose an output volume other than the input (the input is kept)."
            self.ui.applyButton.enabled = ok
            self.ui.applyButton.toolTip = why or "Super-resolve the input volume."
            self.ui.statusLabel.text = why
        if self.trainingJob is None:
            folder = str(self._parameterNode.trainingFolder or "")
            outputFolder = str(self._parameterNode.trainingOutputFolder or "")
            ok, why = validateTrainingInputs(
                self.ui.trainingVolumesSelector.checkedNodes(), folder if folder != "." else "",
                outputFolder if outputFolder != "." else "", self._parameterNode.validationVolume)
            self.ui.trainButton.enabled = ok
            self.ui.trainButton.toolTip = why or "Train a new model."
            self.ui.trainingStatusLabel.text = why

    # -- super-resolve ---------------------------------------------------------------------------

    def ensureDependencies(self):
        installer = DependencyInstaller(
            confirm=slicer.util.confirmOkCancelDisplay,
            installTorch=installTorchWithPyTorchUtils,
            pipInstall=slicer.util.pip_install,
        )
        with slicer.util.WaitCursor():
            ok, why = installer.ensure()
        if not ok:
            slicer.util.warningDisplay(why)
        self.updateDeviceInfo(refresh=True)
        return ok

    def onApplyButton(self):
        if self.job is not None:
            self.job.cancel()
            self.onJobEvents()
            return
        if not self.ensureDependencies():
            return
        p = self._parameterNode
        options = SuperResolutionOptions(model=self.currentModelChoice().argument,
                                         stride=p.stride or None, plane=p.plane.value,
                                         device=p.device.value, adaptSteps=p.adaptSteps)
        with slicer.util.tryWithErrorDisplay("Could not start the super-resolution.", waitCursor=True):
            self.job = SuperResolutionJob(p.inputVolume, options, outputNode=p.outputVolume,
                                          tempRoot=slicer.app.temporaryPath)
            self.job.start()
        if self.job is None or self.job.state != SuperResolutionJob.RUNNING:
            self.job = None
            return
        self.ui.applyButton.text = "Cancel"
        self.ui.applyButton.enabled = True
        self.ui.progressBar.value = 0
        self.ui.progressBar.show()
        self.ui.statusLabel.text = "Starting (loading PyTorch and the model)..."
        self.timer.start()

    def onTimer(self):
        if self.job is not None:
            self.onJobEvents()
        if self.trainingJob is not None:
            self.onTrainingEvents()
        if self.job is None and self.trainingJob is None:
            self.timer.stop()

    def onJobEvents(self):
        job = self.job
        for event in job.poll():
            if event.get("event") == "log":
                logging.info("CLADE worker: %s", event.get("text", ""))
            elif event.get("event") == "started":
                self.ui.statusLabel.text = f"Running on {event.get('device')} with {event.get('model')}"
        self.ui.progressBar.value = int(100 * job.fraction)
        eta = job.etaSeconds
        stage = "Adapting to the volume: " if job.stage == "adapting" else ""
        self.ui.progressBar.format = (f"{stage}%p% (about {formatSeconds(eta)} left)" if eta
                                      else f"{stage}%p%")
        if not job.done:
            return
        self.job = None
        self.ui.applyButton.text = "Super-resolve"
        self.ui.progressBar.hide()
        if job.state == job.SUCCEEDED:
            self._parameterNode.outputVolume = job.outputNode
            slicer.util.setSliceViewerLayers(background=job.outputNode, fit=True)
            self.ui.statusLabel.text = "\n".join(filter(None, [job.summary or "Done.", job.adaptation]))
        elif job.state == job.CANCELLED:
            self.ui.statusLabel.text = job.errorMessage
        else:
            self.ui.statusLabel.text = "Failed: see the error message."
            slicer.util.errorDisplay(job.errorMessage)
        self.updateButtons()

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
        options = TrainingOptions(preset=p.preset.value, epochs=p.epochs, batchSize=p.batchSize,
                                  lambdaCyc=p.lambdaCyc, lambdaIdent=p.lambdaIdent,
                                  lambdaGmap=p.lambdaGmap, patchesPerSlice=p.patchesPerSlice)
        folder = str(p.trainingFolder or "")
        with slicer.util.tryWithErrorDisplay("Could not start the training.", waitCursor=True):
            self.trainingJob = TrainingJob(
                self.ui.trainingVolumesSelector.checkedNodes(), folder if folder != "." else "",
                p.trainingOutputFolder, options, validationNode=p.validationVolume,
                tempRoot=slicer.app.temporaryPath)
            self.trainingJob.start()
        if self.trainingJob is None or self.trainingJob.state != TrainingJob.RUNNING:
            self.trainingJob = None
            return
        self.plotNodes = None
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
        self.ui.trainingProgressBar.format = f"%p% (about {formatSeconds(eta)} left)" if eta else "%p%"
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
            self.refreshModels(select=paths[0])
            self.ui.trainingStatusLabel.text = f"Done: {paths[0]} added to the model list."
        elif job.state == job.SUCCEEDED:
            self.ui.trainingStatusLabel.text = "Training finished but exported no model file."
        elif job.state == job.CANCELLED:
            self.ui.trainingStatusLabel.text = job.errorMessage
        else:
            self.ui.trainingStatusLabel.text = "Training failed: see the error message."
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


def installTorchWithPyTorchUtils(requirement):
    """Install torch through the PyTorch extension; None when it is missing or the user declined."""
    try:
        import PyTorchUtils
    except ImportError:
        slicer.util.errorDisplay(
            "CLADE needs the PyTorch extension to install PyTorch: install 'PyTorch' from the "
            "Extensions Manager, restart Slicer and try again.")
        return None
    # Our own question was already asked (and answered yes) by DependencyInstaller.
    return PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                        torchVersionRequirement=requirement)


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

    def process(self, inputVolume, outputVolume=None, model="mri", stride=None, plane="auto",
                device="auto", progress=None, cancel=None):
        """Super-resolve ``inputVolume`` in this process and return the output volume node.

        ``outputVolume`` None creates ``<input name>_CLADE``. The input node is not modified.
        ``progress(info)`` receives ``info.fraction`` and ``info.eta_seconds``; ``cancel()``
        returning True stops the run (``CLADE.errors.Cancelled`` is raised, no node is made).
        """
        options = SuperResolutionOptions(model=model, stride=stride, plane=plane, device=device)
        outputNode, stats = superResolveInProcess(inputVolume, options, outputVolume,
                                                  progress=progress, cancel=cancel)
        logging.info("CLADE: %s", stats)
        return outputNode


class CLADESuperResolutionTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: sample -> shipped model at a coarse stride -> output geometry."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
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
        self.delayDisplay(f"Super-resolving with the shipped model {model!r} at stride 24")
        outputNode = logic.process(inputNode, model=model, stride=24)
        self._checkOutput(inputNode, inputArray, inputMatrix, outputNode)
        self.delayDisplay("Test passed")

    def test_WorkerJobOnSample(self):
        inputNode, inputArray, inputMatrix = self._loadSample()
        names = [e["name"] for e in ModelCatalog.shippedModels(CLADESuperResolutionLogic().manifestPath())]
        self.assertTrue(names, "No shipped model is installed.")
        self.delayDisplay("Super-resolving in a worker process")
        job = SuperResolutionJob(inputNode, SuperResolutionOptions(model=names[0], stride=24),
                                 tempRoot=slicer.app.temporaryPath)
        job.start()
        while not job.done:
            job.poll()
            slicer.app.processEvents()
        self.assertEqual(job.state, job.SUCCEEDED, job.errorMessage)
        self._checkOutput(inputNode, inputArray, inputMatrix, job.outputNode)
        self.assertFalse(os.path.exists(job.tempDir))
        self.delayDisplay("Test passed")
