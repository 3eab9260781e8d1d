"""Replay: re-emit the readouts of a recorded ``.apx`` at their recorded pace, or scaled.

Readout ``i`` is due ``(timestamp_i - timestamp_0) / speed`` after the replay starts (a
timestamp earlier than the one before it counts as no gap). ``clock`` and ``sleep`` are
injectable, so a test replays a long run without waiting.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator

from ..errors import EmulatorConfigError
from ..fileio import ApxReader
from ..fmt import AstroPix4Readout


def replay(source: str | os.PathLike | Iterable[AstroPix4Readout], speed: float = 1.0, *,
           clock: Callable[[], int] = time.monotonic_ns,
           sleep: Callable[[float], object] = time.sleep,
           restamp: Callable[[], int] | None = None) -> Iterator[AstroPix4Readout]:
    """Yield the readouts of ``source`` (an ``.apx`` path or readouts) when they are due.

    ``speed`` 1 keeps the recorded pace, 10 is ten times faster, ``math.inf`` (or 0) does not
    wait at all. ``clock`` returns ns, ``sleep`` takes seconds. With ``restamp`` (e.g.
    :func:`time.time_ns`) each readout is re-emitted with a new timestamp taken from it, as a
    live DAQ would stamp it; otherwise readouts keep their recorded timestamps.
    """
    if not (speed == 0 or speed > 0):
        raise EmulatorConfigError(f"replay speed {speed!r}: must be > 0 (or 0/inf: no wait)")
    wait = speed != 0 and math.isfinite(speed)
    reader = ApxReader(source) if isinstance(source, str | os.PathLike) else None
    readouts = reader if reader is not None else source
    try:
        start = first_ts = None
        offset = 0
        for readout in readouts:
            if start is None:
                start, first_ts = clock(), readout.timestamp
            # A timestamp that goes back in time (a legacy log's 0s) adds no wait.
            offset = max(offset, readout.timestamp - first_ts)
            if wait:
                due = start + offset / speed
                while (now := clock()) < due:
                    sleep((due - now) / 1e9)
            if restamp is not None:
                readout = AstroPix4Readout._parsed(readout.data(), readout.readout_id, restamp())
            yield readout
    finally:
        if reader is not None:
            reader.close()
