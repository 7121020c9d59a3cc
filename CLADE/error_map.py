"""Where the network may be wrong: a calibrated estimate of ``|SR - truth|`` beside a result.

The volume being super-resolved holds exact errors to learn from (the idea behind adaptation,
:mod:`CLADE.adaptation`): its own sharp in-plane slices, degraded along one axis like its thick
slices (:func:`CLADE.degradation.degrade_slice`, the volume's own thickness ratio and sampling
phase), are super-resolved by the same generator, so their true absolute error is known. A small
regressor (:class:`ErrorRegressor`) is fitted on those pairs, per volume, from a few features of
each pixel that need no ground truth (:func:`slice_features`: the local size of the network's
change ``|SR - spline|``, gradients of the output and of the spline, the curvature of the spline
along the thick direction, the intensity, how far the pixel lies from an acquired slice, and how
far the output strays from what the thick slices measured,
:func:`CLADE.degradation.consistency_residual`), then applied to the real LR-plane slices of the
output. Fitted with a Poisson deviance, it predicts the conditional mean error. One thing the
pairs cannot show is added to every voxel: the noise the thin slices of an isotropic truth hold
and the thick slices averaged away (:mod:`CLADE.noise_floor`). The map is in the output's own
units (HU for CT, the input's units for MRI): a value of 20 means "expect about 20 units of
error here".

Everything is computed on normalised slices (the generator's [-1, 1] units, thick direction along
the rows, as the generator sees them); the prediction is scaled back by the intensity window's
half range. ``models/cards/error-map.md`` measures the map on held-out volumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter, gaussian_filter1d, sobel

from .degradation import consistency_residual, degrade_slice
from .errors import CladeError
from .geometry import lr_slice_stack
from .noise_floor import averaged_away_noise, noise_sigma

#: Smoothing (pixels) of the per-pixel features and of the final map.
FEATURE_SIGMA = 1.0
WIDE_SIGMA = 4.0
CONSISTENCY_WIDE_SIGMA = 3.0
MAP_SIGMA = 0.5
#: A voxel is foreground when above this fraction of the intensity window (as in training).
FOREGROUND_LEVEL = 0.05
#: The summary flags voxels whose estimated error exceeds this fraction of the window.
FLAG_FRACTION = 0.05
#: At most this many HR slices per in-plane direction are degraded and super-resolved.
MAX_PAIR_SLICES = 16
#: At most this many foreground pixels are used to fit the regressor.
MAX_SAMPLES = 200_000
_EPS = 1e-3


def check_error_map_path(path, input_path, output) -> Path:
    """The error map's file, checked before any work like the output's
    (:func:`CLADE.volume_io.check_output_path`), and never the output itself."""
    from .volume_io import check_output_path

    checked = check_output_path(path, inputs=(input_path,))
    if checked.resolve() == Path(output).resolve():
        raise CladeError(
            f"The error map and the output would both be written to {output}: give the error "
            "map another file name."
        )
    return checked


def thick_phase(rows: int, ratio: float) -> np.ndarray:
    """Distance (in thick-slice spacings, 0 to 0.5) of each output row from the nearest acquired
    slice centre. On CLADE's isotropic grid (:mod:`CLADE.geometry`) thick slice ``k`` is centred
    on output row ``(k + 0.5) * ratio - 0.5``.

    Example:
        >>> [round(float(v), 3) for v in thick_phase(6, 3.0)]
        [0.333, 0.0, 0.333, 0.333, 0.0, 0.333]
    """
    position = (np.arange(rows) - (ratio - 1.0) / 2.0) / ratio
    fraction = position - np.floor(position)
    return np.minimum(fraction, 1.0 - fraction).astype(np.float32)


def slice_features(sr: np.ndarray, spline: np.ndarray, ratio: float) -> np.ndarray:
    """The regressor's inputs for every pixel of a stack of normalised LR-plane slices
    ``(n, H, W)`` (thick direction along the rows): an ``(n, H, W, F)`` float32 array.

    Example:
        >>> s = np.random.default_rng(0).uniform(-1, 1, (2, 12, 10)).astype(np.float32)
        >>> slice_features(s, s, 4.0).shape
        (2, 12, 10, 13)
    """
    sr = np.asarray(sr, np.float32)
    spline = np.asarray(spline, np.float32)

    def smooth(values, sigma=FEATURE_SIGMA):
        return gaussian_filter(values, (0, sigma, sigma))

    def log(values):
        return np.log(np.maximum(values, 0.0) + _EPS)

    change = np.abs(sr - spline)
    grad_rows = np.abs(sobel(sr, axis=1)) / 8.0
    grad_cols = np.abs(sobel(sr, axis=2)) / 8.0
    gradient = np.hypot(grad_rows, grad_cols)
    spline_rows = np.abs(sobel(spline, axis=1)) / 8.0
    curvature = np.abs(gaussian_filter1d(spline, 1.0, axis=1, order=2))
    phase = np.broadcast_to(thick_phase(sr.shape[1], ratio)[None, :, None], sr.shape)
    # Where the output, blurred like the thick slices, departs from what they measured: detail
    # the acquisition would have seen, so likely wrong (top-5% enrichment +0.34 and +0.48 on the
    # held-out CTs, +0.17 on the MNI brain; models/cards/error-map.md).
    inconsistency = consistency_residual(sr, spline, ratio)
    features = [
        log(smooth(change)),
        log(smooth(change, WIDE_SIGMA)),
        log(smooth(grad_rows)),
        log(smooth(grad_cols)),
        log(smooth(spline_rows)),
        log(smooth(curvature)),
        log(smooth(gradient, WIDE_SIGMA)),
        smooth(sr),
        phase,
        log(smooth(inconsistency)),
        log(smooth(inconsistency, CONSISTENCY_WIDE_SIGMA)),
        # Unsmoothed, so the map can rank the very top as sharply as a plain gradient map does
        # (+0.11 top-5% enrichment on the MNI brain, +0.02 on the validation crop; card).
        log(gradient),
        log(change),
    ]
    return np.stack(features, axis=-1).astype(np.float32)


class ErrorRegressor:
    """A tiny MLP from :func:`slice_features` to the expected absolute error (normalised units),
    fitted with a Poisson deviance so that it predicts the conditional mean.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(4000, 3)).astype(np.float32)
        >>> y = np.abs(x[:, 0]) * 0.1                      # the error grows with feature 0
        >>> model = ErrorRegressor().fit(x, y)
        >>> p = model.predict(x)
        >>> bool(np.corrcoef(p, y)[0, 1] > 0.95), bool(abs(p.mean() / y.mean() - 1) < 0.1)
        (True, True)
    """

    def __init__(self, hidden: int = 32, steps: int = 600, seed: int = 0):
        self.hidden, self.steps, self.seed = hidden, steps, seed
        self.network: torch.nn.Module | None = None

    def fit(self, features: np.ndarray, errors: np.ndarray) -> ErrorRegressor:
        generator = torch.Generator().manual_seed(self.seed)
        x = torch.from_numpy(np.ascontiguousarray(features, np.float32))
        y = torch.from_numpy(np.ascontiguousarray(errors, np.float32))
        # A floor on the spread: a feature that is constant on the pairs (an identity network
        # changes nothing) must not turn a rounding difference into a huge input.
        self.mean, self.std = x.mean(0), x.std(0).clamp_min(0.05)
        self.scale = float(y.mean().clamp_min(1e-8))
        x, y = (x - self.mean) / self.std, y / self.scale
        torch.manual_seed(self.seed)
        width = x.shape[1]
        self.network = torch.nn.Sequential(
            torch.nn.Linear(width, self.hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(self.hidden, self.hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(self.hidden, 1),
        )
        optimiser = torch.optim.Adam(self.network.parameters(), lr=3e-3)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, self.steps)
        batch = min(4096, len(x))
        for _ in range(self.steps):
            index = torch.randint(len(x), (batch,), generator=generator)
            # Poisson deviance with a log link: its minimiser is the conditional mean (so the
            # map is calibrated), and errors scale multiplicatively with the features, which
            # carries over to the through-plane slices' somewhat higher contrast.
            log_mean = self.network(x[index])[:, 0]
            loss = (torch.exp(log_mean) - y[index] * log_mean).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
        self.network.eval()
        return self

    @torch.no_grad()
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Expected absolute error per row of ``features`` (any leading shape), float32."""
        shape = features.shape[:-1]
        x = torch.from_numpy(np.ascontiguousarray(features.reshape(-1, features.shape[-1])))
        out = np.empty(len(x), np.float32)
        for first in range(0, len(x), 1 << 18):
            chunk = (x[first : first + (1 << 18)] - self.mean) / self.std
            log_mean = self.network(chunk)[:, 0].clamp(max=20.0)
            out[first : first + len(chunk)] = torch.exp(log_mean).numpy() * self.scale
        return out.reshape(shape)


