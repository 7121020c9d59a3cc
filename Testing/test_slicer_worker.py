"""The module's worker path with real subprocesses: progress, cancel, crashes, scene close."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "CLADESuperResolution"))

slicer = pytest.importorskip("slicer")

from CLADESuperResolutionLib.SuperResolutionLogic import (  # noqa: E402
    SuperResolutionJob,
    SuperResolutionOptions,
)
from CLADESuperResolutionLib.WorkerProcess import WorkerProcess  # noqa: E402


def thickNode(scene, shape=(8, 36, 40)):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    array = (gaussian_filter(rng.normal(size=shape), 1.5) * 400 + 100).astype(np.float32)
    matrix = np.diag([-1.0, -1.0, 4.0, 1.0])
    matrix[:3, 3] = (5.0, 6.0, -20.0)
    return slicer.util.addVolumeFromArray(array, ijkToRAS=matrix, name="thick")


def pidAlive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def volumeCount(scene):
    return scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")


def cpuJob(node, tmp_path, model, **options):
    """A job on ``node`` that runs the real ``python -m CLADE super-resolve`` on the CPU."""
    return SuperResolutionJob(
        node,
        SuperResolutionOptions(model=str(model), device="cpu", **options),
        python=sys.executable,
        tempRoot=tmp_path,
    )


def scriptedJob(scene, tmp_path, name, code):
    """A job on a new thick node whose worker is the script ``code`` (saved as tmp_path/name), a
    stand-in for ``python -m CLADE``; its temporaries go to tmp_path/temp (made here)."""
    worker = tmp_path / name
    worker.write_text(code)
    temp = tmp_path / "temp"
    temp.mkdir()
    job = SuperResolutionJob(
        thickNode(scene),
        SuperResolutionOptions(model="anything"),
        launcher=[sys.executable, str(worker)],
        tempRoot=temp,
    )
    return job, temp


def runJob(job, timeout=180):
    """The job's events, and the stages its progress events went through, in order (read from
    the events: one poll may drain several stages' events when the machine is busy)."""
    events, stages = [], []
    deadline = time.monotonic() + timeout
    while not job.done and time.monotonic() < deadline:
        for event in job.poll():
            events.append(event)
            stage = event.get("stage") if event.get("event") == "progress" else None
            if stage and (not stages or stages[-1] != stage):
                stages.append(stage)
        time.sleep(0.02)
    return events, stages


def test_job_command_is_clade_super_resolve_with_a_json_progress_stream(scene, tmp_path):
    node = thickNode(scene)
    options = SuperResolutionOptions(
        model="ct",
        tiling="patches",
        stride=8,
        ensemble="flips",
        precision="float32",
        device="cpu",
        adaptSteps=30,
    )
    job = SuperResolutionJob(node, options, python="/opt/PythonSlicer", tempRoot=tmp_path)
    assert job.command("in.nrrd", "out.nrrd") == [
        "/opt/PythonSlicer",
        "-m",
        "CLADE",
        "super-resolve",
        "in.nrrd",
        "out.nrrd",
        "--model",
        "ct",
        "--plane",
        "auto",
        "--device",
        "cpu",
        "--tiling",
        "patches",
        "--ensemble",
        "flips",
        "--precision",
        "float32",
        "--stride",
        "8",
        "--adapt",
        "30",
        "--progress",
        "json",
    ]
    # Whole slices have no stride: it is not passed.
    slices = SuperResolutionOptions(tiling="slices", stride=8)
    assert "--stride" not in slices.commandArguments()


def test_worker_job_reports_stages_in_order_and_creates_output(scene, tiny_model_path, tmp_path):
    node = thickNode(scene)
    before = np.array(slicer.util.arrayFromVolume(node), copy=True)
    job = cpuJob(node, tmp_path, tiny_model_path, tiling="slices")
    job.start()
    events, stages = runJob(job)
    assert job.state == job.SUCCEEDED, job.errorMessage
    kinds = [e["event"] for e in events if e["event"] not in ("log", "progress")]
    assert kinds[-2:] == ["done", "exit"]
    order = ["resample", "adapt", "infer", "write"]
    assert "infer" in stages and stages == sorted(stages, key=order.index)
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert len(fractions) >= 2 and fractions == sorted(fractions) and fractions[-1] <= 1.0
    assert job.fraction == 1.0
    assert all(
        e.get("eta_seconds") is None or e["eta_seconds"] >= 0
        for e in events
        if e["event"] == "progress"
    )
    output = job.outputNode
    assert output.GetName() == "thick_CLADE"
    assert slicer.util.arrayFromVolume(output).shape == (32, 36, 40)
    assert output.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before)
    assert job.summary and job.stats
    assert not job.tempDir.exists() and list(tmp_path.iterdir()) == []


