"""Progress reporting, cancellation, devices and normalisation of a super-resolution run."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import make_volume
from helpers import known_model

from CLADE.errors import Cancelled, CladeError
from CLADE.model_file import load_model
from CLADE.normalisation import IntensityWindow, NormalisationRecipe
from CLADE.pipeline import super_resolve


def test_progress_is_monotonic_and_ends_at_one_with_an_eta(tiny_model_path):
    model = load_model(tiny_model_path)
    image = make_volume(size=(40, 48, 10), spacing=(1.0, 1.0, 4.0))
    reports = []
    result = super_resolve(
        image, model, stride=4, batch_size=50, device="cpu", progress=reports.append
    )
    fractions = [r.fraction for r in reports]
    infer = [r for r in reports if r.stage == "infer" and r.done > 0]
    assert [r.stage for r in reports][0] == "resample" and len(infer) > 5
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert infer[-1].done == result.stats["patches"] == infer[0].total
    # The first batch is warm-up (not timed: CLADE.progress.WARM_UP_UNITS); none left at the end.
    assert infer[0].eta_seconds is None and infer[1].eta_seconds is not None
    assert infer[-1].eta_seconds is None


def test_cancel_stops_between_batches_and_returns_nothing(tiny_model_path):
    model = load_model(tiny_model_path)
    image = make_volume(size=(40, 48, 10), spacing=(1.0, 1.0, 4.0))
    before = sitk.GetArrayFromImage(image).copy()
    reports = []

    def batches():
        return [r for r in reports if r.stage == "infer" and r.done > 0]

    with pytest.raises(Cancelled):
        super_resolve(
            image,
            model,
            stride=4,
            batch_size=50,
            device="cpu",
            progress=reports.append,
            cancel=lambda: len(batches()) >= 3,
        )
    assert len(batches()) == 3  # stopped at the first check after the third batch
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), before)  # input untouched


def test_unavailable_cuda_and_bad_options_are_user_errors():
    image = make_volume(size=(40, 36, 6), spacing=(1.0, 1.0, 4.0))
    if not torch.cuda.is_available():
        with pytest.raises(CladeError, match="no CUDA GPU"):
            super_resolve(image, known_model(), device="cuda")
    with pytest.raises(CladeError, match="stride must be between 1 and 32"):
        super_resolve(image, known_model(), stride=40, device="cpu")
    with pytest.raises(CladeError, match="Unknown device"):
        super_resolve(image, known_model(), device="tpu")


def test_window_inverse_is_exact_inside_and_clips_outside():
    values = np.linspace(-100, 1100, 1201).astype(np.float32)
    window = IntensityWindow(0.0, 1000.0)
    restored = window.denormalise(window.normalise(values))
    inside = (values >= 0) & (values <= 1000)
    np.testing.assert_allclose(restored[inside], values[inside], atol=1e-3)
    assert restored[~inside].min() == 0.0 and restored[~inside].max() == 1000.0


def test_percentile_window_is_robust_to_outliers_and_rejects_constant_volumes():
    rng = np.random.default_rng(0)
    values = rng.normal(100, 10, 100_000)
    values[:10] = 1e6  # a few hot voxels must not stretch the window
    low, high = NormalisationRecipe().window(values)
    assert 60 < low < 80 and 120 < high < 140
    with pytest.raises(CladeError, match="constant"):
        NormalisationRecipe().window(np.ones(1000))
