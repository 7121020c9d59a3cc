"""Simulated thick slices sit where they belong: the spline upsampling lands on the iso grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import CT_ISO, MR_ISO

from CLADE.errors import CladeError
from CLADE.geometry import isotropic_grid, resample_to_isotropic
from CLADE.simulate import simulate_thick_slices


def _rotated_iso(array: np.ndarray, spacing: float = 1.5) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((spacing,) * 3)
    image.SetOrigin((10.0, -5.0, 3.0))
    angle = np.deg2rad(20)
    rotation = [[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]]
    image.SetDirection(np.array(rotation).ravel().tolist())
    return image


def _assert_grid_equals(grid, image: sitk.Image, size) -> None:
    assert grid.size == tuple(size)
    assert np.allclose(grid.spacing, image.GetSpacing(), atol=1e-9)
    assert np.allclose(grid.origin, image.GetOrigin(), atol=1e-9)
    assert np.allclose(grid.direction, image.GetDirection(), atol=1e-12)


@pytest.mark.parametrize("axis", [0, 2])
@pytest.mark.parametrize("k, n", [(4, 48), (3, 50)])
def test_isotropic_grid_of_simulated_volume_is_the_original_grid(axis, k, n):
    shape = [20, 22, 24]
    shape[2 - axis] = n
    iso = _rotated_iso(np.zeros(shape, np.float32))
    thick = simulate_thick_slices(iso, thickness_mm=1.5 * k, axis=axis)
    assert thick.GetSize()[axis] == n // k
    size = list(iso.GetSize())
    size[axis] = (n // k) * k  # the samples used: floor(N / k) * k
    _assert_grid_equals(isotropic_grid(thick, axis), iso, size)


def test_box_profile_thick_slice_is_mean_of_its_iso_samples(test_data):
    iso = sitk.ReadImage(str(test_data / MR_ISO))
    iso = sitk.Cast(iso, sitk.sitkFloat32)
    thick = simulate_thick_slices(iso, thickness_mm=9.0, axis=1, profile="box")
    array, thick_array = sitk.GetArrayFromImage(iso), sitk.GetArrayFromImage(thick)
    for j in range(thick.GetSize()[1]):
        expected = array[:, 3 * j : 3 * j + 3, :].mean(axis=1)
        np.testing.assert_allclose(thick_array[:, j, :], expected, rtol=1e-5, atol=1e-3)
        # The header puts slice j at the centre of those samples, i.e. at iso sample 3j + 1.
        centre = thick.TransformIndexToPhysicalPoint((0, j, 0))
        assert np.allclose(centre, iso.TransformIndexToPhysicalPoint((0, 3 * j + 1, 0)))


@pytest.mark.parametrize(
    "k, dot, tolerance", [(3, 28, 0.05), (4, 29, 0.6), (4, 30, 0.6), (5, 17, 0.6)]
)
def test_bright_dot_stays_in_place_after_spline_upsampling(k, dot, tolerance):
    array = np.zeros((60, 20, 24), np.float32)
    array[dot, 10, 12] = 1000.0
    iso = _rotated_iso(array)
    thick = simulate_thick_slices(iso, thickness_mm=1.5 * k, axis=2)
    upsampled = resample_to_isotropic(thick, 2)
    assert upsampled.GetSize() == iso.GetSize()  # 60 is a multiple of 3, 4 and 5
    assert np.allclose(upsampled.GetOrigin(), iso.GetOrigin())
    volume = sitk.GetArrayFromImage(upsampled)
    assert np.unravel_index(np.argmax(volume), volume.shape)[1:] == (10, 12)
    column = np.clip(volume[:, 10, 12], 0, None)
    centroid = (column * np.arange(column.size)).sum() / column.sum()
    # Exact when the dot sits at a thick-slice centre (k odd); otherwise the sampling pulls the
    # centroid towards the nearest centre by less than half a thick slice.
    assert abs(centroid - dot) <= tolerance
    assert abs(int(np.argmax(column)) - dot) <= 1


def test_integer_input_keeps_its_pixel_type(test_data):
    iso = sitk.ReadImage(str(test_data / CT_ISO))
    thick = simulate_thick_slices(iso, thickness_mm=7.0, spacing_mm=6.0, axis=2)
    assert thick.GetPixelID() == iso.GetPixelID()
    assert thick.GetSize() == (81, 80, 56) and thick.GetSpacing()[2] == pytest.approx(6.0)


def test_bad_requests_are_clade_errors():
    iso = _rotated_iso(np.zeros((30, 8, 8), np.float32))
    with pytest.raises(CladeError, match="not larger than the isotropic spacing"):
        simulate_thick_slices(iso, thickness_mm=1.5)
    with pytest.raises(CladeError, match="too short"):
        simulate_thick_slices(iso, thickness_mm=40.0)
    anisotropic = sitk.Image([8, 8, 8], sitk.sitkFloat32)
    anisotropic.SetSpacing((1.0, 1.0, 2.0))
    with pytest.raises(CladeError, match="not isotropic"):
        simulate_thick_slices(anisotropic, thickness_mm=4.0)
    with pytest.raises(CladeError, match="profile"):
        simulate_thick_slices(iso, thickness_mm=6.0, profile="triangle")
