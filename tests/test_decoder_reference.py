"""Both decoding paths (per object: :mod:`astropix_hil.fmt`; bulk: :mod:`astropix_hil.bulk`)
against the independent reference decoder of tests/reference_decoder.py, written from
docs/format.rst. The two paths share code (the bulk path re-aligns words with the per-object
function), so comparing them with each other cannot catch a mistake they share; comparing
each with the reference can."""

from __future__ import annotations

import itertools

from hypothesis import find, given
from hypothesis import strategies as st

from astropix_hil import strategies as apx
from astropix_hil.bulk import decode_readouts
from astropix_hil.fileio import apx_open
from astropix_hil.fmt import HIT_COLUMNS, AstroPix4Readout, decode_stream
from astropix_hil.hitcsv import read_hits_csv

from . import reference_decoder as ref

START_LIKE = st.integers(0xE0, 0xFE)


@st.composite
def start_like_hit(draw: st.DrawFn) -> bytes:
    """A hit word with a start-like byte (0xe0-0xfe) at an inner position."""
    word = bytearray(draw(apx.hit_words()))
    word[draw(st.integers(1, 7))] = draw(START_LIKE)
    return bytes(word)


SEGMENTS = st.one_of(
    apx.hit_words(),
    start_like_hit(),
    apx.hit_words().flatmap(lambda w: st.integers(1, 7).map(lambda k: w[:k])),  # cut short
    st.integers(1, 6).map(lambda k: b"\xbc" * k),  # idle
    st.integers(1, 6).map(lambda k: b"\xff" * k),  # a 0xff run
    st.integers(1, 6).map(lambda k: b"\xbc" + b"\xff" * k + b"\xbc"),  # 0xff between idles
    START_LIKE.map(lambda b: bytes([b])),
    st.binary(min_size=1, max_size=4),
)


@st.composite
def tricky_streams(draw: st.DrawFn, max_segments: int = 24,
                   max_readouts: int = 5) -> list[tuple[bytes, int, int]]:
    """(data, readout_id, timestamp) of readouts cut at arbitrary points from a byte stream of
    hits, hits holding start-like bytes, truncated hits, idle bytes, 0xff runs, lone
    start-like bytes and arbitrary bytes: hits split across readouts, orphan bytes, re-aligned
    words, words at the very end."""
    stream = b"".join(draw(st.lists(SEGMENTS, max_size=max_segments)))
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=max_readouts - 1)))
    bounds = [0, *cuts, len(stream)]
    return [(stream[a:b], i, 1_700_000_000_000_000_000 + i)
            for i, (a, b) in enumerate(itertools.pairwise(bounds))]


def objects(readouts: list[tuple[bytes, int, int]]) -> list[AstroPix4Readout]:
    return [AstroPix4Readout(data, readout_id, ts) for data, readout_id, ts in readouts]


def per_object(readouts, extra):
    objs = objects(readouts)
    hits = [{c: getattr(h, c) for c in HIT_COLUMNS} for h in decode_stream(objs, extra)]
    return hits, [r.decoding_status().code for r in objs], objs[-1].extra_bytes() if objs \
        else extra


def bulk(readouts, extra):
    result = decode_readouts(objects(readouts), extra)
    hits = [{c: row[c].item() for c in HIT_COLUMNS} for row in result.hits]
    return hits, result.status.tolist(), result.extra_bytes


def reference(readouts, extra):
    hits, statuses, last = ref.decode_stream(readouts, extra)
    return [{c: h[c] for c in HIT_COLUMNS} for h in hits], statuses, last


EXTRA = st.one_of(st.none(), apx.hit_words().flatmap(
    lambda w: st.integers(1, 7).map(lambda k: w[:k])))


@given(tricky_streams(), EXTRA)
def test_per_object_path_decodes_as_the_reference(readouts, extra):
    assert per_object(readouts, extra) == reference(readouts, extra)


@given(tricky_streams(), EXTRA)
def test_bulk_path_decodes_as_the_reference(readouts, extra):
    assert bulk(readouts, extra) == reference(readouts, extra)


@given(st.lists(apx.readout_bytes(), max_size=6), EXTRA)
def test_both_paths_decode_arbitrary_bytes_as_the_reference(datas, extra):
    readouts = [(data, i, i) for i, data in enumerate(datas)]
    expected = reference(readouts, extra)
    assert per_object(readouts, extra) == expected
    assert bulk(readouts, extra) == expected


def test_the_stream_strategy_reaches_the_hard_cases():
    """The generated streams do hold what the comparison is about (hypothesis finds each)."""
    def flags(readouts):
        return [ref.decode(data, None).flags for data, _, _ in readouts]

    # A word with a start-like byte, followed by a non-start byte: dropped and re-aligned.
    find(tricky_streams(), lambda rs: any(ref.INCOMPLETE_DATA_DROPPED in f for f in flags(rs)))
    # A word with a start-like byte followed by a 0xff run and then a hit: the look-ahead must
    # cross the run (the team's decoder stopped at it and cut a good hit).
    find(tricky_streams(), lambda rs: any(
        ref.decode(d).words and any(0xE0 <= b <= 0xFE for w in ref.decode(d).words
                                    for b in w[1:]) and b"\xff\xbc" in d for d, _, _ in rs))
    # A hit split across two readouts and re-joined.
    find(tricky_streams(), lambda rs: ref.ORPHAN_BYTES_MATCHED in set().union(
        *[ref.decode(d, e).flags for (d, _, _), e in zip(
            rs, [None] + [ref.decode(d).extra for d, _, _ in rs], strict=False)]))


def test_the_reference_decodes_the_edge_cases_and_the_emulated_run(edge_cases_apx,
                                                                  emulated_run, emulated_truth):
    """The reference agrees with the paths on the hand-built edge cases, and with the
    emulator's truth (hits it generated) on the emulated run."""
    for path in (edge_cases_apx, emulated_run):
        with apx_open(path) as reader:
            readouts = [(r.data(), r.readout_id, r.timestamp) for r in reader]
        expected = reference(readouts, None)
        assert per_object(readouts, None) == expected
        assert bulk(readouts, None) == expected
    _, truth = read_hits_csv(emulated_truth)
    assert expected[0] == [{c: truth[i][c].item() for c in HIT_COLUMNS}
                           for i in range(len(truth))]
