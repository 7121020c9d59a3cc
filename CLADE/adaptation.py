"""Adapt a trained generator to one volume before super-resolving it (beyond the paper).

A shipped model was trained on other people's scans. The volume being super-resolved carries its
own training signal: its in-plane (HR) slices are sharp, and degrading them along one axis like
this acquisition's thick slices (Gaussian slice profile, FWHM = slice spacing, the volume's own
thickness ratio; :func:`CLADE.degradation.degrade_slice`) gives exact pairs of
"what a thick-slice view looks like" and "what it should look like". This module fine-tunes
``G_X`` on those pairs for a few hundred steps, the idea behind SMORE and ECLARE (which train a
network from scratch on each volume), here starting from the pretrained CLADE generator so that
far fewer steps are needed.

Safeguard: whole HR slices (about one in ten, with their neighbours left out of training too)
are held back and never trained on. Their pairs are degraded along the rows, as in training, and
also along the columns (each held-back slice transposed), a blur direction adaptation never
trained on. The mean absolute restoration error on both is measured before and after; unless
adaptation lowered the first and lowered the second by at least :data:`MIN_TRANSFER` as much
(relatively), the original model is used unchanged and the result says so. Why this test
(``models/cards/adaptation.md``): the thick axis at inference is neither in-plane direction, so a
gain must carry over to a direction it was not trained on (on a validation brain where adaptation
made the result worse, the in-plane error fell 6-15% and the other direction's at most 4%); and
patches held back from slices that are also trained on share their texture, so they approve a
model that memorised it.

The input image is never modified, and the model passed in is left untouched (a copy is trained).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from .adaptation_policy import FORCED_STEPS, check_adaptable
from .device import resolve_device
from .errors import Cancelled, CladeError
from .geometry import detect_thick_axis, hr_slice_stack, isotropic_grid
from .model_file import LoadedModel
from .patches import PATCH_SIZE
from .slice_sampling import PreparedVolume, paired_slice_patches, prepare_volume
from .volume_io import as_3d, check_volume

#: Default number of optimiser steps (batch 4): 20-25 s on one CPU core for the 32-filter mri
#: and ct, about a minute for the 64-filter models (measured, models/cards/adaptation.md).
DEFAULT_STEPS = FORCED_STEPS
#: Most patch pairs cut from the volume (a 512x512 CT has tens of thousands of candidates).
DEFAULT_MAX_PATCHES = 4000
#: Fraction of the HR slices held back to check that adaptation helped (at least 2 slices).
HELD_OUT_FRACTION = 0.1
#: Slices on each side of a held-back slice also kept out of training (1 voxel apart on the
#: isotropic grid, neighbours are near copies of it).
HELD_OUT_GUARD = 1
#: Share of the in-plane gain (relative fall of the held-back error blurred as trained) that the
#: error blurred along the other direction must also show. On the Colin27 validation brain,
#: where adaptation lowered SSIM in all six runs measured (mri-large and mri, 100-500 steps),
#: it was 0.03-0.29, the gain being specific to the trained direction;
#: where adaptation helped at 200 steps or more it was 0.44-0.71 (models/cards/adaptation.md).
MIN_TRANSFER = 0.4
#: Most held-back pairs per blur direction.
MAX_HELD_OUT = 256
MIN_PAIRS = 32
MIN_HELD_OUT = 8


class TooLittleToAdapt(CladeError):
    """The volume has too few usable in-plane patches to adapt on (``--adapt auto`` then runs
    without adaptation instead of failing)."""


@dataclass(frozen=True)
class AdaptationProgress:
    """Progress of a running adaptation, passed to the ``progress`` callback."""

    done_steps: int
    total_steps: int
    elapsed_seconds: float
    loss: float

    @property
    def fraction(self) -> float:
        return self.done_steps / self.total_steps if self.total_steps else 1.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the rate so far (None before the first step)."""
        if not self.done_steps:
            return None
        return self.elapsed_seconds / self.done_steps * (self.total_steps - self.done_steps)


