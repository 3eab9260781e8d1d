"""The bulk decoder and framing on hand-made buffers (the properties are in
test_fmt_properties.py)."""

from __future__ import annotations

import numpy as np
import pytest

from astropix_hil.bulk import decode_frames, decode_readouts, frame_readouts
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
