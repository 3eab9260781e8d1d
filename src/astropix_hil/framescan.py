"""Locate the serialized readouts of a file's bytes, resynchronising after damage.

A readout header is ``fe dc ba``, readout_id, timestamp and a data length (see
:data:`~astropix_hil.fmt.READOUT_HEADER`). In a healthy file every header's length leads to the
next header. :func:`scan_readouts` finds every candidate header of a window with numpy, follows
the length chain over the candidates (one numpy pass; Python work only where the chain skips a
magic-like byte run inside readout data) and, where the chain breaks, resynchronises at the next
*valid* header: the magic, a plausible length (at most :data:`MAX_READOUT_LENGTH`) and, after
it, another header or the end of the file. The bytes in between are reported as damaged.

Which readout a break belongs to: a readout whose declared extent covers a valid header has a
wrong length and is skipped; otherwise the readout is kept and the damage starts after it (a
broken magic, a gap of garbage, zeros left at the end by a crash). A readout that runs past the
end of the file, with no valid header after its start, is a truncation, not damage.

Pure functions of bytes: no I/O here (:mod:`astropix_hil.fileio` is the shell).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .fmt import READOUT_HEADER, READOUT_MAGIC

#: The largest data length a readout header may declare and still count as valid (the board
#: reads 2 kB; the transport's limit is the same 16 MiB).
MAX_READOUT_LENGTH = 16 << 20
HEADER_SIZE = READOUT_HEADER.size
_MAGIC = np.frombuffer(READOUT_MAGIC, dtype=np.uint8)


class Scan(NamedTuple):
    """Where the readouts of a window are, and what was skipped (offsets in the window)."""

    #: Offset of each readout's header, its data start and end.
    heads: np.ndarray
    ends: np.ndarray
    readout_ids: np.ndarray
    timestamps: np.ndarray
    #: (offset, length) of each damaged region skipped, in order.
    damaged: list[tuple[int, int]]
    #: Bytes the scan is done with; the next window starts here. At the end of the file, the
    #: whole window unless it ends inside a readout (then see ``truncated``).
    consumed: int
    #: At the end of the file: bytes of the incomplete readout at ``consumed`` (else 0).
    truncated: int

    @property
    def starts(self) -> np.ndarray:
        """Offset of each readout's data."""
        return self.heads + HEADER_SIZE


class _Candidates:
    """Every position of a window where a full readout header with the magic stands."""

    def __init__(self, buf: np.ndarray, at_eof: bool) -> None:
        size = len(buf)
        self.size = size
        self.at_eof = at_eof
        self.buf = buf
        fe = np.flatnonzero(buf[:max(size - HEADER_SIZE + 1, 0)] == _MAGIC[0])
        pos = fe[(buf[fe + 1] == _MAGIC[1]) & (buf[fe + 2] == _MAGIC[2])]
        head = (sliding_window_view(buf, HEADER_SIZE)[pos] if pos.size
                else np.empty((0, HEADER_SIZE), np.uint8))
        self.pos = pos
        self.ids = np.ascontiguousarray(head[:, 3:7]).view("<u4").ravel()
        self.stamps = np.ascontiguousarray(head[:, 7:15]).view("<u8").ravel()
        self.lengths = np.ascontiguousarray(head[:, 15:19]).view("<u4").ravel().astype(np.int64)
        self.after = pos + HEADER_SIZE + self.lengths
        self.plausible = self.lengths <= MAX_READOUT_LENGTH
        # Where the chain jumps anywhere but to the next candidate.
        self.breaks = np.flatnonzero(self.after[:-1] != pos[1:])
        self._valid: np.ndarray | None = None

    def index(self, offset: int) -> int | None:
        """The candidate at ``offset``, if any."""
        i = int(np.searchsorted(self.pos, offset))
        return i if i < self.pos.size and self.pos[i] == offset else None

    @property
    def valid(self) -> np.ndarray:
        """Per candidate: 1 a valid header, 0 not, -1 cannot tell yet (the window ends before
        the header it leads to)."""
        if self._valid is None:
            after, size = self.after, self.size
            state = np.zeros(self.pos.size, dtype=np.int8)
            inside = after + 3 <= size
            follows = np.zeros(self.pos.size, dtype=bool)
            at = after[inside]
            follows[inside] = ((self.buf[at] == _MAGIC[0]) & (self.buf[at + 1] == _MAGIC[1])
                               & (self.buf[at + 2] == _MAGIC[2]))
            if self.at_eof:
                follows |= after == size
            else:
                state[~inside] = -1
            state[follows] = 1
            state[~self.plausible] = 0
            self._valid = state
        return self._valid

    def resync(self, after: int, before: int | None = None) -> tuple[int | None, bool]:
        """The first candidate header past ``after`` (and before ``before``) that is valid or
        cannot be judged yet: (its offset or None, judged valid)."""
        i = int(np.searchsorted(self.pos, after, side="right"))
        j = self.pos.size if before is None else int(np.searchsorted(self.pos, before))
        hits = np.flatnonzero(self.valid[i:j] != 0)
        if hits.size == 0:
            return None, False
        k = i + int(hits[0])
        return int(self.pos[k]), bool(self.valid[k] == 1)

    def chain(self, i: int) -> tuple[np.ndarray, int | None]:
        """Candidates linked by their lengths from candidate ``i``: their indices (the last one
        leads to no candidate), and the index of a linked candidate whose length is not
        plausible, where the chain ends instead (None if none)."""
        parts = []
        while True:
            b = int(np.searchsorted(self.breaks, i))
            last = int(self.breaks[b]) if b < self.breaks.size else self.pos.size - 1
            bad = np.flatnonzero(~self.plausible[i:last + 1])
            if bad.size:
                parts.append(np.arange(i, i + int(bad[0])))
                return np.concatenate(parts), i + int(bad[0])
            parts.append(np.arange(i, last + 1))
            nxt = self.index(int(self.after[last]))
            if nxt is None:
                return np.concatenate(parts), None
            i = nxt  # the chain skips magic-like bytes inside the readout data


