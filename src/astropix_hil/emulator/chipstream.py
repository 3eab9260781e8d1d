"""The daisy chain's output as a stream of :class:`~.layout.Layout` batches, for a seed.

Time is cut into fixed windows (a whole number of poll intervals, sized so that a window holds
about ``chunk_hits`` hits); each window's hits are drawn, merged across chips, given their
timestamps and laid out as frames in a few numpy calls. The windows do not depend on who asks
or when, so a seed always gives the same bytes: the bulk emulator reads them window by window,
the virtual board frame by frame as its clock advances (:meth:`ChipStream.take_until`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from ..fmt import CLOCK_CYCLES_PER_US, HIT_DTYPE
from .config import EmulatorConfig
from .layout import LONE_FRAME_BYTES, Layout, apply_start_like, lay_out
from .timestamps import edges

#: Window length when the chain makes no hits at all (rate 0).
_IDLE_WINDOW_NS = 3600 * 10**9
_MAX_WINDOW_NS = 1 << 52


class ChipStream:
    """The bytes a chain of emulated chips sends, deterministic for ``seed``.

    ``hits_generated`` counts the hits of the windows drawn so far.
    """

    def __init__(self, config: EmulatorConfig | None = None, seed: int = 0) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.seed = int(seed)
        children = np.random.SeedSequence(self.seed).spawn(len(self.config.chips) + 2)
        self._chip_rngs = [np.random.default_rng(child) for child in children[:-2]]
        self._layout_rng = np.random.default_rng(children[-2])
        phase_rng = np.random.default_rng(children[-1])
        self.counter_phase = (self.config.counter_phase if self.config.counter_phase is not None
                              else int(phase_rng.integers(0, 1 << 17)))
        poll = self.config.poll_interval_ns
        rate = self.config.mean_rate()
        if rate > 0:
            polls = math.ceil(self.config.chunk_hits / (rate * poll / 1e9))
        else:
            polls = math.ceil(_IDLE_WINDOW_NS / poll)
        #: Length of every window in ns (a multiple of the poll interval, at most ~52 days so
        #: that chip times stay far from the int64 limit).
        self.window_ns = poll * max(1, min(polls, _MAX_WINDOW_NS // poll))
        self._next_window = 0
        self.hits_generated = 0
        # take_until state: the current window's layout and the first frame not taken yet.
        self._current: Layout | None = None
        self._current_end = 0
        self._taken = 0
        # The next window, drawn ahead of time by prefetch().
        self._ahead: tuple[Layout, int, int] | None = None

    def window(self, index: int) -> tuple[int, int]:
        """Chip time span ``[t0, t1)`` in ns of window ``index``."""
        return index * self.window_ns, (index + 1) * self.window_ns

    def next_layout(self) -> tuple[Layout, int, int]:
        """The next window's layout and its span ``(t0, t1)``."""
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            self._next_window += 1
            return ahead
        t0, t1 = self.window(self._next_window)
        self._next_window += 1
        hits, times = self._hits(t0, t1)
        self.hits_generated += len(hits)
        config = self.config
        start_like = apply_start_like(hits, self._layout_rng, config.anomalies.start_like)
        layout = lay_out(hits, times, self._layout_rng, config.anomalies, config.max_frame_hits,
                         config.max_ff_run, start_like)
        return layout, t0, t1

    def layouts(self) -> Iterator[tuple[Layout, int, int]]:
        """Window after window, forever."""
        while True:
            yield self.next_layout()

    def prefetch(self) -> None:
        """Draw the next window now (e.g. while a board is idle), so that the call that needs
        it finds it ready. Changes no output: windows do not depend on when they are drawn."""
        if self._ahead is None:
            index = self._next_window
            self._ahead = self.next_layout()
            self._next_window = index

    def skip_until(self, t_ns: int) -> tuple[int, int, int]:
        """Drop the whole windows that end at or before chip time ``t_ns`` (none while a window
        is partly taken); return their hits, frames and bytes.

        For a receiver that would drop every frame anyway (a full FIFO): without anomalies a
        window's frames are lone hits, so only the hit arrivals are drawn (the random draws
        later windows depend on), not their fields or bytes. The counts and every later
        window are exactly those of taking the frames and dropping them.
        """
        hits = frames = nbytes = 0
        while self._current is None and self.window(self._next_window)[1] <= t_ns:
            if self._ahead is None and self.config.anomalies.clean:
                t0, t1 = self.window(self._next_window)
                self._next_window += 1
                count = self._count_hits(t0, t1)
                self.hits_generated += count
                hits += count
                frames += count
                nbytes += count * LONE_FRAME_BYTES
                continue
            layout, _, _ = self.next_layout()
            hits += len(layout.hits)
            frames += layout.n_frames
            nbytes += layout.nbytes
        return hits, frames, nbytes

    def behind(self, t_ns: int) -> bool:
        """True if a window starting at or before chip time ``t_ns`` is not started yet."""
        return self._current is None and self.window(self._next_window)[0] <= t_ns

    def take_until(self, t_ns: int, *, windows: int | None = None) -> list[Layout]:
        """The frames complete at or before chip time ``t_ns`` not taken yet, in order; with
        ``windows``, from at most that many new windows (:meth:`behind` says if more wait)."""
        out = []
        started = 0
        while True:
            if self._current is None:
                if self.window(self._next_window)[0] > t_ns:
                    return out
                if windows is not None and started >= windows:
                    return out
                started += 1
                self._current, _, self._current_end = self.next_layout()
                self._taken = 0
            stop = self._current.frames_until(t_ns)
            if stop > self._taken:
                out.append(self._current.frames(self._taken, stop))
                self._taken = stop
            if t_ns < self._current_end:
                return out
            self._current = None

    def _count_hits(self, t0: int, t1: int) -> int:
        """How many hits :meth:`_hits` would give for ``[t0, t1)``, making the same random
        draws from each chip's generator (and no others)."""
        count = 0
        for chip, rng in zip(self.config.chips, self._chip_rngs, strict=True):
            n = len(chip.source.sample(rng, t0, t1).time_ns)
            for fixed in (chip.ts_neg1, chip.ts_neg2):
                if fixed is None:
                    rng.integers(0, 2, n, dtype=np.uint8)
            count += n
        return count

    def _hits(self, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray]:
        """The chain's hits in ``[t0, t1)``: records with every field but the readout's, and
        their times in ns."""
        times, rows, cols, tots, ids, negs1, negs2, tdcs1, tdcs2 = ([] for _ in range(9))
        for chip, rng in zip(self.config.chips, self._chip_rngs, strict=True):
            sampled = chip.source.sample(rng, t0, t1)
            n = len(sampled.time_ns)
            times.append(sampled.time_ns)
            rows.append(sampled.row)
            cols.append(sampled.column)
            tots.append(sampled.tot_ticks)
            ids.append(np.full(n, chip.chip_id, dtype=np.uint8))
            for out, fixed in ((negs1, chip.ts_neg1), (negs2, chip.ts_neg2)):
                out.append(rng.integers(0, 2, n, dtype=np.uint8) if fixed is None
                           else np.full(n, fixed, dtype=np.uint8))
            tdcs1.append(np.full(n, chip.ts_tdc1, dtype=np.uint8))
            tdcs2.append(np.full(n, chip.ts_tdc2, dtype=np.uint8))
        columns = [np.concatenate(c) for c in
                   (times, rows, cols, tots, ids, negs1, negs2, tdcs1, tdcs2)]
        if len(self.config.chips) > 1:
            order = np.argsort(columns[0], kind="stable")
            columns = [c[order] for c in columns]
        time_ns, row, col, tot, chip_id, neg1, neg2, tdc1, tdc2 = columns
        lead, trail = edges(time_ns, tot, self.counter_phase)
        hits = np.zeros(len(time_ns), dtype=HIT_DTYPE)
        hits["chip_id"] = chip_id
        hits["payload"] = 7
        hits["row"] = row
        hits["column"] = col
        hits["ts_neg1"] = neg1
        hits["ts_coarse1"] = lead.coarse
        hits["ts_fine1"] = lead.fine
        hits["ts_tdc1"] = tdc1
        hits["ts_neg2"] = neg2
        hits["ts_coarse2"] = trail.coarse
        hits["ts_fine2"] = trail.fine
        hits["ts_tdc2"] = tdc2
        # What the decoder derives: ts_dec2 unwrapped past a rollover, TOT in us.
        hits["ts_dec1"] = lead.ticks
        hits["ts_dec2"] = lead.ticks + tot
        hits["tot_us"] = tot / CLOCK_CYCLES_PER_US
        return hits, time_ns
