"""The virtual Nexys board: the board side of the register protocol, fed by the emulated chip.

:meth:`VirtualBoard.process` takes whatever bytes the host sent (requests split anywhere) and
returns exactly the bytes the board sends back: ``length`` bytes for each read, nothing for a
write (:mod:`.protocol` parses the requests). Time comes from ``clock`` (ns); each
request first moves the chip's output up to "now" into the read FIFO, so a test with a fake
clock is deterministic.

The read FIFO holds whole frames (see :mod:`astropix_hil.emulator.layout`): a frame that does
not fit is dropped whole and counted, and a read of ``0x18`` returns the whole pieces that fit
in it, then ``0xff`` padding (it also ends at a split hit's forced break). That is what keeps
:meth:`VirtualBoard.truth` exact: it lists, for the reads served so far, the hits an honest
decoder reports, numbered as the DAQ numbers readouts (one per non-empty read, from 0).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from ...emulator.chipmodel import ConfiguredChip
from ...emulator.chipstream import ChipStream
from ...emulator.config import EmulatorConfig
from ...emulator.layout import Fate, Layout
from ...emulator.pixels import PixelModel
from ...errors import EmulatorConfigError, EmulatorError
from ...fmt import HIT_DTYPE, PADDING_BYTE
from ...hitcsv import write_hits_csv
from ..truth import TruthStore, TruthTarget
from .registers import NexysRegisters, RegisterStats

log = logging.getLogger(__name__)

#: Read FIFO size in bytes (a block-RAM FIFO of the firmware; the real depth is not documented).
DEFAULT_FIFO_SIZE = 16384
#: Default pull interval of boards made from options (real-time use: pty, apxemu://), s.
REALTIME_PULL_INTERVAL = 0.001
#: Hits per chip window of boards made from options (the bulk emulator draws 65536 at once).
#: A window is drawn in one go, ~1 us per hit: small windows keep every reply (and every idle
#: step of the pty server) within a few ms, at a few numpy calls per window.
REALTIME_CHUNK_HITS = 8192
#: The smallest frame (a lone hit): below this much free space the FIFO reports itself full.
MIN_FRAME_BYTES = 16
_I8 = np.empty(0, dtype=np.int64)


@dataclass
class BoardStats(RegisterStats):
    """Counters of a :class:`VirtualBoard` (all start at 0), beyond the register file's."""

    #: Non-empty reads of the read FIFO: the readouts a DAQ stores, numbered from 0.
    readouts_served: int = 0
    #: Reads of the read FIFO that found it empty (all padding).
    empty_reads: int = 0
    #: FIFO data bytes sent (padding excluded), and padding bytes sent.
    bytes_served: int = 0
    padding_bytes: int = 0
    #: Hits the chip produced so far, those that entered the read FIFO, and those in
    #: :meth:`VirtualBoard.truth` (hits_generated = hits_queued + fifo_overflow_hits +
    #: discarded_hits).
    hits_generated: int = 0
    hits_queued: int = 0
    hits_served: int = 0
    #: Frames (and their bytes and hits) lost because the FIFO was too full for them.
    fifo_overflow_frames: int = 0
    fifo_overflow_bytes: int = 0
    fifo_overflow_hits: int = 0
    #: Frames (and hits) lost while a read-FIFO or SPI-module reset was held.
    discarded_frames: int = 0
    discarded_hits: int = 0
    #: Bytes cleared from the read FIFO by resets.
    fifo_cleared_bytes: int = 0
    #: Reads shorter than the frame at the head of the FIFO, which had to cut it: from the
    #: first one on, :meth:`VirtualBoard.truth` is no longer exact.
    cut_frames: int = 0


