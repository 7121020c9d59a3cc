"""PSNR and SSIM equal scikit-image's on real volumes (scikit-image is a test-only dependency)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import CT_ISO
from scipy.ndimage import gaussian_filter

import CLADE.metrics.reference as reference_module
from CLADE.errors import CladeError
from CLADE.metrics import psnr, ssim

skimage_metrics = pytest.importorskip("skimage.metrics")


@pytest.fixture(scope="module")
def ct_pair(test_data):
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(test_data / CT_ISO)))[20:80]
    truth = truth.astype(np.float64)
    degraded = gaussian_filter(truth, (1.5, 0.5, 0.5))
    degraded += np.random.default_rng(0).normal(0, 15, truth.shape)
    return truth, degraded


def test_psnr_equals_skimage(ct_pair):
    truth, degraded = ct_pair
    data_range = truth.max() - truth.min()
    expected = skimage_metrics.peak_signal_noise_ratio(truth, degraded, data_range=data_range)
    assert psnr(truth, degraded) == pytest.approx(expected, rel=1e-12)
    assert psnr(truth, truth) == float("inf")


def test_ssim_3d_equals_skimage(ct_pair, monkeypatch):
    truth, degraded = ct_pair
    data_range = truth.max() - truth.min()
    expected = skimage_metrics.structural_similarity(truth, degraded, data_range=data_range)
    assert ssim(truth, degraded) == pytest.approx(expected, abs=1e-10)
    # Slab-wise computation must not change the result.
    monkeypatch.setattr(reference_module, "_SLAB_VOXELS", 5000)
    assert ssim(truth, degraded) == pytest.approx(expected, abs=1e-10)


def test_ssim_2d_and_integer_input_equal_skimage(ct_pair):
    truth, degraded = ct_pair
    a, b = truth[30].astype(np.int32), degraded[30].round().astype(np.int32)
    data_range = float(a.max() - a.min())
    expected = skimage_metrics.structural_similarity(a, b, data_range=data_range)
    assert ssim(a, b) == pytest.approx(expected, abs=1e-10)
    assert ssim(truth, truth) == pytest.approx(1.0)


def test_shape_mismatch_and_constant_reference_are_clade_errors():
    with pytest.raises(CladeError, match="same grid"):
        ssim(np.zeros((8, 8, 8)), np.zeros((8, 8, 9)))
    with pytest.raises(CladeError, match="constant"):
        psnr(np.ones((8, 8, 8)), np.zeros((8, 8, 8)))
