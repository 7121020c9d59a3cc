"""Edge sharpness (the paper's ES): the steepest slope of an intensity profile across a border.

A profile is smoothed with a Savitzky-Golay filter (window 5 samples, order 3, as in the paper),
normalised by its edge height (its max - min after smoothing, so 0 to 1) and differentiated with
central differences; the sharpness is the largest absolute slope, in mm^-1. A blurred step
``0.5 * (1 + erf(x / (sigma * sqrt(2))))`` has sharpness ``1 / (sigma * sqrt(2 * pi))``.

Profiles are sampled between two physical points (mm, the image's world coordinates) with linear
interpolation, so the same line can be drawn in volumes on different grids. To avoid hand-drawn
lines, :func:`find_edge_lines` places reproducible lines along the thick axis through the
strongest edges of a reference volume; :func:`mean_edge_sharpness` averages over them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter, map_coordinates
from scipy.signal import savgol_filter

from ..errors import CladeError

SAVGOL_WINDOW = 5
SAVGOL_ORDER = 3

Point = tuple[float, float, float]
Line = tuple[Point, Point]


def profile_sharpness(profile: Sequence[float], step_mm: float) -> float:
    """Edge sharpness (mm^-1) of a profile sampled every ``step_mm`` millimetres.

    A flat profile has no edge and scores 0.

    Example:
        >>> x = np.arange(-10, 10.01, 0.5)
        >>> ramp = np.clip(x / 8 + 0.5, 0, 1)  # rises 0 -> 1 over 8 mm
        >>> # 1/8 per mm, a little more where the smoothing meets the ramp's corners
        >>> round(profile_sharpness(ramp, 0.5), 3), round(profile_sharpness(5 * ramp + 7, 0.5), 3)
        (0.129, 0.129)
    """
    values = np.asarray(profile, dtype=np.float64)
    if values.ndim != 1 or values.size < SAVGOL_WINDOW:
        raise CladeError(
            f"An edge profile needs at least {SAVGOL_WINDOW} samples along a line: draw a longer "
            "line or sample it more finely."
        )
    if step_mm <= 0:
        raise CladeError(f"The profile sample step must be positive, not {step_mm} mm.")
    smooth = savgol_filter(values, SAVGOL_WINDOW, SAVGOL_ORDER)
    height = smooth.max() - smooth.min()
    # The filter leaves rounding noise on a flat profile; do not normalise that up to an edge.
    if height <= 1e-9 * np.abs(values).max():
        return 0.0
    return float(np.abs(np.gradient(smooth / height, step_mm)).max())


def line_profile(
    image: sitk.Image, start: Sequence[float], end: Sequence[float], step_mm: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``image`` linearly between two physical points; return (distances in mm, values).

    ``step_mm`` defaults to the image's finest spacing. Points must lie inside the volume
    (within half a voxel of the outer sample centres).

    Example:
        >>> img = sitk.GetImageFromArray(np.arange(10.0)[:, None, None] * np.ones((10, 3, 3)))
        >>> img.SetSpacing((1.0, 1.0, 2.0))
        >>> distance, values = line_profile(img, (1, 1, 2.0), (1, 1, 6.0))
        >>> distance.tolist(), values.tolist()
        ([0.0, 1.0, 2.0, 3.0, 4.0], [1.0, 1.5, 2.0, 2.5, 3.0])
    """
    start_point = np.asarray(start, dtype=np.float64)
    end_point = np.asarray(end, dtype=np.float64)
    length = float(np.linalg.norm(end_point - start_point))
    step = float(min(image.GetSpacing())) if step_mm is None else float(step_mm)
    if length <= 0 or step <= 0:
        raise CladeError("A profile line needs two different end points and a positive step.")
    distances = np.arange(int(np.floor(length / step + 1e-9)) + 1) * step
    points = start_point + np.outer(distances / length, end_point - start_point)
    index = _continuous_index(image, points)
    size = np.array(image.GetSize())
    if (index < -0.5 - 1e-6).any() or (index > size - 0.5 + 1e-6).any():
        raise CladeError("The profile line leaves the volume: choose end points inside the image.")
    array = sitk.GetArrayViewFromImage(image)
    values = map_coordinates(
        np.asarray(array, dtype=np.float64), index[:, ::-1].T, order=1, mode="nearest"
    )
    return distances, values


