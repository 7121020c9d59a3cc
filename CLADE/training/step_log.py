"""The ``step`` events of one epoch: loss means over a window of steps, speed, ETA, divergence.

The epoch loop hands every step's loss vector to :class:`StepLog`; every ``log_every`` steps
(and at the end of the epoch) it checks that the window's mean losses are finite, emits a
``step`` event (schema in :mod:`CLADE.training.events`) and updates the progress bar.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..errors import CladeError
from ..progress import optional_tqdm
from .events import EventWriter
from .loss_terms import LOSS_NAMES

#: Losses shown next to the progress bar.
BAR_LOSSES = ("g_total", "cyc", "gmap", "d_y")


class StepLog:
    """Step events and the progress bar for the 0-based ``epoch``, starting at ``step``."""

    def __init__(
        self,
        log: EventWriter,
        *,
        epoch: int,
        step: int,
        epochs: int,
        steps_per_epoch: int,
        log_every: int,
        pairs_per_step: int,
        bar: bool,
        sums_like: torch.Tensor,
    ) -> None:
        self.log, self.epoch, self.epochs = log, epoch, epochs
        self.steps_per_epoch, self.log_every = steps_per_epoch, log_every
        self.pairs_per_step = pairs_per_step
        self.total_steps = epochs * steps_per_epoch
        self.window = torch.zeros_like(sums_like)
        self.window_steps, self.window_start = 0, time.monotonic()
        self.session_steps, self.session_start = 0, time.monotonic()
        self.bar = None
        tqdm = optional_tqdm() if bar else None  # no tqdm (Slicer's Python): no bar
        if tqdm is not None:
            self.bar = tqdm(
                total=steps_per_epoch,
                initial=step,
                unit="step",
                desc=f"epoch {epoch + 1}/{epochs}",
                dynamic_ncols=True,
                leave=True,
            )

    def add(self, values: torch.Tensor, step: int, global_step: int) -> None:
        """Count one finished step (``step`` 1-based within the epoch) with its losses."""
        self.window += values
        self.window_steps += 1
        self.session_steps += 1
        if self.bar is not None:
            self.bar.update(1)
        if self.window_steps >= self.log_every or step == self.steps_per_epoch:
            self._emit(step, global_step)

    def _emit(self, step: int, global_step: int) -> None:
        mean = (self.window / self.window_steps).tolist()
        if not all(np.isfinite(mean)):
            raise CladeError(
                f"Training diverged at epoch {self.epoch + 1}, step {step} (a loss is not "
                "finite): resume from the last checkpoint with a lower learning rate or other "
                "loss weights in a new folder."
            )
        now = time.monotonic()
        rate = self.session_steps / max(now - self.session_start, 1e-9)
        done = self.epoch * self.steps_per_epoch + step
        named = dict(zip(LOSS_NAMES, mean))
        self.log.emit(
            "step",
            epoch=self.epoch + 1,
            step=step,
            steps_per_epoch=self.steps_per_epoch,
            global_step=global_step,
            total_steps=self.total_steps,
            progress=done / self.total_steps,
            losses=named,
            patches_per_s=self.window_steps
            * self.pairs_per_step
            / max(now - self.window_start, 1e-9),
            eta_s=(self.total_steps - done) / rate,
        )
        if self.bar is not None:
            self.bar.set_postfix({k: f"{named[k]:.3g}" for k in BAR_LOSSES})
        self.window.zero_()
        self.window_steps, self.window_start = 0, now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
