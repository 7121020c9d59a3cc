"""Simulated thick-slice degradation of 2D slices and patches, for the fidelity safeguards.

Beyond the paper (issue 6): two optional loss terms keep the generator faithful to the input.

* **Paired self-supervision** (the SMORE/ECLARE idea): an HR-plane slice has fine pixels along
  both axes. Degrading it along its rows exactly as the scanner and our pipeline degrade the
  thick axis (slice-profile blur, sampling at the slice spacing, cubic-spline interpolation back
  to the fine grid) gives an input whose true answer is known, so ``|G_X(degraded) - original|``
  is a supervised L1 term.
* **Data consistency**: the output, blurred along the thick axis with the slice profile, must
  match the input blurred the same way: the generator may add detail the acquisition could not
  see, but not change what it saw. See :func:`blur_rows`.

Patches follow the LR-slice convention of :func:`CLADE.geometry.lr_slice_stack`: the thick axis
runs along the rows (vertical), so "along the rows" below means along the thick direction.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter1d, map_coordinates

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def profile_blur(values: np.ndarray, ratio: float, axis: int) -> np.ndarray:
    """``values`` blurred along ``axis`` by the slice profile: a Gaussian with FWHM = ``ratio``
    pixels (thickness equal to the spacing), edges mirrored.

    Example:
        >>> profile_blur(np.ones((3, 5)), 4.0, 0).tolist() == np.ones((3, 5)).tolist()
        True
    """
    return gaussian_filter1d(values, ratio * FWHM_TO_SIGMA, axis=axis, mode="mirror")


def thick_sample_rows(rows: int, ratio: float, offset: float) -> np.ndarray:
    """Row coordinates of the thick samples in ``rows`` fine rows: every ``ratio`` rows from
    ``offset``.

    Example:
        >>> thick_sample_rows(10, 3.0, 1.0).tolist()
        [1.0, 4.0, 7.0]
    """
    return np.arange(offset, rows - 1e-9, ratio)


def degrade_slice(slice2d: np.ndarray, ratio: float, offset: float = 0.0) -> np.ndarray:
    """Simulate a thick-slice acquisition of ``slice2d`` along its rows and interpolate it back.

    The slice profile is a Gaussian with FWHM = ``ratio`` pixels (slice thickness equal to the
    slice spacing); thick samples are taken every ``ratio`` rows starting at ``offset``, then
    cubic-spline interpolated back onto every row (as :func:`CLADE.geometry.resample_to_isotropic`
    does at inference). Rows outside the sampled span are mirrored.

    Example:
        >>> ramp = np.tile(np.arange(40.0)[:, None], (1, 5))  # a ramp survives, away from edges
        >>> bool(np.allclose(degrade_slice(ramp, 4.0)[8:24], ramp[8:24], atol=0.02))
        True
    """
    slice2d = np.asarray(slice2d, dtype=np.float64)
    rows = slice2d.shape[0]
    blurred = profile_blur(slice2d, ratio, 0)
    positions = thick_sample_rows(rows, ratio, offset)
    thick = map_coordinates(
        blurred,
        np.meshgrid(positions, np.arange(slice2d.shape[1]), indexing="ij"),
        order=1,
        mode="mirror",
    )
    # Back to every row: row r lies at thick coordinate (r - offset) / ratio.
    coordinates = (np.arange(rows) - offset) / ratio
    grid = np.meshgrid(coordinates, np.arange(slice2d.shape[1]), indexing="ij")
    return map_coordinates(thick, grid, order=3, mode="mirror").astype(np.float32)


def consistency_residual(output: np.ndarray, spline: np.ndarray, ratio: float) -> np.ndarray:
    """How far a stack of super-resolved slices ``(n, H, W)`` (thick direction along the rows)
    strays from what was acquired: ``|blur(output) - spline|`` at the thick slices' centres
    (the rows :func:`degrade_slice` samples), linearly interpolated onto every row.

    ``spline`` is the stack the output was restored from; it passes through the acquired samples
    at their centres, so it stands for them there. Zero where blurring the output with the
    slice profile gives back what the scanner measured, whatever detail it added between the
    samples. Computed in float32; the error map reads it as a feature (:mod:`CLADE.error_map`).

    Example (a constant passes; a bump the acquisition would have seen does not):
        >>> flat = np.ones((1, 12, 4), np.float32)
        >>> float(consistency_residual(flat, flat, 3.0).max())
        0.0
        >>> bumped = flat.copy(); bumped[0, 4] += 1
        >>> bool(consistency_residual(bumped, flat, 3.0)[0, 4].min() > 0.2)
        True
    """
    output = np.asarray(output, np.float32)
    rows = output.shape[1]
    offset = (ratio - 1.0) / 2.0
    blurred = profile_blur(output, ratio, 1)
    difference = blurred - np.asarray(spline, np.float32)
    # Linear sampling at the centres, then linear interpolation back: one gather each way along
    # the rows, vectorised over the stack (map_coordinates would go slice by slice).
    centres = thick_sample_rows(rows, ratio, offset)
    if centres.size == 0:  # fewer rows than one thick slice's centre: nothing was measured
        return np.zeros_like(output)
    below = np.floor(centres).astype(int)
    above = np.minimum(below + 1, rows - 1)
    weight = (centres - below).astype(np.float32)[None, :, None]
    samples = difference[:, below] * (1 - weight) + difference[:, above] * weight
    position = np.clip((np.arange(rows) - offset) / ratio, 0, len(centres) - 1)
    first = np.minimum(np.floor(position).astype(int), len(centres) - 1)
    second = np.minimum(first + 1, len(centres) - 1)
    blend = (position - first).astype(np.float32)[None, :, None]
    return np.abs(samples[:, first] * (1 - blend) + samples[:, second] * blend)


def blur_rows(images: torch.Tensor, ratio: float | torch.Tensor) -> torch.Tensor:
    """Gaussian blur of ``(B, 1, H, W)`` images along the rows with FWHM = ``ratio`` pixels.

    ``ratio`` may be one number or one per image. Used by the data-consistency term.

    Example:
        >>> x = torch.zeros(1, 1, 15, 3); x[0, 0, 7] = 1
        >>> column = blur_rows(x, 4.0)[0, 0, :, 0]
        >>> round(float(column.sum()), 4), int(column.argmax())
        (1.0, 7)
    """
    ratios = torch.as_tensor(ratio, dtype=images.dtype, device=images.device).reshape(-1)
    if ratios.numel() == 1:
        ratios = ratios.expand(images.shape[0])
    sigma = ratios * FWHM_TO_SIGMA
    radius = int(torch.ceil(3 * sigma.max()).item())
    taps = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernels = torch.exp(-0.5 * (taps[None, :] / sigma[:, None]) ** 2)
    kernels = kernels / kernels.sum(dim=1, keepdim=True)  # (B, K)
    padded = F.pad(images, (0, 0, radius, radius), mode="replicate")
    # One kernel per image: fold the batch into channels and use a grouped convolution.
    batch, _, height, width = padded.shape
    weight = kernels[:, None, :, None]  # (B, 1, K, 1)
    out = F.conv2d(padded.reshape(1, batch, height, width), weight, groups=batch)
    return out.reshape(batch, 1, images.shape[2], width)
