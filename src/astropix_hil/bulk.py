"""Vectorized decoding of many readouts at once into numpy hit arrays.

Two paths, agreeing hit for hit with :func:`astropix_hil.fmt.decode_readout`:

* *regular* readouts, whose hits are separated by idle runs as the chip sends them (also those
  opening with the rest of a hit split across readouts, or ending with its start), are decoded
  from the runs of non-idle bytes of the whole buffer in a few numpy passes, however many
  readouts and hits (:func:`_regular_words`);
* the others run the decoder's steps in lock step (one numpy operation per step, over every
  readout still being decoded), so the Python work grows with the number of hits in the
  fullest of them; the rare words that need re-alignment (a start-like byte inside a word *and*
  a bad word after it) are re-aligned one by one with the scalar rule.

Readouts live in one flat ``uint8`` buffer; readout ``i`` is ``buf[starts[i]:ends[i]]``. A file
buffer can be decoded in place, without copying readout data (:func:`frame_readouts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import BadReadoutHeaderError
from .fmt import (
    _START_BYTE_RE,
    BIT_REVERSE_NP,
    CLOCK_CYCLES_PER_US,
    CLOCK_ROLLOVER,
    FIELD_SHIFTS,
    HIT_DTYPE,
    HIT_SIZE,
    IDLE_BYTE,
    PADDING_BYTE,
    READOUT_HEADER,
    READOUT_MAGIC,
    START_BYTE_NP,
    AstroPix4Readout,
    Decoding,
)
from .fmt import _realign as realign_word

_PAD_WIDTH = HIT_SIZE  # bytes of slack on both sides of the working buffer
_COL = np.arange(HIT_SIZE)
_INNER = np.arange(1, HIT_SIZE)
# Runs longer than this many windows are finished one readout at a time (rare long runs).
_LOCKSTEP_WINDOWS = 16


def _not_skipped(w: np.ndarray) -> np.ndarray:
    return (w != IDLE_BYTE) & (w != PADDING_BYTE)


def _not_idle(w: np.ndarray) -> np.ndarray:
    return w != IDLE_BYTE


def _not_padding(w: np.ndarray) -> np.ndarray:
    return w != PADDING_BYTE


def _is_start(w: np.ndarray) -> np.ndarray:
    return (w >= 0xE0) & (w != PADDING_BYTE)


class Frames(NamedTuple):
    """Where the readouts of a buffer are: data ``buf[starts[i]:ends[i]]`` of readout ``i``."""

    starts: np.ndarray
    ends: np.ndarray
    readout_ids: np.ndarray
    timestamps: np.ndarray
    #: Offset just past the last complete readout (the rest is an incomplete readout, if any).
    consumed: int


class BulkHits(NamedTuple):
    """Decoded hits of a batch of readouts."""

    #: One record per hit, dtype :data:`~astropix_hil.fmt.HIT_DTYPE`, in readout then decoding
    #: order.
    hits: np.ndarray
    #: :class:`~astropix_hil.fmt.Decoding` flags of each readout, as bit masks.
    status: np.ndarray
    #: Extra bytes at the end of the last readout, for the next batch (or None).
    extra_bytes: bytes | None


class _Windows:
    """A padded copy of the buffer, read 8 bytes at a time at many positions at once."""

    def __init__(self, buf: np.ndarray) -> None:
        padded = np.zeros(len(buf) + 2 * _PAD_WIDTH, dtype=np.uint8)
        padded[_PAD_WIDTH:-_PAD_WIDTH] = buf
        self.buf = padded
        self.rows = sliding_window_view(padded, HIT_SIZE)

    def at(self, pos: np.ndarray) -> np.ndarray:
        """The 8 bytes starting at each position, shape ``(len(pos), 8)``."""
        return self.rows[pos]

    def run_end(self, pos: np.ndarray, limit: np.ndarray, stop_fn) -> np.ndarray:
        """For each i, the first p >= pos[i] with p >= limit[i] or stop_fn(byte at p)."""
        pos = pos.copy()
        todo = np.flatnonzero(pos < limit)
        for _ in range(_LOCKSTEP_WINDOWS):
            if todo.size == 0:
                return pos
            p = pos[todo]
            stop = stop_fn(self.rows[p]) | ((limit[todo] - p)[:, None] <= _COL)
            first = stop.argmax(axis=1)
            found = stop[np.arange(todo.size), first]
            pos[todo] = p + np.where(found, first, HIT_SIZE)
            todo = todo[~found]
        for i in todo:
            lo, hi = pos[i], limit[i]
            hits = np.flatnonzero(stop_fn(self.buf[lo:hi]))
            pos[i] = lo + hits[0] if hits.size else hi
        return pos

    def run_start(self, pos: np.ndarray, floor: np.ndarray, keep_fn) -> np.ndarray:
        """For each i, the smallest p <= pos[i] with p <= floor[i] or keep_fn(byte at p - 1)."""
        pos = pos.copy()
        todo = np.flatnonzero(pos > floor)
        # Most runs are empty (data from files is already stripped): check one byte first.
        todo = todo[~keep_fn(self.buf[pos[todo] - 1])]
        for _ in range(_LOCKSTEP_WINDOWS):
            if todo.size == 0:
                return pos
            p = pos[todo]
            base = p - HIT_SIZE
            stop = keep_fn(self.rows[base]) | ((floor[todo] - base)[:, None] > _COL)
            back = stop[:, ::-1].argmax(axis=1)
            found = stop[np.arange(todo.size), HIT_SIZE - 1 - back]
            pos[todo] = np.where(found, p - back, base)
            todo = todo[~found]
        for i in todo:
            lo, hi = floor[i], pos[i]
            kept = np.flatnonzero(keep_fn(self.buf[lo:hi]))
            pos[i] = lo + kept[-1] + 1 if kept.size else lo
        return pos


class _Found(NamedTuple):
    """Hit words found in some readouts: word ``k`` is hit ``order[k]`` of readout ``rix[k]``."""

    words: np.ndarray
    rix: np.ndarray
    order: np.ndarray
    status: np.ndarray
    counts: np.ndarray
    #: Extra bytes of the last readout (None if it has none).
    extra_bytes: bytes | None
    #: Per readout: where its extra bytes start (-1: none) and where its data ends (padding
    #: stripped), as offsets in the buffer.
    extra_pos: np.ndarray
    data_ends: np.ndarray


def _lockstep(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, linked: np.ndarray,
              carried_in: dict[int, bytes]) -> _Found:
    """The careful path: every step of :func:`~astropix_hil.fmt.decode_readout` for all
    readouts at once. ``linked[i]``: readout ``i - 1`` is the one before readout ``i``; else
    readout ``i`` gets the extra bytes ``carried_in[i]`` (none if absent)."""
    win = _Windows(buf)
    data = win.buf
    n = len(starts)
    # Positions below are in the padded buffer.
    starts = np.asarray(starts, dtype=np.int64) + _PAD_WIDTH
    # Trailing padding is not part of a readout's data.
    ends = win.run_start(np.asarray(ends, dtype=np.int64) + _PAD_WIDTH, starts, _not_padding)
    status = np.zeros(n, dtype=np.uint8)
    count = np.zeros(n, dtype=np.int64)
    extra_pos = np.full(n, -1, dtype=np.int64)

    # Orphan bytes: after leading idle/padding, bytes up to the next start byte.
    first = win.run_end(starts, ends, _not_skipped)
    inside = first < ends
    has_orphan = np.zeros(n, dtype=bool)
    has_orphan[inside] = ~_is_start(data[first[inside]])
    orphan_idx = np.flatnonzero(has_orphan)
    o_first = first[orphan_idx]
    orphan_end = win.run_end(o_first + 1, ends[orphan_idx], _is_start)
    orphan_len = win.run_start(orphan_end, o_first, _not_idle) - o_first
    cur = first.copy()
    cur[orphan_idx] = orphan_end

    hit_rix: list[np.ndarray] = []
    hit_words: list[np.ndarray] = []
    hit_order: list[np.ndarray] = []
    act = np.flatnonzero(cur < ends)
    pos = cur[act]
    while act.size:
        if hit_rix:  # the first pass starts on a non-skipped byte already
            pos = win.run_end(cur[act], ends[act], _not_skipped)
        end = ends[act]
        live = pos < end
        act, pos, end = act[live], pos[live], end[live]
        if act.size == 0:
            break
        byte = data[pos]
        truncated = pos + HIT_SIZE >= end
        if truncated.any():
            t_act, t_pos = act[truncated], pos[truncated]
            valid = _is_start(byte[truncated])
            extra_pos[t_act[valid]] = t_pos[valid]
            status[t_act[valid]] |= 1 << Decoding.VALID_EXTRA_BYTES
            status[t_act[~valid]] |= 1 << Decoding.INVALID_EXTRA_BYTES
            keep = ~truncated
            act, pos, end, byte = act[keep], pos[keep], end[keep], byte[keep]
        bad = ~_is_start(byte)
        if bad.any():
            status[act[bad]] |= 1 << Decoding.NOT_ALL_BYTES_VISITED
            keep = ~bad
            act, pos, end = act[keep], pos[keep], end[keep]
        if act.size == 0:
            break
        words = win.at(pos)
        # Words with a start-like byte inside and a bad word after them need re-alignment.
        suspect = np.flatnonzero(_is_start(words[:, 1:]).any(axis=1))
        if suspect.size:
            s_end = end[suspect]
            ahead = win.run_end(pos[suspect] + HIT_SIZE, s_end, _not_skipped)
            in_range = ahead < s_end
            bad_ahead = np.zeros(suspect.size, dtype=bool)
            bad_ahead[in_range] = ~_is_start(data[ahead[in_range]])
            moved = suspect[bad_ahead]
            if moved.size:
                for k in moved:
                    p, e = int(pos[k]), int(end[k])
                    pos[k] = p + realign_word(data[p:e].tobytes(), 0, e - p)[0]
                status[act[moved]] |= 1 << Decoding.INCOMPLETE_DATA_DROPPED
                words[moved] = win.at(pos[moved])
                overrun = pos + HIT_SIZE > end
                if overrun.any():
                    extra_pos[act[overrun]] = pos[overrun]
                    status[act[overrun]] |= 1 << Decoding.VALID_EXTRA_BYTES
                    keep = ~overrun
                    act, pos, words = act[keep], pos[keep], words[keep]
        hit_rix.append(act)
        hit_words.append(words)
        hit_order.append(count[act])
        count[act] += 1
        cur[act] = pos + HIT_SIZE

    # Join orphan bytes with the previous readout's extra bytes.
    extra_len = np.where(extra_pos >= 0, ends - extra_pos, 0)
    prev_pos = np.concatenate(([0], extra_pos[:-1]))
    prev_len = np.concatenate(([0], extra_len[:-1]))
    prev_len[~linked] = 0
    carried_in = {i: extra for i, extra in carried_in.items() if extra and i < n and not linked[i]}
    for i, extra in carried_in.items():
        prev_len[i] = len(extra)
    o_prev_len = prev_len[orphan_idx]
    has_prev = o_prev_len > 0
    matched = has_prev & (o_prev_len + orphan_len == HIT_SIZE)
    status[orphan_idx[matched]] |= 1 << Decoding.ORPHAN_BYTES_MATCHED
    status[orphan_idx[has_prev & ~matched]] |= 1 << Decoding.ORPHAN_BYTES_DROPPED
    status[orphan_idx[~has_prev]] |= 1 << Decoding.ORPHAN_BYTES_NOT_USED
    m_rix = orphan_idx[matched]
    m_words = np.empty((m_rix.size, HIT_SIZE), dtype=np.uint8)
    if m_rix.size:
        m_len = prev_len[m_rix][:, None]
        take_prev = m_len > _COL
        from_prev = (prev_pos[m_rix][:, None] + _COL).clip(0, len(data) - 1)
        from_orphan = (first[m_rix][:, None] + _COL - m_len).clip(0, len(data) - 1)
        m_words[:] = data[np.where(take_prev, from_prev, from_orphan)]
        for k in np.flatnonzero(np.isin(m_rix, list(carried_in))).tolist():
            extra = carried_in[int(m_rix[k])]
            m_words[k, :len(extra)] = np.frombuffer(extra, dtype=np.uint8)
        count[m_rix] += 1

    # Scatter every hit to its place: readout order, then decoding order.
    offsets = np.concatenate(([0], np.cumsum(count)))
    total = int(offsets[-1])
    words = np.empty((total, HIT_SIZE), dtype=np.uint8)
    rix = np.empty(total, dtype=np.int64)
    order = np.empty(total, dtype=np.int64)
    if m_rix.size:
        first_slot = offsets[m_rix]
        words[first_slot] = m_words
        rix[first_slot] = m_rix
        order[first_slot] = 0
    if hit_rix:
        all_rix = np.concatenate(hit_rix)
        all_order = np.concatenate(hit_order)
        if m_rix.size:
            shift = np.zeros(n, dtype=np.int64)
            shift[m_rix] = 1
            all_order += shift[all_rix]
        dest = offsets[all_rix] + all_order
        words[dest] = np.concatenate(hit_words)
        rix[dest] = all_rix
        order[dest] = all_order

    last_extra = None
    if n and extra_pos[-1] >= 0:
        last_extra = data[extra_pos[-1]:ends[-1]].tobytes()
    has_extra = extra_pos >= 0
    extra_pos[has_extra] -= _PAD_WIDTH
    return _Found(words, rix, order, status, count, last_extra, extra_pos, ends - _PAD_WIDTH)


def decode_frames(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                  readout_ids: np.ndarray, timestamps: np.ndarray,
                  extra_bytes: bytes | None = None) -> BulkHits:
    """Decode the readouts ``buf[starts[i]:ends[i]]`` in order, passing extra bytes along.

    ``extra_bytes`` are the extra bytes of the readout before the first one (None for the first
    readout of a run). Regular readouts (see :func:`_regular_words`) are decoded in a few numpy
    passes over the whole buffer; the others go through the careful lock-step path.
    """
    found = _decode(np.asarray(buf, dtype=np.uint8), np.asarray(starts, dtype=np.int64),
                    np.asarray(ends, dtype=np.int64), extra_bytes)
    if len(starts) == 0:
        return BulkHits(np.empty(0, dtype=HIT_DTYPE), found.status, extra_bytes)
    hits = hits_from_words(found.words, np.asarray(readout_ids)[found.rix],
                           np.asarray(timestamps)[found.rix], found.order)
    return BulkHits(hits, found.status, found.extra_bytes)


def _decode(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray,
            extra_bytes: bytes | None) -> _Found:
    """The hit words of readouts ``buf[starts[i]:ends[i]]``, in readout then decoding order.

    Regular readouts, also those that begin with the rest of a hit split across readouts
    (orphan bytes) or end with the start of one (extra bytes), take the fast path; the others
    the lock-step path.
    """
    n = len(starts)
    if n == 0:
        empty = np.empty(0, dtype=np.int64)
        return _Found(np.empty((0, HIT_SIZE), np.uint8), empty, empty,
                      np.zeros(0, dtype=np.uint8), empty, None, empty, ends)
    fast = _regular_words(buf, starts, ends)
    regular, extra_pos = fast.regular, fast.extra_pos
    words = [fast.positions]
    rixs = [fast.rix]
    status = np.zeros(n, dtype=np.uint8)
    # Readouts that begin with orphan bytes: the rest, from the next start-like byte, may be
    # regular; the orphan bytes are joined with the previous readout's extra bytes below.
    orphans: list[tuple[int, int, int]] = []  # (readout, orphan start, orphan length)
    if fast.orphan.size:
        rest_starts, lengths = [], []
        for r, first in zip(fast.orphan.tolist(), fast.orphan_first.tolist(), strict=True):
            end = int(ends[r])
            tail = buf[first + 1:end].tobytes()
            found = _START_BYTE_RE.search(tail)
            rest = first + 1 + found.start() if found else end
            rest_starts.append(rest)
            lengths.append(len(buf[first:rest].tobytes().rstrip(b"\xbc")))
        rest = _regular_words(buf, np.asarray(rest_starts, dtype=np.int64), ends[fast.orphan])
        ok = rest.regular
        regular[fast.orphan[ok]] = True
        extra_pos[fast.orphan[ok]] = rest.extra_pos[ok]
        keep = ok[rest.rix]
        words.append(rest.positions[keep])
        rixs.append(fast.orphan[rest.rix[keep]])
        orphans = [(int(r), int(f), length) for r, f, length, good in zip(
            fast.orphan, fast.orphan_first, lengths, ok, strict=True) if good]
    status[extra_pos >= 0] |= 1 << Decoding.VALID_EXTRA_BYTES
    data_ends = ends.copy()
    # The lock-step path for the rest, given the extra bytes of fast readouts before them.
    irregular = np.flatnonzero(~regular)
    slow = None
    if irregular.size:
        linked = np.empty(irregular.size, dtype=bool)
        linked[0] = False
        linked[1:] = np.diff(irregular) == 1
        carried = {}
        for k in np.flatnonzero(~linked).tolist():
            r = int(irregular[k])
            before = extra_bytes if r == 0 else _extra_of(buf, extra_pos, ends, r - 1)
            if before:
                carried[k] = before
        slow = _lockstep(buf, starts[irregular], ends[irregular], linked, carried)
        status[irregular] = slow.status
        extra_pos[irregular] = slow.extra_pos
        data_ends[irregular] = slow.data_ends
    positions, fast_rix = np.concatenate(words), np.concatenate(rixs)
    if len(words) > 1:  # by position: readout order, then decoding order
        by_position = np.argsort(positions, kind="stable")
        positions, fast_rix = positions[by_position], fast_rix[by_position]
    all_words = [sliding_window_view(buf, HIT_SIZE)[positions] if positions.size
                 else np.empty((0, HIT_SIZE), np.uint8)]
    all_rix = [fast_rix]
    orders = [None]
    # Orphan bytes of fast readouts: a hit if they complete the previous readout's extra bytes.
    if orphans:
        matched_words, matched_rix = [], []
        for r, first, length in orphans:
            before = extra_bytes if r == 0 else _extra_of(buf, extra_pos, data_ends, r - 1)
            if not before:
                status[r] |= 1 << Decoding.ORPHAN_BYTES_NOT_USED
            elif len(before) + length == HIT_SIZE:
                status[r] |= 1 << Decoding.ORPHAN_BYTES_MATCHED
                matched_words.append(before + buf[first:first + length].tobytes())
                matched_rix.append(r)
            else:
                status[r] |= 1 << Decoding.ORPHAN_BYTES_DROPPED
        if matched_rix:
            all_words.append(np.frombuffer(b"".join(matched_words), np.uint8).reshape(-1, 8))
            all_rix.append(np.asarray(matched_rix, dtype=np.int64))
            orders.append(np.zeros(len(matched_rix), dtype=np.int64))
    if slow is not None:
        all_words.append(slow.words)
        all_rix.append(irregular[slow.rix])
        orders.append(slow.order)
    counts = np.zeros(n, dtype=np.int64)
    for r in all_rix:
        counts += np.bincount(r, minlength=n)
    offsets = np.cumsum(counts) - counts
    # Fast words, in order within each readout, after its matched orphan word if any.
    fast_counts = np.bincount(fast_rix, minlength=n)
    shift = np.zeros(n, dtype=np.int64)
    if len(orders) > 1 and orders[1] is not None:
        shift[all_rix[1]] = 1
    orders[0] = (np.arange(len(fast_rix)) - (np.cumsum(fast_counts) - fast_counts)[fast_rix]
                 + shift[fast_rix])
    last_extra = _extra_of(buf, extra_pos, data_ends, n - 1)
    if len(all_rix) == 1:
        return _Found(all_words[0], fast_rix, orders[0], status, counts, last_extra, extra_pos,
                      data_ends)
    total = int(counts.sum())
    merged = np.empty((total, HIT_SIZE), dtype=np.uint8)
    rix = np.empty(total, dtype=np.int64)
    order = np.empty(total, dtype=np.int64)
    for w, r, o in zip(all_words, all_rix, orders, strict=True):
        dest = offsets[r] + o
        merged[dest] = w
        rix[dest] = r
        order[dest] = o
    return _Found(merged, rix, order, status, counts, last_extra, extra_pos, data_ends)


def _extra_of(buf: np.ndarray, extra_pos: np.ndarray, data_ends: np.ndarray,
              r: int) -> bytes | None:
    """Readout ``r``'s extra bytes (None if it has none)."""
    at = int(extra_pos[r])
    return buf[at:int(data_ends[r])].tobytes() if at >= 0 else None


