"""The noise a thin-slice acquisition holds and a thick-slice one averaged away (issue 23).

A thick slice is the average of the thin slices its profile covers, so their independent noise
is averaged down: by ``sqrt(sum(w**2))`` for profile weights ``w`` (0.46 at a thickness ratio of
3, 0.36 at 5). The isotropic truth a super-resolved volume is compared with keeps that noise, and
no network can restore it: it is a floor under ``|SR - truth|`` wherever the anatomy is flat. The
error map's in-plane pairs cannot see it, because their targets are slices of the thick volume
(already averaged), so :mod:`CLADE.error_map` adds it from here.

Measured on the held-out abdominal CT (`models/cards/error-map.md`): the in-plane noise of its
9 mm and 12 mm thick slices, estimated below, is 5.8 and 5.1 HU, and that of the 3 mm truth
12.2 HU: 0.48 and 0.42 of it, where the profile predicts 0.46 and 0.40.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import convolve, sobel

from .simulate import slice_profile_weights

#: Immerkaer's mask: the difference of two Laplacians, blind to constants, ramps and quadrics.
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float64)
#: The noise is read where the slice is flattest: this fraction of its foreground pixels.
FLATTEST = 0.1


def noise_sigma(slices: np.ndarray, level: float, flattest: float = FLATTEST) -> float:
    """Standard deviation of white noise in a stack of 2D slices ``(n, H, W)``.

    Immerkaer's estimator (Immerkaer 1996, *Fast noise variance estimation*): the mean absolute
    response to :data:`_IMMERKAER` times ``sqrt(pi / 2) / 6``, read over the ``flattest``
    fraction of the foreground (values above ``level``) by Sobel gradient, so that edges of the
    anatomy do not pass for noise. The Sobel and Immerkaer responses of white noise are
    uncorrelated (odd against even kernels), so choosing flat pixels does not bias the estimate.
    Written here because neither SimpleITK nor SciPy has a noise estimator; scikit-image's
    wavelet estimator reads all pixels, edges included. Returns 0 without enough foreground.

    Example (white noise of standard deviation 0.1 on a smooth ramp):
        >>> rng = np.random.default_rng(0)
        >>> ramp = np.linspace(0, 1, 64)[None, None, :] * np.ones((4, 64, 64))
        >>> round(noise_sigma(ramp + rng.normal(0, 0.1, ramp.shape), -1.0), 2)
        0.1
    """
    responses = []
    for plane in np.asarray(slices, np.float64):
        inside = plane > level
        inside[:1], inside[-1:], inside[:, :1], inside[:, -1:] = False, False, False, False
        if inside.sum() < 100:
            continue
        gradient = np.hypot(sobel(plane, 0), sobel(plane, 1))
        flat = inside & (gradient <= np.quantile(gradient[inside], flattest))
        responses.append(np.abs(convolve(plane, _IMMERKAER, mode="reflect")[flat]))
    if not responses:
        return 0.0
    return float(np.sqrt(np.pi / 2.0) * np.concatenate(responses).mean() / 6.0)


def profile_energy(ratio: float) -> float:
    """``sum(w**2)`` of the Gaussian slice profile (FWHM = ``ratio`` thin slices) on the thin
    grid: the fraction of the thin slices' noise variance a thick slice keeps. The weights are
    the simulation's own (:func:`CLADE.simulate.slice_profile_weights`), averaged over thick
    slices away from the ends (a non-integer ratio centres them at varying phases).

    Example:
        >>> round(profile_energy(3.0), 3), round(profile_energy(5.0), 3)
        (0.216, 0.132)
    """
    weights = slice_profile_weights(int(np.ceil(ratio)) * 24, ratio, ratio, "gaussian")
    return float((weights**2).sum(axis=1)[4:-4].mean())


def averaged_away_noise(thick_sigma: float, ratio: float) -> float:
    """Mean absolute size of the noise the thin slices held beyond the thick ones', from the
    thick slices' own in-plane noise ``thick_sigma``: ``sqrt(2 / pi)`` (the mean absolute value
    of a unit Gaussian) times ``thick_sigma * sqrt(1 / sum(w**2) - 1)``.

    Example (the thicker the slices, the more noise they averaged away):
        >>> round(averaged_away_noise(5.8, 3.0), 1), round(averaged_away_noise(5.8, 5.0), 1)
        (8.8, 11.9)
    """
    missing = thick_sigma * np.sqrt(max(1.0 / profile_energy(ratio) - 1.0, 0.0))
    return float(np.sqrt(2.0 / np.pi) * missing)