def edge_sharpness_between(
    image: sitk.Image, start: Sequence[float], end: Sequence[float], step_mm: float | None = None
) -> float:
    """Edge sharpness (mm^-1) of the profile of ``image`` between two physical points.

    Example:
        >>> from scipy.special import erf
        >>> z = (np.arange(80) - 40) * 0.5  # mm
        >>> column = 0.5 * (1 + erf(z / (2.0 * np.sqrt(2))))  # edge blurred with sigma 2 mm
        >>> img = sitk.GetImageFromArray(column[:, None, None] * np.ones((80, 2, 2)))
        >>> img.SetSpacing((0.5, 0.5, 0.5))
        >>> es = edge_sharpness_between(img, (0, 0, 10.0), (0, 0, 30.0))
        >>> round(es, 3), round(1 / (2 * np.sqrt(2 * np.pi)).item(), 3)  # measured, exact max slope
        (0.197, 0.199)
    """
    distances, values = line_profile(image, start, end, step_mm)
    step = distances[1] - distances[0] if distances.size > 1 else 1.0
    return profile_sharpness(values, step)


def find_edge_lines(
    reference: sitk.Image,
    thick_axis: int,
    count: int = 16,
    half_length_mm: float | None = None,
) -> list[Line]:
    """Lines along the thick axis through the ``count`` strongest edges of ``reference``.

    Edges are the largest magnitudes of the intensity derivative along the thick axis (after a
    one-voxel Gaussian smoothing so single noisy voxels do not win), taken greedily from the
    strongest with at least two half-lengths between chosen centres. The result depends only on
    ``reference``, so every volume compared is measured along the same lines.
    ``half_length_mm`` defaults to 4 voxels of ``reference`` along the thick axis.

    Example:
        >>> vol = np.zeros((40, 20, 20)); vol[20:] = 100.0  # an edge between z=19 and z=20
        >>> img = sitk.GetImageFromArray(vol)
        >>> (start, end), = find_edge_lines(img, thick_axis=2, count=1)
        >>> start[2], end[2]
        (16.0, 24.0)
    """
    spacing = np.array(reference.GetSpacing())
    half = 4.0 * spacing[thick_axis] if half_length_mm is None else float(half_length_mm)
    reach = int(np.ceil(half / spacing[thick_axis] - 1e-9))
    array = np.asarray(sitk.GetArrayViewFromImage(reference), dtype=np.float64)
    numpy_axis = 2 - thick_axis
    if array.shape[numpy_axis] <= 2 * reach:
        raise CladeError(
            f"The volume is too short along axis {thick_axis} for {half:.3g} mm edge profiles: "
            "use shorter profiles."
        )
    strength = np.abs(np.gradient(gaussian_filter(array, 1.0), axis=numpy_axis))
    # Lines must fit inside the volume: drop centres too close to the ends of the thick axis.
    inside = [slice(None)] * 3
    inside[numpy_axis] = slice(reach, array.shape[numpy_axis] - reach)
    masked = np.full_like(strength, -1.0)
    masked[tuple(inside)] = strength[tuple(inside)]
    flat = masked.ravel()
    pool = min(flat.size, max(50 * count, 1000))
    candidates = np.argpartition(-flat, pool - 1)[:pool]
    # Sort by strength, ties by voxel index, so the choice is reproducible.
    candidates = candidates[np.lexsort((candidates, -flat[candidates]))]
    direction = np.array(reference.GetDirection()).reshape(3, 3)[:, thick_axis]
    chosen: list[np.ndarray] = []
    for flat_index in candidates:
        if flat[flat_index] <= 0 or len(chosen) == count:
            break
        zyx = np.unravel_index(flat_index, array.shape)
        centre = np.array(reference.TransformIndexToPhysicalPoint([int(i) for i in zyx[::-1]]))
        if all(np.linalg.norm(centre - other) >= 2 * half for other in chosen):
            chosen.append(centre)
    if not chosen:
        raise CladeError("The reference volume has no edge along the thick axis to measure.")
    return [
        (
            tuple(float(v) for v in c - half * direction),
            tuple(float(v) for v in c + half * direction),
        )
        for c in chosen
    ]


def mean_edge_sharpness(
    image: sitk.Image, lines: Sequence[Line], step_mm: float | None = None
) -> float:
    """Mean edge sharpness (mm^-1) of ``image`` along ``lines`` (e.g. from find_edge_lines).

    Example:
        >>> vol = np.zeros((40, 6, 6)); vol[20:] = 100.0
        >>> img = sitk.GetImageFromArray(vol)
        >>> lines = find_edge_lines(img, thick_axis=2, count=2)
        >>> mean_edge_sharpness(img, lines) > 0.3
        True
    """
    if not lines:
        raise CladeError("No edge profile lines were given: nothing to measure.")
    return float(np.mean([edge_sharpness_between(image, a, b, step_mm) for a, b in lines]))


def _continuous_index(image: sitk.Image, points: np.ndarray) -> np.ndarray:
    """Continuous (x, y, z) indices of physical points (n, 3), vectorised."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    matrix = direction @ np.diag(image.GetSpacing())
    return np.linalg.solve(matrix, (points - np.array(image.GetOrigin())).T).T
