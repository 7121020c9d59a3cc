"""Train tab: a finished run is offered (not switched to), a run in the folder is resumed, a
scene close does not stop a training, fine-tuning a shipped model, the plot's nodes and axis.

Real MRML scene (slicer-core) and the stand-in widgets of ``test_slicer_widget``; the job is a
stand-in fed with events (the real ``TrainingJob`` runs ``clade train`` in
``test_slicer_worker`` and below where the point is the job itself).
"""

# ruff: noqa: F811 (the fixtures imported from test_slicer_widget are parameters here)
from __future__ import annotations

import ast
import json
import shutil
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from test_slicer_widget import MODULE_DIR, UI_FILE, makeWidget, module, runTimer, thickNode  # noqa: F401

slicer = pytest.importorskip("slicer")


class StandInTrainingJob:
    """The TrainingJob interface, its worker replaced by events handed out one per poll."""

    RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"
    made = []

    def __init__(self, volumeNodes, folder, outputFolder, options, **kwargs):
        from CLADESuperResolutionLib.Training import TrainingCurves

        self.outputFolder, self.options, self.kwargs = Path(outputFolder), options, kwargs
        self.curves = TrainingCurves()
        self.curves.runName = self.outputFolder.name
        self.state, self.errorMessage, self.models = None, "", []
        self.pending, self.finish = [], True
        StandInTrainingJob.made.append(self)

    @property
    def done(self):
        return self.state in (self.SUCCEEDED, self.FAILED, self.CANCELLED)

    def start(self):
        self.state = self.RUNNING

    def poll(self):
        events, self.pending = self.pending[:1], self.pending[1:]
        for event in events:
            self.curves.addEvent(event)
        if not self.pending and self.finish and self.state == self.RUNNING:
            self.state = self.SUCCEEDED
        return events

    def cancel(self):
        if self.state == self.RUNNING:
            self.state = self.CANCELLED


def stepEvent(step, **losses):
    return {"event": "step", "global_step": step, "epoch": 1, "progress": step / 10,
            "losses": {"g_total": 1.0 / step, "cyc": 0.5, "paired": 0.0, **losses}}  # fmt: skip


@pytest.fixture
def trainTab(module, monkeypatch):  # noqa: F811
    """The module with stand-in training jobs and a stand-in Plots module."""
    StandInTrainingJob.made = []
    monkeypatch.setattr(module, "TrainingJob", StandInTrainingJob)
    charts = []
    plots = types.SimpleNamespace(
        logic=lambda: types.SimpleNamespace(ShowChartInLayout=charts.append)
    )
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(plots=plots), raising=False)
    module.testCharts = charts
    return module


def startTraining(widget, ui, node, folder):
    widget.superResolve.deviceInfo = {"torch": "2", "cuda_available": False}
    ui.trainingVolumesSelector.checked = [node]
    ui.trainingOutputFolderSelector.currentPath = str(folder)
    ui.trainButton.click()
    assert widget.trainingJob is not None, ui.trainingStatusLabel.text
    return widget.trainingJob


def test_a_finished_training_is_offered_not_switched_to(trainTab, tmp_path, tiny_model_path):
    """Before: the new model silently became the Super-resolve model."""
    node = thickNode()
    widget = makeWidget(trainTab)
    ui = trainTab.testUi
    chosen = widget.currentModelChoice()
    model = tmp_path / "run" / "model_best.pt"
    model.parent.mkdir()
    shutil.copy(tiny_model_path, model)
    job = startTraining(widget, ui, node, tmp_path / "run")
    job.pending, job.models = [stepEvent(1), stepEvent(2)], [model]
    runTimer(widget, lambda: widget.trainingJob is None)
    assert widget.currentModelChoice() == chosen
    assert str(model) in [c.value for c in widget.modelChoices]
    assert "unchanged" in ui.trainingStatusLabel.text and ui.useTrainedModelButton.visible
    ui.useTrainedModelButton.click()
    assert widget.currentModelChoice().value == str(model)
    assert widget._parameterNode.model == str(model) and not ui.useTrainedModelButton.visible