def _cat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a`` then ``b``; concatenating record arrays costs a dtype promotion, so skip it when
    one side is empty (the FIFO is usually drained between pushes)."""
    if len(a) == 0:
        return b
    if len(b) == 0:
        return a
    return np.concatenate((a, b))


def _fit(sizes: np.ndarray, free: int) -> np.ndarray:
    """Which frames, offered in order, fit in ``free`` bytes (each taken iff it fits)."""
    accepted = np.zeros(sizes.size, dtype=bool)
    cum = np.cumsum(sizes)
    k = int(np.searchsorted(cum, free, side="right"))
    accepted[:k] = True
    if k == sizes.size:
        return accepted
    left = free - (int(cum[k - 1]) if k else 0)
    i = k + 1
    while left >= MIN_FRAME_BYTES and i < sizes.size:
        later = np.flatnonzero(sizes[i:] <= left)
        if later.size == 0:
            break
        j = i + int(later[0])
        accepted[j] = True
        left -= int(sizes[j])
        i = j + 1
    return accepted


class _ReadFifo:
    """The read FIFO: bytes, the piece ends inside them, and the hits they hold.

    Positions are absolute: bytes ever pushed, so that a position names one byte for good.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.data = bytearray()
        self.head = 0  # absolute position of data[0]
        self.piece_ends = _I8
        self.break_ends = _I8
        self.hit_pos = _I8
        self.hit_recs = np.empty(0, dtype=HIT_DTYPE)
        self.join_at = _I8
        self.join_recs = np.empty(0, dtype=HIT_DTYPE)

    @property
    def tail(self) -> int:
        return self.head + len(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def free(self) -> int:
        return self.size - len(self.data)

    def push(self, layout: Layout, accepted: np.ndarray) -> None:
        """Append the accepted frames of a layout."""
        base = self.tail
        frame_sizes = np.diff(layout.frame_ends, prepend=0)
        piece_frame = np.searchsorted(layout.frame_ends, layout.piece_ends, side="left")
        if accepted.all():
            data = layout.buf
            piece_ends = layout.piece_ends
            where = np.arange(len(layout.hits))
            moved = None
        else:
            byte_kept = np.repeat(accepted, frame_sizes)
            data = layout.buf[byte_kept]
            moved = np.cumsum(byte_kept) - byte_kept  # new offset of each kept byte
            keep = accepted[piece_frame]
            piece_ends = moved[layout.piece_ends[keep] - 1] + 1
            where = np.flatnonzero(accepted[layout.hit_frame])
        self.data += data.tobytes()
        breaks = layout.piece_breaks if moved is None else layout.piece_breaks[keep]
        self.piece_ends = _cat(self.piece_ends, piece_ends + base)
        self.break_ends = _cat(self.break_ends, piece_ends[breaks] + base)
        fate = layout.hit_fate[where]
        pos = layout.hit_pos[where]
        split = layout.hit_split[where]
        if moved is not None:
            pos = moved[pos]
            split = np.where(split >= 0, moved[np.maximum(split, 0)], -1)
        complete, joined = fate == Fate.COMPLETE, fate == Fate.SPLIT_JOINED
        self.hit_pos = _cat(self.hit_pos, pos[complete] + base)
        self.hit_recs = _cat(self.hit_recs, layout.hits[where[complete]])
        self.join_at = _cat(self.join_at, split[joined] + base)
        self.join_recs = _cat(self.join_recs, layout.hits[where[joined]])

    def read_end(self, n: int) -> tuple[int, bool]:
        """Where a read of ``n`` bytes ends, and whether it has to cut a piece."""
        limit = self.head + n
        if self.break_ends.size:
            limit = min(limit, int(self.break_ends[0]))
        j = int(np.searchsorted(self.piece_ends, limit, side="right"))
        if j == 0:
            return min(self.head + n, self.tail), True
        return int(self.piece_ends[j - 1]), False

    def take(self, end: int) -> bytes:
        """Remove and return the bytes up to absolute position ``end``."""
        count = end - self.head
        out = bytes(self.data[:count])
        del self.data[:count]
        self.head = end
        self.piece_ends = self.piece_ends[np.searchsorted(self.piece_ends, end, side="right"):]
        self.break_ends = self.break_ends[np.searchsorted(self.break_ends, end, side="right"):]
        return out

    def hits_in(self, start: int, end: int, joined: bool) -> np.ndarray:
        """Records the decoder reports for the read ``[start, end)``, in decoding order, and
        forget every hit that can no longer be reported."""
        k = int(np.searchsorted(self.hit_pos, end, side="left"))
        out = self.hit_recs[:k]
        if joined:
            j0, j1 = np.searchsorted(self.join_at, [start, start + 1])
            out = _cat(self.join_recs[j0:j1], out)
        self.hit_pos, self.hit_recs = self.hit_pos[k:], self.hit_recs[k:]
        # A split point equal to ``end`` belongs to the next read.
        j = int(np.searchsorted(self.join_at, end, side="left"))
        self.join_at, self.join_recs = self.join_at[j:], self.join_recs[j:]
        return out.copy()

    def clear(self) -> int:
        """Empty the FIFO; return the bytes it held."""
        cleared = len(self.data)
        self.head = self.tail
        self.data.clear()
        self.piece_ends = self.break_ends = self.hit_pos = self.join_at = _I8
        self.hit_recs = self.join_recs = np.empty(0, dtype=HIT_DTYPE)
        return cleared


class VirtualBoard(NexysRegisters):
    """The board side of the register protocol, over an emulated chip (see the module doc).

    ``chip`` is a :class:`~astropix_hil.emulator.chipstream.ChipStream`; ``fifo_size`` the
    read FIFO's size in bytes; ``clock`` a callable returning ns (default
    :func:`time.monotonic_ns`); the chip's time 0 is the clock's value when the board is made.
    ``truth``: what to do with the truth of the reads served (see
    :class:`~astropix_hil.boards.truth.TruthStore`): nothing (default: memory stays flat),
    ``True`` (kept in memory for :meth:`truth`), or a path or text stream (CSV, written read
    by read; :meth:`close_truth` ends it).
    """

    def __init__(self, chip: ChipStream, *, fifo_size: int = DEFAULT_FIFO_SIZE,
                 clock: Callable[[], int] | None = None, pull_interval: float = 0.0,
                 truth: TruthTarget = None) -> None:
        if fifo_size < chip.config.read_size:
            raise EmulatorConfigError(f"fifo_size={fifo_size}: must hold at least one read "
                                      f"({chip.config.read_size} bytes)")
        super().__init__()
        self.chip = chip
        self.clock = clock if clock is not None else time.monotonic_ns
        self.stats = BoardStats()
        self._t0 = self.clock()
        # Moving the chip's output costs a few numpy calls whatever its size: in real time,
        # do it at most every pull_interval (frames become visible in the FIFO up to that much
        # later, as if the firmware's SPI transfer took that long).
        self._pull_every = int(pull_interval * 1e9)
        self._next_pull = self._t0
        self._fifo = _ReadFifo(fifo_size)
        self._truth = TruthStore(truth)
        self._prev_end: int | None = None

    @classmethod
    def from_options(cls, seed: int | str = 0, *, fifo_size: int | str = DEFAULT_FIFO_SIZE,
                     clock: Callable[[], int] | None = None,
                     pull_interval: float | str = REALTIME_PULL_INTERVAL,
                     truth: TruthTarget = None, **options: Any) -> VirtualBoard:
        """A board over a chip made from simple options, which may be strings (as in
        ``apxemu://?seed=1&rate=1000``): ``seed``, ``fifo_size``, ``pull_interval`` (s, default
        1 ms), ``truth`` (see the class) and any option of
        :meth:`astropix_hil.emulator.EmulatorConfig.build` (``mode``, ``rate``, ``anomalies``,
        ``chips``, ``chunk_hits`` (default :data:`REALTIME_CHUNK_HITS`), ...). Bad options
        raise :class:`~astropix_hil.errors.EmulatorConfigError` (a ValueError) naming them.

        Without hit-source options (or with ``mode=chip``) the chip is the configured chip
        (:class:`~astropix_hil.emulator.chipmodel.ConfiguredChip`): silent until the DAQ
        configures it, options :data:`PIXEL_OPTIONS`. With them (``mode=injection``,
        ``mode=poisson``, ``rate=...``) it is the free-running chip, which fires whatever it
        is sent. Either way the register file is the firmware's: nothing reaches the read
        FIFO until the DAQ releases the SPI master."""
        seed_value = _integer("seed", seed)
        size = _integer("fifo_size", fifo_size)
        try:
            every = float(pull_interval)
        except ValueError:
            raise EmulatorConfigError(f"pull_interval={pull_interval!r}: not a number of "
                                      f"seconds") from None
        mode = options.get("mode")
        if mode == CHIP_MODE or (mode is None and not set(options) & FREE_RUNNING_OPTIONS):
            return cls(configured_chip(seed_value, options), fifo_size=size, clock=clock,
                       pull_interval=every, truth=truth)
        config = EmulatorConfig.from_strings({"chunk_hits": REALTIME_CHUNK_HITS, **options})
        return cls(ChipStream(config, seed_value), fifo_size=size, clock=clock,
                   pull_interval=every, truth=truth)

    def _chip_write(self, register: int, data: bytes) -> None:
        write = getattr(self.chip, "write", None)
        if write is not None:
            self._next_pull = self.clock()  # hits up to now were made under the old settings
            self._pull()
            write(register, data, self.clock() - self._t0)

    # -- the read FIFO (the register file is NexysRegisters') ----------------------------

    def _before_request(self) -> None:
        self._pull()

    def _fifo_empty(self) -> bool:
        return len(self._fifo) == 0

    def _fifo_full(self) -> bool:
        return self._fifo.free < MIN_FRAME_BYTES

    def _reset_read_fifo(self) -> None:
        self.stats.fifo_cleared_bytes += self._fifo.clear()

    def _read_fifo(self, length: int) -> bytes:
        if length == 0:
            return b""
        fifo = self._fifo
        if len(fifo) == 0:
            self.stats.empty_reads += 1
            self.stats.padding_bytes += length
            return bytes([PADDING_BYTE]) * length
        start = fifo.head
        end, cut = fifo.read_end(length)
        if cut:
            self.stats.cut_frames += 1
            log.warning("a read of %d bytes cut the frame at the head of the read FIFO; the "
                        "board's truth is no longer exact", length)
        data = fifo.take(end)
        hits = fifo.hits_in(start, end, joined=self._prev_end == start)
        self._prev_end = end
        if self._truth.kept:
            hits["readout_id"] = self.stats.readouts_served
            hits["timestamp"] = self.clock()
            hits["decoding_order"] = np.arange(len(hits))
            self._truth.add(hits)
        self.stats.readouts_served += 1
        self.stats.hits_served += len(hits)
        self.stats.bytes_served += len(data)
        self.stats.padding_bytes += length - len(data)
        return data + bytes([PADDING_BYTE]) * (length - len(data))

    # -- the chip feeding the FIFO -----------------------------------------------------------

    def advance(self) -> None:
        """Move the chip up to now while nobody asks (a server's idle hook), and draw its next
        window ahead: the next request then finds no backlog to generate and is answered at
        once, however long the board was idle."""
        self._pull()
        self.chip.prefetch()

    def _pull(self) -> None:
        """Move the chip's frames completed by now into the read FIFO."""
        now = self.clock()
        if now < self._next_pull:
            return
        self._next_pull = now + self._pull_every
        chip_now = now - self._t0
        while True:
            if self.transfers_blocked or self._fifo_full():
                # Every frame would be dropped: whole windows are counted, not generated.
                self._count_lost(*self.chip.skip_until(chip_now))
            # A window at a time: the FIFO may fill up during a long backlog.
            for layout in self.chip.take_until(chip_now, windows=1):
                self._accept(layout)
            if not self.chip.behind(chip_now):
                return

    def _count_lost(self, hits: int, frames: int, nbytes: int) -> None:
        """Account for frames the FIFO could not take (full, or held in reset)."""
        stats = self.stats
        stats.hits_generated += hits
        if self.transfers_blocked:
            stats.discarded_frames += frames
            stats.discarded_hits += hits
        else:
            stats.fifo_overflow_frames += frames
            stats.fifo_overflow_bytes += nbytes
            stats.fifo_overflow_hits += hits

    def _accept(self, layout: Layout) -> None:
        hits = len(layout.hits)
        self.stats.hits_generated += hits
        if self.transfers_blocked:
            self.stats.discarded_frames += layout.n_frames
            self.stats.discarded_hits += hits
            return
        sizes = np.diff(layout.frame_ends, prepend=0)
        accepted = _fit(sizes, self._fifo.free)
        lost = ~accepted
        if lost.any():
            self.stats.fifo_overflow_frames += int(lost.sum())
            self.stats.fifo_overflow_bytes += int(sizes[lost].sum())
            self.stats.fifo_overflow_hits += int(lost[layout.hit_frame].sum())
        if accepted.any():
            self.stats.hits_queued += hits - int(lost[layout.hit_frame].sum())
            self._fifo.push(layout, accepted)

    # -- state and truth ------------------------------------------------------------------

    @property
    def fifo_level(self) -> int:
        """Bytes in the read FIFO now (without pulling the chip's newest frames)."""
        return len(self._fifo)

    @property
    def truth_exact(self) -> bool:
        """False once a read had to cut a frame (see :attr:`BoardStats.cut_frames`)."""
        return self.stats.cut_frames == 0

    def truth(self, timestamps: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """The hits an honest decoder reports from the reads served so far (dtype
        :data:`~astropix_hil.fmt.HIT_DTYPE`; only for a board made with ``truth=True``),
        readout_id counting the non-empty reads of the
        read FIFO from 0, in readout then decoding order.

        ``timestamp`` is the board clock (ns) when the read was served, unless
        ``timestamps`` gives each readout's host timestamp by readout_id (e.g. the ones the DAQ
        wrote), so that the truth compares field by field with the decoded file.
        """
        out = self._truth.hits()
        if timestamps is not None:
            stamps = np.asarray(timestamps, dtype=np.uint64)
            if stamps.size < self.stats.readouts_served:
                raise EmulatorError(f"{stamps.size} timestamps for "
                                    f"{self.stats.readouts_served} readouts served")
            out["timestamp"] = stamps[out["readout_id"]]
        return out

    def write_truth_csv(self, output: str | os.PathLike | TextIO,
                        header: Mapping[str, Any] | None = None,
                        timestamps: Sequence[int] | np.ndarray | None = None) -> int:
        """Write :meth:`truth` with the columns of ``apx-hil convert`` (a path or an open text
        stream; ``header`` is the ``#`` JSON line, e.g. the DAQ file's header); return the hit
        count."""
        hits = self.truth(timestamps)
        if isinstance(output, str | os.PathLike):
            with open(output, "w", encoding="utf-8", newline="") as stream:
                return write_hits_csv(stream, [hits], header)
        return write_hits_csv(output, [hits], header)

    def close_truth(self) -> int:
        """End a streamed truth (flush, and close the file the board opened); return the
        truth's hit count."""
        self._truth.close()
        return self._truth.count


#: ``mode`` of the configured chip (the default of a board without hit-source options).
CHIP_MODE = "chip"
#: Options that make a free-running chip (it fires whatever its configuration).
FREE_RUNNING_OPTIONS = frozenset({"rate", "pixel", "hot_pixels", "tot", "jitter_ns", "chips",
                                  "chip_ids", "rows", "cols", "anomalies", "ts_neg1",
                                  "ts_neg2", "ts_tdc1", "ts_tdc2", "counter_phase"})
#: Options of the configured chip's front end (:class:`~astropix_hil.emulator.pixels.PixelModel`).
PIXEL_OPTIONS = ("threshold_spread_mv", "noise_mv", "noise_spread_mv", "noise_rate_hz",
                 "injection_gain")


def configured_chip(seed: int, options: dict[str, Any]) -> ConfiguredChip:
    """The configured chip from board options (``mode=chip`` and :data:`PIXEL_OPTIONS`)."""
    unknown = sorted(set(options) - {"mode", *PIXEL_OPTIONS})
    if unknown:
        raise EmulatorConfigError(f"option(s) {', '.join(unknown)} do not apply to the "
                                  f"configured chip (mode=chip; its options: "
                                  f"{', '.join(PIXEL_OPTIONS)})")
    values = {}
    for name in PIXEL_OPTIONS:
        if name in options:
            try:
                values[name] = float(options[name])
            except (TypeError, ValueError):
                raise EmulatorConfigError(f"{name}={options[name]!r}: not a number") from None
    return ConfiguredChip(seed, PixelModel(seed=seed, **values))


def _integer(name: str, value: int | str) -> int:
    try:
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, float):
            if not number.is_integer():
                raise ValueError
            number = int(number)
        return int(number)
    except (TypeError, ValueError):
        raise EmulatorConfigError(f"{name}={value!r}: not an integer") from None


__all__ = ["DEFAULT_FIFO_SIZE", "BoardStats", "VirtualBoard"]
