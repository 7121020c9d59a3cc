"""Distillation: a smaller generator (the student) learns to give what a trained one (the teacher)
gives, slice for slice (issue 27).

No ground truth is needed: the teacher's output on any LR-plane slice of any volume is a target,
so every volume at hand, and its thick-slice planes (the very slices inference runs on), is
training data. :func:`teacher_pairs` runs the teacher over whole slices, as inference does (so
the targets carry no patch-border effects), on two kinds of input:

* **LR-plane slices** (thick axis along the rows): what the student will meet at inference;
* **HR-plane slices degraded like thick slices** (:func:`CLADE.degradation.degrade_slice`): the
  teacher's own training distribution, which also carries the sharp slice as a ground truth, so
  the paired term can be added (``truth_weight``).

:class:`PairSampler` cuts random patches from those whole-slice pairs and :func:`distil` fits the
student with L1 (the loss of the paired term the teachers were trained with) under Adam and a
cosine-annealed rate. ``models/distil_student.py`` is the command that made the shipped students;
``models/cards/students.md`` holds its measurements.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..degradation import degrade_slice
from ..geometry import hr_slice_stack, lr_slice_stack
from ..slice_sampling import PreparedVolume

#: A patch counts as foreground when this fraction of its input pixels lies above -0.9 (5% of
#: the window): patches of pure air teach nothing and would dominate CT and MRI alike.
MIN_FOREGROUND = 0.25


@dataclass
class SlicePairs:
    """Whole slices of one stack: the teacher's ``inputs`` and ``targets`` ``(n, H, W)`` float16
    in [-1, 1], and for degraded HR slices the sharp slice they came from (``truth``)."""

    inputs: np.ndarray
    targets: np.ndarray
    truth: np.ndarray | None = None

    @property
    def pixels(self) -> int:
        return int(self.inputs.size)


def _spread(count: int, at_most: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``at_most`` evenly spread indices of ``range(count)``, with a random start, so a
    stack's slices are all represented without taking neighbours that repeat each other."""
    if count <= at_most:
        return np.arange(count)
    step = count / at_most
    return np.floor(rng.uniform(0, step) + step * np.arange(at_most)).astype(int)


def teacher_pairs(
    volume: PreparedVolume,
    run_teacher: Callable[[np.ndarray], np.ndarray],
    rng: np.random.Generator,
    max_slices: int = 32,
    paired_ratios: Sequence[float] | None = None,
) -> list[SlicePairs]:
    """The teacher's whole-slice answers on ``volume``: one :class:`SlicePairs` per LR plane and
    one of degraded HR slices (each degraded at the volume's ratio, or at one drawn per slice
    from ``paired_ratios``).

    ``run_teacher`` maps a normalised ``(n, H, W)`` stack to the teacher's output, e.g.
    :meth:`CLADE.inference.StackInference.run`.

    Example:
        >>> v = PreparedVolume(np.zeros((40, 36, 34), np.float32), 2, [0], ratio=4.0)
        >>> pairs = teacher_pairs(v, lambda s: s + 0.5, np.random.default_rng(0), max_slices=5)
        >>> [p.inputs.shape for p in pairs], float(pairs[0].targets.max())
        ([(5, 40, 36), (5, 36, 34)], 0.5)
    """
    found = []
    for axis in volume.lr_axes:
        stack = lr_slice_stack(volume.array, axis, volume.thick_axis)
        inputs = np.asarray(stack[_spread(stack.shape[0], max_slices, rng)], np.float32)
        found.append(SlicePairs(inputs.astype(np.float16), run_teacher(inputs).astype(np.float16)))
    hr = hr_slice_stack(volume.array, volume.thick_axis)
    truth = np.asarray(hr[_spread(hr.shape[0], max_slices, rng)], np.float32)
    degraded = np.stack(
        [
            degrade_slice(
                sharp, volume.ratio if paired_ratios is None else rng.uniform(*paired_ratios)
            )
            for sharp in truth
        ]
    ).clip(-1.0, 1.0)
    found.append(
        SlicePairs(
            degraded.astype(np.float16),
            run_teacher(degraded).astype(np.float16),
            truth.astype(np.float16),
        )
    )
    return found


