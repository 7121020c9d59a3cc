"""The Super-resolve tab: model list, device check, Apply/Cancel, progress and the comparison.

The module widget (``CLADESuperResolution.py``) owns the parameter node, the timer and the
shared helpers (dependencies, job start); this class is the tab's behaviour, reached through
that widget (``host``). Sections, in the order of the tab: models, devices, the Apply button's
state, the run, the result.

No Qt import here: the widget passes what the tab needs, so the tab runs under pytest with
stand-in widgets on the real MRML scene.
"""

from __future__ import annotations

import logging

import slicer

from . import ErrorMapDisplay, ModelCatalog, PackagesSection
from .Dependencies import isInstalled
from .Devices import describeDevices, describePackages, probeCommand, probeResult
from .InputValidation import validateInputVolume
from .Parameters import Device, Tiling
from .SuperResolutionLogic import SuperResolutionOptions, pythonExecutable
from .Tab import Tab
from .WorkerProcess import WorkerProcess, formatSeconds


class SuperResolveTab(Tab):
    """Behaviour of the Super-resolve tab.

    :param host: the module widget (``ui``, ``parameterNode``, ``logic``, ``timer``,
        ``ensureDependencies()``, ``startJob()``, ``updateButtons()``)
    :param makeJob: ``makeJob(inputNode, options, outputNode=, tempRoot=)`` -> a job
        (``SuperResolutionJob``; tests pass stand-in workers through it)
    :param settings: ``settings()`` -> a QSettings-like object (the trained models' list)
    """

    def __init__(self, host, makeJob, settings):
        super().__init__(host, makeJob, settings)
        self.deviceProbe = None
        self.deviceInfo = None
        self.modelChoices = []
        self.shippedNames = []
        self.runMessage = ""  # outcome of the last run, shown while nothing needs fixing
        self.lastOutputNode = None
        self._shownLogLines = 0
        self._comparison = None
        self._errorMap = None  # (result, map) node IDs while the map is the overlay

    def connectSignals(self):
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.deviceSelector.connect("currentIndexChanged(int)", self.updateDeviceInfo)
        self.ui.fadeSlider.connect("valueChanged(double)", self.onFadeChanged)
        self.ui.errorOpacitySlider.connect("valueChanged(double)", self.onErrorOpacityChanged)
        self.ui.progressBar.hide()
        self.ui.compareFrame.hide()

    def onSceneStartClose(self):
        # A run needs its input node: it stops (its job watches the scene too; cancelling here
        # resets the button at once).
        self.cancel(probe=False)
        self._comparison = self._errorMap = None
        self.ui.compareFrame.hide()

    def poll(self) -> bool:
        """The timer's tick: drain the run and the device check; True while either is busy."""
        if self.job is not None:
            self.onJobEvents()
        if self.deviceProbe is not None:
            self.onDeviceProbeEvents()
        return self.job is not None or self.deviceProbe is not None

    def cancel(self, probe=True):
        if self.job is not None:
            self.job.cancel()
            self.onJobEvents()
        if probe and self.deviceProbe is not None:
            self.deviceProbe.cancel()

    # -- models ----------------------------------------------------------------------------------

    def refreshModels(self, select=None):
        """Fill the model list: shipped models, trained models, then 'Model file...'."""
        manifest = self.host.logic.manifestPath()
        trained = ModelCatalog.trainedModelPaths(self.settings())
        self.modelChoices = ModelCatalog.modelChoices(manifest, trained)
        self.shippedNames = [c.value for c in self.modelChoices if c.kind == ModelCatalog.SHIPPED]
        combo = self.ui.modelSelector
        combo.blockSignals(True)
        combo.clear()
        for choice in self.modelChoices:
            combo.addItem(choice.label)
        combo.addItem("Model file...")
        combo.blockSignals(False)
        p = self.parameterNode
        if select is not None and p:
            p.model = str(select)  # selects it through the node
        else:
            self.selectModel(p.model if p else "")

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
        p = self.parameterNode
        if p:
            if 0 <= index < len(self.modelChoices):
                p.model = self.modelChoices[index].value
            else:
                p.model = p.modelFile or ModelCatalog.FILE
        self.updateModelWidgets()

    def updateModelWidgets(self):
        self.ui.modelFileSelector.setVisible(
            self.ui.modelSelector.currentIndex >= len(self.modelChoices)
        )
        choice = self.currentModelChoice() if self.parameterNode else None
        stride = None
        if choice is not None and choice.kind == ModelCatalog.SHIPPED:
            stride = ModelCatalog.shippedDefaultStride(self.host.logic.manifestPath(), choice.value)
        self.ui.strideSpinBox.specialValueText = (
            f"model default ({stride})" if stride else "model default"
        )
        self.host.updateButtons()

    def currentModelChoice(self):
        index = self.ui.modelSelector.currentIndex
        if 0 <= index < len(self.modelChoices):
            return self.modelChoices[index]
        path = self.parameterNode.modelFile if self.parameterNode else ""
        if not path:
            return None
        return ModelCatalog.ModelChoice(ModelCatalog.FILE, path, path)

    # -- devices ---------------------------------------------------------------------------------

    def startDeviceProbe(self, refresh=False):
        """Ask a worker process what torch sees (CLADE never imports it in Slicer's process)."""
        if self.deviceProbe is not None or (self.deviceInfo is not None and not refresh):
            self.updateDeviceInfo()
            return
        self.deviceInfo = None
        if isInstalled("torch"):
            try:
                self.deviceProbe = WorkerProcess(probeCommand(pythonExecutable()))
                self.deviceProbe.start()
                self.host.timer.start()
            except OSError as error:
                logging.warning("CLADE: could not check the PyTorch devices: %s", error)
                self.deviceProbe = None
        self.updateDeviceInfo()

    def onDeviceProbeEvents(self):
        info = probeResult(self.deviceProbe.drainEvents())
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
        packages = describePackages(self.deviceInfo, isInstalled("torch"))
        if PackagesSection.torchLoadedInSlicer():
            packages += " " + PackagesSection.LOADED_NOTE
        self.ui.packagesLabel.text = packages

    # -- the Apply button ------------------------------------------------------------------------

    def updateButton(self):
        """Enable Apply only when the run can start; otherwise say why next to it."""
        p = self.parameterNode
        self.ui.strideSpinBox.enabled = p.tiling != Tiling.SLICES
        if self.job is not None:
            return
        ok, why = validateInputVolume(p.inputVolume)
        if ok:
            ok, why = ModelCatalog.validateModelChoice(self.currentModelChoice(), self.shippedNames)
        if ok and p.outputVolume is p.inputVolume:
            ok, why = False, "Choose an output volume other than the input (the input is kept)."
        self.ui.applyButton.enabled = ok
        self.ui.applyButton.toolTip = why or "Super-resolve the input volume."
        self.ui.statusLabel.text = why or self.runMessage

    # -- the run ---------------------------------------------------------------------------------

    def options(self):
        p = self.parameterNode
        return SuperResolutionOptions(
            model=self.currentModelChoice().argument,
            stride=p.stride or None,
            plane=p.plane.value,
            device=p.device.value,
            adaptSteps=p.adaptSteps,
            errorMap=p.errorMap,
            tiling=p.tiling.value,
            ensemble=p.ensemble.value,
            precision=p.precision.value,
        )

    def onApplyButton(self):
        if self.job is not None:
            self.job.cancel()
            self.onJobEvents()
            return
        if not self.host.ensureDependencies():
            return
        p = self.parameterNode
        options = self.options()
        self.job = self.host.startJob(
            lambda: self.makeJob(
                p.inputVolume, options, outputNode=p.outputVolume, tempRoot=slicer.app.temporaryPath
            ),
            "Could not start the super-resolution.",
        )
        if self.job is None:
            self.host.updateButtons()
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
        self.host.timer.start()

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
            # The output selector is left as it was: with "create new" each run makes its own
            # node (named after its input, unique); overwriting is choosing a node there.
            self.lastOutputNode = job.outputNode
            self.runMessage = f"{job.summary or 'Done'}: {job.outputNode.GetName()}."
            self.showComparison(job.inputNode, job.outputNode)
            if job.errorMapNode is not None:
                self.showErrorMap(job.outputNode, job.errorMapNode)
        elif job.state == job.CANCELLED:
            self.runMessage = job.errorMessage
        else:
            self.runMessage = "Failed: see the log and the error message."
            slicer.util.errorDisplay(job.errorMessage)
        self.host.updateButtons()

    # -- the result ------------------------------------------------------------------------------

    # Two overlays share the slice views' foreground: the fade slider shows input and output,
    # the error-map slider the result with its map; the slider moved last decides.

    def showComparison(self, inputNode, outputNode):
        """Input below, output above in every slice view; the slider fades between them."""
        self._comparison = (inputNode.GetID(), outputNode.GetID())
        self._errorMap = None
        slicer.util.setSliceViewerLayers(
            background=inputNode, foreground=outputNode, foregroundOpacity=1.0, fit=True
        )
        self.ui.fadeSlider.value = 1.0
        self._showErrorSlider(False)
        self.ui.compareFrame.show()

    def showErrorMap(self, outputNode, mapNode):
        """The result below, its error map above (colour bar in the input's units)."""
        self._errorMap = (outputNode.GetID(), mapNode.GetID())
        ErrorMapDisplay.showErrorMap(outputNode, mapNode, float(self.ui.errorOpacitySlider.value))
        self._showErrorSlider(True)

    def _showErrorSlider(self, visible):
        self.ui.errorOpacityLabel.setVisible(visible)
        self.ui.errorOpacitySlider.setVisible(visible)

    def _nodes(self, ids):
        scene = slicer.mrmlScene
        nodes = [scene.GetNodeByID(i) for i in ids or ()]
        return nodes if ids and all(nodes) else None

    def onFadeChanged(self, value):
        nodes = self._nodes(self._comparison)
        if nodes is None:
            return
        if self._errorMap is not None:  # back from the map to the comparison
            self._errorMap = None
            slicer.util.setSliceViewerLayers(background=nodes[0], foreground=nodes[1])
        slicer.util.setSliceViewerLayers(foregroundOpacity=float(value))

    def onErrorOpacityChanged(self, value):
        nodes = self._nodes(self._errorMap or self._lastErrorMap())
        if nodes is None:
            return
        ErrorMapDisplay.showErrorMap(nodes[0], nodes[1], float(value))
        self._errorMap = (nodes[0].GetID(), nodes[1].GetID())

    def _lastErrorMap(self):
        output = self.lastOutputNode
        mapNode = ErrorMapDisplay.errorMapNodeOf(output) if output is not None else None
        return (output.GetID(), mapNode.GetID()) if mapNode is not None else None
