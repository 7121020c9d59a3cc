"""The long-run warning: timed after the warm-up unit, and naming only options that would change
this run's speed (issue 24, item 3)."""

from __future__ import annotations

import logging

import pytest

from CLADE import progress
from CLADE.progress import StageReporter, speed_advice


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(progress.time, "perf_counter", fake)
    return fake


def _run_stage(clock, seconds_per_unit, advice=None, total=500, stage="adapt"):
    """Report a stage whose n-th unit takes ``seconds_per_unit[n]`` (the last value repeats)."""
    events = []
    reporter = StageReporter(events.append, True, False, 0.0, advice)
    reporter.begin(stage)
    for done in range(1, total + 1):
        clock.now += seconds_per_unit[min(done - 1, len(seconds_per_unit) - 1)]
        reporter.report(done, total)
    return events


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_slow_warm_up_step_gives_no_eta_and_no_warning(clock, caplog):
    # The first step takes 13 s (kernel selection), the others 0.5 s: 500 steps need ~4 min,
    # where timing from the stage start after one step said "111 more minutes".
    with caplog.at_level(logging.INFO, logger="CLADE"):
        events = _run_stage(clock, [13.3, 0.5])
    assert _warnings(caplog) == []
    etas = [e.eta_seconds for e in events if e.eta_seconds is not None]
    assert etas and max(etas) == pytest.approx(0.5 * 498, rel=1e-6)
    assert events[1].eta_seconds is None  # after the warm-up unit alone: nothing to time yet


def test_a_run_that_stays_slow_is_warned_about_once_with_honest_minutes(clock, caplog):
    with caplog.at_level(logging.INFO, logger="CLADE"):
        _run_stage(clock, [30.0, 12.0], advice={"adapt": ["fewer --adapt steps (or --adapt 0)"]})
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    # Warned after the warm-up unit plus 3 timed units (done = 4): 496 units at 12 s left.
    assert "about 99 more minutes" in warnings[0]
    assert "fewer --adapt steps" in warnings[0] and "--precision" not in warnings[0]


def test_the_warning_names_no_option_when_none_would_help(clock, caplog):
    with caplog.at_level(logging.INFO, logger="CLADE"):
        _run_stage(clock, [12.0], advice={}, stage="infer")
    (warning,) = _warnings(caplog)
    assert warning.endswith("press Ctrl-C (nothing is written) to stop.")
    assert "--" not in warning.split("stop")[-1]


@pytest.mark.parametrize(
    ("precision", "fast_bf16", "offered"),
    [("float32", True, True), ("bfloat16", True, False), ("float32", False, False)],
)
def test_precision_auto_is_offered_only_where_it_would_change_the_run(
    precision, fast_bf16, offered
):
    advice = speed_advice(
        device_type="cpu",
        cuda_available=False,
        precision=precision,
        fast_bfloat16=fast_bf16,
        tiling="slices",
        ensemble="none",
        planes=1,
    )
    assert ("--precision auto" in advice["infer"]) is offered
    assert not any("--precision" in option for option in advice["adapt"])
    assert not any("--device cuda" in option for option in advice["infer"])  # no GPU here


def test_the_paper_settings_are_named_when_they_are_what_makes_the_run_slow():
    advice = speed_advice(
        device_type="cpu",
        cuda_available=True,
        precision="bfloat16",
        fast_bfloat16=True,
        tiling="patches",
        ensemble="flips",
        planes=2,
    )
    assert advice["infer"][:4] == [
        "a GPU (--device cuda)",
        "--tiling slices",
        "--ensemble none",
        "one --plane",
    ]
