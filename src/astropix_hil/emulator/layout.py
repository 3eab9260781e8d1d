"""Byte layout of the chip's output: frames of hit words between idle bytes, and anomalies.

A *frame* is what the chip sends for a burst of hits: 2 idle bytes, the hit words (back to back
only with the ``no_idle`` anomaly, or after a truncated hit), 6 idle bytes (an ``ff_runs``
anomaly puts ``0xff`` bytes after the first of them). A lone hit is the real run's layout:
``bc bc [8 bytes] bc bc bc bc bc bc``.

Frames are cut into *pieces*: reads may end between any two pieces, never inside one. A piece
ends at every frame end and at every split point (a ``split`` hit: the read must end inside it,
a *forced break*). Because reads only end there, what the decoder makes of every hit is known
when the bytes are laid out (its :class:`Fate`); the layouts whose outcome would depend on the
decoder's corner cases are never generated:

* a split hit's tail holds no start-like byte (else the decoder would start a word inside it);
  it is rejoined iff the head does not end with ``0xff`` (stripped as padding), the tail does
  not start with ``0xbc``/``0xff`` (skipped) and does not end with ``0xbc`` (stripped from the
  orphan bytes); the idle bytes after it hold no ``0xff`` run;
* a truncated hit keeps ``8 - t`` bytes with no start-like byte after its first; the complete
  hit after it follows directly and its first byte that is neither idle nor padding at or after
  offset ``t`` is not start-like, so the decoder's look-ahead drops the truncated hit and
  re-aligns on the next one;
* frames end with idle bytes, so no complete hit ever ends a read.

Everything is vectorized over the hits of a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

import numpy as np

from ..bulk import words_from_fields
from ..fmt import HIT_DTYPE, HIT_SIZE, IDLE_BYTE, PADDING_BYTE, START_BYTE_NP
from .config import LEAD_IDLE, TRAIL_IDLE, Anomalies

_SKIP_NP = np.zeros(256, dtype=bool)
_SKIP_NP[[IDLE_BYTE, PADDING_BYTE]] = True
_COLS = np.arange(HIT_SIZE)
_FRAME_BYTES = LEAD_IDLE + HIT_SIZE + TRAIL_IDLE
#: Bytes of the frame of a lone hit (every frame, without anomalies).
LONE_FRAME_BYTES = _FRAME_BYTES


class Fate(IntEnum):
    """What an honest decoder makes of a hit, fixed by its layout."""

    #: Whole inside one piece: reported in the read holding it.
    COMPLETE = 0
    #: Split across two reads and rejoined: reported first in the read holding its tail.
    SPLIT_JOINED = 1
    #: Split across two reads and lost (its bytes do not rejoin to 8).
    SPLIT_LOST = 2
    #: Truncated: dropped by the decoder (``INCOMPLETE_DATA_DROPPED``).
    TRUNCATED = 3


class Applied(IntFlag):
    """Anomalies applied to a hit (bit mask)."""

    NO_IDLE = 1
    SPLIT = 2
    TRUNCATED = 4
    FF_RUN = 8
    START_LIKE = 16


@dataclass
class Layout:
    """A batch of the chip's output: bytes, frames, pieces and where each hit stands.

    Offsets are into :attr:`buf`. Frame ``f`` is ``buf[frame_ends[f-1]:frame_ends[f]]`` and was
    complete at ``frame_times[f]`` (ns, chip time); pieces likewise end at :attr:`piece_ends`,
    a read must end after piece ``p`` when ``piece_breaks[p]``.
    """

    buf: np.ndarray
    frame_ends: np.ndarray
    frame_times: np.ndarray
    piece_ends: np.ndarray
    piece_breaks: np.ndarray
    #: Hit records (dtype HIT_DTYPE): raw fields and ts_dec/tot_us; readout columns unset.
    hits: np.ndarray
    #: Offset of each hit's first byte.
    hit_pos: np.ndarray
    #: Offset where a split hit is cut (a piece end), -1 for other hits.
    hit_split: np.ndarray
    hit_fate: np.ndarray
    hit_time: np.ndarray
    hit_frame: np.ndarray
    hit_applied: np.ndarray

    @property
    def n_frames(self) -> int:
        return len(self.frame_ends)

    @property
    def nbytes(self) -> int:
        return len(self.buf)

    @classmethod
    def empty(cls) -> Layout:
        i8 = np.empty(0, dtype=np.int64)
        return cls(np.empty(0, dtype=np.uint8), i8, i8, i8, np.empty(0, dtype=bool),
                   np.empty(0, dtype=HIT_DTYPE), i8, i8, np.empty(0, dtype=np.uint8), i8, i8,
                   np.empty(0, dtype=np.uint8))

    def frame_starts(self) -> np.ndarray:
        """Offset of each frame's first byte."""
        return np.concatenate(([0], self.frame_ends))[:self.n_frames].astype(np.int64)

    def frames(self, f0: int, f1: int) -> Layout:
        """Frames ``f0`` to ``f1 - 1`` as a layout of their own (offsets from their start)."""
        if f1 <= f0:
            return Layout.empty()
        b0 = int(self.frame_ends[f0 - 1]) if f0 else 0
        b1 = int(self.frame_ends[f1 - 1])
        p0, p1 = np.searchsorted(self.piece_ends, [b0, b1], side="right")
        h0, h1 = np.searchsorted(self.hit_frame, [f0, f1], side="left")
        split = self.hit_split[h0:h1]
        return Layout(
            self.buf[b0:b1], self.frame_ends[f0:f1] - b0, self.frame_times[f0:f1],
            self.piece_ends[p0:p1] - b0, self.piece_breaks[p0:p1], self.hits[h0:h1],
            self.hit_pos[h0:h1] - b0, np.where(split >= 0, split - b0, -1),
            self.hit_fate[h0:h1], self.hit_time[h0:h1], self.hit_frame[h0:h1] - f0,
            self.hit_applied[h0:h1])

    def frames_until(self, t_ns: int) -> int:
        """Index just past the last frame complete at or before ``t_ns``."""
        return int(np.searchsorted(self.frame_times, t_ns, side="right"))


