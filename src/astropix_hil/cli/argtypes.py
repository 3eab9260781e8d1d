"""Argument types shared by every subcommand: each refuses a bad value as a usage error.

Each function takes the option's text and returns the value, or raises
:class:`argparse.ArgumentTypeError` with a message naming the problem; argparse then ends the
command with status 2 and one line naming the option. Times and rates are finite: ``nan`` and
``inf`` are refused (a ``--duration nan`` would otherwise never end).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = [
    "int_range",
    "non_negative_float",
    "non_negative_int",
    "port_number",
    "positive_float",
    "positive_int",
    "seed",
    "speed_factor",
    "ttl",
]


def _number(text: str, kind: type) -> float | int:
    try:
        return kind(text)
    except ValueError:
        name = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {name}") from None


def _finite(text: str) -> float:
    value = _number(text, float)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def finite_float(text: str) -> float:
    """Any finite number (``nan`` and ``inf`` refused)."""
    return _finite(text)


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds, rates)."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not > 0")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (delays, lingering)."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not >= 0")
    return value


def speed_factor(text: str) -> float:
    """A speed-up factor > 0; ``inf`` means as fast as possible, ``nan`` is refused."""
    value = _number(text, float)
    if math.isnan(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not > 0 (or inf)")
    return value


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """The type of an integer option in ``low..high`` (no upper bound if ``high`` is None)."""
    def convert(text: str) -> int:
        value = _number(text, int)
        if value < low or (high is not None and value > high):
            bounds = f"in {low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{text} is not {bounds}")
        return value
    convert.__name__ = "integer"
    return convert


positive_int = int_range(1)
non_negative_int = int_range(0)
#: A UDP or TCP port to bind or send to.
port_number = int_range(1, 65535)
#: An IPv4 multicast time-to-live.
ttl = int_range(0, 255)
#: A random seed (numpy takes any non-negative integer).
seed = int_range(0)
