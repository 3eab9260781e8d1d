"""Checks of the cases that name what failed: the host, the counter, what it was and what was
expected. A failing :func:`expect` raises :class:`Mismatch` (an ``AssertionError``); the
suite's report and JUnit output attribute the failure to that host and its role.
"""

from __future__ import annotations

from typing import Any


class Mismatch(AssertionError):
    """A counter of a host differs from what the case expected."""

    def __init__(self, host: str, counter: str, actual: Any, expected: Any,
                 why: str = "") -> None:
        self.host = host
        self.counter = counter
        self.actual = actual
        self.expected = expected
        self.why = why
        super().__init__(f"{host}: {counter} is {actual!r}, expected {expected!r}"
                         + (f" ({why})" if why else ""))


def expect(host: str, counter: str, actual: Any, expected: Any, why: str = "") -> None:
    """Raise :class:`Mismatch` unless ``actual == expected``."""
    if actual != expected:
        raise Mismatch(host, counter, actual, expected, why)
