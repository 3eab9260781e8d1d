"""Property tests of the decoder: it never raises, finds every placed hit exactly once, and the
bulk path agrees with the per-object path."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from astropix_hil import strategies as apx
from astropix_hil.bulk import decode_readouts, hits_from_words, words_from_fields
from astropix_hil.fmt import (
    HIT_SIZE,
    AstroPix4Hit,
    AstroPix4Readout,
    decode_readout,
    decode_stream,
    encode_hit,
)


@given(apx.readout_bytes(), st.one_of(st.none(), st.binary(min_size=1, max_size=8)))
def test_decoding_never_raises_and_only_returns_whole_words(data, extra):
    result = decode_readout(data.rstrip(b"\xff"), extra)
    assert all(len(word) == HIT_SIZE for word in result.words)
    assert result.extra_bytes is None or 0 < len(result.extra_bytes) <= HIT_SIZE
    assert 0 <= result.status < 1 << 7


@given(apx.well_formed_streams())
def test_every_hit_placed_in_a_well_formed_stream_is_decoded_exactly_once(stream):
    decoded = list(decode_stream(stream.readouts))
    expected = [(r.readout_id, order, word) for r, placed in zip(stream.readouts, stream.words,
                                                                 strict=True)
                for order, word in enumerate(placed)]
    assert [(h.readout_id, h.decoding_order, h.word()) for h in decoded] == expected
    assert not any(r.decoding_status() for r in stream.readouts)


@given(apx.hit_words(), st.integers(1, HIT_SIZE - 1), st.integers(0, 3), st.integers(1, 3))
def test_a_hit_split_at_any_byte_is_rejoined(word, cut, idle_before, idle_after):
    # The cut must leave both parts recognisable: the head may not end with padding (stripped
    # as such); the tail may not begin with idle/padding, hold a start-like byte, or end with
    # idle bytes (the reference rules).
    head, tail = word[:cut], word[cut:]
    assume_ok = (head[-1] != 0xFF and tail[0] not in (0xBC, 0xFF)
                 and not any(0xE0 <= b < 0xFF for b in tail) and tail[-1] != 0xBC)
    first = AstroPix4Readout(b"\xbc" * idle_before + head, 0, 0)
    second = AstroPix4Readout(tail + b"\xbc" * idle_after, 1, 1)
    hits = list(decode_stream([first, second]))
    if assume_ok:
        assert [h.word() for h in hits] == [word]
        assert hits[0].readout_id == 1
    else:
        assert len(hits) <= 1


@given(st.lists(apx.readouts(), max_size=8), st.one_of(st.none(), apx.hit_words().map(
    lambda w: w[:3])))
def test_bulk_and_per_object_paths_agree_on_any_readouts(readouts, extra):
    expected = [h.values() for h in decode_stream(readouts, extra)]
    statuses = [r.decoding_status().code for r in readouts]
    bulk = decode_readouts(readouts, extra)
    assert [tuple(v.item() for v in row) for row in bulk.hits] == expected
    assert bulk.status.tolist() == statuses
    assert bulk.extra_bytes == (readouts[-1].extra_bytes() if readouts else extra)


@given(apx.well_formed_streams(max_readouts=4))
def test_bulk_and_per_object_paths_agree_on_well_formed_streams(stream):
    expected = [h.values() for h in decode_stream(stream.readouts)]
    bulk = decode_readouts(stream.readouts)
    assert [tuple(v.item() for v in row) for row in bulk.hits] == expected


@given(apx.hit_fields(real=False))
def test_fields_survive_encode_then_decode(fields):
    word = encode_hit(**fields)
    hit = AstroPix4Hit(word)
    assert {name: getattr(hit, name) for name in fields} == fields
    array = hits_from_words(np.frombuffer(word, np.uint8), [0], [0], [0])
    assert words_from_fields(array).tobytes() == word


@given(apx.readouts())
def test_readout_bytes_round_trip(readout):
    raw = readout.to_bytes()
    back = AstroPix4Readout.from_bytes(raw)
    assert back == readout
    assert back.to_bytes() == raw
