"""Adapt a trained generator to one volume before super-resolving it (beyond the paper).

A shipped model was trained on other people's scans. The volume being super-resolved carries its
own training signal: its in-plane (HR) slices are sharp, and degrading them along one axis like
this acquisition's thick slices (Gaussian slice profile, FWHM = slice spacing, the volume's own
thickness ratio; :func:`CLADE.degradation.degrade_slice`) gives exact pairs of
"what a thick-slice view looks like" and "what it should look like". This module fine-tunes
``G_X`` on those pairs for a few hundred steps, the idea behind SMORE and ECLARE (which train a
network from scratch on each volume), here starting from the pretrained CLADE generator so that
far fewer steps are needed.

Safeguard: a tenth of the pairs (at most 256) is held back and never trained on. The mean
absolute restoration error on them is measured before and after; if adaptation did not lower it,
the original model is used unchanged and the result says so.

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

from .device import resolve_device
from .errors import Cancelled, CladeError
from .model_file import LoadedModel
from .patches import PATCH_SIZE
from .slice_sampling import PreparedVolume, prepare_volume, sample_volume_patches
from .volume_io import as_3d, check_volume

#: Default number of optimiser steps (batch 4): about a minute on one CPU core (measured).
DEFAULT_STEPS = 500
#: Most patch pairs cut from the volume (a 512x512 CT has tens of thousands of candidates).
DEFAULT_MAX_PATCHES = 4000
#: Fraction of the pairs held back to check that adaptation helped.
HELD_OUT_FRACTION = 0.1
MAX_HELD_OUT = 256
MIN_PAIRS = 32


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
    """The model to use, and what adaptation measured on the volume's held-back pairs."""

    model: LoadedModel
    steps: int
    pairs: int
    held_out: int
    ratio: float
    error_before: float
    error_after: float
    seconds: float
    #: The adapted generator whether or not the safeguard kept it (for measuring the safeguard
    #: itself, ``benchmarks/adaptation_curve.py``); :attr:`model` is what a run uses.
    candidate: LoadedModel | None = None

    @property
    def improved(self) -> bool:
        """True when the adapted generator is used (it restored held-back pairs better)."""
        return self.error_after < self.error_before

    def summary(self) -> str:
        """One line for a log or the terminal."""
        verdict = (
            "adapted model used" if self.improved else "no improvement, the original model is used"
        )
        return (
            f"adapted to this volume: {self.steps} steps on {self.pairs} pairs "
            f"(thickness ratio {self.ratio:.2f}) in {self.seconds:.0f} s; restoration error on "
            f"{self.held_out} held-back pairs {self.error_before:.4f} -> "
            f"{self.error_after:.4f} ({verdict})"
        )


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
    prepared = prepare_volume(
        image,
        "The volume",
        normalisation=model.metadata["normalisation"],
        patch_size=PATCH_SIZE,
        thick_axis=thick_axis,
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
    per_slice = _patches_per_slice(prepared.array.shape, prepared.thick_axis, max_patches)
    _, y, y_degraded = sample_volume_patches(
        prepared,
        rng,
        patches_per_slice=per_slice,
        patch_size=PATCH_SIZE,
        min_foreground=float(training.get("min_foreground", 0.25)),
        foreground_level=float(training.get("foreground_level", 0.05)),
        paired=True,
    )
    ratio = float(prepared.ratio)
    if len(y) > max_patches:
        keep = np.sort(rng.choice(len(y), max_patches, replace=False))
        y, y_degraded = y[keep], y_degraded[keep]
    if len(y) < MIN_PAIRS:
        raise CladeError(
            f"The volume gave only {len(y)} in-plane patches with enough foreground to adapt on "
            f"(at least {MIN_PAIRS} are needed): super-resolve it without adaptation."
        )
    order = rng.permutation(len(y))
    n_held = min(MAX_HELD_OUT, max(8, int(len(y) * HELD_OUT_FRACTION)))
    held, train = order[:n_held], order[n_held:]

    settings = resolve_device(device)
    # Training runs in float32 on every device: a few hundred small steps are cheap even on a
    # CPU, and float16 autocast would need loss scaling for no real gain.
    generator = copy.deepcopy(model.generator).to(settings.device).float()
    target = _tensor(y, settings.device)
    source = _tensor(y_degraded, settings.device)
    del y, y_degraded
    error_before = _held_out_error(generator, source, target, held)
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
    error_after = _held_out_error(generator, source, target, held)
    adapted = {
        "steps": steps,
        "pairs": len(train),
        "held_out_error_before": error_before,
        "held_out_error_after": error_after,
        "learning_rate": learning_rate,
        "seed": seed,
    }
    candidate = LoadedModel(generator.cpu(), {**model.metadata, "adapted": adapted}, model.path)
    # The safeguard (module docstring); the same rule as AdaptationResult.improved.
    chosen = candidate if error_after < error_before else model
    return AdaptationResult(
        model=chosen,
        steps=steps,
        pairs=len(train),
        held_out=len(held),
        ratio=ratio,
        error_before=error_before,
        error_after=error_after,
        seconds=time.perf_counter() - started,
        candidate=candidate,
    )


def _patches_per_slice(shape: tuple[int, ...], thick_axis: int, max_patches: int) -> int:
    """Patches to cut per HR slice so that, before the background filter, about twice
    ``max_patches`` candidates exist (shape is numpy z, y, x; thick_axis SimpleITK x, y, z)."""
    hr_slices = shape[::-1][thick_axis]
    return int(np.clip(np.ceil(2 * max_patches / max(hr_slices, 1)), 4, 256))


def _tensor(patches: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(patches)).float().unsqueeze(1).to(device)


@torch.no_grad()
def _held_out_error(
    generator: torch.nn.Module, source: torch.Tensor, target: torch.Tensor, held: np.ndarray
) -> float:
    was_training = generator.training
    generator.eval()
    errors = []
    for start in range(0, len(held), 64):
        index = held[start : start + 64]
        errors.append((generator(source[index]) - target[index]).abs().mean(dim=(1, 2, 3)))
    generator.train(was_training)
    return float(torch.cat(errors).mean())