@dataclass
class AdaptationResult:
    """The model to use, and what adaptation measured on the volume's held-back slices."""

    model: LoadedModel
    steps: int
    pairs: int
    #: Held-back pairs in the smaller of the two sets (one per blur direction).
    held_out: int
    ratio: float
    #: Mean restoration error of the held-back pairs blurred along the rows (as trained).
    error_before: float
    error_after: float
    seconds: float
    #: The adapted generator whether or not the safeguard kept it (for measuring the safeguard
    #: itself, ``benchmarks/adaptation_curve.py``); :attr:`model` is what a run uses.
    candidate: LoadedModel | None = None
    #: The same for the held-back pairs blurred along the columns (a direction never trained).
    cross_error_before: float = float("nan")
    cross_error_after: float = float("nan")

    @property
    def improved(self) -> bool:
        """True when the adapted generator is used: it restored the held-back slices better
        along both in-plane directions."""
        return _improved(
            self.error_before, self.error_after, self.cross_error_before, self.cross_error_after
        )

    @property
    def verdict(self) -> str:
        """Why the safeguard kept the adapted model or not, in a few words."""
        if self.improved:
            return "adapted model used"
        if self.error_after < self.error_before:
            return "its gain did not carry over to the other direction, the original model is used"
        return "no improvement, the original model is used"

    def summary(self) -> str:
        """One line for a log or the terminal."""
        verdict = self.verdict
        return (
            f"adapted to this volume: {self.steps} steps on {self.pairs} pairs "
            f"(thickness ratio {self.ratio:.2f}) in {self.seconds:.0f} s; restoration error on "
            f"{self.held_out}+ held-back pairs blurred as trained {self.error_before:.4f} -> "
            f"{self.error_after:.4f}, along the other in-plane direction "
            f"{self.cross_error_before:.4f} -> {self.cross_error_after:.4f} ({verdict})"
        )


def _improved(before: float, after: float, cross_before: float, cross_after: float) -> bool:
    """The safeguard's rule: the error blurred as trained fell, and the error blurred along the
    other in-plane direction fell by at least :data:`MIN_TRANSFER` of that (relative) gain.
    NaN (no pairs) compares False: the original model is kept."""
    gain = 1.0 - after / before if before > 0 else float("nan")
    cross_gain = 1.0 - cross_after / cross_before if cross_before > 0 else float("nan")
    return bool(gain > 0 and cross_gain >= MIN_TRANSFER * gain)


def adapt_to_volume(
    image: sitk.Image, model: LoadedModel, *, thick_axis: int | None = None, **options
) -> AdaptationResult:
    """Fine-tune a copy of ``model``'s generator on ``image``'s own degraded HR-plane patches.

    ``thick_axis`` overrides the detected thick axis; ``options`` are those of
    :func:`adapt_prepared_volume` (``steps``, ``device``, ``learning_rate``, ``batch_size``,
    ``max_patches``, ``seed``, ``progress``, ``cancel``). ``progress`` is called after every
    step; ``cancel`` is polled before every step and, when it returns True, the run stops with
    :class:`CLADE.errors.Cancelled`. Deterministic for a given ``seed`` on the CPU.

    Example:
        >>> import numpy as np, SimpleITK as sitk
        >>> from CLADE.model_file import LoadedModel, build_generator, make_metadata
        >>> meta = make_metadata("tiny", "MR", base_filters=4, n_blocks=1, residual=True)
        >>> model = LoadedModel(build_generator(meta).eval(), meta)
        >>> rng = np.random.default_rng(0)
        >>> img = sitk.GetImageFromArray(rng.random((10, 48, 48)).astype(np.float32))
        >>> img.SetSpacing((1.0, 1.0, 4.0))
        >>> result = adapt_to_volume(img, model, steps=3, device="cpu")
        >>> # A new generator exactly when it restored the held-back pairs better:
        >>> result.steps, (result.model.generator is not model.generator) == result.improved
        (3, True)
    """
    started = time.perf_counter()
    _check_steps(options.get("steps", DEFAULT_STEPS))  # before the resampling it would waste
    image = as_3d(image)
    check_volume(image)
    axis = detect_thick_axis(image.GetSpacing(), thick_axis)
    check_adaptable(isotropic_grid(image, axis).size, axis)
    # Only in-plane slices are cut into patches here, so the thick axis may be thinner than one.
    prepared = prepare_volume(
        image,
        "The volume",
        normalisation=model.metadata["normalisation"],
        patch_size=1,
        thick_axis=axis,
    )
    return adapt_prepared_volume(prepared, model, started=started, **options)


