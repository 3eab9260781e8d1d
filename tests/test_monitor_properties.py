"""Accumulating is independent of how readouts are batched (as the network or a paced replay
cuts them): every histogram and counter equals the one-batch result."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from astropix_hil.fmt import HIT_DTYPE
from astropix_hil.monitor import Accumulator


@st.composite
def runs(draw):
    n = draw(st.integers(1, 60))
    gaps = draw(st.lists(st.integers(0, 40 * 10**9), min_size=n, max_size=n))
    stamps = np.cumsum(np.array(gaps, dtype=np.uint64)) + np.uint64(10**18)
    ids = np.array(draw(st.lists(st.integers(0, 80), min_size=n, max_size=n)))
    per = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    hits = np.zeros(sum(per), dtype=HIT_DTYPE)
    owner = np.repeat(np.arange(n), per)
    k = len(hits)
    hits["chip_id"] = draw(st.lists(st.integers(0, 31), min_size=k, max_size=k)) or 0
    hits["row"] = draw(st.lists(st.integers(0, 31), min_size=k, max_size=k)) or 0
    hits["column"] = draw(st.lists(st.integers(0, 31), min_size=k, max_size=k)) or 0
    dec1 = np.array(draw(st.lists(st.integers(0, 2**17 - 1), min_size=k, max_size=k)),
                    dtype=np.uint32)
    hits["ts_dec1"] = dec1
    hits["ts_dec2"] = dec1 + np.array(draw(st.lists(st.integers(0, 2**17 - 1), min_size=k,
                                                    max_size=k)), dtype=np.uint32)
    hits["timestamp"] = stamps[owner]
    status = np.array(draw(st.lists(st.integers(0, 127), min_size=n, max_size=n)), np.uint8)
    cuts = sorted(set(draw(st.lists(st.integers(1, n), max_size=6))))
    return stamps, ids, hits, owner, status, cuts


def _add(acc, stamps, ids, hits, owner, status, lo, hi):
    mine = (owner >= lo) & (owner < hi)
    acc.add(hits[mine], status[lo:hi], ids[lo:hi], stamps[lo:hi], count_ids=True)


@given(runs())
def test_any_batching_gives_the_same_histograms(run):
    stamps, ids, hits, owner, status, cuts = run
    whole = Accumulator(max_time_bins=16)
    _add(whole, stamps, ids, hits, owner, status, 0, len(stamps))
    pieces = Accumulator(max_time_bins=16)
    bounds = [0, *cuts, len(stamps)]
    for lo, hi in itertools.pairwise(bounds):
        _add(pieces, stamps, ids, hits, owner, status, lo, hi)
    for name in ("hitmap", "tot", "flags", "readouts_per_bin", "hits_per_bin"):
        a, b = getattr(whole, name), getattr(pieces, name)
        size = max(a.size, b.size)  # bins past the last filled one may differ in number
        assert np.array_equal(np.pad(a, (0, size - a.size)) if a.ndim == 1 else a,
                              np.pad(b, (0, size - b.size)) if b.ndim == 1 else b), name
    assert whole.time_bin_ns == pieces.time_bin_ns
    assert whole.readouts_per_bin.size <= 16 and whole.readouts_per_bin.sum() == len(stamps)
    assert whole.ids == pieces.ids
    assert whole.hits == pieces.hits == len(hits) == whole.tot.sum()
