"""Argument types that validate numbers at the parser, for every ``clade`` command.

argparse calls a ``type`` with the text of the argument; raising ``argparse.ArgumentTypeError``
makes it print ``clade CMD: error: argument --NAME: <message>`` and exit with code 2, so a bad
number is refused in one sentence before any work (no traceback, nothing written). ``inf`` and
``nan`` parse as floats in Python, hence the explicit finiteness check.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """A parser type for whole numbers in ``[low, high]`` (``high`` None: no upper bound).

    Example:
        >>> int_at_least(1)("4")
        4
        >>> int_at_least(1)("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected a whole number of at least 1, got '0'
    """

    def parse(text: str) -> int:
        value = _number(text, int)
        if value < low or (high is not None and value > high):
            bound = f"of at least {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"expected a whole number {bound}, got {text!r}")
        return value

    parse.__name__ = "whole number"
    return parse


def adapt_steps(text: str) -> int | str:
    """A parser type for ``--adapt``: ``auto`` or a whole number of steps, 0 (off) or more.

    Example:
        >>> adapt_steps("auto"), adapt_steps("0"), adapt_steps("300")
        ('auto', 0, 300)
        >>> adapt_steps("-5")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected auto or a whole number of at least 0, got '-5'
    """
    from ..adaptation_policy import AUTO

    if text.strip().lower() == AUTO:
        return AUTO
    try:
        return int_at_least(0)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected auto or a whole number of at least 0, got {text!r}"
        ) from None


adapt_steps.__name__ = "auto or steps"


def float_in(
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
) -> Callable[[str], float]:
    """A parser type for finite numbers in a range (``low_open``: ``low`` itself excluded).

    Example:
        >>> positive = float_in(0.0, low_open=True)
        >>> positive("2.5")
        2.5
        >>> positive("inf")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected a finite number, got 'inf'
        >>> positive("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected a number greater than 0, got '0'
    """

    def parse(text: str) -> float:
        value = _number(text, float)
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and value > high
        if too_low or too_high:
            raise argparse.ArgumentTypeError(
                f"expected {_range(low, high, low_open)}, got {text!r}"
            )
        return value

    parse.__name__ = "number"
    return parse


def _range(low, high, low_open) -> str:
    def fmt(v):
        return f"{v:g}"

    if low is not None and high is not None:
        left = "above" if low_open else "from"
        return f"a number {left} {fmt(low)} up to {fmt(high)}"
    if low is not None:
        return f"a number {'greater than' if low_open else 'of at least'} {fmt(low)}"
    return f"a number of at most {fmt(high)}"


#: Common cases.
positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
positive_float = float_in(0.0, low_open=True)
non_negative_float = float_in(0.0)
#: A fraction in (0, 1].
fraction = float_in(0.0, 1.0, low_open=True)
#: A patch stride in pixels: 1 up to the 32-pixel patch (``CLADE.model_file.PATCH_SIZE``,
#: not imported here so that ``clade --help`` does not load torch).
patch_stride = int_at_least(1, 32)


def add_thick_axis(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--thick-axis`` (``auto`` or an index axis); read it with :func:`thick_axis_of`.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_thick_axis(parser, "the thick slices")
        >>> thick_axis_of(parser.parse_args([])), thick_axis_of(parser.parse_args(["--thick-axis", "1"]))
        (None, 1)
    """
    parser.add_argument(
        "--thick-axis",
        default="auto",
        choices=("auto", "0", "1", "2"),
        help=f"index axis of {what} (default: the largest spacing)",
    )


def thick_axis_of(args: argparse.Namespace) -> int | None:
    """The ``--thick-axis`` of :func:`add_thick_axis`: None for auto (the largest spacing)."""
    return None if args.thick_axis == "auto" else int(args.thick_axis)