def test_a_run_in_the_chosen_folder_is_offered_for_resuming(trainTab, tmp_path):
    """Before: starting again in the folder of a cancelled run ended in "add --resume"."""
    widget = makeWidget(trainTab)
    ui = trainTab.testUi
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    ui.trainingOutputFolderSelector.currentPath = str(run)
    # Offered without choosing volumes again: the run has its own.
    assert ui.trainButton.enabled and ui.trainButton.text == "Resume training"
    assert "Resume training continues it" in ui.trainingStatusLabel.text
    widget.superResolve.deviceInfo = {"torch": "2"}
    ui.trainButton.click()
    assert StandInTrainingJob.made[-1].kwargs["resume"] is True
    runTimer(widget, lambda: widget.trainingJob is None)
    # Another folder is a new run.
    ui.trainingOutputFolderSelector.currentPath = str(tmp_path / "new")
    assert ui.trainButton.text == "Start training"


def test_the_resume_command_continues_the_run_on_its_own_inputs(scene, tmp_path):
    from CLADESuperResolutionLib import Training

    job = Training.TrainingJob(
        [], "", tmp_path / "run", Training.TrainingOptions(epochs=12), python="py", resume=True
    )
    command = job.command([], None)
    assert command[:4] == ["py", "-m", "CLADE", "train"]
    assert command[4:8] == ["--out", str(tmp_path / "run"), "--resume", "--epochs"]
    assert "--preset" not in command  # the run's own settings


def test_run_markers_are_the_cores_file_names():
    from CLADESuperResolutionLib import Training

    from CLADE.training.checkpoint import CHECKPOINT_NAME
    from CLADE.training.run_record import RUN_RECORD_NAME

    assert Training.RUN_MARKERS == (RUN_RECORD_NAME, CHECKPOINT_NAME)


def test_closing_the_scene_keeps_a_training_running_and_its_plot_comes_back(trainTab, tmp_path):
    """Before: the scene close cancelled the training, although its inputs were exported."""
    node = thickNode()
    widget = makeWidget(trainTab)
    ui = trainTab.testUi
    job = startTraining(widget, ui, node, tmp_path / "run")
    job.pending, job.finish = [stepEvent(1)], False
    runTimer(widget, lambda: widget.train.plotNodes is not None)
    slicer.mrmlScene.InvokeEvent(slicer.mrmlScene.StartCloseEvent)
    widget.onSceneStartClose(None, None)
    slicer.mrmlScene.Clear(0)
    widget.onSceneEndClose(None, None)
    assert job.state == job.RUNNING and widget.trainingJob is job
    assert ui.trainButton.text == "Cancel training"
    job.pending, job.finish = [stepEvent(2)], True
    runTimer(widget, lambda: widget.trainingJob is None)
    assert job.state == job.SUCCEEDED
    chart = widget.train.plotNodes["chart"]
    assert slicer.mrmlScene.GetNodeByID(chart.GetID()) is chart  # made again in this scene


def test_the_real_training_job_does_not_stop_when_the_scene_closes(scene, tmp_path):
    from CLADESuperResolutionLib import Training

    array = np.random.default_rng(0).normal(100, 20, size=(8, 36, 36)).astype(np.float32)
    node = slicer.util.addVolumeFromArray(array, ijkToRAS=np.diag([1.0, 1.0, 4.0, 1.0]))
    job = Training.TrainingJob(
        [node], "", tmp_path / "run", Training.TrainingOptions(epochs=1), python=sys.executable
    )
    job.start()
    try:
        assert (tmp_path / "run" / "inputs").is_dir()  # kept with the run, for a resume
        scene.InvokeEvent(scene.StartCloseEvent)
        scene.Clear(0)
        assert job.state == job.RUNNING
    finally:
        job.cancel()
    assert job.state == job.CANCELLED


def test_fine_tuning_a_shipped_model_uses_its_architecture_and_the_shipped_recipe():
    from CLADESuperResolutionLib import Training

    from CLADE.cli.main import build_parser
    from CLADE.model_file import architecture_of, load_model
    from CLADE.registry import MANIFEST_PATH, read_manifest

    files = {m["name"]: MANIFEST_PATH.parent / m["file"] for m in read_manifest()}

    for name in ("mri", "ct"):
        options = Training.TrainingOptions(epochs=6, initModel=name)
        arguments = options.commandArguments()
        parsed = build_parser().parse_args(["train", "x.nii.gz", "--out", "o", *arguments])
        assert parsed.init_model == name and parsed.warmup_epochs == 6
        assert parsed.lr_schedule == "cosine" and parsed.lambda_paired == 20
        shipped = architecture_of(load_model(files[name]).metadata)
        assert shipped["residual"] is True and parsed.residual is True
        assert shipped["upsample"] == parsed.upsample, name
        assert shipped["base_filters"] == (parsed.base_filters or 64), name
        assert shipped["n_blocks"] == (parsed.n_blocks or 6), name
    assert "--init-model" not in Training.TrainingOptions().commandArguments()


