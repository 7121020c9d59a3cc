"""Signal-to-noise ratio as in the paper: mean of a signal box over the std of a background box.

Boxes are axis-aligned in index space and given as two corners in SimpleITK order (x, y, z):

* voxel boxes (default): ``((x0, y0, z0), (x1, y1, z1))`` half-open, i.e. voxels
  ``x0 <= i < x1`` and so on, like Python slices;
* physical boxes (``physical=True``): two corner points in mm (world coordinates); the box holds
  every voxel whose centre lies between them (inclusive) along each index axis.

The background standard deviation is the sample one (``ddof=1``). A background of constant value
(typically zero-filled air) has no noise to measure and raises :class:`CladeError`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import CladeError

Box = tuple[Sequence[float], Sequence[float]]


def snr(image: sitk.Image, signal_box: Box, background_box: Box, physical: bool = False) -> float:
    """Mean of ``signal_box`` divided by the standard deviation of ``background_box``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> vol = rng.normal(0, 2, (10, 20, 20)); vol[:, 10:, :] += 100  # signal in y >= 10
        >>> img = sitk.GetImageFromArray(vol)
        >>> round(snr(img, ((0, 10, 0), (20, 20, 10)), ((0, 0, 0), (20, 10, 10))))
        50
    """
    return snr_of_values(
        box_values(image, signal_box, physical), box_values(image, background_box, physical)
    )


def snr_of_values(signal: np.ndarray, background: np.ndarray) -> float:
    """mean(signal) / std(background, ddof=1) for two arrays of voxel values.

    Example:
        >>> round(snr_of_values(np.array([10.0, 10.0]), np.array([-1.0, 1.0])), 4)
        7.0711
    """
    signal = np.asarray(signal, dtype=np.float64).ravel()
    background = np.asarray(background, dtype=np.float64).ravel()
    if signal.size == 0 or background.size < 2:
        raise CladeError(
            "The SNR boxes are too small: the signal box needs a voxel and the background box two."
        )
    noise = background.std(ddof=1)
    if noise == 0:
        raise CladeError(
            "The background box is constant (no noise, e.g. zero-filled air): choose a background "
            "box where the noise is visible."
        )
    return float(signal.mean() / noise)


def box_values(image: sitk.Image, box: Box, physical: bool = False) -> np.ndarray:
    """The voxel values inside ``box`` (see the module docstring for the two conventions).

    Example:
        >>> img = sitk.GetImageFromArray(np.arange(24.0).reshape(2, 3, 4))
        >>> box_values(img, ((1, 0, 0), (3, 1, 1))).tolist()
        [1.0, 2.0]
        >>> box_values(img, ((0.6, 0, 0), (2.2, 0, 0)), physical=True).tolist()
        [1.0, 2.0]
    """
    lower, upper = (np.asarray(corner, dtype=np.float64) for corner in box)
    if lower.shape != (3,) or upper.shape != (3,):
        raise CladeError("A box needs two corners of three coordinates each (x, y, z).")
    size = np.array(image.GetSize())
    if physical:
        corners = np.array(
            [image.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in (lower, upper)]
        )
        start = np.ceil(corners.min(axis=0) - 1e-6).astype(int)
        stop = np.floor(corners.max(axis=0) + 1e-6).astype(int) + 1
    else:
        if not (np.allclose(lower, np.round(lower)) and np.allclose(upper, np.round(upper))):
            raise CladeError("Voxel boxes need whole voxel indices: round the box corners.")
        start, stop = lower.astype(int), upper.astype(int)
    if (start < 0).any() or (stop > size).any() or (stop <= start).any():
        raise CladeError(
            f"The box from {_point(lower)} to {_point(upper)} is empty or extends beyond the volume "
            f"(size {tuple(int(s) for s in size)} voxels): choose a box inside the image."
        )
    array = sitk.GetArrayViewFromImage(image)
    region = array[start[2] : stop[2], start[1] : stop[1], start[0] : stop[0]]
    return np.asarray(region, dtype=np.float64).ravel()


def _point(values) -> str:
    """``(30, 0, 2.5)``: plain numbers, not numpy's ``np.float64(30.0)``."""
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"