class PairSampler:
    """Random ``patch`` x ``patch`` crops of :class:`SlicePairs`, a stack drawn in proportion to
    its pixels, a crop kept when at least :data:`MIN_FOREGROUND` of it is foreground (after 20
    tries any crop is kept, so a dark stack cannot stall the sampler).

    Example:
        >>> pairs = [SlicePairs(np.zeros((2, 40, 40), np.float16), np.ones((2, 40, 40), np.float16))]
        >>> x, t, truth, has_truth = PairSampler(pairs, 16, np.random.default_rng(0)).batch(3)
        >>> x.shape, float(t.mean()), bool(has_truth.any())
        (torch.Size([3, 1, 16, 16]), 1.0, False)
    """

    def __init__(self, pairs: list[SlicePairs], patch: int, rng: np.random.Generator) -> None:
        usable = [p for p in pairs if min(p.inputs.shape[1:]) >= patch]
        if not usable:
            raise ValueError(f"no slice is {patch} pixels across: use a smaller patch")
        self.pairs, self.patch, self.rng = usable, patch, rng
        sizes = np.array([p.pixels for p in usable], np.float64)
        self.weights = sizes / sizes.sum()

    def _crop(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        p = self.patch
        for attempt in range(20):
            pairs = self.pairs[self.rng.choice(len(self.pairs), p=self.weights)]
            n, height, width = pairs.inputs.shape
            i = self.rng.integers(n)
            r, c = self.rng.integers(height - p + 1), self.rng.integers(width - p + 1)
            x = pairs.inputs[i, r : r + p, c : c + p]
            if attempt == 19 or (x > -0.9).mean() >= MIN_FOREGROUND:
                truth = None if pairs.truth is None else pairs.truth[i, r : r + p, c : c + p]
                return x, pairs.targets[i, r : r + p, c : c + p], truth

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(inputs, teacher targets, truth, has_truth)``: ``(size, 1, P, P)`` float32 tensors
        (truth is the teacher's target where a crop has none) and a boolean ``(size,)`` mask."""
        crops = [self._crop() for _ in range(size)]
        x = np.stack([c[0] for c in crops]).astype(np.float32)
        t = np.stack([c[1] for c in crops]).astype(np.float32)
        truth = np.stack([c[1] if c[2] is None else c[2] for c in crops]).astype(np.float32)
        has = torch.tensor([c[2] is not None for c in crops])
        as_batch = lambda a: torch.from_numpy(a)[:, None]  # noqa: E731
        return as_batch(x), as_batch(t), as_batch(truth), has


def gradient_l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean L1 between the finite differences of two ``(B, 1, H, W)`` batches along the rows
    (the thick direction) and along the columns, summed.

    Why: an L1 fit to the teacher's intensities lets a small student trade a little edge slope
    for a lower mean error; this term asks for the slopes themselves. It is an option, not used
    by the shipped students: measured, it barely changed their edge sharpness
    (``models/cards/students.md``, *What was tried*).

    Example:
        >>> ramp = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> float(gradient_l1(ramp, ramp + 5)), float(gradient_l1(ramp, 2 * ramp))
        (0.0, 5.0)
    """
    rows = F.l1_loss(output.diff(dim=2), target.diff(dim=2))
    columns = F.l1_loss(output.diff(dim=3), target.diff(dim=3))
    return rows + columns


@dataclass
class DistillationStep:
    """What :func:`distil` reports every ``report_every`` steps (mean L1 over those steps)."""

    step: int
    steps: int
    teacher_l1: float
    seconds: float


def distil(
    student: nn.Module,
    sampler: PairSampler,
    steps: int,
    batch_size: int = 8,
    lr: float = 5e-4,
    truth_weight: float = 0.0,
    gradient_weight: float = 0.0,
    report_every: int = 100,
    on_report: Callable[[DistillationStep], None] | None = None,
) -> nn.Module:
    """Fit ``student`` (in place, and returned) to the teacher's targets for ``steps`` steps.

    Loss: L1 to the teacher's output, plus ``gradient_weight`` times the L1 between the student's
    and the teacher's finite differences along both axes (:func:`gradient_l1`), plus
    ``truth_weight`` times L1 to the sharp slice on the crops that have one. Adam (0.9, 0.999) with the rate annealed along a cosine from ``lr`` to 0:
    the teachers' fine-tuning stages measured that annealing gains over a constant rate
    (``models/cards/mri.md``).

    Example:
        >>> from CLADE.networks import ResnetGenerator
        >>> pairs = [SlicePairs(np.zeros((2, 32, 32), np.float16), np.zeros((2, 32, 32), np.float16))]
        >>> s = distil(ResnetGenerator(base_filters=4, n_blocks=1, residual=True),
        ...            PairSampler(pairs, 16, np.random.default_rng(0)), steps=2, batch_size=2)
        >>> s.training
        False
    """
    device = next(student.parameters()).device
    student.train()
    optimiser = torch.optim.Adam(student.parameters(), lr=lr, betas=(0.9, 0.999))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda k: 0.5 * (1.0 + math.cos(math.pi * min(k, steps) / max(steps, 1)))
    )
    started, running = time.perf_counter(), 0.0
    for step in range(1, steps + 1):
        x, target, truth, has_truth = (t.to(device) for t in sampler.batch(batch_size))
        y = student(x)
        teacher_l1 = F.l1_loss(y, target)
        loss = teacher_l1
        if gradient_weight > 0:
            loss = loss + gradient_weight * gradient_l1(y, target)
        if truth_weight > 0 and bool(has_truth.any()):
            loss = loss + truth_weight * F.l1_loss(y[has_truth], truth[has_truth])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        running += teacher_l1.item()
        if on_report is not None and (step % report_every == 0 or step == steps):
            done = step % report_every or report_every
            on_report(DistillationStep(step, steps, running / done, time.perf_counter() - started))
            running = 0.0
        elif step % report_every == 0:
            running = 0.0
    return student.eval()
