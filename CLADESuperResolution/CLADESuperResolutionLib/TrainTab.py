"""The Train tab: preset weights, Start/Resume/Cancel, the live loss plot, the new model.

Reached through the module widget (``host``) like :mod:`SuperResolveTab`; no Qt import here.
Sections, in the order of the tab: settings (preset, button state), the run, the new model.
A folder that already holds a run is offered for resuming; a finished run's model is offered to
the Super-resolve tab (a button), never selected without the user.
"""

from __future__ import annotations

import slicer

from . import ModelCatalog
from .InputValidation import validateTrainingInputs
from .Tab import Tab
from .Training import PRESETS, TrainingOptions, runInFolder
from .WorkerProcess import formatSeconds

RESUME_OFFER = (
    "This folder holds a training run (cancelled, crashed or finished): Resume training "
    "continues it from its last checkpoint with its own volumes and settings (Epochs may be "
    "raised). Choose another output folder to start a new run."
)


class TrainTab(Tab):
    """Behaviour of the Train tab.

    :param host: the module widget (``ui``, ``parameterNode``, ``timer``,
        ``ensureDependencies()``, ``startJob()``, ``updateButtons()``, ``superResolve``)
    :param makeJob: ``makeJob(volumeNodes, folder, outputFolder, options, validationNode=,
        tempRoot=, resume=)`` -> a job (``TrainingJob``)
    :param settings: ``settings()`` -> a QSettings-like object (the trained models' list)
    """

    def __init__(self, host, makeJob, settings):
        super().__init__(host, makeJob, settings)
        self.plotNodes = None
        self.message = ""
        self.lastPreset = None
        self.newModel = None  # the last run's model, offered to Super-resolve (never switched)

    def connectSignals(self):
        self.ui.trainButton.connect("clicked(bool)", self.onTrainButton)
        self.ui.useTrainedModelButton.connect("clicked(bool)", self.onUseTrainedModel)
        self.ui.trainingVolumesSelector.connect("checkedNodesChanged()", self.host.updateButtons)
        self.ui.trainingProgressBar.hide()
        self.ui.useTrainedModelButton.hide()

    def onSceneStartClose(self):
        """A running training goes on (its inputs are files in its folder); the plot's nodes
        go with the scene and are made again in the next one."""
        self.plotNodes = None

    def poll(self) -> bool:
        """The timer's tick: drain the run's events; True while it runs."""
        if self.job is not None:
            self.onTrainingEvents()
        return self.job is not None

    def cancel(self):
        if self.job is not None:
            self.job.cancel()
            self.onTrainingEvents()

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
        if runInFolder(p.trainingOutputFolder):
            self.ui.trainButton.text = "Resume training"
            self.ui.trainButton.enabled = True
            self.ui.trainButton.toolTip = RESUME_OFFER
            self.ui.trainingStatusLabel.text = self.message or RESUME_OFFER
            return
        self.ui.trainButton.text = "Start training"
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
            initModel=p.startFrom.initModel,
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
        resume = runInFolder(p.trainingOutputFolder)
        self.job = self.host.startJob(
            lambda: self.makeJob(
                self.ui.trainingVolumesSelector.checkedNodes(),
                p.trainingFolder,
                p.trainingOutputFolder,
                options,
                validationNode=p.validationVolume,
                tempRoot=slicer.app.temporaryPath,
                resume=resume,
            ),
            "Could not resume the training." if resume else "Could not start the training.",
        )
        if self.job is None:
            self.host.updateButtons()
            return
        self.plotNodes = None
        self.message = ""
        self.newModel = None
        self.ui.useTrainedModelButton.hide()
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
        self.ui.trainingProgressBar.hide()
        if job.state == job.SUCCEEDED and job.models:
            paths = [str(m) for m in job.models]
            ModelCatalog.rememberTrainedModels(self.settings(), paths)
            # Offered, never selected: the Super-resolve tab keeps the model a user chose.
            self.newModel = paths[0]
            self.message = (
                f"Done: {paths[0]} is in the Super-resolve tab's model list; the model chosen "
                "there is unchanged."
            )
            self.host.superResolve.refreshModels()
            self.ui.useTrainedModelButton.show()
        elif job.state == job.SUCCEEDED:
            self.message = "Training finished but exported no model file."
        elif job.state == job.CANCELLED:
            self.message = job.errorMessage
        else:
            self.message = "Training failed: see the error message."
            slicer.util.errorDisplay(job.errorMessage)
        self.host.updateButtons()

    # -- the new model ---------------------------------------------------------------------------

    def onUseTrainedModel(self):
        """The user asked for it: the new model becomes the Super-resolve tab's choice."""
        if self.newModel and self.parameterNode:
            self.parameterNode.model = self.newModel
            self.message = f"{self.newModel} is now the Super-resolve model."
            self.ui.useTrainedModelButton.hide()
            self.host.updateButtons()
