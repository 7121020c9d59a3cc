"""The Train tab: preset weights, Start/Cancel, the live loss plot and the trained models.

Reached through the module widget (``host``) like :mod:`SuperResolveTab`; no Qt import here.
"""

from __future__ import annotations

import slicer

from . import ModelCatalog
from .InputValidation import validateTrainingInputs
from .Training import PRESETS, TrainingOptions
from .WorkerProcess import formatSeconds


class TrainTab:
    """Behaviour of the Train tab.

    :param host: the module widget (``ui``, ``parameterNode``, ``timer``,
        ``ensureDependencies()``, ``startJob()``, ``updateButtons()``, ``superResolve``)
    :param makeJob: ``makeJob(volumeNodes, folder, outputFolder, options, validationNode=,
        tempRoot=)`` -> a job (``TrainingJob``)
    :param settings: ``settings()`` -> a QSettings-like object (the trained models' list)
    """

    def __init__(self, host, makeJob, settings):
        self.host = host
        self.ui = host.ui
        self.makeJob = makeJob
        self.settings = settings
        self.job = None
        self.plotNodes = None
        self.message = ""
        self.lastPreset = None

    @property
    def parameterNode(self):
        return self.host.parameterNode

    def connectSignals(self):
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.trainingVolumesSelector.connect("checkedNodesChanged()", self.host.updateButtons)
        self.ui.trainingProgressBar.hide()

    # -- settings --------------------------------------------------------------------------------

    def rememberPreset(self):
        """Called on a new parameter node: only a user's change of preset resets the weights,
        not opening a scene saved with custom weights."""
        self.lastPreset = self.parameterNode.preset

    def followPreset(self):
        p = self.parameterNode
        if p.preset != self.lastPreset:
            self.lastPreset = p.preset
            # A scene being loaded brings its own (maybe custom) loss weights with its preset.
            if not slicer.mrmlScene.IsImporting():
                self.applyPresetDefaults()

    def applyPresetDefaults(self):
        """Set the loss weights and batch size of the chosen preset (the paper's grid search)."""
        p = self.parameterNode
        preset = PRESETS[p.preset.value]
        with slicer.util.NodeModify(p):
            p.lambdaCyc = preset["lambdaCyc"]
            p.lambdaIdent = preset["lambdaIdent"]
            p.lambdaGmap = preset["lambdaGmap"]
            p.batchSize = preset["batchSize"]

    def updateButton(self):
        if self.job is not None:
            return
        p = self.parameterNode
        ok, why = validateTrainingInputs(
            self.ui.trainingVolumesSelector.checkedNodes(),
            p.trainingFolder,
            p.trainingOutputFolder,
            p.validationVolume,
        )
        self.ui.trainButton.enabled = ok
        self.ui.trainButton.toolTip = why or "Train a new model."
        self.ui.trainingStatusLabel.text = why or self.message

    # -- the run ---------------------------------------------------------------------------------

    def options(self):
        p = self.parameterNode
        return TrainingOptions(
            preset=p.preset.value,
            epochs=p.epochs,
            batchSize=p.batchSize,
            lambdaCyc=p.lambdaCyc,
            lambdaIdent=p.lambdaIdent,
            lambdaGmap=p.lambdaGmap,
            patchesPerSlice=p.patchesPerSlice,
        )

    def onTrainButton(self):
        if self.job is not None:
            self.job.cancel()
            self.onTrainingEvents()
            return
        if not self.host.ensureDependencies("train"):
            return
        p = self.parameterNode
        options = self.options()
        self.job = self.host.startJob(
            lambda: self.makeJob(
                self.ui.trainingVolumesSelector.checkedNodes(),
                p.trainingFolder,
                p.trainingOutputFolder,
                options,
                validationNode=p.validationVolume,
                tempRoot=slicer.app.temporaryPath,
            ),
            "Could not start the training.",
        )
        if self.job is None:
            self.host.updateButtons()
            return
        self.plotNodes = None
        self.message = ""
        self.ui.trainButton.text = "Cancel training"
        self.ui.trainButton.enabled = True
        self.ui.trainingProgressBar.value = 0
        self.ui.trainingProgressBar.show()
        self.host.timer.start()

    def onTrainingEvents(self):
        job = self.job
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
        self.job = None
        self.ui.trainButton.text = "Start training"
        self.ui.trainingProgressBar.hide()
        if job.state == job.SUCCEEDED and job.models:
            paths = [str(m) for m in job.models]
            ModelCatalog.rememberTrainedModels(self.settings(), paths)
            self.message = f"Done: {paths[0]} added to the model list."
            self.host.superResolve.refreshModels(select=paths[0])
        elif job.state == job.SUCCEEDED:
            self.message = "Training finished but exported no model file."
        elif job.state == job.CANCELLED:
            self.message = job.errorMessage
        else:
            self.message = "Training failed: see the error message."
            slicer.util.errorDisplay(job.errorMessage)
        self.host.updateButtons()