_new_object = object.__new__
_ORPHAN_FLAGS = ((1 << Decoding.ORPHAN_BYTES_MATCHED) | (1 << Decoding.ORPHAN_BYTES_DROPPED)
                 | (1 << Decoding.ORPHAN_BYTES_NOT_USED))


class ReadoutBlock:
    """Consecutive readouts of one buffer, decoded in bulk the first time one of them is
    decoded through the per-object API (:meth:`astropix_hil.fmt.AstroPix4Readout.decode`).

    The bulk decode chains extra bytes from each readout to the next, starting with none; a
    readout decoded with other extra bytes than that (only possible with orphan bytes) is
    decoded on its own instead (:meth:`result` returns None).
    """

    __slots__ = ("_buf", "_decoded", "_ends", "_starts")

    def __init__(self, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        self._buf = buf
        self._starts = starts
        self._ends = ends
        self._decoded: tuple | None = None

    def _decode(self) -> tuple:
        found = _decode(self._buf, self._starts, self._ends, None)
        words = found.words.tobytes()
        first = (np.cumsum(found.counts) - found.counts).tolist()
        extras: list[bytes | None] = [None] * len(self._starts)
        for i in np.flatnonzero(found.extra_pos >= 0).tolist():
            extras[i] = self._buf[found.extra_pos[i]:found.data_ends[i]].tobytes()
        self._decoded = (words, first, found.counts.tolist(), found.status.tolist(), extras)
        return self._decoded

    def result(self, index: int, extra_bytes: bytes | None, hit_class: type, readout_id: int,
               timestamp: int) -> tuple[list, bytes | None, int] | None:
        """Readout ``index``'s hits (objects of ``hit_class``, their values worked out when
        first read), extra bytes and status code, if decoding it after ``extra_bytes`` gives
        what the bulk decode found; else None."""
        words, first, counts, status, extras = self._decoded or self._decode()
        code = status[index]
        if code & _ORPHAN_FLAGS and extra_bytes != (extras[index - 1] if index else None):
            return None
        at = 8 * first[index]
        hits = []
        for order in range(counts[index]):
            # AstroPix4Hit(word, readout_id, timestamp, order), inlined: the hot path.
            hit = _new_object(hit_class)
            hit._word = words[at:at + 8]
            hit._readout_id = readout_id
            hit._timestamp = timestamp
            hit._order = order
            hit._row = None
            hits.append(hit)
            at += 8
        return hits, extras[index], code


class _Regular(NamedTuple):
    """What :func:`_regular_words` found."""

    #: Per readout: regular (its words are below).
    regular: np.ndarray
    #: Position and readout of each word of the regular readouts, in order.
    positions: np.ndarray
    rix: np.ndarray
    #: Per readout: where its extra bytes start (a partial last word), or -1.
    extra_pos: np.ndarray
    #: Readouts whose first non-skipped byte cannot start a hit (orphan bytes), and where.
    orphan: np.ndarray
    orphan_first: np.ndarray


def _regular_words(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> _Regular:
    """Find the hit words of the *regular* readouts in a few passes over the whole buffer.

    A readout is regular when every run of non-skipped bytes (not idle, not padding) lies
    inside one 8-byte word that starts with a start byte at the first run more than 7 bytes
    after the previous word's start, and it has no trailing padding. For such a readout the
    reference decoder finds exactly those words (no re-alignment: the byte after each word's
    idle run is the next start byte), except that a last word reaching the readout's last byte
    is kept as extra bytes.
    """
    size, n = len(buf), len(starts)
    # Bytes inside the readouts' data, so that runs never cross into a readout header.
    bounds = np.empty(2 * n + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, size
    bounds[1:-1:2] = starts
    bounds[2:-1:2] = ends
    pattern = np.zeros(2 * n + 1, dtype=bool)
    pattern[1::2] = True  # gaps between the readouts' data (headers), then data
    inside = np.repeat(pattern, np.diff(bounds))
    kept = np.zeros(size + 2, dtype=bool)  # byte i at kept[i + 1], a False on each side
    inside &= buf != IDLE_BYTE  # comparisons: several times faster than a lookup table
    inside &= buf != PADDING_BYTE
    kept[1:-1] = inside
    # Readouts back to back (no header between, as in decode_readouts): a run must not go on
    # from one readout's data into the next one's.
    joined = starts[1:][(starts[1:] == ends[:-1]) & (ends[:-1] > starts[:-1])]
    joined = joined[kept[joined] & kept[joined + 1]]
    if joined.size:
        step = kept[1:].view(np.int8) - kept[:-1].view(np.int8)
        begins, stops = step == 1, step == -1
        begins[joined] = stops[joined] = True
        run_start, run_end = np.flatnonzero(begins), np.flatnonzero(stops)
    else:
        edges = np.flatnonzero(kept[1:] != kept[:-1])  # a run's start and end alternate
        run_start, run_end = edges[0::2], edges[1::2]
    irregular = np.zeros(n, dtype=bool)
    nonempty = ends > starts
    irregular[nonempty] = buf[ends[nonempty] - 1] == PADDING_BYTE
    extra_pos = np.full(n, -1, dtype=np.int64)
    none = np.empty(0, dtype=np.int64)
    if run_start.size == 0:
        return _Regular(~irregular, none, none, extra_pos, none, none)
    # Runs never cross a readout's data boundary: count the runs of each readout.
    first_run = np.searchsorted(run_start, starts)
    run_rix = np.repeat(np.arange(n), np.diff(first_run, append=run_start.size))
    leading = np.empty(run_start.size, dtype=bool)
    leading[0] = True
    leading[1:] = run_rix[1:] != run_rix[:-1]
    first = leading.copy()
    first[1:] |= np.diff(run_start) >= HIT_SIZE
    head = run_start[np.maximum.accumulate(np.where(first, np.arange(run_start.size), 0))]
    # A run reaching past its cluster's first word: back-to-back words, or a word that starts
    # within 8 bytes of an inner run of the word before it. Both need the careful path.
    irregular[run_rix[run_end > head + HIT_SIZE]] = True
    word_pos = run_start[first]
    word_rix = run_rix[first]
    starts_hit = START_BYTE_NP[buf[word_pos]]
    orphan_word = ~starts_hit & leading[first]
    orphan = word_rix[orphan_word]
    orphan_first = word_pos[orphan_word]
    irregular[word_rix[~starts_hit]] = True
    # A word reaching the last byte is extra bytes; only the last word of a readout can.
    tail = word_pos + HIT_SIZE >= ends[word_rix]
    extra_pos[word_rix[tail]] = word_pos[tail]
    keep = ~irregular[word_rix] & ~tail
    extra_pos[irregular] = -1
    return _Regular(~irregular, word_pos[keep], word_rix[keep], extra_pos, orphan, orphan_first)


def hits_from_words(words: np.ndarray, readout_ids: np.ndarray, timestamps: np.ndarray,
                    decoding_order: np.ndarray) -> np.ndarray:
    """Hit records from wire words (shape ``(n, 8)``) and the readout fields of each hit."""
    words = np.ascontiguousarray(words, dtype=np.uint8).reshape(-1, HIT_SIZE)
    # Bit-reverse two bytes per lookup; then the word is two big-endian 32-bit halves.
    halves = _BIT_REVERSE_16.take(words.view(np.uint16)).view(">u4")
    hi = halves[:, 0].astype(np.uint32)
    lo = halves[:, 1].astype(np.uint32)
    hits = np.empty(len(words), dtype=HIT_DTYPE)
    for name, source, shift, mask in _HALF_FIELDS:
        half = hi if source else lo
        part = half >> np.uint32(shift) if shift else half
        np.bitwise_and(part, mask, out=hits[name], casting="unsafe")
    # ts_coarse1 straddles the halves: 13 bits of the high one, 1 of the low one.
    np.bitwise_or((hi & np.uint32(0x1FFF)) << np.uint32(1), lo >> np.uint32(31),
                  out=hits["ts_coarse1"], casting="unsafe")
    hits["readout_id"] = readout_ids
    hits["timestamp"] = timestamps
    hits["decoding_order"] = decoding_order
    # The 17-bit Gray counters are coarse and fine side by side: decode them by table.
    dec1 = _GRAY_17.take(((hi & np.uint32(0x1FFF)) << np.uint32(4)) | (lo >> np.uint32(28)))
    dec2 = _GRAY_17.take((lo >> np.uint32(5)) & np.uint32(0x1FFFF))
    dec2 += (dec2 < dec1) * np.uint32(CLOCK_ROLLOVER)
    hits["ts_dec1"] = dec1
    hits["ts_dec2"] = dec2
    np.divide(dec2.astype(np.int64) - dec1, CLOCK_CYCLES_PER_US, out=hits["tot_us"])
    return hits


def words_from_fields(hits: np.ndarray) -> np.ndarray:
    """Wire words, shape ``(n, 8)``, from records holding the raw fields of
    :data:`~astropix_hil.fmt.HIT_FIELDS` (the inverse of :func:`hits_from_words`)."""
    value = np.zeros(len(hits), dtype=np.uint64)
    for name, (shift, mask) in FIELD_SHIFTS.items():
        value |= (np.asarray(hits[name]).astype(np.uint64) & np.uint64(mask)) << np.uint64(shift)
    return BIT_REVERSE_NP[value.astype(">u8").view(np.uint8).reshape(-1, HIT_SIZE)]


def _half_fields() -> tuple[tuple[str, bool, int, int], ...]:
    """Each field that lies in one 32-bit half of the word: (name, high half, shift, mask)."""
    out = []
    for name, (shift, mask) in FIELD_SHIFTS.items():
        width = mask.bit_length()
        if shift >= 32:
            out.append((name, True, shift - 32, mask))
        elif shift + width <= 32:
            out.append((name, False, shift, mask))
    return tuple(out)


def _gray_decode(gray: np.ndarray) -> np.ndarray:
    gray = gray.astype(np.uint32)
    for shift in (16, 8, 4, 2, 1):
        gray ^= gray >> np.uint32(shift)
    return gray


_HALF_FIELDS = _half_fields()
_GRAY_17 = _gray_decode(np.arange(CLOCK_ROLLOVER, dtype=np.uint32))
_BIT_REVERSE_16 = (BIT_REVERSE_NP[np.arange(1 << 16) & 0xFF].astype(np.uint16)
                   | (BIT_REVERSE_NP[np.arange(1 << 16) >> 8].astype(np.uint16) << 8))
if np.little_endian is False:  # pragma: no cover - the table is built for a uint16 view
    _BIT_REVERSE_16 = _BIT_REVERSE_16.byteswap()


def frame_readouts(buf: np.ndarray, base_offset: int = 0, path: str | None = None) -> Frames:
    """Locate the serialized readouts that stand back to back in ``buf``.

    Stops before an incomplete readout at the end (its offset is ``consumed``); raises
    :class:`~astropix_hil.errors.BadReadoutHeaderError` naming the absolute byte offset
    (``base_offset`` + position) where a readout header was expected and not found.
    """
    buf = np.asarray(buf, dtype=np.uint8)
    size = len(buf)
    hsize = READOUT_HEADER.size
    fe = np.flatnonzero(buf[: max(size - hsize + 1, 0)] == READOUT_MAGIC[0])
    cand = fe[(buf[fe + 1] == READOUT_MAGIC[1]) & (buf[fe + 2] == READOUT_MAGIC[2])]
    head = sliding_window_view(buf, hsize)[cand] if cand.size else np.empty((0, hsize), np.uint8)
    ids = np.ascontiguousarray(head[:, 3:7]).view("<u4").ravel()
    stamps = np.ascontiguousarray(head[:, 7:15]).view("<u8").ravel()
    lengths = np.ascontiguousarray(head[:, 15:19]).view("<u4").ravel().astype(np.int64)
    after = cand + hsize + lengths
    # Fast path: no magic-like bytes inside the data, the candidates are exactly the chain.
    if cand.size and cand[0] == 0 and np.array_equal(after[:-1], cand[1:]):
        chain = np.arange(cand.size)
    else:
        chain = _walk_chain(cand, after, size)
    if chain.size and after[chain[-1]] > size:
        chain = chain[:-1]  # the last one is incomplete
    consumed = int(after[chain[-1]]) if chain.size else 0
    _check_tail(buf, consumed, base_offset, path)
    sel = cand[chain]
    return Frames(sel + hsize, after[chain], ids[chain], stamps[chain], consumed)


def _walk_chain(cand: np.ndarray, after: np.ndarray, size: int) -> np.ndarray:
    where = {int(c): i for i, c in enumerate(cand)}
    chain = []
    pos = 0
    while pos < size and pos in where:
        i = where[pos]
        chain.append(i)
        pos = int(after[i])
    return np.asarray(chain, dtype=np.int64)


def _check_tail(buf: np.ndarray, consumed: int, base_offset: int, path: str | None) -> None:
    """What follows the last complete readout must be the start of an incomplete one."""
    rest = buf[consumed:consumed + 3].tobytes()
    if rest and READOUT_MAGIC[:len(rest)] != rest:
        raise BadReadoutHeaderError(
            f"expected a readout header (fedcba), found {rest.hex()}", path,
            base_offset + consumed)


def decode_readouts(readouts: Sequence[AstroPix4Readout],
                    extra_bytes: bytes | None = None) -> BulkHits:
    """Decode a list of readout objects in bulk (passing extra bytes from each to the next)."""
    datas = [r.data() for r in readouts]
    lengths = np.fromiter((len(d) for d in datas), dtype=np.int64, count=len(datas))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    buf = np.frombuffer(b"".join(datas), dtype=np.uint8)
    ids = np.fromiter((r.readout_id for r in readouts), dtype=np.uint32, count=len(datas))
    stamps = np.fromiter((r.timestamp for r in readouts), dtype=np.uint64, count=len(datas))
    return decode_frames(buf, starts, ends, ids, stamps, extra_bytes)
