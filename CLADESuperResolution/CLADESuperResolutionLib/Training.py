"""Training a model from Slicer: the ``clade train`` worker, its events, and the live plot.

The worker is ``PythonSlicer -m CLADE train ... --events FILE``; it appends JSON-lines events to
FILE (schema in ``CLADE/training/events.py``), which :class:`WorkerProcess` tails on a thread.
:class:`TrainingCurves` turns ``step`` and ``validation`` events into two table nodes and one
plot chart (losses and the validation metric over the training step), updated in place so the
plot view redraws live.

The volumes chosen as nodes are exported into the run's own folder (``OUT/inputs``), not a
temporary one: the run record names them, so a cancelled or crashed run can be resumed later
(``--resume`` reuses the run's inputs), and closing the scene does not stop a running training
(only its plot lives in the scene).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import CoreLocator
from .InputValidation import (
    validateTrainingInputs,
    validateWritableFolder,
    volumeFilesInFolder,
)
from .ModelCatalog import exportedModels
from .SuperResolutionLogic import pythonExecutable
from .VolumeConversion import imageFromVolumeNode
from .WorkerProcess import PollingJob, WorkerProcess

#: Loss weights (cyc, ident, gmap) and batch size of the core's presets (the paper's grid search
#: for the weights). A copy, because the Lib must load before the core is found (the module
#: shows what is missing instead of failing to load); a test checks it matches the core's.
PRESETS = {
    "mri": {"lambdaCyc": 1.0, "lambdaIdent": 1.0, "lambdaGmap": 5.0, "batchSize": 4},
    "ct": {"lambdaCyc": 1.0, "lambdaIdent": 1.0, "lambdaGmap": 10.0, "batchSize": 4},
}

#: Loss curves plotted, in the order of the legend (keys of the ``losses`` dict of step events);
#: the same list as ``CLADE.training.loss_terms.LOSS_NAMES`` (a test checks it).
PLOTTED_LOSSES = ("g_total", "adv", "cyc", "ident", "gmap", "d_x", "d_y", "paired", "dc")

EVENTS_FILE_NAME = "events.jsonl"
#: Where the exported volumes of a run are kept, inside its output folder.
INPUTS_FOLDER_NAME = "inputs"
#: Files that mark a folder as holding a run (``CLADE.training``: ``RUN_RECORD_NAME``,
#: ``CHECKPOINT_NAME``; copies, since the Lib loads before the core is found; a test checks).
RUN_MARKERS = ("run.json", "checkpoint.pt")

#: ``clade train`` options of a fine-tuning run from a shipped model, besides ``--init-model``
#: and the epochs: the shipped models' last stages (``models/train_shipped_models.sh``): the
#: architecture the model file has (a test checks it against the shipped files), the paired
#: term alone (``--warmup-epochs`` = all epochs) and a cosine-annealed rate from 1e-4.
FINE_TUNE_RECIPES = {
    # mri and ct are the 32-filter students of mri-large and ct-large (issues 24 and 27,
    # models/cards/students.md).
    "mri": "--residual --base-filters 32 --upsample transpose --lambda-paired 20 "
    "--paired-ratios 2 8",
    "ct": "--residual --base-filters 32 --upsample resize --lambda-paired 20 --paired-ratios 2 6 "
    "--window -1024 2048",
}
FINE_TUNE_SCHEDULE = "--lr 1e-4 --lr-schedule cosine"


def runInFolder(folder) -> bool:
    """``folder`` holds a training run (started, maybe cancelled or crashed): resume it."""
    if not folder or not str(folder).strip():
        return False
    return any((Path(folder) / name).is_file() for name in RUN_MARKERS)


@dataclass
class TrainingOptions:
    """Settings of a training run (None: the preset's value)."""

    preset: str = "mri"
    epochs: int = 10
    batchSize: int | None = None
    lambdaCyc: float | None = None
    lambdaIdent: float | None = None
    lambdaGmap: float | None = None
    patchesPerSlice: int = 4
    #: A shipped model to fine-tune (``--init-model``, with its recipe); "" = random weights.
    initModel: str = ""

    def commandArguments(self) -> list[str]:
        arguments = [
            "--preset",
            self.preset,
            "--epochs",
            str(int(self.epochs)),
            "--patches-per-slice",
            str(int(self.patchesPerSlice)),
        ]
        for flag, value in (
            ("--batch-size", self.batchSize),
            ("--lambda-cyc", self.lambdaCyc),
            ("--lambda-ident", self.lambdaIdent),
            ("--lambda-gmap", self.lambdaGmap),
        ):
            if value is not None:
                arguments += [flag, repr(value) if isinstance(value, float) else str(value)]
        if self.initModel:
            arguments += [
                "--init-model",
                self.initModel,
                *FINE_TUNE_RECIPES[self.initModel].split(),
            ]
            arguments += ["--warmup-epochs", str(int(self.epochs)), *FINE_TUNE_SCHEDULE.split()]
        return arguments


class TrainingCurves:
    """Losses per step and validation metrics per epoch, mirrored into MRML table/plot nodes."""

    def __init__(self, runName: str = ""):
        self.runName = runName  # names the plot and table nodes (made unique in the scene)
        self.steps = []  # global step of each row
        self.losses = {name: [] for name in PLOTTED_LOSSES}
        self.metricSteps = []
        self.metricName = None
        self.metricValues = []
        self.stepsPerEpoch = None
        self.progress = 0.0
        self.etaSeconds = None
        self.patchesPerSecond = None
        self.lastEpoch = 0
        self.lastStatus = ""

    def addEvent(self, event: dict) -> bool:
        """Take one event; True when the plotted data changed."""
        kind = event.get("event")
        if kind == "start":
            self.stepsPerEpoch = event.get("steps_per_epoch")
            self.lastStatus = f"Training on {event.get('device', '?')}"
            return False
        if kind == "step":
            losses = event.get("losses") or {}
            self.steps.append(float(event.get("global_step", len(self.steps) + 1)))
            for name in PLOTTED_LOSSES:
                value = losses.get(name)
                self.losses[name].append(float("nan") if value is None else float(value))
            self.stepsPerEpoch = event.get("steps_per_epoch", self.stepsPerEpoch)
            self.progress = float(event.get("progress", self.progress) or 0.0)
            self.etaSeconds = event.get("eta_s")
            self.patchesPerSecond = event.get("patches_per_s")
            self.lastEpoch = int(event.get("epoch", self.lastEpoch) or 0)
            return True
        if kind == "validation":
            metrics = event.get("metrics") or {}
            if not metrics:
                return False
            if self.metricName is None:
                # PIQE is the paper's metric; otherwise the first one reported.
                self.metricName = "piqe" if "piqe" in metrics else sorted(metrics)[0]
            value = metrics.get(self.metricName)
            if value is None:
                return False
            epoch = int(event.get("epoch", len(self.metricValues) + 1))
            step = (
                epoch * self.stepsPerEpoch
                if self.stepsPerEpoch
                else (self.steps[-1] if self.steps else float(epoch))
            )
            self.metricSteps.append(float(step))
            self.metricValues.append(float(value))
            return True
        return False

    # -- MRML ------------------------------------------------------------------------------------

    def updateNodes(self, scene, nodes: dict | None = None) -> dict:
        """Create (first call) or refill the table, series and chart nodes; return them by role.

        ``nodes`` is the dict a previous call returned.
        """
        import slicer.util

        nodes = dict(nodes or {})
        if "lossTable" not in nodes:
            run = f" {self.runName}" if self.runName else ""

            def add(kind, name):  # a unique name per run: each run keeps its own plot
                return scene.AddNewNodeByClass(kind, scene.GenerateUniqueName(name + run))

            nodes["lossTable"] = add("vtkMRMLTableNode", "CLADE training losses")
            nodes["metricTable"] = add("vtkMRMLTableNode", "CLADE validation metric")
            chart = add("vtkMRMLPlotChartNode", "CLADE training")
            chart.SetTitle(chart.GetName())
            chart.SetXAxisTitle("training step")
            chart.SetYAxisTitle("loss / metric (log scale)")
            # Losses (~0.01-10) and PIQE (~20-80) share one axis: a log scale shows both.
            chart.SetYAxisLogScale(True)
            nodes["chart"] = chart
            nodes["series"] = {}
        import numpy as np

        lossColumns = [np.array(self.steps, dtype=float)] + [
            positiveOrNaN(self.losses[name]) for name in PLOTTED_LOSSES
        ]
        self._fillTable(nodes["lossTable"], ["step", *PLOTTED_LOSSES], lossColumns, slicer.util)
        for name, column in zip(PLOTTED_LOSSES, lossColumns[1:]):
            # A term that is off (weight 0) is 0 at every step: no curve for it, or the log
            # axis would not apply (VTK turns log scale off for a range that reaches 0).
            if np.isfinite(column).any():
                self._ensureSeries(scene, nodes, name, nodes["lossTable"], "step", name)
        if self.metricName:
            label = f"validation {self.metricName}"
            self._fillTable(
                nodes["metricTable"],
                ["step", label],
                [np.array(self.metricSteps), positiveOrNaN(self.metricValues)],
                slicer.util,
            )
            self._ensureSeries(scene, nodes, label, nodes["metricTable"], "step", label)
        return nodes

    @staticmethod
    def _fillTable(tableNode, names, columns, util) -> None:
        import vtk

        table = tableNode.GetTable()
        if table.GetNumberOfColumns() != len(names):
            table.Initialize()
            for name in names:
                array = vtk.vtkDoubleArray()
                array.SetName(name)
                table.AddColumn(array)
        rows = len(columns[0])
        table.SetNumberOfRows(rows)
        for index, values in enumerate(columns):
            array = table.GetColumn(index)
            for row in range(rows):
                array.SetValue(row, float(values[row]))
            array.Modified()
        table.Modified()
        tableNode.Modified()

    @staticmethod
    def _ensureSeries(scene, nodes, name, tableNode, xColumn, yColumn) -> None:
        if name in nodes["series"]:
            return
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", name)
        series.SetAndObserveTableNodeID(tableNode.GetID())
        series.SetXColumnName(xColumn)
        series.SetYColumnName(yColumn)
        series.SetPlotType(series.PlotTypeScatter)
        if name.startswith("validation"):
            series.SetMarkerStyle(series.MarkerStyleCircle)
            series.SetLineWidth(3)
        else:
            series.SetMarkerStyle(series.MarkerStyleNone)
        nodes["chart"].AddAndObservePlotSeriesNodeID(series.GetID())
        nodes["series"][name] = series


def positiveOrNaN(values):
    """The values with those <= 0 as NaN: a log axis cannot show them, and VTK's plots leave
    NaN points out of the axis range (a 0 would switch the whole axis to linear)."""
    import numpy as np

    array = np.array(values, dtype=float)
    array[~(array > 0)] = np.nan
    return array


class TrainingJob(PollingJob):
    """One ``clade train`` run in a worker process, polled from the main thread.

    Volumes selected as nodes are exported to ``outputFolder/inputs`` (kept with the run);
    volumes in ``folder`` are passed as files. ``resume`` continues the run already in
    ``outputFolder`` on its own inputs and settings (only ``options.epochs`` is passed). New
    models appear in :attr:`models` when it succeeds.
    """

    workerName = "training worker"

    def __init__(
        self,
        volumeNodes,
        folder,
        outputFolder,
        options: TrainingOptions,
        validationNode=None,
        python: str | None = None,
        tempRoot=None,
        observeScene: bool = False,
        extraArguments=(),
        resume: bool = False,
    ):
        self.resume = bool(resume)
        if not self.resume:
            ok, why = validateTrainingInputs(volumeNodes, folder, outputFolder, validationNode)
            if not ok:
                raise ValueError(why)
        self.volumeNodes = list(volumeNodes or [])
        self.folder = str(folder) if folder else ""
        self.outputFolder = Path(outputFolder)
        self.options = options
        self.validationNode = validationNode
        self.python = python or pythonExecutable()
        self.tempRoot = tempRoot
        self._resetJob(observeScene)
        self.extraArguments = list(extraArguments)
        self.curves = TrainingCurves(runName=self.outputFolder.name)
        self.models = []

    @property
    def eventsFile(self) -> Path:
        return self.outputFolder / EVENTS_FILE_NAME

    def command(self, inputPaths, validationPath=None) -> list[str]:
        settings = (
            ["--resume", "--epochs", str(int(self.options.epochs))]
            if self.resume
            else self.options.commandArguments()
        )
        command = [
            self.python,
            "-m",
            "CLADE",
            "train",
            *map(str, inputPaths),
            "--out",
            str(self.outputFolder),
            *settings,
            "--events",
            str(self.eventsFile),
            # No progress bar on stderr: progress comes from the events file, and stderr
            # is kept for the error lines shown when the worker fails.
            "--quiet",
        ]
        if validationPath:
            command += ["--val", str(validationPath)]
        return command + self.extraArguments

    def start(self) -> None:
        # Validation never creates the output folder (it runs on every keystroke): made here.
        ok, why = validateWritableFolder(
            self.outputFolder, "output folder for the trained model", create=True
        )
        if not ok:
            raise ValueError(why)
        inputs = self.outputFolder / INPUTS_FOLDER_NAME
        made = []
        try:
            inputPaths, validationPath = [], None
            if not self.resume:  # a resumed run reuses the inputs its record names
                for index, node in enumerate(self.volumeNodes):
                    path = inputs / f"{index:03d}_{_safeName(node.GetName())}.nrrd"
                    made.append(self._export(node, path))
                    inputPaths.append(path)
                if self.folder:
                    inputPaths += volumeFilesInFolder(self.folder)
                if self.validationNode is not None:
                    name = f"validation_{_safeName(self.validationNode.GetName())}.nrrd"
                    validationPath = self._export(self.validationNode, inputs / name)
                    made.append(validationPath)
            self.worker = WorkerProcess(
                self.command(inputPaths, validationPath),
                env=CoreLocator.workerEnvironment(),
                eventsFile=self.eventsFile,
            )
            self.worker.start()
        except Exception:
            for path in made:
                path.unlink(missing_ok=True)
            raise
        # The scene is not observed: the worker needs none of its nodes (see the module text).
        self.state = self.RUNNING

    @staticmethod
    def _export(node, path: Path) -> Path:
        import SimpleITK as sitk

        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(imageFromVolumeNode(node), str(path))
        return path

    def _onEvent(self, event: dict) -> None:
        # poll() returns the events too: the widget redraws the plot when a step arrived.
        kind = event.get("event")
        self.curves.addEvent(event)
        if kind == "error":
            self.errorMessage = str(event.get("message", ""))
        elif kind == "done":
            self.models = [
                Path(p)
                for p in (event.get("best_model"), event.get("final_model"))
                if p and Path(p).is_file()
            ]

    def _finish(self, cancelled: bool, returnCode) -> None:
        if cancelled:
            self.state = self.CANCELLED
            self.errorMessage = "Training cancelled: checkpoints written so far are kept."
        elif returnCode == 0:
            if not self.models:
                self.models = exportedModels(self.outputFolder)
            self.state = self.SUCCEEDED
        else:
            self.state = self.FAILED
            if not self.errorMessage:
                self.errorMessage = self._unexpectedExit(returnCode)
        self._releaseJob()


def _safeName(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "volume"
