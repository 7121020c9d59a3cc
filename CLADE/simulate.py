"""Simulate a thick-slice acquisition from an isotropic volume (ground truth for evaluation).

Along one axis, each thick slice is the isotropic volume weighted by a slice profile, then only one
slice every ``k = spacing / s`` isotropic samples is kept (``s`` = isotropic spacing):

* ``gaussian`` profile: a Gaussian whose FWHM is the slice thickness (MR-like);
* ``box`` profile: a rectangle as wide as the thickness (ideal contiguous slices).

Both are integrated over each isotropic voxel, so thin profiles stay exact. Thick slice ``j`` is
centred at continuous isotropic index ``c_j = (j + 1/2) k - 1/2``, i.e. at the physical point
``o + d (j k + (k - 1)/2) s``, and the header puts it there: spacing ``k s`` along the axis and
origin ``o + d (k - 1)/2 s``. With ``floor(N / k)`` thick slices, ``floor(N / k) k`` isotropic
samples are used; by the rule of :mod:`CLADE.geometry`, ``isotropic_grid(thick, axis)`` is then
exactly the original grid (cropped to those samples when ``N`` is not a multiple of ``k``). With
a box profile and ``thickness == spacing``, slice ``j`` is the plain mean of isotropic slices
``j k .. j k + k - 1``.

Near the ends of the axis the part of a profile falling outside the volume is dropped and the
weights renormalised. The output keeps the input's pixel type (integers are rounded).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy.special import ndtr

from .errors import CladeError
from .volume_io import cast_like

PROFILES = ("gaussian", "box")

#: Relative tolerance on "isotropic" and on "a whole multiple of the spacing".
TOLERANCE = 1e-3

_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def isotropic_spacing(image: sitk.Image, name: str = "The volume") -> float:
    """The common spacing of an isotropic volume; raises :class:`CladeError` otherwise.

    Example:
        >>> img = sitk.Image([4, 4, 4], sitk.sitkFloat32); img.SetSpacing((2.0, 2.0, 2.0))
        >>> isotropic_spacing(img)
        2.0
    """
    spacing = np.array(image.GetSpacing(), dtype=np.float64)
    if spacing.max() - spacing.min() > TOLERANCE * spacing.min():
        raise CladeError(
            f"{name} is not isotropic (spacing {' x '.join(f'{v:.4g}' for v in spacing)} mm): "
            "give a volume with the same spacing along all three axes."
        )
    return float(spacing.min())


def slice_profile_weights(
    n_input: int, factor: float, thickness_voxels: float, profile: str = "gaussian"
) -> np.ndarray:
    """Weights (n_output x n_input) mapping isotropic samples to thick slices, rows sum to 1.

    ``factor`` is the slice spacing and ``thickness_voxels`` the thickness, both in isotropic
    voxels.

    Example:
        >>> slice_profile_weights(6, 2, 2, "box")
        array([[0.5, 0.5, 0. , 0. , 0. , 0. ],
               [0. , 0. , 0.5, 0.5, 0. , 0. ],
               [0. , 0. , 0. , 0. , 0.5, 0.5]])
    """
    if profile not in PROFILES:
        raise CladeError(f"Unknown slice profile {profile!r}: use {' or '.join(PROFILES)}.")
    n_output = int(np.floor(n_input / factor + TOLERANCE))
    centres = (np.arange(n_output) + 0.5) * factor - 0.5
    lower = np.arange(n_input) - 0.5 - centres[:, None]  # voxel edges relative to each centre
    upper = lower + 1.0
    if profile == "gaussian":
        sigma = thickness_voxels / _FWHM_PER_SIGMA
        weights = ndtr(upper / sigma) - ndtr(lower / sigma)
    else:
        half = thickness_voxels / 2.0
        weights = np.clip(np.minimum(upper, half) - np.maximum(lower, -half), 0.0, None)
    return weights / weights.sum(axis=1, keepdims=True)


def simulate_thick_slices(
    iso: sitk.Image,
    thickness_mm: float,
    spacing_mm: float | None = None,
    axis: int = 2,
    profile: str = "gaussian",
) -> sitk.Image:
    """Thick-slice volume simulated from the isotropic ``iso`` along index axis ``axis``.

    ``spacing_mm`` (slice spacing, default: the thickness) must be larger than the isotropic
    spacing; a whole multiple of it keeps the exact grid correspondence described above.
    Thickness smaller than the spacing simulates slice gaps, larger simulates overlap.

    Example:
        >>> iso = sitk.GetImageFromArray(np.arange(8.0)[:, None, None] * np.ones((8, 4, 4)))
        >>> thick = simulate_thick_slices(iso, 2.0, axis=2, profile="box")
        >>> thick.GetSize(), thick.GetSpacing(), thick.GetOrigin()
        ((4, 4, 4), (1.0, 1.0, 2.0), (0.0, 0.0, 0.5))
        >>> sitk.GetArrayViewFromImage(thick)[:, 0, 0].tolist()
        [0.5, 2.5, 4.5, 6.5]
    """
    if axis not in (0, 1, 2):
        raise CladeError(f"The slice axis must be 0, 1 or 2, not {axis}.")
    step = isotropic_spacing(iso, "The isotropic input")
    spacing_mm = thickness_mm if spacing_mm is None else spacing_mm
    for label, value in (("thickness", thickness_mm), ("spacing", spacing_mm)):
        if not np.isfinite(value):
            raise CladeError(f"The slice {label} must be a finite number of mm, not {value}.")
    if thickness_mm <= step * (1 + TOLERANCE):
        raise CladeError(
            f"The slice thickness {thickness_mm:g} mm is not larger than the isotropic spacing "
            f"{step:g} mm: choose a thicker slice."
        )
    if spacing_mm <= step * (1 + TOLERANCE):
        raise CladeError(
            f"The slice spacing {spacing_mm:g} mm is not larger than the isotropic spacing "
            f"{step:g} mm: choose a larger slice spacing."
        )
    factor = spacing_mm / step
    if abs(factor - round(factor)) < TOLERANCE * factor:
        factor = float(round(factor))
    n_input = iso.GetSize()[axis]
    weights = slice_profile_weights(n_input, factor, thickness_mm / step, profile)
    if weights.shape[0] < 2:
        raise CladeError(
            f"The volume is {n_input * step:g} mm long along axis {axis}, too short for two "
            f"slices every {spacing_mm:g} mm: choose a smaller slice spacing."
        )

    array = sitk.GetArrayViewFromImage(iso)
    numpy_axis = 2 - axis
    moved = np.moveaxis(np.asarray(array, dtype=np.float64), numpy_axis, 0)
    thick = np.tensordot(weights, moved, axes=(1, 0))
    result = sitk.GetImageFromArray(np.moveaxis(thick, 0, numpy_axis))

    spacing = list(iso.GetSpacing())
    spacing[axis] = factor * step
    direction = np.array(iso.GetDirection()).reshape(3, 3)
    origin = np.array(iso.GetOrigin()) + direction[:, axis] * (factor - 1.0) / 2.0 * step
    result.SetSpacing(spacing)
    result.SetOrigin(tuple(float(v) for v in origin))
    result.SetDirection(iso.GetDirection())
    return cast_like(result, iso.GetPixelID())
