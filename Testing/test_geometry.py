"""The isotropic grid rule and the physical placement of the output, on every orientation."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_volume
from helpers import known_model

from CLADE.errors import CladeError
from CLADE.geometry import (
    detect_thick_axis,
    isotropic_grid,
    lr_slice_axes,
    resample_to_isotropic,
)
from CLADE.pipeline import super_resolve


def _rotation(ax, ay, az):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


# (name, thick axis, size, direction): axial, sagittal and coronal acquisitions, and an oblique,
# flipped one. Sagittal acquisitions are thick along x, coronal along y.
ORIENTATIONS = [
    ("axial", 2, (36, 40, 7), np.eye(3)),
    ("sagittal", 0, (7, 40, 36), np.eye(3)),
    ("coronal", 1, (40, 7, 36), np.eye(3)),
    ("oblique", 2, (36, 40, 7), _rotation(0.3, -0.2, 0.5) @ np.diag([1, -1, 1])),
]


def _volume(thick_axis, size, direction, thick_spacing=4.0):
    spacing = [0.9, 0.9, 0.9]
    spacing[thick_axis] = thick_spacing
    return make_volume(
        size=size,
        spacing=tuple(spacing),
        origin=(-20.0, 13.5, 7.25),
        direction=tuple(direction.flatten()),
    )


@pytest.mark.parametrize("name,thick_axis,size,direction", ORIENTATIONS)
def test_grid_follows_documented_rule(name, thick_axis, size, direction):
    image = _volume(thick_axis, size, direction)
    grid = isotropic_grid(image, thick_axis)
    n, spacing_t = size[thick_axis], 4.0
    expected_samples = round(n * spacing_t / 0.9)
    assert grid.size[thick_axis] == expected_samples
    # Extent kept exactly, edge to edge.
    assert grid.size[thick_axis] * grid.spacing[thick_axis] == pytest.approx(n * spacing_t)
    for axis in range(3):
        if axis != thick_axis:
            assert grid.size[axis] == size[axis]
            assert grid.spacing[axis] == pytest.approx(0.9)
    assert grid.direction == pytest.approx(tuple(direction.flatten()))
    # First output voxel's outer edge sits on the first input voxel's outer edge.
    d = direction[:, thick_axis]
    edge_in = np.array(image.GetOrigin()) - d * spacing_t / 2
    edge_out = np.array(grid.origin) - d * grid.spacing[thick_axis] / 2
    np.testing.assert_allclose(edge_out, edge_in, atol=1e-9)


@pytest.mark.parametrize("name,thick_axis,size,direction", ORIENTATIONS)
def test_bright_dot_keeps_its_physical_position(name, thick_axis, size, direction):
    image = _volume(thick_axis, size, direction)
    array = np.zeros(size[::-1], dtype=np.float32)
    dot_index = [size[0] // 2, size[1] // 2 + 3, size[2] // 2]
    array[dot_index[2], dot_index[1], dot_index[0]] = 1000.0
    dot = sitk.GetImageFromArray(array)
    dot.CopyInformation(image)
    dot_position = np.array(dot.TransformIndexToPhysicalPoint(dot_index))

    result = super_resolve(dot, known_model(), stride=8, device="cpu").image

    out = sitk.GetArrayFromImage(result)
    assert result.GetDirection() == pytest.approx(dot.GetDirection())
    mask = out > 0.2 * out.max()
    zyx = np.argwhere(mask)
    weights = out[mask]
    centroid_index = (zyx[:, ::-1] * weights[:, None]).sum(0) / weights.sum()
    centroid = np.array(result.TransformContinuousIndexToPhysicalPoint(centroid_index.tolist()))
    np.testing.assert_allclose(centroid, dot_position, atol=0.2)


def test_thick_axis_detection_and_override():
    assert detect_thick_axis((0.5, 3.0, 0.5)) == 1
    assert detect_thick_axis((0.5, 3.0, 2.9), override=2) == 2
    with pytest.raises(CladeError, match="already nearly isotropic"):
        detect_thick_axis((1.0, 1.0, 1.1))
    with pytest.raises(CladeError, match="0, 1 or 2"):
        detect_thick_axis((1.0, 1.0, 4.0), override=3)


def test_lr_planes_default_to_sagittal_then_coronal():
    axial = make_volume(spacing=(1, 1, 4))
    assert lr_slice_axes(axial, 2, "auto") == [0]  # sagittal slices: along x
    assert lr_slice_axes(axial, 2, "coronal") == [1]
    sagittal = make_volume(size=(8, 36, 40), spacing=(4, 1, 1))
    assert lr_slice_axes(sagittal, 0, "auto") == [1]  # sagittal is the HR plane: coronal
    with pytest.raises(CladeError, match="high-resolution plane"):
        lr_slice_axes(sagittal, 0, "sagittal")


def test_resampling_keeps_in_plane_values_and_fills_the_borders():
    image = make_volume(size=(30, 20, 6), spacing=(1.0, 1.0, 3.0))
    iso = resample_to_isotropic(image, 2)
    src = sitk.GetArrayFromImage(image)
    out = sitk.GetArrayFromImage(iso)
    # Output slice 1 (of 18) lies exactly at input slice 0's centre.
    np.testing.assert_allclose(out[1], src[0], rtol=1e-4, atol=1e-2)
    np.testing.assert_allclose(out[16], src[5], rtol=1e-4, atol=1e-2)
    # The outermost half voxels are filled from the image, not with a default zero.
    assert np.abs(out[0] - src[0]).mean() < 0.2 * np.abs(src[0]).mean()
    assert np.abs(out[-1] - src[-1]).mean() < 0.2 * np.abs(src[-1]).mean()
