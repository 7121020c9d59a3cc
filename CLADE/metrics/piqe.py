"""PIQE, the no-reference perceptual image quality score (the paper's "PIQUE"), vectorised.

PIQE (Venkatanath et al., "Blind image quality evaluation using perception based features",
NCC 2015) splits a slice into 16x16 blocks, keeps the spatially active ones (variance of the
locally normalised image above 0.1) and scores each for blockiness/sharp artefacts and for noise.
The score lies in [0, 100]; lower is better. This module computes every block of a slice, or of a
whole stack of slices, at once with array operations instead of a per-block Python loop.

Conventions (they matter when comparing numbers):

* It follows MATLAB's ``piqe`` as ported by the ``pypiqe`` package, which the tests use as the
  reference (scores agree within 0.01). Two details of that port differ from MATLAB and are kept
  for agreement: the slice is padded to a multiple of 16 by mirroring (MATLAB replicates the
  edge row), and intensities are scaled by ``255 / max`` instead of MATLAB's ``im2double``, which
  assumes [0, 1] floats or the full integer range and would be meaningless for HU or MR values.
* Hence the score does not depend on a gain (multiplying a slice by a positive constant leaves it
  unchanged, up to rounding to 256 grey levels) but does depend on an offset: add 1000 to a CT
  slice and its score changes. Compare volumes stored with the same intensity convention.
* It depends on the pixel grid: blocks are 16x16 pixels whatever the pixel size, so compare
  methods only on the same grid (CLADE's isotropic grid for the spline baseline and every SR
  output).
* A constant (e.g. empty, all-zero) slice has no active block and scores 100, as MATLAB
  documents; :func:`volume_piqe` skips such slices since they say nothing about a method.
* Slices are 2D arrays read in numpy order (rows, columns); the noise test looks at the two
  central columns of each block, so the score is not exactly invariant to transposing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import correlate1d

from ..errors import CladeError

BLOCK_SIZE = 16
ACTIVITY_THRESHOLD = 0.1
IMPAIRED_THRESHOLD = 0.1
SEGMENT_LENGTH = 6

#: Slices processed together in :func:`volume_piqe`; bounds memory to ~a dozen float64 stacks.
_CHUNK_PIXELS = 4_000_000


def _gaussian_kernel() -> np.ndarray:
    # 7 taps, sigma 7/6 ("sampled out to 3 standard deviations"), normalised to sum 1: the same
    # sampled kernel as MATLAB's imgaussfilt and OpenCV's GaussianBlur with these settings.
    x = np.arange(7) - 3.0
    kernel = np.exp(-(x**2) / (2.0 * (7.0 / 6.0) ** 2))
    return kernel / kernel.sum()


_KERNEL = _gaussian_kernel()

# Column indices of a block used as "surround" by the noise criterion. MATLAB deletes column 8
# and then column 9 of the already shortened block (1-based), i.e. original columns 8 and 10;
# pypiqe does the same. So the surround keeps 0-based column 8 and drops column 9.
_CENTRE_COLUMNS = np.array([7, 8])
_SURROUND_COLUMNS = np.array([c for c in range(BLOCK_SIZE) if c not in (7, 9)])


@dataclass(frozen=True)
class PiqeResult:
    """A PIQE score with its block-level masks (one boolean per 16x16 block, rows x columns)."""

    score: float
    active: np.ndarray
    artefact: np.ndarray
    noise: np.ndarray


def piqe(slice2d: np.ndarray) -> float:
    """PIQE score of one 2D slice, in [0, 100], lower is better.

    Integer or float input; a constant slice scores 100.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> noisy = 100 + rng.normal(0, 20, (64, 64))
        >>> round(piqe(noisy), 2) > 50, piqe(np.zeros((40, 40)))
        (True, 100.0)
    """
    return piqe_result(slice2d).score


def piqe_result(slice2d: np.ndarray) -> PiqeResult:
    """PIQE score of one 2D slice together with its active, artefact and noise block masks.

    Example:
        >>> result = piqe_result(np.zeros((40, 50)))
        >>> result.score, result.active.shape
        (100.0, (3, 4))
    """
    array = np.asarray(slice2d)
    if array.ndim != 2:
        raise CladeError(f"PIQE needs a 2D slice, not an array of shape {array.shape}.")
    scores, active, artefact, noise = _stack_scores(array[None])
    return PiqeResult(float(scores[0]), active[0], artefact[0], noise[0])


def volume_piqe(volume: np.ndarray, axis: int, central_fraction: float = 1.0) -> float:
    """Mean PIQE over the 2D slices of ``volume`` taken along numpy axis ``axis``.

    Each slice is ``np.take(volume, i, axis)`` (its two axes in numpy order). Only the central
    ``central_fraction`` of the slices is kept (e.g. 0.6 drops 20 % at each end, where slices
    often hold mostly air). Constant slices are skipped (they would score 100 for any method);
    a volume whose kept slices are all constant raises :class:`CladeError`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> vol = 100 + rng.normal(0, 20, (6, 32, 48))
        >>> vol[0] = 0  # an empty slice: skipped
        >>> score = volume_piqe(vol, axis=0)
        >>> bool(abs(score - np.mean([piqe(s) for s in vol[1:]])) < 1e-9)
        True
    """
    array = np.asarray(volume)
    if array.ndim != 3:
        raise CladeError(f"volume_piqe needs a 3D volume, not an array of shape {array.shape}.")
    if not 0.0 < central_fraction <= 1.0:
        raise CladeError(
            f"The central fraction of slices must be in (0, 1], not {central_fraction}."
        )
    stack = np.moveaxis(array, axis, 0)
    count = stack.shape[0]
    keep = max(1, int(round(count * central_fraction)))
    start = (count - keep) // 2
    stack = stack[start : start + keep]
    flat = stack.reshape(keep, -1)
    varying = flat.max(axis=1) > flat.min(axis=1)
    stack = stack[varying]
    if stack.shape[0] == 0:
        raise CladeError(
            "Every slice of the volume is constant (e.g. empty) along the chosen axis: PIQE is "
            "undefined, check the volume."
        )
    per_chunk = max(1, _CHUNK_PIXELS // (stack.shape[1] * stack.shape[2]))
    scores = [
        _stack_scores(stack[i : i + per_chunk])[0] for i in range(0, stack.shape[0], per_chunk)
    ]
    return float(np.concatenate(scores).mean())


def _stack_scores(stack: np.ndarray):
    """Scores and block masks of a stack of slices (n, rows, columns), all at once."""
    if not np.isfinite(stack).all():
        raise CladeError("The slice holds NaN or infinite values: PIQE needs finite values.")
    image = _scaled_padded(stack)
    mu, mean_square = _blur(np.stack((image, image * image)))
    mean_square -= mu * mu
    sigma = np.sqrt(np.abs(mean_square, out=mean_square), out=mean_square)
    image -= mu
    sigma += 1.0
    normalised = np.divide(image, sigma, out=image)

    n, rows, columns = normalised.shape
    blocks = normalised.reshape(
        n, rows // BLOCK_SIZE, BLOCK_SIZE, columns // BLOCK_SIZE, BLOCK_SIZE
    )
    blocks = blocks.transpose(0, 1, 3, 2, 4)  # (n, block row, block column, 16, 16)
    variance = blocks.var(axis=(-2, -1), ddof=1)
    active = variance > ACTIVITY_THRESHOLD
    # Only active blocks are tested for distortion; selecting them first saves most of the work
    # on slices that are largely background.
    chosen = blocks[active]
    chosen_variance = variance[active]
    artefact = np.zeros_like(active)
    noise = np.zeros_like(active)
    artefact[active] = _impaired(chosen)
    noise[active] = _noisy(chosen, chosen_variance)
    distortion = np.where(artefact, 1.0 - variance, 0.0) + np.where(noise, variance, 0.0)
    total = distortion.sum(axis=(1, 2))
    scores = (total + 1.0) / (1.0 + active.sum(axis=(1, 2))) * 100.0
    return scores, active, artefact, noise


def _scaled_padded(stack: np.ndarray) -> np.ndarray:
    stack = stack.astype(np.float64)
    rows, columns = stack.shape[1:]
    pad_rows = -rows % BLOCK_SIZE
    pad_columns = -columns % BLOCK_SIZE
    if pad_rows or pad_columns:
        stack = np.pad(stack, ((0, 0), (0, pad_rows), (0, pad_columns)), mode="symmetric")
    peak = stack.max(axis=(1, 2), keepdims=True)
    # A slice whose maximum is 0 (all values <= 0) would divide by zero; dividing by its
    # minimum instead only flips the sign, to which every PIQE statistic is blind.
    low = stack.min(axis=(1, 2), keepdims=True)
    scale = np.where(peak != 0, peak, np.where(low != 0, low, 1.0))
    stack /= scale
    stack *= 255.0
    return np.round(stack, out=stack)


def _blur(images: np.ndarray) -> np.ndarray:
    """Separable 7-tap Gaussian over the last two axes, borders replicated (MATLAB/OpenCV)."""
    out = correlate1d(images, _KERNEL, axis=-1, mode="nearest")
    return correlate1d(out, _KERNEL, axis=-2, mode="nearest")


def _impaired(blocks: np.ndarray) -> np.ndarray:
    """A block edge with a 6-pixel segment of standard deviation below 0.1 (blockiness).

    ``blocks`` is a flat list of blocks (m, 16, 16).
    """
    last = BLOCK_SIZE - 1
    edges = np.stack(
        (blocks[..., 0, :], blocks[..., :, last], blocks[..., last, :], blocks[..., :, 0]),
        axis=-2,
    )
    # Running sums give the variance of every 6-pixel window at once.
    sums = _window_sums(edges)
    squares = _window_sums(edges * edges)
    variance = (squares - sums * sums / SEGMENT_LENGTH) / (SEGMENT_LENGTH - 1)
    return (variance < IMPAIRED_THRESHOLD**2).any(axis=(-2, -1))


def _window_sums(values: np.ndarray) -> np.ndarray:
    cumulative = np.cumsum(values, axis=-1)
    cumulative = np.concatenate((np.zeros(values.shape[:-1] + (1,)), cumulative), axis=-1)
    return cumulative[..., SEGMENT_LENGTH:] - cumulative[..., :-SEGMENT_LENGTH]


def _noisy(blocks: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Block standard deviation larger than twice its centre/surround deviation contrast.

    ``blocks`` is a flat list of blocks (m, 16, 16).
    """
    count = blocks.shape[0]
    centre = blocks[..., _CENTRE_COLUMNS].reshape(count, BLOCK_SIZE * len(_CENTRE_COLUMNS))
    surround = blocks[..., _SURROUND_COLUMNS].reshape(count, BLOCK_SIZE * len(_SURROUND_COLUMNS))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = centre.std(axis=-1, ddof=1) / surround.std(axis=-1, ddof=1)
        ratio = np.where(np.isnan(ratio), 0.0, ratio)
        sigma = np.sqrt(variance)
        beta = np.abs(sigma - ratio) / np.maximum(sigma, ratio)
        # NaN beta (an infinite ratio) compares False, as in the reference implementation.
        return sigma > 2.0 * beta
