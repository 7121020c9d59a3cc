"""A Train-tab run resumes from its folder: the volumes it exported are kept with the run.

Before: the nodes were exported to a temporary folder removed at the end, so the run record
named files that no longer existed and the tab could only answer "add --resume". Real
``clade train`` (tiny networks) through the tab's ``TrainingJob``, twice.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "CLADESuperResolution"))
slicer = pytest.importorskip("slicer")


def wait(job, timeout=240):
    events = []
    deadline = time.monotonic() + timeout
    while not job.done and time.monotonic() < deadline:
        events += job.poll()
        time.sleep(0.1)
    assert job.state == job.SUCCEEDED, job.errorMessage
    return events


def test_a_slicer_run_resumes_from_its_folder_on_its_kept_inputs(scene, tmp_path):
    from CLADESuperResolutionLib import Training
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(3)
    array = (gaussian_filter(rng.normal(size=(8, 36, 36)), 1.5) * 400 + 100).astype(np.float32)
    node = slicer.util.addVolumeFromArray(array, ijkToRAS=np.diag([1.0, 1.0, 4.0, 1.0]))
    out = tmp_path / "run"
    tiny = "--base-filters 4 --n-blocks 1 --disc-filters 4 --device cpu --min-foreground 0"
    first = Training.TrainingJob(
        [node], "", out, Training.TrainingOptions(epochs=1, batchSize=8, patchesPerSlice=1),
        python=sys.executable, extraArguments=tiny.split(),
    )  # fmt: skip
    first.start()
    wait(first)
    assert Training.runInFolder(out) and list((out / "inputs").glob("*.nrrd"))
    scene.Clear(0)  # the node is gone: the resume needs only the folder
    again = Training.TrainingJob(
        [], "", out, Training.TrainingOptions(epochs=2), python=sys.executable,
        resume=True, extraArguments=["--device", "cpu"],
    )  # fmt: skip
    again.start()
    events = wait(again)
    starts = [e for e in events if e.get("event") == "start"]
    assert starts and starts[0]["resumed"] is not None
    assert [e["epoch"] for e in events if e.get("event") == "epoch"] == [2]
    assert [m.name for m in again.models] == ["model_final.pt"]  # (no validation: no best)
