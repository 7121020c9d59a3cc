"""Full-reference metrics on a common grid: PSNR and (3D) SSIM.

Conventions (the same as scikit-image's defaults, which the tests check against):

* **Data range** ``R`` = the *reference's* max - min (not the dtype range, not the test's range).
* **PSNR** = ``10 log10(R^2 / MSE)`` in dB; identical volumes give ``inf``.
* **SSIM** (Wang et al. 2004) with a uniform ``7 x 7 x 7`` window (``win_size`` per axis, in 2D
  ``7 x 7``), ``K1 = 0.01``, ``K2 = 0.03``, sample (co)variances (``N / (N - 1)``), averaged over
  the voxels whose whole window lies inside the volume (a 3-voxel border is left out).

Both take numpy arrays of the same shape: resample onto one grid first (compare only on the same
grid). Computation is in float64, slab by slab along the first axis to bound memory.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter

from ..errors import CladeError

K1 = 0.01
K2 = 0.03
WINDOW = 7

#: Voxels of SSIM output computed per slab (bounds memory to ~10 float64 arrays of this size).
_SLAB_VOXELS = 2_000_000


def data_range(reference: np.ndarray) -> float:
    """The reference's max - min; a constant reference raises :class:`CladeError`.

    Example:
        >>> data_range(np.array([[-1000, 200], [50, 3000]]))
        4000.0
    """
    reference = np.asarray(reference)
    value = float(reference.max()) - float(reference.min())
    if value <= 0:
        raise CladeError(
            "The reference is constant, so PSNR and SSIM are undefined: check the reference."
        )
    return value


def psnr(reference: np.ndarray, test: np.ndarray, data_range_value: float | None = None) -> float:
    """Peak signal-to-noise ratio (dB) of ``test`` against ``reference``.

    Example:
        >>> ref = np.array([0.0, 10.0, 20.0, 30.0])
        >>> round(psnr(ref, ref + 1.0), 2)  # 10 log10(30^2 / 1)
        29.54
    """
    reference, test = _same_shape(reference, test)
    value = data_range(reference) if data_range_value is None else float(data_range_value)
    mse = float(np.mean((reference - test) ** 2))
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(value * value / mse))


def ssim(
    reference: np.ndarray,
    test: np.ndarray,
    data_range_value: float | None = None,
    win_size: int = WINDOW,
) -> float:
    """Mean structural similarity of ``test`` to ``reference`` (2D or 3D arrays).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> ref = rng.normal(size=(12, 12, 12))
        >>> ssim(ref, ref), round(ssim(ref, ref + rng.normal(size=ref.shape)), 2)
        (1.0, 0.58)
    """
    reference, test = _same_shape(reference, test)
    if win_size % 2 != 1 or win_size < 3:
        raise CladeError(f"The SSIM window must be an odd size of at least 3, not {win_size}.")
    if min(reference.shape) < win_size:
        raise CladeError(
            f"The volume ({'x'.join(map(str, reference.shape))} voxels) is smaller than the "
            f"{win_size}-voxel SSIM window."
        )
    value = data_range(reference) if data_range_value is None else float(data_range_value)
    c1 = (K1 * value) ** 2
    c2 = (K2 * value) ** 2
    pad = (win_size - 1) // 2
    points = win_size**reference.ndim
    covariance_norm = points / (points - 1.0)

    # Only window-valid outputs are averaged, so each slab needs just `pad` extra planes on each
    # side and the result is exactly that of filtering the whole volume at once.
    first, last = pad, reference.shape[0] - pad
    plane = int(np.prod(reference.shape[1:]))
    step = max(1, _SLAB_VOXELS // plane)
    total = 0.0
    count = 0
    for start in range(first, last, step):
        stop = min(start + step, last)
        x = reference[start - pad : stop + pad].astype(np.float64)
        y = test[start - pad : stop + pad].astype(np.float64)
        local = _ssim_map(x, y, win_size, covariance_norm, c1, c2)
        inner = (slice(pad, pad + stop - start),) + (slice(pad, -pad),) * (reference.ndim - 1)
        block = local[inner]
        total += float(block.sum(dtype=np.float64))
        count += block.size
    return total / count


def _ssim_map(x, y, win_size, covariance_norm, c1, c2):
    mean_x = uniform_filter(x, win_size)
    mean_y = uniform_filter(y, win_size)
    var_x = covariance_norm * (uniform_filter(x * x, win_size) - mean_x * mean_x)
    var_y = covariance_norm * (uniform_filter(y * y, win_size) - mean_y * mean_y)
    cov = covariance_norm * (uniform_filter(x * y, win_size) - mean_x * mean_y)
    numerator = (2 * mean_x * mean_y + c1) * (2 * cov + c2)
    denominator = (mean_x * mean_x + mean_y * mean_y + c1) * (var_x + var_y + c2)
    return numerator / denominator


def _same_shape(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference)
    test = np.asarray(test)
    if reference.shape != test.shape:
        raise CladeError(
            f"The volumes have different shapes ({reference.shape} and {test.shape}): compare "
            "them on the same grid (resample to the reference first)."
        )
    return reference, test
