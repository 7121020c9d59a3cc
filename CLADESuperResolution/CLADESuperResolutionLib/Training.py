"""Training a model from Slicer: the ``clade train`` worker, its events, and the live plot.

The worker is ``PythonSlicer -m CLADE train ... --events FILE``; it appends JSON-lines events to
FILE (schema in ``CLADE/training/events.py``), which :class:`WorkerProcess` tails on a thread.
:class:`TrainingCurves` turns ``step`` and ``validation`` events into two table nodes and one
plot chart (losses and the validation metric over the training step), updated in place so the
plot view redraws live.
"""

from __future__ import annotations

import shutil
import tempfile
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
        return arguments


class TrainingCurves:
    """Losses per step and validation metrics per epoch, mirrored into MRML table/plot nodes."""

    def __init__(self):
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
            nodes["lossTable"] = scene.AddNewNodeByClass(
                "vtkMRMLTableNode", "CLADE training losses"
            )
            nodes["metricTable"] = scene.AddNewNodeByClass(
                "vtkMRMLTableNode", "CLADE validation metric"
            )
            chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "CLADE training")
            chart.SetTitle("CLADE training")
            chart.SetXAxisTitle("training step")
            chart.SetYAxisTitle("loss / metric (log scale)")
            # Losses (~0.01-10) and PIQE (~20-80) share one axis: a log scale shows both.
            chart.SetYAxisLogScale(True)
            nodes["chart"] = chart
            nodes["series"] = {}
        import numpy as np

        lossColumns = [np.array(self.steps, dtype=float)] + [
            np.array(self.losses[name], dtype=float) for name in PLOTTED_LOSSES
        ]
        self._fillTable(nodes["lossTable"], ["step", *PLOTTED_LOSSES], lossColumns, slicer.util)
        for name in PLOTTED_LOSSES:
            self._ensureSeries(scene, nodes, name, nodes["lossTable"], "step", name)
        if self.metricName:
            label = f"validation {self.metricName}"
            self._fillTable(
                nodes["metricTable"],
                ["step", label],
                [np.array(self.metricSteps), np.array(self.metricValues)],
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


class TrainingJob(PollingJob):
    """One ``clade train`` run in a worker process, polled from the main thread.

    Volumes selected as nodes are exported to a temporary folder (removed at the end); volumes
    in ``folder`` are passed as files. New models appear in :attr:`models` when it succeeds.
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
        observeScene: bool = True,
        extraArguments=(),
    ):
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
        self.curves = TrainingCurves()
        self.models = []

    @property
    def eventsFile(self) -> Path:
        return self.outputFolder / EVENTS_FILE_NAME

    def command(self, inputPaths, validationPath=None) -> list[str]:
        command = [
            self.python,
            "-m",
            "CLADE",
            "train",
            *map(str, inputPaths),
            "--out",
            str(self.outputFolder),
            *self.options.commandArguments(),
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
        import SimpleITK as sitk

        # Validation never creates the output folder (it runs on every keystroke): made here.
        ok, why = validateWritableFolder(
            self.outputFolder, "output folder for the trained model", create=True
        )
        if not ok:
            raise ValueError(why)
        self.tempDir = Path(tempfile.mkdtemp(prefix="CLADE-train-", dir=self.tempRoot))
        try:
            inputPaths = []
            for index, node in enumerate(self.volumeNodes):
                path = self.tempDir / f"{index:03d}_{_safeName(node.GetName())}.nrrd"
                sitk.WriteImage(imageFromVolumeNode(node), str(path))
                inputPaths.append(path)
            if self.folder:
                inputPaths += volumeFilesInFolder(self.folder)
            validationPath = None
            if self.validationNode is not None:
                validationPath = (
                    self.tempDir / f"validation_{_safeName(self.validationNode.GetName())}.nrrd"
                )
                sitk.WriteImage(imageFromVolumeNode(self.validationNode), str(validationPath))
            self.worker = WorkerProcess(
                self.command(inputPaths, validationPath),
                env=CoreLocator.workerEnvironment(),
                eventsFile=self.eventsFile,
            )
            self.worker.start()
        except Exception:
            shutil.rmtree(self.tempDir, ignore_errors=True)
            raise
        self.state = self.RUNNING
        self._observeSceneClose(self.volumeNodes[0] if self.volumeNodes else None)

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
