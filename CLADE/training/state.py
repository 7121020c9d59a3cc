"""Where a run stands: epoch, step, history, best epoch and the running loss sums.

:class:`TrainingState` is the part of a checkpoint that changes every step (the networks and
optimisers are :class:`CLADE.training.step.TrainStep`'s, the run's facts the
:class:`CLADE.training.run_record.RunRecord`'s). Positions consumed are stored rather than steps,
so a resume with another number of processes continues at the same place in the epoch's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .loss_terms import LOSS_NAMES


@dataclass
class TrainingState:
    """The counters and sums of a run (0-based ``epoch``; ``step`` within it)."""

    sums: torch.Tensor
    epoch: int = 0
    step: int = 0
    global_step: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": None, "value": None})
    sum_steps: int = 0
    train_seconds: float = 0.0
    epoch_seconds: float = 0.0
    #: Under DDP, the last epoch's shard report (not checkpointed: it is in the epoch event).
    epoch_shards: dict | None = None

    @classmethod
    def fresh(cls, device: torch.device) -> TrainingState:
        return cls(sums=torch.zeros(len(LOSS_NAMES), device=device))

    @classmethod
    def from_checkpoint(cls, state: dict, pairs_per_step: int, device: torch.device):
        """The state saved by :meth:`to_checkpoint` (possibly by an earlier CLADE version)."""
        sums = state["epoch_sums"]
        # Checkpoints written before a loss term was added hold fewer sums: the new terms start
        # at zero, so such a run can still be resumed (e.g. with a new term switched on).
        missing = len(LOSS_NAMES) - sums.numel()
        return cls(
            sums=torch.cat([sums, sums.new_zeros(max(missing, 0))]).to(device),
            epoch=int(state["epoch"]),
            step=int(state["pairs_done"]) // pairs_per_step,
            global_step=int(state["global_step"]),
            history=list(state["history"]),
            best=dict(state["best"]),
            sum_steps=int(state["epoch_steps"]),
            train_seconds=float(state["train_seconds"]),
            epoch_seconds=float(state["epoch_seconds"]),
        )

    def to_checkpoint(self, pairs_per_step: int) -> dict:
        return {
            "epoch": self.epoch,
            "pairs_done": self.step * pairs_per_step,
            "global_step": self.global_step,
            "history": self.history,
            "best": self.best,
            "epoch_sums": self.sums.detach().cpu(),
            "epoch_steps": self.sum_steps,
            "train_seconds": self.train_seconds,
            "epoch_seconds": self.epoch_seconds,
        }

    def epoch_means(self) -> dict[str, float]:
        """The mean of each loss over the steps of the current epoch so far."""
        return dict(zip(LOSS_NAMES, (self.sums / max(self.sum_steps, 1)).tolist()))

    def next_epoch_sums(self) -> None:
        self.sums.zero_()
        self.sum_steps = 0
        self.epoch_seconds = 0.0