def _check_steps(steps: int) -> None:
    if steps < 1:
        raise CladeError(f"The number of adaptation steps must be at least 1, not {steps}.")


def adapt_prepared_volume(
    prepared: PreparedVolume,
    model: LoadedModel,
    *,
    steps: int = DEFAULT_STEPS,
    device: str = "auto",
    learning_rate: float = 2e-4,
    batch_size: int = 4,
    max_patches: int = DEFAULT_MAX_PATCHES,
    seed: int = 0,
    progress: Callable[[AdaptationProgress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    started: float | None = None,
) -> AdaptationResult:
    """:func:`adapt_to_volume` on a volume already on its isotropic grid and normalised by the
    model's window (the super-resolution pipeline resamples once and shares it).

    ``prepared`` is released by the caller afterwards; only patches cut from it are kept.

    Example:
        >>> import numpy as np
        >>> from CLADE.model_file import LoadedModel, build_generator, make_metadata
        >>> meta = make_metadata("tiny", "MR", base_filters=4, n_blocks=1, residual=True)
        >>> model = LoadedModel(build_generator(meta).eval(), meta)
        >>> volume = np.random.default_rng(0).uniform(-1, 1, (40, 48, 48)).astype(np.float32)
        >>> result = adapt_prepared_volume(PreparedVolume(volume, 2, [0], 4.0), model, steps=2,
        ...                                device="cpu")
        >>> result.steps, result.ratio
        (2, 4.0)
    """
    started = time.perf_counter() if started is None else started
    _check_steps(steps)
    rng = np.random.default_rng([seed, 11])
    training = model.metadata.get("training", {}).get("config", {})
    # Enough HR slices times patches per slice to fill max_patches; background patches (under a
    # quarter of pixels above 5% of the window) are left out, as in training, because a pair of
    # empty patches teaches nothing and dilutes the batches.
    threshold = -1.0 + 2.0 * float(training.get("foreground_level", 0.05))
    options = dict(
        patch_size=PATCH_SIZE,
        min_foreground=float(training.get("min_foreground", 0.25)),
        threshold=threshold,
    )
    hr = hr_slice_stack(prepared.array, prepared.thick_axis)
    held_slices, train_slices = split_slices(len(hr))
    ratio = float(prepared.ratio)
    per_slice = _patches_per_slice(len(train_slices), max_patches)
    y, y_degraded = paired_slice_patches(
        hr, rng, ratio, train_slices, patches_per_slice=per_slice, **options
    )
    y, y_degraded = _at_most((y, y_degraded), max_patches, rng)
    held_per_slice = _patches_per_slice(len(held_slices), MAX_HELD_OUT // 2)
    held = [
        paired_slice_patches(
            stack, rng, ratio, held_slices, patches_per_slice=held_per_slice, **options
        )
        for stack in (hr, np.swapaxes(hr, 1, 2))  # blurred along the rows, then the columns
    ]
    held = [_at_most(pair, MAX_HELD_OUT, rng) for pair in held]
    found = min(len(y), *(len(t) for t, _ in held))
    if len(y) < MIN_PAIRS or min(len(t) for t, _ in held) < MIN_HELD_OUT:
        raise TooLittleToAdapt(
            f"The volume gave only {found} in-plane patches with enough foreground to adapt on "
            f"(at least {MIN_PAIRS} to train on and {MIN_HELD_OUT} in each held-back set are "
            "needed): super-resolve it without adaptation."
        )

    settings = resolve_device(device)
    # Training runs in float32 on every device: a few hundred small steps are cheap even on a
    # CPU, and float16 autocast would need loss scaling for no real gain.
    generator = copy.deepcopy(model.generator).to(settings.device).float()
    target = _tensor(y, settings.device)
    source = _tensor(y_degraded, settings.device)
    checks = [(_tensor(d, settings.device), _tensor(t, settings.device)) for t, d in held]
    del y, y_degraded, held
    errors_before = [_held_out_error(generator, *pair) for pair in checks]
    train = np.arange(len(target))
    generator.train()
    optimiser = torch.optim.Adam(generator.parameters(), lr=learning_rate, betas=(0.5, 0.999))
    for step in range(steps):
        if cancel is not None and cancel():
            raise Cancelled("Cancelled during adaptation: nothing was written.")
        batch = rng.choice(train, batch_size, replace=len(train) < batch_size)
        loss = torch.nn.functional.l1_loss(generator(source[batch]), target[batch])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if progress is not None:
            progress(
                AdaptationProgress(
                    step + 1, steps, time.perf_counter() - started, float(loss.detach())
                )
            )
    generator.eval()
    errors_after = [_held_out_error(generator, *pair) for pair in checks]
    adapted = {
        "steps": steps,
        "pairs": len(train),
        "held_out_error_before": errors_before,
        "held_out_error_after": errors_after,
        "learning_rate": learning_rate,
        "seed": seed,
    }
    candidate = LoadedModel(generator.cpu(), {**model.metadata, "adapted": adapted}, model.path)
    # The safeguard (module docstring); the same rule as AdaptationResult.improved.
    improved = _improved(errors_before[0], errors_after[0], errors_before[1], errors_after[1])
    return AdaptationResult(
        model=candidate if improved else model,
        steps=steps,
        pairs=len(train),
        held_out=min(len(source) for source, _ in checks),
        ratio=ratio,
        error_before=errors_before[0],
        error_after=errors_after[0],
        seconds=time.perf_counter() - started,
        candidate=candidate,
        cross_error_before=errors_before[1],
        cross_error_after=errors_after[1],
    )


def split_slices(count: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the HR slices held back (evenly spread, about :data:`HELD_OUT_FRACTION`, at
    least 2) and of those trained on (the rest, less :data:`HELD_OUT_GUARD` on each side).

    Example:
        >>> held, train = split_slices(40)
        >>> held.tolist(), len(train), bool(set(held) & set(train))
        ([5, 15, 25, 35], 28, False)
    """
    n_held = max(2, int(round(count * HELD_OUT_FRACTION)))
    held = np.unique(((np.arange(n_held) + 0.5) * count / n_held).astype(int))
    blocked = np.zeros(count, bool)
    for offset in range(-HELD_OUT_GUARD, HELD_OUT_GUARD + 1):
        blocked[np.clip(held + offset, 0, count - 1)] = True
    return held, np.flatnonzero(~blocked)


def _at_most(pair, count: int, rng: np.random.Generator):
    """A random subset of ``count`` pairs (in their order) when there are more."""
    if len(pair[0]) <= count:
        return pair
    keep = np.sort(rng.choice(len(pair[0]), count, replace=False))
    return pair[0][keep], pair[1][keep]


def _patches_per_slice(slices: int, max_patches: int) -> int:
    """Patches to cut per HR slice so that, before the background filter, about twice
    ``max_patches`` candidates exist."""
    return int(np.clip(np.ceil(2 * max_patches / max(slices, 1)), 4, 256))


def _tensor(patches: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(patches)).float().unsqueeze(1).to(device)


@torch.no_grad()
def _held_out_error(
    generator: torch.nn.Module, source: torch.Tensor, target: torch.Tensor
) -> float:
    was_training = generator.training
    generator.eval()
    errors = []
    for start in range(0, len(source), 64):
        restored = generator(source[start : start + 64])
        errors.append((restored - target[start : start + 64]).abs().mean(dim=(1, 2, 3)))
    generator.train(was_training)
    return float(torch.cat(errors).mean())
