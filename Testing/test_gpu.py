"""CUDA paths: the pipeline, adaptation, a training step and the out-of-memory fallback.

The tests marked ``gpu`` run only where PyTorch sees a CUDA GPU (``benchmarks/gpu_check.sh``
runs them there); the out-of-memory tests without the mark run everywhere, because the halving
logic (:meth:`CLADE.inference.StackInference._shrink`) is the same on every device: an injected
``torch.cuda.OutOfMemoryError`` (a plain ``RuntimeError`` subclass, constructible without CUDA)
drives it on the CPU too.

Tolerances of CUDA against CPU float32, as a fraction of the model's intensity window (the
output's meaningful range): bfloat16 autocast on CUDA within a mean of 2e-3 and a maximum of 2e-2;
float32 on CUDA (where convolutions may use TF32) within 1e-3 and 1e-2. Measured on this crop on
a CPU with bfloat16 instructions: bfloat16 against float32 differs by a mean of 3e-4 and a
maximum of 4.4e-3, so the bounds leave about a factor of five.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import BRAIN2, run_clade
from helpers import known_model
from torch import nn

from CLADE.adaptation import adapt_to_volume
from CLADE.model_file import LoadedModel
from CLADE.pipeline import SuperResolutionRequest, run, super_resolve
from CLADE.registry import resolve_model

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU visible to PyTorch")
TILINGS = [("slices", None), ("patches", 16)]


@pytest.fixture(scope="module")
def brain(test_data) -> sitk.Image:
    """A real thick-slice T1 brain MRI (0.78 x 0.78 x 6.5 mm), cropped to 48 x 48 x 6 voxels."""
    return sitk.ReadImage(str(test_data / BRAIN2))[8:56, 8:56, 9:15]


@pytest.fixture(scope="module")
def mri_model() -> LoadedModel:
    return resolve_model("mri")


@pytest.fixture(scope="module")
def cpu_reference(brain, mri_model) -> dict:
    """The CPU float32 output of each tiling, computed once."""
    return {
        tiling: super_resolve(
            brain, mri_model, tiling=tiling, stride=stride, device="cpu", precision="float32"
        )
        for tiling, stride in TILINGS
    }


def _window_errors(result, reference) -> tuple[float, float]:
    """Mean and max absolute difference, as fractions of the reference's intensity window."""
    low, high = reference.stats["intensity_window"]
    difference = np.abs(
        sitk.GetArrayFromImage(result.image) - sitk.GetArrayFromImage(reference.image)
    ) / (high - low)
    return float(difference.mean()), float(difference.max())


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(
    "precision, mean_bound, max_bound", [("bfloat16", 2e-3, 2e-2), ("float32", 1e-3, 1e-2)]
)
@pytest.mark.parametrize("tiling, stride", TILINGS)
def test_cuda_pipeline_matches_cpu_float32(
    brain, mri_model, cpu_reference, tiling, stride, precision, mean_bound, max_bound
):
    result = super_resolve(
        brain, mri_model, tiling=tiling, stride=stride, device="cuda", precision=precision
    )
    reference = cpu_reference[tiling]
    assert result.stats["device"].startswith("cuda")
    assert result.stats["precision"] == precision
    assert result.image.GetSize() == reference.image.GetSize()
    assert result.image.GetSpacing() == reference.image.GetSpacing()
    assert result.image.GetOrigin() == reference.image.GetOrigin()
    mean_error, max_error = _window_errors(result, reference)
    assert mean_error < mean_bound and max_error < max_bound, (mean_error, max_error)


class OutOfMemoryAbove(nn.Module):
    """Identity that raises CUDA's out-of-memory error for batches above ``limit`` elements
    (``limit`` None: only on the first call), as a real GPU does when a batch is too large."""

    def __init__(self, limit: int | None) -> None:
        super().__init__()
        self.limit = limit
        self.calls = 0
        self.raised = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        too_big = self.calls == 1 if self.limit is None else x.numel() > self.limit
        if too_big:
            self.raised += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return x.clone()

    def __deepcopy__(self, memo):
        # The runner fuses (deep-copies) the generator; keep one instance so its counts are ours.
        return self


def _oom_model(limit: int | None) -> tuple[LoadedModel, OutOfMemoryAbove]:
    double = known_model()
    network = OutOfMemoryAbove(limit)
    return LoadedModel(network, double.metadata), network


def _volume() -> sitk.Image:
    """40 sagittal LR slices of 24 x 200 pixels (4,800 each) on the isotropic grid."""
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(100, 30, (6, 200, 40)).astype(np.float32))
    image.SetSpacing((1.0, 1.0, 4.0))
    return image


def _run(model, device: str, **request) -> sitk.Image:
    """The pipeline with a test double: no ensemble, so every batch is one forward."""
    return run(
        _volume(),
        SuperResolutionRequest(
            model=model, device=device, ensemble="none", precision="float32", **request
        ),
    )


def _check_halving(device: str, caplog) -> None:
    # Patches: batches of 64 patches of 32 x 32; the double refuses more than 16 patches.
    model, network = _oom_model(16 * 32 * 32)
    with caplog.at_level(logging.WARNING, logger="CLADE"):
        result = _run(model, device, tiling="patches", stride=8, batch_size=64)
    assert network.raised == 2  # 64 -> 32 -> 16
    assert result.stats["batch_size"] == 16
    assert "GPU out of memory: continuing with batch size 16." in caplog.text
    reference = _run(known_model(), device, tiling="patches", stride=8)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(result.image), sitk.GetArrayFromImage(reference.image)
    )

    # Whole slices, batch chosen by the pixel budget (13 slices of 4,800 pixels): the double
    # refuses more than 4,096 pixels, so the batch halves to one slice, then the tile budget
    # halves until the slice is cut into tiles with a halo (at most 24 x 132 pixels each); the
    # identity then reassembles to exactly the input.
    caplog.clear()
    model, network = _oom_model(4096)
    with caplog.at_level(logging.WARNING, logger="CLADE"):
        result = _run(model, device, tiling="slices")
    assert network.raised >= 4
    assert "GPU out of memory: continuing with batch size 1." in caplog.text
    assert "GPU out of memory: continuing with tiles of at most 4096 pixels." in caplog.text
    reference = _run(known_model(), device, tiling="slices")
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(result.image), sitk.GetArrayFromImage(reference.image)
    )


