"""Training on a CUDA GPU (float16 autocast, GradScaler): skipped where torch sees no GPU."""

from __future__ import annotations

import math

import pytest
import torch

from CLADE.errors import CladeError
from CLADE.model_file import load_model
from CLADE.training import TrainingConfig, read_events, train
from CLADE.training.checkpoint import load_checkpoint

TINY = dict(base_filters=4, n_blocks=1, disc_filters=4, max_patches=32, batch_size=4)


@pytest.fixture
def volume(brain_crop):
    return brain_crop


def test_training_on_cuda_resumes_and_exports(volume, tmp_path):
    config = TrainingConfig.from_preset("mri", epochs=1, device="cuda", **TINY)
    out = tmp_path / "run"
    train([volume], out, config, progress_bar=False)
    result = train([], out, config.with_settings(epochs=2), resume=True, progress_bar=False)
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["epoch"] == 2 and state["networks"]["scaler"]  # the GradScaler is saved
    starts = [e for e in read_events(out / "events.jsonl") if e["event"] == "start"]
    assert starts[0]["device"].startswith("cuda") and starts[1]["resumed"]["epoch"] == 1
    steps = [e for e in read_events(out / "events.jsonl") if e["event"] == "step"]
    assert all(math.isfinite(v) for s in steps for v in s["losses"].values())
    assert len(result.history) == 2 and load_model(result.final_model).metadata["trained"]


def test_a_gpu_index_beyond_the_machine_is_one_sentence(volume, tmp_path):
    index = torch.cuda.device_count()
    config = TrainingConfig.from_preset("mri", epochs=1, device=f"cuda:{index}", **TINY)
    with pytest.raises(CladeError, match=f"There is no GPU {index}"):
        train([volume], tmp_path / "run", config, progress_bar=False)
