"""Non-CLADE comparison methods for the quality table (issue 6), all on CLADE's isotropic grid.

* ``spline``: cubic B-spline interpolation, :func:`CLADE.geometry.resample_to_isotropic` (also the
  baseline row that :mod:`CLADE.evaluation` adds by itself).
* ``spline+unsharp``: :func:`sharpened_spline`, the spline followed by an unsharp mask. A
  learned method should beat this, not only the plain spline: sharpening alone already raises
  edge sharpness and can lower PIQE.
* ``ECLARE`` (Remedios et al., PyPI ``eclare``, GPL-3.0): only ever run as an external command
  from its own virtual environment (``benchmarks/eclare_env.sh``); never imported or shipped.
  :func:`eclare_command` builds its command line and :func:`onto_grid` puts its output on the
  comparison grid.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from CLADE.geometry import isotropic_grid, resample_to_isotropic

#: Unsharp-mask defaults of the sharpened baseline (issue 6).
UNSHARP_SIGMA_VOXELS = 1.0
UNSHARP_AMOUNT = 0.6

#: CPU settings for ECLARE (issue 6); its defaults (1e6 patches, batch 128) are meant for a GPU.
ECLARE_CPU_OPTIONS = ("--n-patches", "16384", "--batch-size", "32")
ECLARE_SUFFIX = "_eclare"


def unsharp_mask(
    image: sitk.Image, sigma: float = UNSHARP_SIGMA_VOXELS, amount: float = UNSHARP_AMOUNT
) -> sitk.Image:
    """``out = s + amount * (s - G_sigma * s)`` on a float32 copy of ``image``.

    ``G_sigma`` is a 3D Gaussian with standard deviation ``sigma`` *voxels* along every axis
    (the grid is isotropic, so that is the same in mm along every axis), edges extended by
    repeating the border voxel (``mode="nearest"``). The geometry is kept.

    Example:
        >>> img = sitk.GetImageFromArray(np.zeros((5, 5, 5), np.float32))
        >>> float(sitk.GetArrayFromImage(unsharp_mask(img)).max())
        0.0
    """
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    blurred = gaussian_filter(array, sigma, mode="nearest")
    result = sitk.GetImageFromArray((array + amount * (array - blurred)).astype(np.float32))
    result.CopyInformation(image)
    return result


def sharpened_spline(
    thick: sitk.Image,
    thick_axis: int,
    sigma: float = UNSHARP_SIGMA_VOXELS,
    amount: float = UNSHARP_AMOUNT,
) -> sitk.Image:
    """The ``spline+unsharp`` baseline: cubic spline to the isotropic grid, then
    :func:`unsharp_mask` (sigma 1 voxel, amount 0.6 by default). Output: float32, on the grid
    of :func:`CLADE.geometry.isotropic_grid`.

    Example:
        >>> thick = sitk.Image([8, 8, 3], sitk.sitkFloat32); thick.SetSpacing((1.0, 1.0, 3.0))
        >>> sharpened_spline(thick, 2).GetSize()
        (8, 8, 9)
    """
    return unsharp_mask(resample_to_isotropic(thick, thick_axis), sigma, amount)


def eclare_output_path(thick_path: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Where ``run-eclare`` writes its result for ``thick_path`` (it inserts ``_eclare`` before
    ``.nii``).

    Example:
        >>> eclare_output_path("/d/mri_thick.nii.gz", "/o").as_posix()
        '/o/mri_thick_eclare.nii.gz'
    """
    name = Path(thick_path).name
    return Path(out_dir) / name.replace(".nii", f"{ECLARE_SUFFIX}.nii")


def eclare_command(
    executable: str | os.PathLike,
    thick_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    relative_slice_thickness: float,
    options=ECLARE_CPU_OPTIONS,
) -> list[str]:
    """The ``run-eclare`` command line (CPU settings of issue 6, known Gaussian slice profile
    whose FWHM is ``relative_slice_thickness`` in-plane voxels, so ESPRESO's profile estimation
    is skipped). ECLARE reads NIfTI only.

    Example:
        >>> eclare_command("run-eclare", "a.nii.gz", "o", 5.0)[-2:]
        ['--relative-slice-thickness', '5']
    """
    return [
        str(executable),
        "--in-fpath",
        str(thick_path),
        "--out-dir",
        str(out_dir),
        *options,
        "--relative-slice-thickness",
        f"{relative_slice_thickness:g}",
    ]


def onto_grid(
    image: sitk.Image, thick: sitk.Image, thick_axis: int, interpolator=sitk.sitkBSpline
) -> tuple[sitk.Image, str]:
    """Put ``image`` (e.g. ECLARE's output) on CLADE's isotropic grid of ``thick``.

    Returns the image and a note. When the grids already agree (size, spacing and direction to
    1e-4 relative, origin to 1e-3 voxel) the voxels are taken as they are and only the header is
    replaced; otherwise the image is resampled with SimpleITK (cubic B-spline by default, zero
    outside its extent).

    Example:
        >>> thick = sitk.Image([8, 8, 3], sitk.sitkFloat32); thick.SetSpacing((1.0, 1.0, 3.0))
        >>> onto_grid(resample_to_isotropic(thick, 2), thick, 2)[1]
        'same grid as CLADE (no resampling)'
    """
    target = isotropic_grid(thick, thick_axis).reference_image()
    image = sitk.Cast(image, sitk.sitkFloat32)
    spacing = np.array(target.GetSpacing())
    same = (
        image.GetSize() == target.GetSize()
        and np.allclose(image.GetSpacing(), spacing, rtol=1e-4, atol=0)
        and np.allclose(image.GetDirection(), target.GetDirection(), rtol=0, atol=1e-4)
        and np.allclose(image.GetOrigin(), target.GetOrigin(), rtol=0, atol=1e-3 * spacing.min())
    )
    if same:
        image = sitk.Image(image)
        image.CopyInformation(target)
        return image, "same grid as CLADE (no resampling)"
    name = {sitk.sitkLinear: "linear", sitk.sitkBSpline: "cubic B-spline"}.get(
        interpolator, str(interpolator)
    )
    resampled = sitk.Resample(image, target, sitk.Transform(), interpolator, 0.0, sitk.sitkFloat32)
    size = "x".join(str(v) for v in image.GetSize())
    spacing_text = " x ".join(f"{v:.4g}" for v in image.GetSpacing())
    return resampled, (
        f"resampled ({name}, SimpleITK) from its own grid ({size} @ {spacing_text} mm) onto "
        "CLADE's isotropic grid"
    )