def test_out_of_memory_halves_the_batch_and_finishes_on_cpu(caplog):
    _check_halving("cpu", caplog)


@pytest.mark.gpu
@needs_cuda
def test_out_of_memory_halves_the_batch_and_finishes_on_cuda(caplog):
    _check_halving("cuda", caplog)


def test_out_of_memory_with_one_patch_per_batch_is_one_sentence():
    model, _ = _oom_model(0)  # refuses everything
    with pytest.raises(Exception) as caught:
        _run(model, "cpu", tiling="patches", batch_size=4)
    assert type(caught.value).__name__ == "CladeError"
    assert "ran out of memory even with one patch per batch" in str(caught.value)


@pytest.mark.gpu
@needs_cuda
def test_a_single_out_of_memory_error_on_cuda_halves_once(brain, mri_model, caplog, monkeypatch):
    """The real network on CUDA, its first forward failing: one halving, then the same output."""
    model = LoadedModel(mri_model.generator, mri_model.metadata, mri_model.path)
    reference = super_resolve(
        brain, model, tiling="patches", stride=16, device="cuda", batch_size=64, precision="float32"
    )
    from CLADE import inference

    original = inference.GeneratorRunner.__call__
    calls = {"n": 0}

    def fail_once(self, batch):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return original(self, batch)

    monkeypatch.setattr(inference.GeneratorRunner, "__call__", fail_once)
    with caplog.at_level(logging.WARNING, logger="CLADE"):
        result = super_resolve(
            brain,
            model,
            tiling="patches",
            stride=16,
            device="cuda",
            batch_size=64,
            precision="float32",
        )
    assert calls["n"] > 1 and result.stats["batch_size"] == 32
    assert "continuing with batch size 32" in caplog.text
    # Other batch sizes may get other cuDNN kernels: the float32-on-CUDA bounds.
    mean_error, max_error = _window_errors(result, reference)
    assert mean_error < 1e-3 and max_error < 1e-2, (mean_error, max_error)


@pytest.mark.gpu
@needs_cuda
def test_adaptation_on_cuda_matches_cpu(brain, mri_model):
    """Adaptation indexes CUDA tensors with numpy index arrays; the held-out error before any
    step is the same generator on the same pairs, so it must agree with the CPU's."""
    on_cuda = adapt_to_volume(brain, mri_model, steps=20, device="cuda", max_patches=400)
    on_cpu = adapt_to_volume(brain, mri_model, steps=1, device="cpu", max_patches=400)
    assert on_cuda.pairs == on_cpu.pairs and on_cuda.held_out == on_cpu.held_out
    # (1% relative: CUDA's float32 convolutions may use TF32.)
    assert abs(on_cuda.error_before - on_cpu.error_before) < 1e-2 * on_cpu.error_before
    assert np.isfinite(on_cuda.error_after)
    # The model handed back lives on the CPU, whichever was chosen, so inference can move it.
    assert next(on_cuda.model.generator.parameters()).device.type == "cpu"
    result = super_resolve(brain, on_cuda.model, tiling="slices", device="cuda")
    assert np.isfinite(sitk.GetArrayFromImage(result.image)).all()


@pytest.mark.gpu
@needs_cuda
def test_training_steps_on_cuda_change_the_weights():
    from CLADE.training.presets import TrainingConfig
    from CLADE.training.trainer import LOSS_NAMES, TrainStep, build_networks

    config = TrainingConfig.from_preset(
        "mri", batch_size=8, base_filters=8, n_blocks=2, disc_filters=8
    )
    torch.manual_seed(0)
    networks = build_networks(config)
    before = {k: v.detach().clone() for k, v in networks["g_x"].state_dict().items()}
    step = TrainStep(networks, config, torch.device("cuda"))
    generator = torch.Generator(device="cuda").manual_seed(0)
    for _ in range(3):
        x = torch.rand(8, 1, 32, 32, device="cuda", generator=generator) * 2 - 1
        y = torch.rand(8, 1, 32, 32, device="cuda", generator=generator) * 2 - 1
        values = step(x, y)
    assert values.device.type == "cuda" and values.shape == (len(LOSS_NAMES),)
    assert torch.isfinite(values).all()
    after = networks["g_x"].state_dict()
    assert any(not torch.equal(before[k], after[k].cpu()) for k in before if k in after)
    assert step.scaler.get_scale() > 0


@pytest.mark.gpu
@needs_cuda
def test_cli_super_resolve_on_cuda(brain, tmp_path):
    source = tmp_path / "brain.nrrd"
    sitk.WriteImage(brain, str(source))
    out = tmp_path / "iso.nrrd"
    command = ["super-resolve", source, out, "--model", "mri", "--device", "cuda"]
    unbuffered = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = run_clade(*command, "--progress", "json", timeout=300, env=unbuffered)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    events = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert events[-1]["event"] == "done"
    assert "cuda" in events[-1]["stats"]["device"]
    assert sitk.ReadImage(str(out)).GetSize()[:2] == brain.GetSize()[:2]
