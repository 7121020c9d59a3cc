"""Training when things are missing or fail: no matplotlib, a full disk, old checkpoints, GPUs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from CLADE.errors import CladeError
from CLADE.training import TrainingConfig, read_events, train
from CLADE.training import trainer as trainer_module
from CLADE.training.checkpoint import load_checkpoint, save_checkpoint
from CLADE.training.run_record import RunRecord

TINY_ARGS = "--base-filters 4 --n-blocks 1 --disc-filters 4 --max-patches 32 --batch-size 4 --quiet"
TINY = dict(base_filters=4, n_blocks=1, disc_filters=4, max_patches=32, batch_size=4)

#: Loaded at interpreter start-up in the subprocesses (through PYTHONPATH): the faults.
SITECUSTOMIZE = textwrap.dedent(
    """
    import errno, io, os, sys

    if os.environ.get("CLADE_TEST_NO_MATPLOTLIB"):
        sys.modules["matplotlib"] = None  # `import matplotlib` now raises ImportError

    if os.environ.get("CLADE_TEST_CHECKPOINTS_BEFORE_FULL") is not None:
        # The disk fills after this many checkpoints: torch's real zip writer then gets
        # "no space left on device" from the file after a few KiB, as from a full disk.
        import torch

        real_save = torch.save
        left = [int(os.environ["CLADE_TEST_CHECKPOINTS_BEFORE_FULL"])]

        class FullDisk(io.RawIOBase):
            def __init__(self, handle):
                self.handle, self.room = handle, 4096

            def writable(self):
                return True

            def write(self, data):
                if len(data) > self.room:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.room -= len(data)
                return self.handle.write(data)

        def save(obj, f, *args, **kwargs):
            if os.path.basename(str(f)).startswith(".checkpoint.pt."):
                if left[0] == 0:
                    with open(f, "wb") as handle:
                        return real_save(obj, FullDisk(handle), *args, **kwargs)
                left[0] -= 1
            return real_save(obj, f, *args, **kwargs)

        torch.save = save
    """
)


@pytest.fixture(scope="module")
def volume(brain_crop):
    return brain_crop


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sitecustomize")
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    return folder


def clade_train(faults, args, **env):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(faults), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return subprocess.run(
        [sys.executable, "-m", "CLADE", "train", *args],
        env=environment,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )


def test_training_without_matplotlib_writes_its_checkpoint_and_models(volume, faults, tmp_path):
    out = tmp_path / "run"
    args = [str(volume), "--out", str(out), "--epochs", "1", *TINY_ARGS.split()]
    done = clade_train(faults, args, CLADE_TEST_NO_MATPLOTLIB="1")
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert (out / "model_final.pt").is_file() and not (out / "training.png").exists()
    epoch = next(e for e in read_events(out / "events.jsonl") if e["event"] == "epoch")
    assert epoch["plot"] is None


def test_the_plot_is_drawn_only_after_the_epochs_checkpoint(volume, tmp_path, monkeypatch):
    out = tmp_path / "run"
    seen = []

    def plot_history(history, path):
        seen.append((history[-1]["epoch"], load_checkpoint(out / "checkpoint.pt")["epoch"]))
        return None

    monkeypatch.setattr(trainer_module, "plot_history", plot_history)
    train([volume], out, TrainingConfig.from_preset("mri", epochs=2, **TINY), progress_bar=False)
    assert seen == [(1, 1), (2, 2)]


def test_a_full_disk_ends_in_one_sentence_and_keeps_the_last_checkpoint(volume, faults, tmp_path):
    out = tmp_path / "run"
    args = [str(volume), "--out", str(out), "--epochs", "2", *TINY_ARGS.split()]
    first = clade_train(faults, args, CLADE_TEST_CHECKPOINTS_BEFORE_FULL="1")
    expected = (
        f"clade: error: The disk holding {out.resolve()} is full (no space left on device): "
        "checkpoint.pt was not written and the previous file is kept, so the checkpoint at "
        "epoch 1 step 0 is intact; free disk space and rerun with --resume."
    )
    assert first.returncode == 2 and "Traceback" not in first.stderr
    assert first.stderr.strip().splitlines() == [expected]
    kept = (out / "checkpoint.pt").read_bytes()
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []

    # Resumed while the disk is still full: the same sentence, the checkpoint untouched.
    again = clade_train(
        faults, ["--out", str(out), "--resume", "--quiet"], CLADE_TEST_CHECKPOINTS_BEFORE_FULL="0"
    )
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [expected]
    assert (out / "checkpoint.pt").read_bytes() == kept

    # Space freed: the run ends from the kept checkpoint.
    last = clade_train(faults, ["--out", str(out), "--resume", "--quiet"])
    assert last.returncode == 0, last.stderr
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert (out / "model_final.pt").is_file()


def test_a_checkpoint_from_before_the_run_record_resumes(volume, tmp_path):
    # Checkpoints of earlier versions kept the run's facts under "data", not the record's keys.
    config = TrainingConfig.from_preset("mri", epochs=1, **TINY)
    train([volume], tmp_path / "run", config, progress_bar=False)
    path = tmp_path / "run" / "checkpoint.pt"
    state = load_checkpoint(path)
    record = RunRecord.from_dict(state)
    old = {k: v for k, v in state.items() if k not in record.to_dict() or k == "config"}
    old = {k: v for k, v in old.items() if k not in ("format", "format_version")}
    old["data"] = {
        "inputs": record.inputs,
        "fingerprint": record.fingerprint,
        "n_x": record.patches["x"],
        "n_y": record.patches["y"],
    }
    save_checkpoint(path, old)
    assert "inputs" not in load_checkpoint(path)
    result = train(
        [], tmp_path / "run", config.with_settings(epochs=2), resume=True, progress_bar=False
    )
    assert len(result.history) == 2
    assert load_checkpoint(path)["inputs"] == record.inputs  # rewritten in today's schema


def test_a_missing_gpu_is_one_sentence(volume, tmp_path):
    config = TrainingConfig.from_preset("mri", epochs=1, device="cuda:7", **TINY)
    expected = "There is no GPU 7" if torch.cuda.device_count() else "no CUDA GPU is available"
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has a GPU 7")
    with pytest.raises(CladeError, match=expected):
        train([volume], tmp_path / "run", config, progress_bar=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
