"""DistributedDataParallel: two CPU processes under torchrun (gloo) train on disjoint shards."""

from __future__ import annotations

import os
import subprocess

import pytest
import SimpleITK as sitk
import torch
from conftest import BRAIN2

from CLADE.model_file import load_model
from CLADE.training import read_events
from CLADE.training.checkpoint import load_checkpoint


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_torchrun_two_processes(python_exe, test_data, tmp_path):
    volume = tmp_path / "train.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(test_data / BRAIN2))[0:64, 0:64, 8:16], str(volume))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = "-m torch.distributed.run --standalone --nproc_per_node 2 -m CLADE train"
    tiny = (
        "--epochs 1 --max-patches 64 --batch-size 4 --base-filters 4 --n-blocks 1 --disc-filters 4"
    )
    command = [python_exe, *launcher.split(), str(volume), "--out", str(out), "--device", "cpu"]
    command += [*tiny.split(), "--quiet"]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, encoding="utf-8", timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]

    events = read_events(out / "events.jsonl")
    assert [e["event"] for e in events].count("start") == 1  # only rank 0 writes events
    start = next(e for e in events if e["event"] == "start")
    assert start["world_size"] == 2 and start["steps_per_epoch"] == 64 // (2 * 4)
    epoch = next(e for e in events if e["event"] == "epoch")
    # Each rank used 32 of the 64 patches of each domain, and no patch was used by both.
    for domain in ("x", "y"):
        assert epoch["shards"][domain] == {"per_rank": [32, 32], "shared": 0}
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["world_size"] == 2 and state["global_step"] == 8
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no temp files
    load_model(out / "model_final.pt")
