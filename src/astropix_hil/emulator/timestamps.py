"""The chip's timestamps: a free-running 17-bit counter at 20 MHz, Gray-coded on the wire.

A hit's leading edge latches the counter into ``ts1``, its trailing edge into
``ts2 = ts1 + TOT`` (both modulo 2**17); each is Gray-coded and split into a 14-bit coarse and a
3-bit fine field. These are pure numpy functions of hit times in ns.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..fmt import CLOCK_HZ, CLOCK_ROLLOVER

#: Nanoseconds per counter tick (20 MHz).
NS_PER_TICK = 1_000_000_000 // CLOCK_HZ
COUNTER_MASK = CLOCK_ROLLOVER - 1
#: Largest TOT in ticks the decoder can tell apart from a rollover (``ts2`` unwraps once).
MAX_TOT_TICKS = CLOCK_ROLLOVER - 1


class EdgeFields(NamedTuple):
    """Wire fields of one edge for many hits, and the binary counter value they encode."""

    coarse: np.ndarray
    fine: np.ndarray
    ticks: np.ndarray


def counter_ticks(time_ns: np.ndarray, phase: int = 0) -> np.ndarray:
    """Counter value (17 bits) at each time, for a counter that read ``phase`` at time 0."""
    ticks = np.asarray(time_ns, dtype=np.int64) // NS_PER_TICK + phase
    return ticks & COUNTER_MASK


def gray_fields(ticks: np.ndarray) -> EdgeFields:
    """Gray-code 17-bit counter values and split them into coarse (14 bits) and fine (3 bits)."""
    ticks = np.asarray(ticks, dtype=np.int64) & COUNTER_MASK
    gray = ticks ^ (ticks >> 1)
    return EdgeFields(gray >> 3, gray & 7, ticks)


def edges(time_ns: np.ndarray, tot_ticks: np.ndarray,
          phase: int = 0) -> tuple[EdgeFields, EdgeFields]:
    """Leading and trailing edge fields of hits at ``time_ns`` lasting ``tot_ticks``.

    ``tot_ticks`` must be in ``[0, MAX_TOT_TICKS]`` so that the decoder's single unwrap of
    ``ts2`` recovers it.
    """
    tot = np.asarray(tot_ticks, dtype=np.int64)
    if tot.size and (tot.min() < 0 or tot.max() > MAX_TOT_TICKS):
        raise ValueError(f"TOT must be within 0..{MAX_TOT_TICKS} ticks")
    t1 = counter_ticks(time_ns, phase)
    return gray_fields(t1), gray_fields(t1 + tot)
