"""A board that serves the readouts of a recorded run, one per non-empty read of its FIFO.

Where :class:`~.board.VirtualBoard` emulates the chip, this one plays back real
(or emulated) data byte for byte: a DAQ polling it stores exactly the recorded readouts, in
order, with new ids and timestamps. Readouts become available at their recorded pace scaled by
``speed`` (``math.inf``: as fast as they are asked for), which makes it the load generator of
the DAQ benchmarks, where the chip model's own cost must not count.

It has the virtual board's register file (:class:`~.registers.NexysRegisters`), so it serves
nothing until the DAQ releases the SPI master;
its read FIFO holds the readouts due: SPI config bit 4 (read FIFO empty) is clear while one is
due, bit 5 (full) is set while 16 or more are; a read of the SPI read FIFO returns the next one
padded with ``0xff`` (one readout per read; a read shorter than the readout gets its first
bytes, the rest is dropped and counted), or padding only when none is due; a read-FIFO reset
drops the readouts already due.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ...fmt import PADDING_BYTE, AstroPix4Readout
from .registers import NexysRegisters, RegisterStats

#: Readouts due at once for the status to say the read FIFO is full (as a backlog would).
FULL_BACKLOG = 16


@dataclass
class ReplayStats(RegisterStats):
    """Counters of a :class:`ReplayBoard`, beyond the register file's."""

    readouts_served: int = 0
    bytes_served: int = 0
    empty_reads: int = 0
    #: Bytes of readouts longer than the read that asked for them, dropped.
    bytes_cut: int = 0
    #: Readouts dropped by a read-FIFO reset.
    readouts_reset: int = 0
    #: True once every recorded readout was served (or reset away).
    exhausted: bool = False


class ReplayBoard(NexysRegisters):
    """Serve ``readouts`` (recorded :class:`AstroPix4Readout` objects) over the register
    protocol; ``speed`` scales the recorded pace, ``clock`` returns ns."""

    def __init__(self, readouts: Iterable[AstroPix4Readout], speed: float = math.inf, *,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        super().__init__()
        if not speed > 0:
            raise ValueError(f"replay speed {speed!r}: must be > 0 (math.inf: no wait)")
        self._readouts = list(readouts)
        self.served: list[AstroPix4Readout] = []
        self.stats = ReplayStats(exhausted=not self._readouts)
        self._speed = speed
        self._clock = clock
        self._start = clock()
        first = self._readouts[0].timestamp if self._readouts else 0
        # Due time of each readout, ns after the start (a timestamp going back adds no wait).
        self._due: list[int] = []
        offset = 0
        for readout in self._readouts:
            offset = max(offset, readout.timestamp - first)
            self._due.append(0 if math.isinf(speed) else int(offset / speed))
        self._next = 0

    @property
    def truth_exact(self) -> bool:
        """True while every readout served went out whole, so that the hits of the recorded
        readouts served (the replay's truth) are exactly the hits in what the DAQ received. A
        read shorter than a readout cuts it (``stats.bytes_cut``) and makes it false for good."""
        return self.stats.bytes_cut == 0

    def _due_now(self) -> bool:
        if self._next >= len(self._readouts):
            return False
        return self._clock() - self._start >= self._due[self._next]

    def _available(self) -> bool:
        # As on the firmware, nothing reaches the read FIFO while the SPI master or the read
        # FIFO is held in reset; readouts falling due meanwhile wait (the chip holds them).
        return not self.transfers_blocked and self._due_now()

    def _backlog(self) -> int:
        """Readouts due now (at most FULL_BACKLOG are counted)."""
        due = 0
        now = self._clock() - self._start
        for index in range(self._next, min(self._next + FULL_BACKLOG, len(self._readouts))):
            if self._due[index] > now:
                break
            due += 1
        return due

    def _fifo_empty(self) -> bool:
        return not self._available()

    def _fifo_full(self) -> bool:
        return self._backlog() >= FULL_BACKLOG

    def _reset_read_fifo(self) -> None:
        while self._due_now():
            self._next += 1
            self.stats.readouts_reset += 1
        self.stats.exhausted = self._next >= len(self._readouts)

    def _read_fifo(self, length: int) -> bytes:
        if length == 0:
            return b""
        if not self._available():
            self.stats.empty_reads += 1
            return bytes([PADDING_BYTE]) * length
        readout = self._readouts[self._next]
        self._next += 1
        self.stats.exhausted = self._next >= len(self._readouts)
        data = readout.data()
        if len(data) > length:
            self.stats.bytes_cut += len(data) - length
            data = data[:length]
        self.served.append(readout)
        self.stats.readouts_served += 1
        self.stats.bytes_served += len(data)
        return data + bytes([PADDING_BYTE]) * (length - len(data))
