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
    blurred = gaussian_filter1d(slice2d, ratio * FWHM_TO_SIGMA, axis=0, mode="mirror")
    positions = np.arange(offset, rows - 1e-9, ratio)
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