def training_pairs(
    native: np.ndarray,
    thick_axis: int,
    slice_axis: int,
    ratio: float,
    run_stack,
    max_slices: int = MAX_PAIR_SLICES,
    max_samples: int = MAX_SAMPLES,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Features and exact absolute errors from the volume's own HR-plane slices.

    ``native`` is the input's array (z, y, x), normalised to [-1, 1]; each HR slice is presented
    with ``slice_axis`` along the rows (so the sharp columns match the real LR slices), degraded
    along them with ``ratio`` at the real sampling phase, and restored by ``run_stack`` (a
    normalised ``(n, H, W)`` stack in, the same out). Returns ``(N, F)`` features and ``(N,)``
    errors of foreground pixels, subsampled to ``max_samples``.

    Example (an identity "network": the error is the degradation's):
        >>> vol = np.random.default_rng(0).uniform(-1, 1, (6, 20, 24)).astype(np.float32)
        >>> x, y = training_pairs(vol, 2, 0, 4.0, lambda s: s)
        >>> x.shape[1], bool(y.min() >= 0)
        (13, True)
    """
    level = -1.0 + 2.0 * FOREGROUND_LEVEL
    xs, ys = [], []
    # Both in-plane axes take the thick role in turn: twice the variety of structure, so that
    # what the pairs teach depends less on one direction's anatomy.
    for role in (slice_axis, 3 - thick_axis - slice_axis):
        hr = lr_slice_stack(native, thick_axis, role)  # (thick index, role axis, the other)
        filled = np.flatnonzero((hr > level).mean(axis=(1, 2)) > 0.05)
        if filled.size == 0:
            filled = np.arange(hr.shape[0])
        picks = np.linspace(0, filled.size - 1, max_slices).round().astype(int)
        sharp = np.ascontiguousarray(hr[filled[np.unique(picks)]], np.float32)
        degraded = np.stack([degrade_slice(s, ratio, (ratio - 1.0) / 2.0) for s in sharp])
        restored = np.asarray(run_stack(degraded), np.float32)
        mask = np.maximum(sharp, degraded) > level
        xs.append(slice_features(restored, degraded, ratio)[mask])
        ys.append(np.abs(restored - sharp)[mask])
    x, y = np.concatenate(xs), np.concatenate(ys)
    if len(y) > max_samples:
        keep = np.random.default_rng(seed).choice(len(y), max_samples, replace=False)
        x, y = x[keep], y[keep]
    return x, y


@dataclass
class ErrorMap:
    """The estimated absolute error (numpy z, y, x, output units) and what the summary says."""

    array: np.ndarray
    level: float  #: the flag level, in output units
    flagged_fraction: float  #: fraction of the foreground estimated above ``level``
    pairs: int  #: pixels the regressor was fitted on
    seconds: float
    modality: str = ""  #: the model's: "CT" maps are in HU, others in the input's units
    #: the part of every voxel's estimate that is the thin slices' noise (output units)
    noise_floor: float = 0.0

    @property
    def units(self) -> str:
        return "HU" if self.modality.upper() == "CT" else ""

    def stats(self) -> dict:
        """What a run's statistics record about the map (JSON-ready)."""
        return {
            "level": self.level,
            "flagged_fraction": self.flagged_fraction,
            "pairs": self.pairs,
            "seconds": self.seconds,
            "modality": self.modality,
            "noise_floor": self.noise_floor,
            "summary": self.summary(),
        }

    def summary(self) -> str:
        """One line for the terminal and the log."""
        units = f" {self.units}" if self.units else ""
        return (
            f"error map: {100 * self.flagged_fraction:.1f}% of the foreground estimated above "
            f"{self.level:.3g}{units} (5% of the intensity window), never below "
            f"{self.noise_floor:.3g}{units} (the noise thin slices would hold that these thick "
            f"slices averaged away); learnt from {self.pairs} pixels of the volume's own "
            f"in-plane slices in {self.seconds:.1f} s"
        )


def estimate_error_map(
    native: np.ndarray,
    spline: np.ndarray,
    output: np.ndarray,
    window,
    thick_axis: int,
    slice_axes: list[int],
    ratio: float,
    run_stack,
    cancel=None,
    modality: str = "",
) -> ErrorMap:
    """The error map of ``output`` (numpy z, y, x, output units) super-resolved from
    ``spline`` (the same grid) of the input array ``native`` (all in output units).

    ``window`` is the run's :class:`CLADE.normalisation.IntensityWindow`, ``run_stack`` the
    generator over a normalised stack (as :class:`CLADE.inference.StackInference.run`), and
    ``ratio`` the thick spacing over the output spacing. ``cancel`` is polled between slabs.

    Example (an identity network; the map is on the output's grid, in its units):
        >>> from CLADE.normalisation import IntensityWindow
        >>> z, y, x = np.mgrid[0:24, 0:20, 0:20].astype(np.float32)
        >>> out = 100 + 50 * np.sin(x / 3) * np.cos(z / 4)
        >>> native = out[1::4]
        >>> m = estimate_error_map(native, out, out, IntensityWindow(50, 150), 2, [0], 4.0,
        ...                        lambda s: s)
        >>> m.array.shape, m.array.dtype, bool(m.array.min() >= 0), m.level
        ((24, 20, 20), dtype('float32'), True, 5.0)
    """
    import time

    started = time.perf_counter()
    normalise = window.normalise
    half_range = np.float32((window.high - window.low) / 2.0)
    native_norm = normalise(native)
    result = np.zeros(output.shape, np.float32)
    pairs = 0
    # The pairs' targets are slices of the thick volume, whose noise the slice profile averaged
    # down; the isotropic truth keeps it all, and no network restores noise. Added in quadrature
    # (independent of the network's error): held-out CT calibration 0.57-0.91 -> 0.83-1.14.
    in_plane = np.moveaxis(native_norm, 2 - thick_axis, 0)  # numpy axis of the thick index axis
    floor = np.float32(
        averaged_away_noise(noise_sigma(in_plane, -1.0 + 2.0 * FOREGROUND_LEVEL), ratio)
    )
    for slice_axis in slice_axes:
        x, y = training_pairs(native_norm, thick_axis, slice_axis, ratio, run_stack)
        pairs += len(y)
        regressor = ErrorRegressor().fit(x, y)
        out_stack = lr_slice_stack(output, slice_axis, thick_axis)
        spline_stack = lr_slice_stack(spline, slice_axis, thick_axis)
        target = lr_slice_stack(result, slice_axis, thick_axis)
        per_slab = max(1, (1 << 20) // max(1, out_stack.shape[1] * out_stack.shape[2]))
        for first in range(0, out_stack.shape[0], per_slab):
            if cancel is not None:
                cancel()
            part = slice(first, first + per_slab)
            features = slice_features(
                normalise(out_stack[part]), normalise(spline_stack[part]), ratio
            )
            # Every pixel: the error's row-to-row pattern follows the acquired slices' phase (a
            # period of ``ratio`` rows), which predicting every second pixel and interpolating
            # aliased (top-5% enrichment 2.60 -> 2.80 on the validation brain, card).
            predicted = regressor.predict(features)
            target[part] += np.sqrt(predicted * predicted + floor * floor) * half_range
    if len(slice_axes) > 1:
        result /= np.float32(len(slice_axes))
    gaussian_filter(result, MAP_SIGMA, output=result)  # in place: no third output-sized array
    level = float(FLAG_FRACTION * 2 * half_range)
    foreground = spline > window.low + FOREGROUND_LEVEL * 2 * half_range
    flagged = float((result[foreground] > level).mean()) if foreground.any() else 0.0
    seconds = time.perf_counter() - started
    return ErrorMap(result, level, flagged, pairs, seconds, modality, float(floor * half_range))