def _flags(rng: np.random.Generator, p: float, n: int) -> np.ndarray:
    if p <= 0.0 or n == 0:
        return np.zeros(n, dtype=bool)
    if p >= 1.0:
        return np.ones(n, dtype=bool)
    return rng.random(n) < p


def _pick(rng: np.random.Generator, valid: np.ndarray) -> np.ndarray:
    """For each row of ``valid`` (shape ``(m, k)``), a uniformly chosen True column, or -1."""
    count = valid.sum(axis=1)
    nth = (rng.random(len(valid)) * count).astype(np.int64)
    choice = np.argmax(np.cumsum(valid, axis=1) > nth[:, None], axis=1)
    return np.where(count > 0, choice, -1)


def _every_other(want: np.ndarray) -> np.ndarray:
    """``want`` with every second hit of each run of consecutive True cleared."""
    idx = np.arange(len(want))
    starts = want & ~np.concatenate(([False], want[:-1]))
    run_start = np.maximum.accumulate(np.where(starts, idx, 0))
    return want & ((idx - run_start) % 2 == 0)


def _frame_starts_of(new_frame: np.ndarray) -> np.ndarray:
    idx = np.arange(len(new_frame))
    return np.maximum.accumulate(np.where(new_frame, idx, 0))


def apply_start_like(hits: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """Put a start-like byte inside the words of some hits (in place); return the mask.

    Wire byte 4 ends with ``ts_tdc1`` bits 3-1 and byte 7 with ``ts_tdc2`` bits 2-0 (bits
    reversed): setting them to 1 (and the next bit to 0, so the byte is never ``0xff``) makes
    the byte ``0xe0``-``0xef``. Each chosen hit gets byte 4, byte 7 or both.
    """
    chosen = _flags(rng, p, len(hits))
    if not chosen.any():
        return chosen
    which = rng.integers(1, 4, int(chosen.sum()))
    idx = np.flatnonzero(chosen)
    at4, at7 = idx[(which & 1) != 0], idx[(which & 2) != 0]
    hits["ts_tdc1"][at4] = (hits["ts_tdc1"][at4] & 0b00001) | 0b01110
    hits["ts_tdc2"][at7] = 0b00111
    return chosen


def lay_out(hits: np.ndarray, times: np.ndarray, rng: np.random.Generator,
            anomalies: Anomalies, max_frame_hits: int, max_ff_run: int,
            start_like: np.ndarray | None = None) -> Layout:
    """Lay out hits (in time order; fields final) as frames and pieces, with anomalies.

    Random draws happen only for anomalies with a probability strictly between 0 and 1, in a
    fixed order, so a batch's layout is a function of the generator's state.
    """
    n = len(hits)
    if n == 0:
        return Layout.empty()
    words = words_from_fields(hits)
    times = np.asarray(times, dtype=np.int64)
    idx = np.arange(n)
    applied = np.zeros(n, dtype=np.uint8)
    if start_like is not None:
        applied[start_like] |= int(Applied.START_LIKE)

    if anomalies.clean:
        return _lone_frames(hits, words, times, applied)

    no_idle = _flags(rng, anomalies.no_idle, n)
    want_split = _flags(rng, anomalies.split, n)
    want_trunc = _flags(rng, anomalies.truncated, n)
    want_ff = _flags(rng, anomalies.ff_runs, n)

    # A truncated hit needs a complete successor right behind it in the same frame.
    trunc = _every_other(want_trunc)
    trunc[-1] = False
    no_idle[0] = False
    no_idle[1:] |= trunc[:-1]
    new_frame = ~no_idle
    pos_in_frame = idx - _frame_starts_of(new_frame)
    new_frame |= pos_in_frame % max_frame_hits == 0
    trunc[:-1] &= ~new_frame[1:]

    # Truncation: keep 8 - t bytes (t = 1..7).
    cut = np.zeros(n, dtype=np.int64)
    ti = np.flatnonzero(trunc)
    if ti.size:
        choice = _pick(rng, _truncation_options(words[ti], words[ti + 1]))
        ok = choice >= 0
        trunc[ti[~ok]] = False
        cut[ti[ok]] = choice[ok] + 1
    # Split: the read ends after k bytes of the hit (k = 1..7).
    split = want_split & ~trunc
    split[1:] &= ~trunc[:-1]
    split_at = np.full(n, -1, dtype=np.int64)
    si = np.flatnonzero(split)
    joined = np.zeros(n, dtype=bool)
    if si.size:
        # The tail must hold no start-like byte: suffix "any" over bytes k..7.
        tail_start = np.cumsum(START_BYTE_NP[words[si]][:, ::-1], axis=1)[:, ::-1] > 0
        choice = _pick(rng, ~tail_start[:, 1:])
        ok = choice >= 0
        split[si[~ok]] = False
        si, k = si[ok], choice[ok] + 1
        w = words[si]
        rows = np.arange(si.size)
        head_last, tail_first = w[rows, k - 1], w[rows, k]
        joined[si] = ((head_last != PADDING_BYTE) & ~_SKIP_NP[tail_first]
                      & (w[:, HIT_SIZE - 1] != IDLE_BYTE))
        split_at[si] = k

    last_in_frame = np.concatenate((new_frame[1:], [True]))
    ff = want_ff & last_in_frame & ~split
    ff_len = np.zeros(n, dtype=np.int64)
    if ff.any():
        ff_len[ff] = rng.integers(1, max_ff_run + 1, int(ff.sum()))

    lead = np.where(new_frame, LEAD_IDLE, 0)
    wlen = HIT_SIZE - cut
    trail = np.where(last_in_frame, TRAIL_IDLE + ff_len, 0)
    end = np.cumsum(lead + wlen + trail)
    hit_pos = end - trail - wlen
    total = int(end[-1])

    buf = np.full(total, IDLE_BYTE, dtype=np.uint8)
    buf[(hit_pos[:, None] + _COLS).ravel()] = words.ravel()
    # A truncated word was written whole; the hit right after it is written again on top, so
    # where the two overlap its bytes win (repeated indices have no defined write order).
    after = np.flatnonzero(trunc) + 1
    if after.size:
        buf[(hit_pos[after, None] + _COLS).ravel()] = words[after].ravel()
    fi = np.flatnonzero(ff)
    if fi.size:
        r = ff_len[fi]
        run_base = np.repeat(hit_pos[fi] + HIT_SIZE + 1 - np.cumsum(r) + r, r)
        buf[run_base + np.arange(int(r.sum()))] = PADDING_BYTE

    frame_first = np.flatnonzero(new_frame)
    frame_last = np.concatenate((frame_first[1:] - 1, [n - 1]))
    frame_ends = end[frame_last]
    hit_frame = np.cumsum(new_frame) - 1
    split_points = hit_pos[si] + split_at[si]
    ends = np.concatenate((frame_ends, split_points))
    breaks = np.concatenate((np.zeros(frame_ends.size, dtype=bool),
                             np.ones(split_points.size, dtype=bool)))
    porder = np.argsort(ends, kind="stable")

    fate = np.full(n, Fate.COMPLETE, dtype=np.uint8)
    fate[trunc] = Fate.TRUNCATED
    fate[split & joined] = Fate.SPLIT_JOINED
    fate[split & ~joined] = Fate.SPLIT_LOST
    hit_split = np.full(n, -1, dtype=np.int64)
    hit_split[si] = split_points
    applied[~new_frame] |= int(Applied.NO_IDLE)
    applied[split] |= int(Applied.SPLIT)
    applied[trunc] |= int(Applied.TRUNCATED)
    applied[ff] |= int(Applied.FF_RUN)
    return Layout(buf, frame_ends, times[frame_last], ends[porder], breaks[porder], hits,
                  hit_pos, hit_split, fate, times, hit_frame, applied)


def _lone_frames(hits: np.ndarray, words: np.ndarray, times: np.ndarray,
                 applied: np.ndarray) -> Layout:
    """Clean mode: every hit its own 16-byte frame (the fast path)."""
    n = len(hits)
    buf = np.full((n, _FRAME_BYTES), IDLE_BYTE, dtype=np.uint8)
    buf[:, LEAD_IDLE:LEAD_IDLE + HIT_SIZE] = words
    ends = np.arange(1, n + 1, dtype=np.int64) * _FRAME_BYTES
    idx = np.arange(n, dtype=np.int64)
    return Layout(buf.ravel(), ends, times, ends, np.zeros(n, dtype=bool), hits,
                  ends - _FRAME_BYTES + LEAD_IDLE, np.full(n, -1, dtype=np.int64),
                  np.zeros(n, dtype=np.uint8), times, idx, applied)


def _truncation_options(words: np.ndarray, following: np.ndarray) -> np.ndarray:
    """Which cuts t = 1..7 (column t - 1) the decoder is sure to drop cleanly.

    The kept bytes ``words[:, :8-t]`` hold no start-like byte after the first; in the next hit,
    the first byte at or after offset t that is neither idle nor padding exists and is not
    start-like (the decoder's look-ahead lands on it).
    """
    m = len(words)
    start = START_BYTE_NP[words]
    # inner[:, j] = any start-like byte among bytes 1..j
    inner = np.cumsum(start[:, 1:], axis=1) > 0
    kept_ok = np.ones((m, HIT_SIZE - 1), dtype=bool)
    for t in range(1, HIT_SIZE):
        keep = HIT_SIZE - t
        if keep >= 2:
            kept_ok[:, t - 1] = ~inner[:, keep - 2]
    skip = _SKIP_NP[following]
    start_next = START_BYTE_NP[following]
    # next_at[:, j]: first offset >= j that is not skipped (HIT_SIZE if none).
    next_at = np.full((m, HIT_SIZE + 1), HIT_SIZE, dtype=np.int64)
    for j in range(HIT_SIZE - 1, -1, -1):
        next_at[:, j] = np.where(skip[:, j], next_at[:, j + 1], j)
    rows = np.arange(m)[:, None]
    landing = next_at[:, 1:HIT_SIZE]
    lands_ok = landing < HIT_SIZE
    landing_start = start_next[rows, np.minimum(landing, HIT_SIZE - 1)]
    return kept_ok & lands_ok & ~landing_start