def scan_readouts(buf: np.ndarray, at_eof: bool) -> Scan:
    """Locate the readouts in ``buf``, which starts where a readout header should be.

    ``at_eof``: the window ends where the file ends (else the scan stops before anything it
    cannot judge without the bytes that follow; ``consumed`` says where to go on).
    """
    buf = np.asarray(buf, dtype=np.uint8)
    cand = _Candidates(buf, at_eof)
    size = cand.size
    taken: list[np.ndarray] = []
    damaged: list[tuple[int, int]] = []
    truncated = 0

    def skip_from(start: int) -> tuple[int, bool]:
        """Damage starts at ``start``: the offset to go on from, and whether to stop there."""
        nonlocal truncated
        q, valid = cand.resync(start)
        if q is not None:
            if q > start:
                damaged.append((start, q - start))
            return q, not valid
        if not at_eof:
            keep = max(start, size - HEADER_SIZE + 1)  # a header may begin in the last bytes
            if keep > start:
                damaged.append((start, keep - start))
            return keep, True
        cut = _truncation_start(cand, start)
        if cut > start:
            damaged.append((start, cut - start))
        truncated = size - cut
        return cut, True

    pos = 0
    while pos < size:
        i = cand.index(pos)
        if i is None:
            pos, stop = skip_from(pos)
            if stop:
                break
            continue
        links, bad = cand.chain(i)
        if bad is not None:  # a linked header with an implausible length
            taken.append(links)
            pos, stop = skip_from(int(cand.pos[bad]))
            if stop:
                break
            continue
        last = int(links[-1])
        taken.append(links[:-1])
        head, end = int(cand.pos[last]), int(cand.after[last])
        if end == size and at_eof:
            taken.append(links[-1:])
            pos = size
            break
        if not at_eof and end + HEADER_SIZE > size:
            # A header may stand inside its extent or right after it, cut by the window.
            pos = head
            break
        # A valid header inside the last readout's extent: its length is wrong.
        q, valid = cand.resync(head, min(end, size))
        if q is not None:
            if not valid:
                pos = head  # judge it with the bytes that follow
                break
            damaged.append((head, q - head))
            pos = q
            continue
        if end > size:  # at the end of the file
            truncated = size - head
            pos = head
            break
        taken.append(links[-1:])  # kept: the damage, if any, starts after it
        tail = buf[end:end + HEADER_SIZE].tobytes()
        if end + HEADER_SIZE > size and READOUT_MAGIC.startswith(tail[:3]):
            if at_eof:  # a header cut short by the end of the file
                truncated = size - end
            pos = end
            break
        pos, stop = skip_from(end)
        if stop:
            break
    idx = np.concatenate(taken) if taken else np.empty(0, np.int64)
    return Scan(cand.pos[idx], cand.after[idx], cand.ids[idx], cand.stamps[idx], damaged,
                pos, truncated)


def _truncation_start(cand: _Candidates, start: int) -> int:
    """At the end of the file, where the incomplete last readout begins (the window size if
    none does): the first plausible header at or past ``start`` that runs past the end, or the
    first magic (or its beginning) in the last bytes, too few for a header."""
    size, buf = cand.size, cand.buf
    i = int(np.searchsorted(cand.pos, start))
    over = np.flatnonzero((cand.after[i:] > size) & cand.plausible[i:])
    if over.size:
        return int(cand.pos[i + int(over[0])])
    for p in range(max(start, size - HEADER_SIZE + 1), size):
        if READOUT_MAGIC.startswith(buf[p:p + 3].tobytes()):
            return p
    return size
