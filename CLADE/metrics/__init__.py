"""Image-quality metrics: PIQE, edge sharpness, SNR (no reference) and PSNR, SSIM (reference).

All are plain NumPy/SciPy (no torch, no scikit-image) so they import quickly in the trainer and in
Slicer. Conventions that change the numbers are stated in each module's docstring.
"""

from .piqe import PiqeResult, piqe, piqe_result, volume_piqe
from .reference import psnr, ssim
from .sharpness import (
    edge_sharpness_between,
    find_edge_lines,
    line_profile,
    mean_edge_sharpness,
    profile_sharpness,
)
from .snr import box_values, snr, snr_of_values

__all__ = [
    "PiqeResult",
    "box_values",
    "edge_sharpness_between",
    "find_edge_lines",
    "line_profile",
    "mean_edge_sharpness",
    "piqe",
    "piqe_result",
    "profile_sharpness",
    "psnr",
    "snr",
    "snr_of_values",
    "ssim",
    "volume_piqe",
]
