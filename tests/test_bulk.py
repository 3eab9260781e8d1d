"""The bulk decoder and framing on hand-made buffers (the properties are in
test_fmt_properties.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from astropix_hil import bulk as bulk_module
from astropix_hil import strategies as apx
from astropix_hil.bulk import (
    _lockstep,
    _regular_words,
    decode_frames,
    decode_readouts,
    frame_readouts,
    hits_from_words,
)
from astropix_hil.errors import BadReadoutHeaderError
from astropix_hil.fmt import HIT_DTYPE, AstroPix4Readout, Decoding, decode_stream

W0 = bytes.fromhex("e0401eac0dccc200")
W1 = bytes.fromhex("e040b6a80fba1c02")


def serialized(readouts) -> np.ndarray:
    return np.frombuffer(b"".join(r.to_bytes() for r in readouts), dtype=np.uint8)


def test_frames_locate_every_readout():
    readouts = [AstroPix4Readout(b"\xbc\xbc" + W0 * i, i, 100 + i) for i in range(5)]
    frames = frame_readouts(serialized(readouts))
    assert frames.readout_ids.tolist() == [0, 1, 2, 3, 4]
    assert frames.timestamps.tolist() == [100, 101, 102, 103, 104]
    assert (frames.ends - frames.starts).tolist() == [2, 10, 18, 26, 34]
    assert frames.consumed == sum(len(r.to_bytes()) for r in readouts)


def test_frames_are_not_fooled_by_the_magic_inside_readout_data():
    readouts = [AstroPix4Readout(b"\xfe\xdc\xba" + b"\x00" * 20, i, i) for i in range(3)]
    frames = frame_readouts(serialized(readouts))
    assert frames.readout_ids.tolist() == [0, 1, 2]


def test_frames_stop_before_an_incomplete_readout():
    buf = serialized([AstroPix4Readout(W0, 0, 0), AstroPix4Readout(W1, 1, 1)])
    for cut in (1, 5, 19, 26):
        frames = frame_readouts(buf[:-cut])
        assert frames.readout_ids.tolist() == [0]
        assert frames.consumed == 27


def test_frames_name_the_offset_of_a_bad_readout_header():
    buf = serialized([AstroPix4Readout(W0, 0, 0)]).tobytes() + b"garbage-garbage-garbage"
    with pytest.raises(BadReadoutHeaderError, match="byte offset 127") as info:
        frame_readouts(np.frombuffer(buf, np.uint8), base_offset=100, path="x.apx")
    assert info.value.offset == 127
    assert info.value.path == "x.apx"


def test_bulk_decoding_passes_extra_bytes_across_readouts_and_batches():
    readouts = [AstroPix4Readout(b"\xbc" + W0 + b"\xbc" + W1[:5], 0, 0),
                AstroPix4Readout(W1[5:] + b"\xbc\xbc" + W0[:2], 1, 1),
                AstroPix4Readout(W0[2:] + b"\xbc", 2, 2)]
    whole = decode_readouts(readouts)
    assert whole.hits["readout_id"].tolist() == [0, 1, 2]
    assert whole.hits["decoding_order"].tolist() == [0, 0, 0]
    flag = 1 << Decoding.ORPHAN_BYTES_MATCHED
    assert [bool(s & flag) for s in whole.status] == [False, True, True]
    first = decode_readouts(readouts[:2])
    second = decode_readouts(readouts[2:], first.extra_bytes)
    assert np.array_equal(np.concatenate([first.hits, second.hits]), whole.hits)


def test_empty_batch_keeps_the_extra_bytes_it_was_given():
    result = decode_readouts([], b"\xe0\x01")
    assert len(result.hits) == 0
    assert result.hits.dtype == HIT_DTYPE
    assert result.extra_bytes == b"\xe0\x01"


def test_long_idle_and_padding_runs_are_crossed():
    data = b"\xbc" * 3000 + W0 + b"\xbc" + b"\xff" * 500 + b"\xbc" * 700 + W1 + b"\xbc"
    readouts = [AstroPix4Readout(data + b"\xff" * 900, 0, 0)]
    bulk = decode_readouts(readouts)
    assert len(bulk.hits) == 2
    assert [h.values() for h in decode_stream(readouts)] == \
        [tuple(v.item() for v in row) for row in bulk.hits]


def test_decode_frames_reads_readouts_in_place_in_a_file_buffer():
    readouts = [AstroPix4Readout(b"\xbc\xbc" + W0 + b"\xbc" * 6, i, i) for i in range(3)]
    buf = serialized(readouts)
    frames = frame_readouts(buf)
    result = decode_frames(buf, frames.starts, frames.ends, frames.readout_ids,
                           frames.timestamps)
    assert result.hits["readout_id"].tolist() == [0, 1, 2]
    assert result.hits["ts_dec1"].tolist() == [66157] * 3


def packed(readouts):
    """Readout data back to back, as decode_readouts lays it out: buffer, starts, ends."""
    datas = [r.data() for r in readouts]
    ends = np.cumsum([len(d) for d in datas], dtype=np.int64)
    starts = ends - [len(d) for d in datas]
    return np.frombuffer(b"".join(datas), dtype=np.uint8), starts, ends


# Arbitrary bytes, and hits laid out well but for any gaps (none: back to back).
any_readouts = st.one_of(apx.readouts(), apx.readouts(
    apx.well_formed_readout_data().map(lambda case: case[0])))


@given(st.lists(any_readouts, max_size=8), st.one_of(st.none(), apx.hit_words().map(
    lambda w: w[:5])))
def test_fast_path_agrees_with_the_careful_path_on_any_readouts(readouts, extra):
    buf, starts, ends = packed(readouts)
    ids = np.arange(len(readouts), dtype=np.uint32)
    fast = decode_frames(buf, starts, ends, ids, ids.astype(np.uint64), extra)
    chained = np.arange(len(readouts)) > 0  # each readout follows the one before it
    careful = _lockstep(buf, starts, ends, chained, {0: extra} if extra else {})
    expected = hits_from_words(careful.words, careful.rix, careful.rix, careful.order)
    assert np.array_equal(fast.hits, expected)
    assert fast.status.tolist() == careful.status.tolist()
    assert fast.extra_bytes == (careful.extra_bytes if readouts else extra)


@st.composite
def chip_like_readouts(draw):
    """Readouts as the chip fills them: hits separated by 7 or more idle bytes (the chip
    sends 8), idle bytes before the first and after the last."""
    readouts, placed = [], []
    for rid in range(draw(st.integers(1, 6))):
        words = draw(st.lists(apx.hit_words(), max_size=6))
        data = b"\xbc" * draw(st.integers(0, 4))
        for word in words:
            data += word + b"\xbc" * draw(st.integers(7, 12))
        readouts.append(AstroPix4Readout(data, rid, rid))
        placed.append(words)
    return readouts, placed


@given(chip_like_readouts())
def test_readouts_laid_out_as_the_chip_does_take_the_fast_path(case):
    readouts, placed = case
    buf, starts, ends = packed(readouts)
    found = _regular_words(buf, starts, ends)
    assert found.regular.all()
    assert [buf[p:p + 8].tobytes() for p in found.positions] == [w for ws in placed
                                                                 for w in ws]
    hits = decode_readouts(readouts).hits
    assert [h.values() for h in decode_stream(readouts)] == [tuple(r) for r in hits.tolist()]


def test_a_word_holding_idle_bytes_then_a_close_word_are_both_found():
    # The inner 0xbc splits the first word into runs; the second word starts 3 bytes after
    # the last of them, yet 9 bytes after the first word's start.
    inner = bytes.fromhex("e0401eac0dbcc200")
    readouts = [AstroPix4Readout(b"\xbc" + inner + b"\xbc" + W1 + b"\xbc", 0, 0),
                AstroPix4Readout(b"\xbc" + W0 + b"\xbc" * 8 + W1 + b"\xbc", 1, 1)]
    hits = decode_readouts(readouts).hits
    assert [h.word() for h in decode_stream(readouts)] == [inner, W1, W0, W1]
    assert [tuple(r) for r in hits.tolist()] == [h.values() for h in decode_stream(readouts)]


@st.composite
def split_streams(draw):
    """Chip-like readouts whose last hit is cut at any byte, its rest opening the next one."""
    readouts, carry = [], b""
    for rid in range(draw(st.integers(1, 6))):
        words = draw(st.lists(apx.hit_words(), min_size=1, max_size=5))
        data = carry + b"\xbc" * draw(st.integers(0, 3))
        for word in words[:-1]:
            data += word + b"\xbc" * draw(st.integers(7, 10))
        cut = draw(st.integers(1, 8))
        data += words[-1][:cut]
        carry = words[-1][cut:]
        readouts.append(AstroPix4Readout(data, rid, rid))
    return readouts


@given(split_streams(), st.one_of(st.none(), apx.hit_words().map(lambda w: w[:4])))
def test_hits_split_across_readouts_decode_as_the_per_object_path(readouts, extra):
    bulk = decode_readouts(readouts, extra)
    expected = [h.values() for h in decode_stream(readouts, extra)]
    assert [tuple(r) for r in bulk.hits.tolist()] == expected
    assert bulk.status.tolist() == [r.decoding_status().code for r in readouts]
    assert bulk.extra_bytes == readouts[-1].extra_bytes()


def test_a_split_hit_is_rejoined_by_the_fast_path(monkeypatch):
    def no_careful_path(*args):
        raise AssertionError("the lock-step path was used")
    monkeypatch.setattr(bulk_module, "_lockstep", no_careful_path)
    readouts = [AstroPix4Readout(b"\xbc" + W1 + b"\xbc" * 8 + W0[:3], 0, 0),
                AstroPix4Readout(W0[3:] + b"\xbc" * 8 + W1 + b"\xbc", 1, 1)]
    result = decode_readouts(readouts)
    assert [(h["readout_id"], h["decoding_order"]) for h in result.hits] == [
        (0, 0), (1, 0), (1, 1)]
    assert [tuple(r) for r in result.hits.tolist()] == [
        h.values() for h in decode_stream(readouts)]
    assert result.status.tolist() == [1 << Decoding.VALID_EXTRA_BYTES,
                                      1 << Decoding.ORPHAN_BYTES_MATCHED]
