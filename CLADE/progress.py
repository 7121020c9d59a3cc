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
#: The first unit of a stage is warm-up (oneDNN kernel selection, CUDA context, the first
#: batch's allocations) and can take many times a later one; the ETA leaves it out.
WARM_UP_UNITS = 1
#: Units timed after the warm-up before the ETA is trusted enough to warn about.
MIN_TIMED_UNITS = 3


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

    The ETA is timed from the end of the stage's warm-up unit; a long remaining time is warned
    about once, after :data:`MIN_TIMED_UNITS` timed units, naming only ``advice[stage]``: the
    options that would change this run's speed (the caller knows which those are).

    Example:
        >>> events = []
        >>> reporter = StageReporter(events.append, adapting=False, writing=False, started=0.0)
        >>> reporter.begin("infer"); reporter.report(5, 10)
        >>> events[-1].stage, events[-1].done, round(events[-1].fraction, 3)
        ('infer', 5, 0.525)
    """

    def __init__(
        self, callback, adapting: bool, writing: bool, started: float, advice=None
    ) -> None:
        self.callback = callback
        self.weights = _WEIGHTS[(bool(adapting), bool(writing))]
        self.started = started
        self.stage_started = started
        self.stage = ""
        self.warned_long = False
        self.advice = dict(advice or {})
        self._timing_from: tuple[float, int] | None = None  # (time, done) after warm-up

    def begin(self, stage: str) -> None:
        self.stage = stage
        self.stage_started = time.perf_counter()
        self._timing_from = None
        self.report(0, 1)

    def _eta(self, now: float, done: int, total: int) -> float | None:
        """Seconds left in the stage, from the rate since the warm-up unit (None before)."""
        if self._timing_from is None:
            if done >= WARM_UP_UNITS and done < total:
                self._timing_from = (now, done)
            return None
        since, done_then = self._timing_from
        if not done_then < done < total:
            return None
        return (now - since) / (done - done_then) * (total - done)

    def _warn_long(self, eta: float) -> None:
        self.warned_long = True
        options = list(self.advice.get(self.stage, ()))
        advice = f"; to make it faster: {', '.join(options)}" if options else ""
        log.warning(
            "At the current rate the %s stage needs about %.0f more minutes: press Ctrl-C "
            "(nothing is written) to stop%s.",
            self.stage,
            eta / 60,
            advice,
        )

    def report(self, done: int, total: int, message: str = "") -> None:
        now = time.perf_counter()
        local = min(1.0, done / total) if total else 1.0
        before = sum(self.weights[s] for s in STAGES[: STAGES.index(self.stage)])
        fraction = before + self.weights[self.stage] * local
        eta = self._eta(now, done, total)
        timed = 0 if self._timing_from is None else done - self._timing_from[1]
        if (
            eta is not None
            and eta > LONG_RUN_SECONDS
            and timed >= MIN_TIMED_UNITS
            and not self.warned_long
        ):
            self._warn_long(eta)
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


def speed_advice(
    *,
    device_type: str,
    cuda_available: bool,
    precision: str,
    fast_bfloat16: bool,
    tiling: str,
    ensemble: str,
    planes: int,
) -> dict[str, list[str]]:
    """The options that would make each stage of *this* run faster, for the long-run warning:
    only ones that change something (``--precision auto`` is not offered where it is already
    bfloat16, or where the CPU has no fast bfloat16; adaptation always runs in float32).

    Example:
        >>> advice = speed_advice(device_type="cpu", cuda_available=False, precision="float32",
        ...     fast_bfloat16=False, tiling="slices", ensemble="none", planes=1)
        >>> advice["infer"], advice["adapt"]
        (['a smaller region'], ['fewer --adapt steps (or --adapt 0)', 'a smaller region'])
    """
    gpu = ["a GPU (--device cuda)"] if device_type == "cpu" and cuda_available else []
    infer = list(gpu)
    if precision == "float32" and (device_type == "cuda" or fast_bfloat16):
        infer.append("--precision auto")
    if tiling == "patches":
        infer.append("--tiling slices")
    if ensemble != "none":
        infer.append("--ensemble none")
    if planes > 1:
        infer.append("one --plane")
    region = ["a smaller region"]
    return {
        "infer": infer + region,
        "adapt": [*gpu, "fewer --adapt steps (or --adapt 0)", *region],
        "resample": region,
    }