def test_adapting_job_shows_the_adapt_stage_before_inference(scene, tiny_model_path, tmp_path):
    node = thickNode(scene, shape=(12, 64, 64))
    job = cpuJob(node, tmp_path, tiny_model_path, tiling="slices", adaptSteps=30)
    job.start()
    events, stages = runJob(job)
    assert job.state == job.SUCCEEDED, job.errorMessage
    assert "adapt" in stages and "infer" in stages
    assert stages.index("adapt") < stages.index("infer")
    assert job.stageLabel == "Writing" or job.stage in ("infer", "write")
    assert slicer.util.arrayFromVolume(job.outputNode).shape == (48, 64, 64)


def test_cancelled_job_leaves_no_node_no_process_no_files(scene, tiny_model_path, tmp_path):
    node = thickNode(scene, shape=(12, 96, 96))
    count = volumeCount(scene)
    job = cpuJob(node, tmp_path, tiny_model_path, tiling="patches", stride=1)
    job.start()
    pid = job.worker.pid
    deadline = time.monotonic() + 60
    # Cancel once the worker is really computing (first progress line), not while it starts.
    while job.fraction == 0.0 and not job.done and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.05)
    assert job.state == job.RUNNING and 0 < job.fraction < 1
    job.cancel()
    assert job.state == job.CANCELLED
    assert "no output" in job.errorMessage
    assert volumeCount(scene) == count and job.outputNode is None
    assert not pidAlive(pid)
    assert list(tmp_path.iterdir()) == []


#: A stand-in for ``python -m CLADE`` that speaks the protocol slowly (cancel and scene close).
SLOW_WORKER = textwrap.dedent("""
    import json, sys, time
    for done in range(1, 200):
        print(json.dumps({"event": "progress", "stage": "infer", "done": done, "total": 200,
                          "fraction": done / 200, "eta_seconds": 9.0, "message": ""}), flush=True)
        print(json.dumps({"event": "log", "level": "warning", "message": "slow"}), flush=True)
        time.sleep(0.1)
""")


def test_protocol_events_fill_stage_fraction_eta_and_log(scene, tmp_path):
    job, temp = scriptedJob(scene, tmp_path, "slow.py", SLOW_WORKER)
    job.start()
    deadline = time.monotonic() + 30
    while job.fraction < 0.01 and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.05)
    assert job.stage == "infer" and job.stageLabel == "Super-resolving"
    assert job.etaSeconds == 9.0 and job.logLines[0] == "Warning: slow"
    job.cancel()
    assert job.state == job.CANCELLED and list(temp.iterdir()) == []


def test_cancel_kills_the_whole_process_tree(tmp_path):
    pidFile = tmp_path / "grandchild.pid"
    script = textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pidFile)!r}, "w").write(str(child.pid))
        print('{{"event": "progress", "fraction": 0.1}}', flush=True)
        time.sleep(60)
    """)
    worker = WorkerProcess([sys.executable, "-c", script])
    worker.start()
    deadline = time.monotonic() + 20
    while not pidFile.exists() or not pidFile.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(pidFile.read_text())
    assert pidAlive(grandchild)
    worker.cancel()
    assert worker.finished and worker.cancelled
    events = worker.drainEvents()
    assert events[0] == {"event": "progress", "fraction": 0.1}
    assert events[-1]["event"] == "exit" and events[-1]["cancelled"]
    time.sleep(0.2)
    assert not pidAlive(worker.pid) and not pidAlive(grandchild)


def test_crashing_worker_is_reported_with_its_last_lines(scene, tmp_path):
    crash = textwrap.dedent("""
        import sys
        print('{"event": "started", "model": "x", "device": "cpu"}', flush=True)
        print("Traceback (most recent call last):", file=sys.stderr)
        print("MemoryError: out of memory in the worker", file=sys.stderr)
        open(sys.argv[3], "w").write("half")  # super-resolve IN OUT ...
        sys.exit(3)
    """)
    job, temp = scriptedJob(scene, tmp_path, "crash.py", crash)
    count = volumeCount(scene)  # the thick node included; the job adds none before it runs
    job.start()
    assert job.wait(timeout=30) == job.FAILED
    assert "exit code 3" in job.errorMessage
    assert "MemoryError: out of memory in the worker" in job.errorMessage
    assert volumeCount(scene) == count and job.outputNode is None
    assert list(temp.iterdir()) == []


def test_worker_user_error_is_shown_as_its_sentence(scene, tmp_path):
    node = thickNode(scene)
    missing = tmp_path / "no-such-model.pt"
    job = cpuJob(node, tmp_path, missing)
    job.start()
    assert job.wait(timeout=60) == job.FAILED
    assert job.errorMessage.startswith("The model file") and "does not exist" in job.errorMessage
    assert "Traceback" not in job.errorMessage


def test_closing_the_scene_cancels_the_job(scene, tmp_path):
    job, temp = scriptedJob(scene, tmp_path, "slow.py", SLOW_WORKER)
    job.start()
    pid = job.worker.pid
    scene.Clear(0)
    assert job.state == job.CANCELLED
    assert not pidAlive(pid)
    assert list(temp.iterdir()) == []


def test_wait_sleeps_between_polls_and_processes_events(scene, tmp_path):
    """The self-test's wait loop: a worker running ~1 s is polled tens of times, not
    millions (before: ``while not job.done: job.poll()`` spun one core at 100 %)."""
    job, _ = scriptedJob(scene, tmp_path, "sleep.py", "import time; time.sleep(1.0)\n")
    job.start()
    calls = []
    assert job.wait(timeout=30, processEvents=lambda: calls.append(1)) == job.FAILED
    assert 5 <= len(calls) <= 200


def test_events_file_is_tailed_from_where_it_was(tmp_path):
    events = tmp_path / "events.jsonl"
    events.write_text('{"event": "step", "global_step": 0}\n')  # from an earlier run
    script = textwrap.dedent(f"""
        import time
        with open({str(events)!r}, "a") as f:
            f.write('{{"event": "step", "global_step": 1}}\\n'); f.flush(); time.sleep(0.3)
            f.write('{{"event": "step", "glob'); f.flush(); time.sleep(0.3)
            f.write('al_step": 2}}\\n{{"event": "done"}}\\n')
    """)
    worker = WorkerProcess([sys.executable, "-c", script], eventsFile=events, pollInterval=0.05)
    worker.start()
    assert worker.wait(30) == 0
    got = [e for e in worker.drainEvents() if e["event"] != "log"]
    assert got == [
        {"event": "step", "global_step": 1},
        {"event": "step", "global_step": 2},
        {"event": "done"},
        {"event": "exit", "returnCode": 0, "cancelled": False},
    ]


def test_training_job_runs_clade_train_and_offers_the_new_models(scene, tmp_path):
    """The Train tab's job with the real ``clade train`` (tiny networks, one epoch): events
    reach the curves and the plot nodes, and the exported models are found."""
    from CLADESuperResolutionLib import ModelCatalog, Training

    node = thickNode(scene, shape=(8, 36, 36))
    job = Training.TrainingJob(
        [node],
        "",
        tmp_path / "run",
        Training.TrainingOptions(epochs=1, batchSize=8, patchesPerSlice=1),
        validationNode=node,
        python=sys.executable,
        tempRoot=tmp_path,
        extraArguments=(
            "--base-filters 4 --n-blocks 1 --disc-filters 4 --device cpu --log-every 1 "
            "--min-foreground 0"
        ).split(),
    )
    job.start()
    kinds = []
    deadline = time.monotonic() + 180
    while not job.done and time.monotonic() < deadline:
        kinds += [e["event"] for e in job.poll() if e["event"] != "log"]
        time.sleep(0.1)
    assert job.state == job.SUCCEEDED, job.errorMessage
    assert kinds[-2:] == ["done", "exit"] and "step" in kinds and "validation" in kinds
    assert [m.name for m in job.models] == ["model_best.pt", "model_final.pt"]
    choices = ModelCatalog.modelChoices(tmp_path / "no-manifest.json", job.models)
    assert [c.kind for c in choices] == ["file", "file"]
    assert all(ModelCatalog.validateModelChoice(c)[0] for c in choices)
    nodes = job.curves.updateNodes(scene)
    assert nodes["lossTable"].GetTable().GetNumberOfRows() == len(job.curves.steps) > 0
    assert nodes["metricTable"].GetTable().GetNumberOfRows() == 1
    assert not any(p.name.startswith("CLADE-train-") for p in tmp_path.iterdir())


def test_job_and_in_process_logic_give_the_pipelines_voxels_on_a_real_volume(
    scene, test_data, tiny_model_path, tmp_path
):
    """Both Slicer paths are front ends of CLADE.pipeline: on a real brain MRI (6.5 mm slices,
    cropped in-plane to keep the test short) they give exactly what pipeline.run gives."""
    import SimpleITK as sitk
    from CLADESuperResolutionLib.SuperResolutionLogic import superResolveInProcess
    from CLADESuperResolutionLib.VolumeConversion import updateVolumeNodeFromImage

    from CLADE.pipeline import SuperResolutionRequest, run

    image = sitk.ReadImage(str(test_data / "mr_brain2_t1gd_pyradiomics_crop.nrrd"))  # 96x96
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "brain")
    updateVolumeNodeFromImage(node, image)
    options = SuperResolutionOptions(
        model=str(tiny_model_path), device="cpu", tiling="slices", precision="float32"
    )
    expected = sitk.GetArrayFromImage(
        run(
            image,
            SuperResolutionRequest(
                model=str(tiny_model_path), device="cpu", tiling="slices", precision="float32"
            ),
        ).image
    )

    job = SuperResolutionJob(node, options, python=sys.executable, tempRoot=tmp_path)
    job.start()
    assert job.wait(timeout=300) == job.SUCCEEDED, job.errorMessage
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(job.outputNode), expected)
    inProcess, result = superResolveInProcess(node, options)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(inProcess), expected)
    assert result.stats["tiling"] == "slices" and expected.shape[1:] == (96, 96)
    assert list(tmp_path.iterdir()) == []
