"""Crash safety: SIGKILL mid-epoch then --resume ends bit-identical; a full disk loses nothing."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time

import pytest
import torch

from CLADE.errors import CladeError
from CLADE.training import TrainingConfig, read_events, train
from CLADE.training.checkpoint import load_checkpoint, save_checkpoint

ARGS = (
    "--epochs 2 --max-patches 64 --batch-size 4 --base-filters 4 --n-blocks 1 --disc-filters 4 "
    "--seed 7 --quiet --log-every 1"
).split()


@pytest.fixture(scope="module")
def volume(brain_crop):
    return brain_crop


def start(python_exe, volume, out, *extra):
    # One thread each: CPU kernels are then bitwise reproducible run to run, and the two runs
    # share the machine's cores fairly.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen(
        [python_exe, "-m", "CLADE", "train", str(volume), "--out", str(out), *ARGS, *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )


def test_sigkill_then_resume_matches_an_uninterrupted_run(python_exe, volume, tmp_path):
    reference = start(python_exe, volume, tmp_path / "reference")
    killed_out = tmp_path / "killed"
    victim = start(python_exe, volume, killed_out, "--checkpoint-minutes", "0.001")
    events = killed_out / "events.jsonl"
    deadline = time.monotonic() + 120
    mid_epoch = None
    while mid_epoch is None and time.monotonic() < deadline and victim.poll() is None:
        for event in read_events(events) if events.exists() else []:
            if (
                event["event"] == "checkpoint"
                and event["reason"] == "time"
                and event["epoch"] == 1
                and 2 <= event["step"] <= 10
            ):
                mid_epoch = event
        time.sleep(0.02)
    assert mid_epoch is not None, "no mid-epoch checkpoint seen: " + victim.communicate()[1]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (killed_out / "model_final.pt").exists()

    # Resume with no DATA: the run's own inputs and settings are used.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    resumed = subprocess.run(
        [python_exe, "-m", "CLADE", "train", "--out", str(killed_out), "--resume", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait(timeout=300) == 0, reference.communicate()[1]

    starts = [e for e in read_events(events) if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed"]["epoch"] == 1
    assert starts[1]["resumed"]["step"] >= mid_epoch["step"] > 0  # it resumed mid-epoch

    a = load_checkpoint(tmp_path / "reference" / "checkpoint.pt")
    b = load_checkpoint(killed_out / "checkpoint.pt")
    assert a["global_step"] == b["global_step"] == 32
    for name in ("g_x", "g_y", "d_x", "d_y"):
        for key, value in a["networks"][name].items():
            assert torch.equal(value, b["networks"][name][key]), f"{name}.{key}"
    moments_a = a["networks"]["opt_g"]["state"]
    moments_b = b["networks"]["opt_g"]["state"]
    assert all(torch.equal(moments_a[k]["exp_avg"], moments_b[k]["exp_avg"]) for k in moments_a)
    assert [h["losses"] for h in a["history"]] == [h["losses"] for h in b["history"]]
    assert json.loads((killed_out / "run.json").read_text())["config"]["seed"] == 7


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "w": torch.ones(3)})
    before = path.read_bytes()

    def full_disk(obj, target, *args, **kwargs):
        with open(target, "wb") as handle:
            handle.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CladeError) as error:
        save_checkpoint(path, {"epoch": 2, "w": torch.zeros(3)})
    message = str(error.value)
    assert "no space left on device" in message and "previous file is kept" in message
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temp left


def test_training_stops_cleanly_when_the_disk_fills(volume, tmp_path, monkeypatch):
    def full_disk(obj, target, *args, **kwargs):
        raise RuntimeError(
            "[enforce fail at inline_container.cc] . PytorchStreamWriter "
            "failed writing file data/0: file write failed"
        )

    monkeypatch.setattr(torch, "save", full_disk)
    config = TrainingConfig.from_preset(
        "mri", epochs=1, max_patches=16, base_filters=4, n_blocks=1, disc_filters=4
    )
    with pytest.raises(CladeError, match="free disk space and rerun with --resume"):
        train([volume], tmp_path / "out", config, progress_bar=False)
    events = read_events(tmp_path / "out" / "events.jsonl")
    assert events[-1]["event"] == "error" and "checkpoint.pt" in events[-1]["message"]
    assert not (tmp_path / "out" / "checkpoint.pt").exists()
    # Space freed: --resume of a run with a record but no checkpoint yet starts it over.
    monkeypatch.undo()
    result = train([], tmp_path / "out", None, resume=True, progress_bar=False)
    assert result.final_model.is_file()


def cancel_after(steps: int):
    """A cancel callback that asks to stop before step ``steps + 1``."""
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > steps

    return cancel


def test_cancel_writes_a_checkpoint_that_resumes(volume, tmp_path):
    from CLADE.errors import Cancelled

    config = TrainingConfig.from_preset(
        "mri", epochs=1, max_patches=32, base_filters=4, n_blocks=1, disc_filters=4
    )
    with pytest.raises(Cancelled, match="rerun with --resume"):
        train([volume], tmp_path / "out", config, cancel=cancel_after(3), progress_bar=False)
    state = load_checkpoint(tmp_path / "out" / "checkpoint.pt")
    assert state["epoch"] == 0 and state["pairs_done"] == 3 * 4
    result = train([], tmp_path / "out", None, resume=True, progress_bar=False)
    assert result.final_model.is_file() and len(result.history) == 1


def test_a_checkpoint_from_before_a_new_loss_term_resumes_with_it(volume, tmp_path):
    # Runs started before the data-consistency term existed saved 8 loss sums, not 9; they
    # must resume (here mid-epoch, with the new term switched on) and log the new term.
    config = TrainingConfig.from_preset(
        "mri", epochs=1, max_patches=32, base_filters=4, n_blocks=1, disc_filters=4
    )
    from CLADE.errors import Cancelled

    with pytest.raises(Cancelled):
        train([volume], tmp_path / "out", config, cancel=cancel_after(3), progress_bar=False)
    path = tmp_path / "out" / "checkpoint.pt"
    state = load_checkpoint(path)
    state["epoch_sums"] = state["epoch_sums"][:8].clone()
    del state["config"]["lambda_dc"]
    save_checkpoint(path, state)
    resumed = TrainingConfig.from_preset(
        "mri", epochs=1, max_patches=32, base_filters=4, n_blocks=1, disc_filters=4, lambda_dc=5.0
    )
    result = train([], tmp_path / "out", resumed, resume=True, progress_bar=False)
    assert result.final_model.is_file()
    epoch = [e for e in read_events(tmp_path / "out" / "events.jsonl") if e["event"] == "epoch"]
    assert epoch[-1]["losses"]["dc"] > 0
