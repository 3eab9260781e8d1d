"""Cutting the chip's pieces into readouts, and the truth: where an honest decoder reports
each hit.

The bulk emulator's DAQ polls every ``poll_interval_ns``: a poll at ``(b + 1) * P`` reads the
frames completed in ``[b * P, (b + 1) * P)``, in reads of at most ``read_size`` bytes that end
between pieces (greedy: each read takes as many whole pieces as fit), and always after a piece
with a forced break (a split hit). The truth follows from where the pieces went:

* a complete hit is reported in the read holding it;
* a rejoinable split hit (:attr:`~.layout.Fate.SPLIT_JOINED`) is reported first (decoding
  order 0) in the read that starts with its tail, when that read directly follows the one that
  ended with its head;
* truncated hits and split hits that cannot rejoin are dropped;
* decoding order is the order of the reported hits in the read.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .layout import Fate, Layout

#: Time the bulk DAQ spends per read, to space the timestamps of reads of one poll: 25 ns per
#: byte (40 MB/s, the fastest FTDI link).
NS_PER_READ_BYTE = 25


class Reads(NamedTuple):
    """Reads of a layout: read ``r`` is ``buf[starts[r]:ends[r]]``, taken at poll ``polls[r]``
    (the ``rank[r]``-th read of that poll)."""

    starts: np.ndarray
    ends: np.ndarray
    polls: np.ndarray
    rank: np.ndarray


def cut_reads(layout: Layout, poll_ns: int, read_size: int) -> Reads:
    """Cut a layout into the bulk DAQ's reads (see the module docstring)."""
    ends = layout.piece_ends
    if ends.size == 0:
        empty = np.empty(0, dtype=np.int64)
        return Reads(empty, empty, empty, empty)
    piece_frame = np.searchsorted(layout.frame_ends, ends, side="left")
    poll = layout.frame_times[piece_frame] // poll_ns
    # A group: consecutive pieces of one poll with no forced break inside.
    new_group = np.ones(ends.size, dtype=bool)
    new_group[1:] = (poll[1:] != poll[:-1]) | layout.piece_breaks[:-1]
    group_first = np.flatnonzero(new_group)
    group_stop = np.concatenate((group_first[1:], [ends.size]))
    bounds = np.concatenate(([0], ends))  # bounds[p] = start of piece p
    # Greedy packing, all groups in lock step: each pass cuts one read off every group.
    cursor = group_first.copy()
    read_first: list[np.ndarray] = []
    active = np.arange(group_first.size)
    while active.size:
        first = cursor[active]
        limit = bounds[first] + read_size
        stop = np.searchsorted(bounds, limit, side="right") - 1
        stop = np.minimum(stop, group_stop[active])
        stop = np.maximum(stop, first + 1)  # a piece never exceeds a read (frame cap)
        read_first.append(first)
        cursor[active] = stop
        active = active[stop < group_stop[active]]
    first_piece = np.sort(np.concatenate(read_first))
    last_piece = np.concatenate((first_piece[1:], [ends.size])) - 1
    starts = bounds[first_piece]
    read_poll = poll[first_piece]
    new_poll = np.ones(first_piece.size, dtype=bool)
    new_poll[1:] = read_poll[1:] != read_poll[:-1]
    idx = np.arange(first_piece.size)
    rank = idx - np.maximum.accumulate(np.where(new_poll, idx, 0))
    return Reads(starts, ends[last_piece], read_poll, rank)


class Placement(NamedTuple):
    """Where the decoder reports each hit of a layout: read index (-1: not reported) and
    decoding order within that read."""

    read: np.ndarray
    order: np.ndarray


def place_hits(layout: Layout, read_ends: np.ndarray) -> Placement:
    """Read and decoding order of every hit of a layout cut into contiguous reads ending at
    ``read_ends`` (the first read starts at offset 0). Hits past the last read are not
    reported (-1)."""
    fate = layout.hit_fate
    n = len(fate)
    read = np.full(n, -1, dtype=np.int64)
    complete = fate == Fate.COMPLETE
    joined = fate == Fate.SPLIT_JOINED
    # A rejoined hit counts from its split point, which starts the read after its head's.
    key = np.where(joined, layout.hit_split, layout.hit_pos)
    reported = complete | joined
    read[reported] = np.searchsorted(read_ends, key[reported], side="right")
    read[read >= len(read_ends)] = -1
    order = np.full(n, -1, dtype=np.int64)
    kept = np.flatnonzero(read >= 0)
    # Keys grow with the hit index, so reported hits are already in read, then byte, order.
    r = read[kept]
    order[kept] = np.arange(kept.size) - np.searchsorted(r, r, side="left")
    return Placement(read, order)


def truth_records(layout: Layout, placement: Placement, readout_ids: np.ndarray,
                  timestamps: np.ndarray) -> np.ndarray:
    """The reported hits as decoder records (HIT_DTYPE), in readout then decoding order."""
    kept = placement.read >= 0
    # A boolean mask selects records several times faster than an index array does.
    out = layout.hits[kept]
    read = placement.read[kept]
    out["readout_id"] = readout_ids[read]
    out["timestamp"] = timestamps[read]
    out["decoding_order"] = placement.order[kept]
    return out
