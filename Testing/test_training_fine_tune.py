"""Fine-tuning (``--init-model``) and the cosine learning-rate schedule, on a real brain crop."""

from __future__ import annotations

import pytest
import torch
from conftest import run_clade

from CLADE.model_file import load_model
from CLADE.training import TrainingConfig, train
from CLADE.training.checkpoint import load_checkpoint

TINY = dict(base_filters=4, n_blocks=1, disc_filters=4, batch_size=4, max_patches=32)


@pytest.fixture(scope="module")
def crop(brain_crop):
    return brain_crop


@pytest.fixture(scope="module")
def start_model(crop, tmp_path_factory):
    """A tiny model trained for one epoch: the model the other runs fine-tune."""
    out = tmp_path_factory.mktemp("start") / "run"
    train([crop], out, TrainingConfig.from_preset("mri", epochs=1, **TINY), progress_bar=False)
    return out / "model_final.pt"


def _weights(path):
    return load_model(path).generator.state_dict()


def _largest_difference(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_a_fine_tuning_run_starts_from_the_model(crop, start_model, tmp_path):
    # A learning rate of 1e-12 keeps the weights where they start: the run's final G_X is then
    # the start model's own, and a run without --init-model is far from it.
    config = TrainingConfig.from_preset("mri", epochs=1, lr=1e-12, seed=5, **TINY)
    train(
        [crop],
        tmp_path / "ft",
        config.with_settings(init_model=str(start_model)),
        progress_bar=False,
    )
    train([crop], tmp_path / "fresh", config, progress_bar=False)
    start = _weights(start_model)
    assert _largest_difference(_weights(tmp_path / "ft" / "model_final.pt"), start) < 1e-6
    assert _largest_difference(_weights(tmp_path / "fresh" / "model_final.pt"), start) > 1e-2
    recorded = load_model(tmp_path / "ft" / "model_final.pt").metadata["training"]
    assert recorded["config"]["init_model"] == str(start_model)


def test_the_cosine_schedule_ends_near_zero(crop, tmp_path):
    config = TrainingConfig.from_preset("mri", epochs=2, lr=1e-3, lr_schedule="cosine", **TINY)
    train([crop], tmp_path / "run", config, progress_bar=False)
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    steps = 2 * 8  # 32 patches, batch 4: 8 steps per epoch
    last = config.optimiser.lr_at((steps - 1) / steps)
    for optimiser in ("opt_g", "opt_d"):
        lr = checkpoint["networks"][optimiser]["param_groups"][0]["lr"]
        assert lr == pytest.approx(last) and lr < 1e-4  # the constant schedule would keep 1e-3
    assert torch.isfinite(torch.tensor(last))


def test_a_model_of_another_architecture_is_refused_in_one_sentence(crop, start_model, tmp_path):
    out = tmp_path / "run"
    result = run_clade(
        "train",
        str(crop),
        "--out",
        str(out),
        "--init-model",
        str(start_model),
        "--base-filters",
        "8",
        "--n-blocks",
        "1",
        "--disc-filters",
        "4",
        "--epochs",
        "1",
        "--max-patches",
        "32",
        "--quiet",
    )
    assert result.returncode != 0
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert "another architecture" in message and "--base-filters 4 --n-blocks 1" in message
    assert not (out / "model_final.pt").exists() and not (out / "checkpoint.pt").exists()
