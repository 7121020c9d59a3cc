"""Patch reassembly is exact, whatever the stride, batch and chunk sizes."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import make_volume
from helpers import WIDE_WINDOW, known_model

from CLADE.geometry import resample_to_isotropic
from CLADE.model_file import LoadedModel, build_generator, make_metadata
from CLADE.patches import SlicePatcher, padded_length
from CLADE.pipeline import super_resolve


@pytest.mark.parametrize("stride", [1, 5, 8, 12, 16, 32])
@pytest.mark.parametrize("shape", [(32, 32), (40, 50), (20, 70), (9, 13)])
def test_patcher_round_trip_and_coverage(stride, shape):
    patcher = SlicePatcher(*shape, stride=stride)
    slices = torch.rand(2, *shape)
    patches = patcher.extract(slices)
    assert patches.shape[1:] == (1, 32, 32)
    rows = (padded_length(shape[0], stride) - 32) // stride + 1
    cols = (padded_length(shape[1], stride) - 32) // stride + 1
    assert patches.shape[0] == 2 * rows * cols
    # The first patch of slice 1 is that slice's top-left corner.
    h, w = min(32, shape[0]), min(32, shape[1])
    torch.testing.assert_close(patches[rows * cols, 0, :h, :w], slices[1, :h, :w])
    torch.testing.assert_close(patcher.blend(patches, 2), slices)


def test_blending_averages_overlaps():
    patcher = SlicePatcher(48, 32, stride=16)  # two overlapping patches vertically, then padding
    patches = torch.zeros(patcher.patches_per_slice, 1, 32, 32)
    patches[0] = 1.0  # first patch only
    blended = patcher.blend(patches, 1)[0]
    assert blended[:16].eq(1.0).all()  # covered by patch 0 only
    assert blended[16:32].eq(0.5).all()  # covered by patches 0 and 1
    assert blended[32:].eq(0.0).all()


@pytest.mark.parametrize("stride", [6, 12, 16])
def test_identity_network_returns_the_spline_volume(stride):
    image = make_volume(size=(45, 38, 7), spacing=(0.8, 0.8, 3.3))
    result = super_resolve(image, known_model(), stride=stride, device="cpu")
    expected = sitk.GetArrayFromImage(resample_to_isotropic(image, 2))
    np.testing.assert_allclose(sitk.GetArrayFromImage(result.image), expected, atol=1e-3)


@pytest.mark.parametrize("plane", ["auto", "coronal", "both"])
def test_constant_network_adds_exactly_that_constant(plane):
    image = make_volume(size=(45, 38, 7), spacing=(0.8, 0.8, 3.3))
    # 0.1 in normalised units is 0.1 * (5000 - -5000) / 2 = 500 in image units.
    result = super_resolve(image, known_model(0.1), stride=12, plane=plane, device="cpu")
    expected = sitk.GetArrayFromImage(resample_to_isotropic(image, 2)) + 500.0
    np.testing.assert_allclose(sitk.GetArrayFromImage(result.image), expected, atol=1e-2)


def test_batch_sizes_do_not_change_the_result():
    torch.manual_seed(1)
    meta = make_metadata("tiny", "MR", base_filters=4, n_blocks=1, normalisation=WIDE_WINDOW)
    model = LoadedModel(build_generator(meta).eval(), meta)
    image = make_volume(size=(40, 34, 5), spacing=(1.0, 1.0, 4.0))
    runs = [
        super_resolve(image, model, stride=16, device="cpu", batch_size=b, precision="float32")
        for b in (64, 7, 1000)
    ]
    reference = sitk.GetArrayFromImage(runs[0].image)
    assert np.abs(reference - sitk.GetArrayFromImage(resample_to_isotropic(image, 2))).max() > 1
    for run in runs[1:]:
        np.testing.assert_allclose(sitk.GetArrayFromImage(run.image), reference, atol=1e-3)


def test_values_outside_the_window_keep_their_spline_value():
    # A percentile window clips the brightest voxels; the identity model must still return the
    # spline volume exactly, bright spots included.
    from helpers import AddConstant

    from CLADE.model_file import make_metadata
    from CLADE.normalisation import NormalisationRecipe

    image = make_volume(size=(40, 36, 6), spacing=(1.0, 1.0, 4.0))
    array = sitk.GetArrayFromImage(image)
    array[3, 10:14, 10:14] = 5000.0  # far above the 99.5th percentile
    bright = sitk.GetImageFromArray(array)
    bright.CopyInformation(image)
    meta = make_metadata("id", "MR", normalisation=NormalisationRecipe(), default_stride=12)
    result = super_resolve(bright, LoadedModel(AddConstant(0.0), meta), device="cpu")
    expected = sitk.GetArrayFromImage(resample_to_isotropic(bright, 2))
    np.testing.assert_allclose(sitk.GetArrayFromImage(result.image), expected, atol=1e-2)
    assert sitk.GetArrayFromImage(result.image).max() > 4000