def test_start_from_is_a_train_tab_setting(trainTab):
    widget = makeWidget(trainTab)
    p = widget._parameterNode
    assert p.startFrom == trainTab.StartFrom.NEW
    p.startFrom = trainTab.StartFrom.CT
    assert widget.train.options().initModel == "ct"


def test_plot_and_table_nodes_are_new_for_each_run(scene):
    from CLADESuperResolutionLib.Training import TrainingCurves

    names = []
    for _ in range(2):
        curves = TrainingCurves(runName="site1")
        curves.addEvent(stepEvent(1))
        nodes = curves.updateNodes(scene)
        names.append(nodes["chart"].GetName())
    assert names == ["CLADE training site1", "CLADE training site1_1"]
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode") == 2


def test_the_log_axis_applies_when_a_loss_is_zero(scene):
    """VTK turns a log axis off when the plotted range reaches 0 (vtkAxis.LogScaleActive);
    a term that is off (0 at every step) made the whole plot linear. The bounds are read from
    VTK's own plot of each series' table columns (as Slicer's plot view draws them)."""
    from CLADESuperResolutionLib.Training import TrainingCurves
    from vtkmodules.vtkChartsCore import vtkAxis, vtkPlotPoints

    curves = TrainingCurves()
    for step in (1, 2, 3):
        curves.addEvent(stepEvent(step, gmap=0.0))
    nodes = curves.updateNodes(scene)
    chart = nodes["chart"]
    assert chart.GetYAxisLogScale()
    low = np.inf
    for index in range(chart.GetNumberOfPlotSeriesNodes()):
        series = chart.GetNthPlotSeriesNode(index)
        plot = vtkPlotPoints()
        plot.SetInputData(series.GetTableNode().GetTable(), "step", series.GetYColumnName())
        plot.Update()
        bounds = [0.0] * 4
        plot.GetUnscaledInputBounds(bounds)
        low = min(low, bounds[2])
    axis = vtkAxis()
    axis.SetLogScale(True)
    axis.SetUnscaledRange(low, 1.0)
    assert low > 0 and axis.GetLogScaleActive()


def test_loss_weight_spin_boxes_have_the_parameter_nodes_maximum():
    """Before: Minimum(0.0) alone, so Slicer's spin-box connector set the maximum to infinity
    (QDoubleSpinBoxCtkSliderWidgetToFloatConnector), overriding the .ui's."""
    source = (MODULE_DIR / "CLADESuperResolution.py").read_text()
    tree = ast.parse(source)
    maximum = next(
        ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "LOSS_WEIGHT_MAXIMUM"
    )
    fields = {
        n.target.id: ast.unparse(n.annotation)
        for c in tree.body
        if isinstance(c, ast.ClassDef) and c.name == "CLADESuperResolutionParameterNode"
        for n in c.body
        if isinstance(n, ast.AnnAssign)
    }
    root = ET.parse(UI_FILE).getroot()
    for name in ("lambdaCyc", "lambdaIdent", "lambdaGmap"):
        assert fields[name] == "Annotated[float, WithinRange(0.0, LOSS_WEIGHT_MAXIMUM)]", name
        box = next(w for w in root.iter("widget") if w.get("name") == f"{name}SpinBox")
        ui = {p.get("name"): p for p in box.findall("property")}
        assert float(ui["maximum"].findtext("double")) == maximum


def test_run_json_of_a_real_run_marks_the_folder(tmp_path):
    from CLADESuperResolutionLib.Training import runInFolder

    from CLADE.training.presets import TrainingConfig
    from CLADE.training.run_record import RunRecord

    assert not runInFolder(tmp_path) and not runInFolder("")
    RunRecord(TrainingConfig(epochs=2), inputs=["/a.nrrd"]).write(tmp_path)
    assert json.loads((tmp_path / "run.json").read_text()) and runInFolder(tmp_path)
