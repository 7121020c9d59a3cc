"""PIQE: the vectorised implementation against the pypiqe reference on real slices."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import BRAIN1, CT_ISO, CT_NATIVE, SAMPLE_VOLUME, TEST_DATA

from CLADE.errors import CladeError
from CLADE.metrics.piqe import piqe, piqe_result, volume_piqe

pypiqe = pytest.importorskip("pypiqe")


def _array(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _reference(slice2d: np.ndarray) -> float:
    return float(pypiqe.piqe(slice2d)[0])


@pytest.mark.parametrize(
    "name, take, dtype",
    [
        (TEST_DATA / CT_NATIVE, lambda a: a[10], np.int16),  # 256x256, multiple of 16
        (TEST_DATA / CT_NATIVE, lambda a: a[:, 122, :], np.float64),  # 20x256 LR plane, padded
        (TEST_DATA / BRAIN1, lambda a: a[12], np.float64),  # 128x128
        (TEST_DATA / BRAIN1, lambda a: a[:, :, 56], np.int16),  # 25x128
        (SAMPLE_VOLUME, lambda a: a[6, 0:100, 0:137], np.uint16),  # 100x137, both padded
        (TEST_DATA / CT_ISO, lambda a: a[:, 40, :], np.float64),  # 112x81, HU with negatives
        (TEST_DATA / CT_ISO, lambda a: a[60], np.float32),
    ],
    ids=[
        "ct-axial",
        "ct-lr-plane",
        "brain-axial",
        "brain-lr-plane",
        "pelvis",
        "ct-iso",
        "ct-iso-axial",
    ],
)
def test_piqe_matches_pypiqe_on_real_slices(name, take, dtype):
    slice2d = take(_array(name))
    if dtype == np.uint16:
        slice2d = slice2d - slice2d.min()
    slice2d = np.ascontiguousarray(slice2d).astype(dtype)
    expected = _reference(slice2d)
    assert 0 < expected < 100  # a real slice with active blocks
    assert piqe(slice2d) == pytest.approx(expected, abs=0.01)


def test_image_without_active_blocks_scores_100_like_pypiqe():
    rows, columns = np.mgrid[:70, :90]
    smooth = 1000 * np.exp(-((columns - 45) ** 2 + (rows - 35) ** 2) / (2 * 30.0**2))
    assert _reference(smooth) == 100.0
    result = piqe_result(smooth)
    assert result.score == 100.0 and not result.active.any()


def test_constant_and_empty_slices_score_100():
    assert piqe(np.zeros((40, 40))) == 100.0
    assert piqe(np.full((33, 17), -5.0)) == 100.0


def test_masks_are_per_block_and_consistent():
    slice2d = _array(TEST_DATA / BRAIN1)[12].astype(np.float64)
    result = piqe_result(slice2d)
    assert result.active.shape == (8, 8)  # 128 x 128 pixels in blocks of 16
    assert not (result.artefact & ~result.active).any()
    assert not (result.noise & ~result.active).any()


def test_gain_invariant_offset_dependent():
    slice2d = _array(TEST_DATA / BRAIN1)[12].astype(np.float64)
    score = piqe(slice2d)
    assert piqe(4.0 * slice2d) == pytest.approx(score, abs=1e-9)
    assert abs(piqe(slice2d + 2000.0) - score) > 1.0


def test_volume_piqe_is_mean_of_kept_slices():
    volume = _array(TEST_DATA / CT_ISO)[:, 20:52, 20:68].astype(np.float64)  # 112 x 32 x 48
    volume[:3] = 0.0  # empty slices: skipped
    per_slice = [piqe(volume[:, j, :]) for j in range(volume.shape[1])]
    assert volume_piqe(volume, axis=1) == pytest.approx(np.mean(per_slice), abs=1e-9)
    central = per_slice[8:24]  # half of 32 slices
    assert volume_piqe(volume, axis=1, central_fraction=0.5) == pytest.approx(np.mean(central))
    kept = [piqe(volume[i]) for i in range(3, volume.shape[0])]
    assert volume_piqe(volume, axis=0) == pytest.approx(np.mean(kept), abs=1e-9)


def test_bad_input_is_a_clade_error():
    with pytest.raises(CladeError, match="constant"):
        volume_piqe(np.zeros((4, 20, 20)), axis=0)
    with pytest.raises(CladeError, match="2D slice"):
        piqe(np.zeros((4, 4, 4)))
    with pytest.raises(CladeError, match="central fraction"):
        volume_piqe(np.ones((4, 20, 20)), axis=0, central_fraction=0)
    with pytest.raises(CladeError, match="NaN"):
        piqe(np.full((20, 20), np.nan))
