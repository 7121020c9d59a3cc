"""Edge sharpness and SNR on synthetic edges with known answers, and automatic edge lines."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import MR_ISO
from scipy.special import erf

from CLADE.errors import CladeError
from CLADE.metrics import (
    box_values,
    edge_sharpness_between,
    find_edge_lines,
    line_profile,
    mean_edge_sharpness,
    profile_sharpness,
    snr,
)


def _blurred_step(sigma_mm: float, spacing_mm: float, axis: int = 2, length: int = 120):
    """A volume with an edge blurred by a Gaussian of sigma_mm along ``axis`` (index axis)."""
    position = (np.arange(length) - length / 2) * spacing_mm
    profile = 200.0 + 800.0 * 0.5 * (1 + erf(position / (sigma_mm * np.sqrt(2))))
    shape = [6, 6, 6]
    shape[2 - axis] = length
    view = [1, 1, 1]
    view[2 - axis] = length
    image = sitk.GetImageFromArray(np.broadcast_to(profile.reshape(view), shape).copy())
    spacing = [1.0, 1.0, 1.0]
    spacing[axis] = spacing_mm
    image.SetSpacing(spacing)
    return image


@pytest.mark.parametrize("sigma_mm, spacing_mm", [(2.0, 0.25), (1.5, 0.2), (3.0, 0.5)])
def test_blurred_step_has_known_max_slope(sigma_mm, spacing_mm):
    image = _blurred_step(sigma_mm, spacing_mm)
    centre = 60 * spacing_mm
    start, end = (2.5, 2.5, centre - 5 * sigma_mm), (2.5, 2.5, centre + 5 * sigma_mm)
    expected = 1.0 / (sigma_mm * np.sqrt(2 * np.pi))
    assert edge_sharpness_between(image, start, end) == pytest.approx(expected, rel=0.02)
    # Twice the blur, half the sharpness: the measure is not saturated.
    wider = edge_sharpness_between(_blurred_step(2 * sigma_mm, spacing_mm), start, end)
    assert wider < 0.6 * expected


def test_profile_sharpness_is_per_mm_and_ignores_gain_and_offset():
    ramp = np.clip(np.arange(-20, 21) / 10.0 + 0.5, 0, 1)  # 1 per 10 samples
    base = profile_sharpness(ramp, 1.0)
    assert profile_sharpness(ramp, 2.0) == pytest.approx(base / 2)
    assert profile_sharpness(300 * ramp - 50, 1.0) == pytest.approx(base)
    assert profile_sharpness(np.ones(9), 1.0) == 0.0
    with pytest.raises(CladeError):
        profile_sharpness([0, 1, 2], 1.0)


def test_line_profile_follows_physical_points_with_direction():
    array = np.zeros((10, 10, 10))
    array[:, :, 5:] = 10.0  # edge along x between index 4 and 5
    image = sitk.GetImageFromArray(array)
    image.SetOrigin((100.0, 0.0, 0.0))
    image.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))  # x index runs to decreasing x
    _, values = line_profile(image, (100.0, 3, 3), (91.0, 3, 3), step_mm=1.0)
    assert values.tolist() == [0.0] * 5 + [10.0] * 5
    with pytest.raises(CladeError, match="leaves the volume"):
        line_profile(image, (100.0, 3, 3), (120.0, 3, 3))


def test_auto_lines_are_reproducible_and_cross_the_strongest_edge():
    array = np.full((60, 20, 20), 100.0)
    array[30:] = 500.0  # strong edge along z at 29.5
    array[10:, :, :5] = 150.0  # weak edge
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 0.5))
    lines = find_edge_lines(image, thick_axis=2, count=3, half_length_mm=3.0)
    assert lines == find_edge_lines(image, thick_axis=2, count=3, half_length_mm=3.0)
    (start, end) = lines[0]
    assert start[:2] == end[:2] and end[2] - start[2] == pytest.approx(6.0)
    assert 14.0 <= (start[2] + end[2]) / 2 <= 15.0  # the strong edge, at z = 29.5 * 0.5 mm
    assert mean_edge_sharpness(image, lines) > 0.5


def test_snr_voxel_and_physical_boxes(test_data):
    image = sitk.ReadImage(str(test_data / MR_ISO))
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    signal = ((40, 30, 5), (60, 50, 15))
    background = ((0, 0, 0), (10, 10, 20))
    expected = array[5:15, 30:50, 40:60].mean() / array[0:20, 0:10, 0:10].std(ddof=1)
    assert snr(image, signal, background) == pytest.approx(expected)
    corners = [image.TransformIndexToPhysicalPoint(c) for c in ((40, 30, 5), (59, 49, 14))]
    physical = box_values(image, (corners[0], corners[1]), physical=True)
    assert np.array_equal(np.sort(physical), np.sort(array[5:15, 30:50, 40:60].ravel()))


def test_snr_bad_boxes_are_clade_errors():
    image = sitk.GetImageFromArray(np.zeros((5, 5, 5)))
    with pytest.raises(CladeError, match="constant"):
        snr(image, ((0, 0, 0), (2, 2, 2)), ((2, 2, 2), (5, 5, 5)))
    with pytest.raises(CladeError, match="beyond the volume"):
        snr(image, ((0, 0, 0), (9, 2, 2)), ((2, 2, 2), (5, 5, 5)))
