"""Progress of a super-resolution run: one type for every stage and front end.

A run goes through the stages ``resample``, ``adapt`` (only with adaptation), ``infer`` and
``write`` (only when writing a file). Each stage reports its own ``done``/``total`` units; the
overall ``fraction`` gives each stage a fixed share (below), so one bar can span a whole run.
``clade super-resolve --progress json`` prints :meth:`PipelineProgress.to_dict` as JSON lines.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger("CLADE")

#: Stages in order, with their share of the overall progress fraction (without / with adapt).
STAGES = ("resample", "adapt", "infer", "write")
_WEIGHTS = {  # (adapting, writing)
    (False, False): {"resample": 0.05, "adapt": 0.0, "infer": 0.95, "write": 0.0},
    (False, True): {"resample": 0.05, "adapt": 0.0, "infer": 0.9, "write": 0.05},
    (True, False): {"resample": 0.03, "adapt": 0.47, "infer": 0.5, "write": 0.0},
    (True, True): {"resample": 0.03, "adapt": 0.45, "infer": 0.49, "write": 0.03},
}
#: A run whose remaining network time exceeds this (seconds) is warned about once, with advice.
LONG_RUN_SECONDS = 30 * 60


@dataclass(frozen=True)
class PipelineProgress:
    """Progress of a run: the current ``stage``, its ``done``/``total`` units, the overall
    ``fraction`` (0-1 across stages), and an ETA for the stage."""

    stage: str
    done: int
    total: int
    fraction: float
    elapsed_seconds: float
    eta_seconds: float | None = None
    message: str = ""

    def to_dict(self) -> dict:
        """The JSON progress event of ``clade super-resolve --progress json``."""
        return {
            "event": "progress",
            "stage": self.stage,
            "done": self.done,
            "total": self.total,
            "fraction": round(self.fraction, 5),
            "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1),
            "message": self.message,
        }


class StageReporter:
    """Turns stage-local progress into :class:`PipelineProgress` events for ``callback``.

    Example:
        >>> events = []
        >>> reporter = StageReporter(events.append, adapting=False, writing=False, started=0.0)
        >>> reporter.begin("infer"); reporter.report(5, 10)
        >>> events[-1].stage, events[-1].done, round(events[-1].fraction, 3)
        ('infer', 5, 0.525)
    """

    def __init__(self, callback, adapting: bool, writing: bool, started: float) -> None:
        self.callback = callback
        self.weights = _WEIGHTS[(bool(adapting), bool(writing))]
        self.started = started
        self.stage_started = started
        self.stage = ""
        self.warned_long = False

    def begin(self, stage: str) -> None:
        self.stage = stage
        self.stage_started = time.perf_counter()
        self.report(0, 1)

    def report(self, done: int, total: int, message: str = "") -> None:
        now = time.perf_counter()
        local = min(1.0, done / total) if total else 1.0
        before = sum(self.weights[s] for s in STAGES[: STAGES.index(self.stage)])
        fraction = before + self.weights[self.stage] * local
        eta = None
        if 0 < done < total:
            eta = (now - self.stage_started) / done * (total - done)
        if eta is not None and eta > LONG_RUN_SECONDS and not self.warned_long:
            self.warned_long = True
            log.warning(
                "At the current rate the %s stage needs about %.0f more minutes: press Ctrl-C "
                "(nothing is written) to stop, then consider a GPU (--device cuda), a smaller "
                "region, or --precision auto.",
                self.stage,
                eta / 60,
            )
        if self.callback is not None:
            self.callback(
                PipelineProgress(
                    self.stage, int(done), int(total), fraction, now - self.started, eta, message
                )
            )


def optional_tqdm():
    """tqdm's bar class, or None where tqdm is not installed (Slicer's Python): no bar then.

    Example:
        >>> bar = optional_tqdm()
        >>> bar is None or callable(bar)
        True
    """
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm
