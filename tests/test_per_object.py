"""Readouts read from a file are decoded in bulk, a chunk at a time, behind the per-object API:
hits, extra bytes and flags must be exactly what decoding each readout on its own gives, with
whatever extra bytes the caller passes."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astropix_hil import fileio
from astropix_hil import strategies as apx
from astropix_hil.fileio import apx_open, write_apx
from astropix_hil.fmt import AstroPix4Hit, AstroPix4Readout, decode_stream

# Arbitrary bytes, and hits laid out well but for any gaps (none: back to back).
any_readouts = st.one_of(apx.readouts(), apx.readouts(
    apx.well_formed_readout_data().map(lambda case: case[0])))


def fresh(readout: AstroPix4Readout) -> AstroPix4Readout:
    """The same readout, not read from a file: decoded on its own by the scalar decoder."""
    return AstroPix4Readout._parsed(readout.data(), readout.readout_id, readout.timestamp)


def outcome(readout: AstroPix4Readout, extra: bytes | None) -> tuple:
    hits = readout.decode(extra)
    return ([(type(h), h.values(), h.word()) for h in hits], readout.extra_bytes(),
            readout.decoding_status())


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(readouts=st.lists(any_readouts, min_size=1, max_size=12),
       chained=st.lists(st.booleans(), min_size=12, max_size=12),
       chunk=st.integers(20, 400))
def test_readouts_from_a_file_decode_as_on_their_own(tmp_path, monkeypatch, readouts, chained,
                                                     chunk):
    monkeypatch.setattr(fileio, "_CHUNK", chunk)
    path = tmp_path / "run.apx"
    write_apx(path, readouts)
    with apx_open(path) as reader:
        from_file = list(reader)
    assert len(from_file) == len(readouts)
    extra = None
    for readout, copy, chain in zip(from_file, readouts, chained, strict=False):
        # The caller passes the previous readout's extra bytes, or (sometimes) none.
        given_extra = extra if chain else None
        assert outcome(readout, given_extra) == outcome(fresh(copy), given_extra)
        extra = readout.extra_bytes()


def test_decode_stream_over_a_file_matches_the_bulk_hits(real_apx):
    with apx_open(real_apx) as reader:
        hits = [h.values() for h in decode_stream(reader)]
    assert [tuple(row) for row in fileio.read_hits(real_apx).tolist()] == hits


def test_hit_attributes_read_the_values(real_apx):
    with apx_open(real_apx) as reader:
        hit = next(iter(reader)).decode()[0]
    assert [getattr(hit, name) for name in hit.ATTRIBUTE_NAMES] == list(hit.values())
    assert hit == AstroPix4Hit(hit.word(), hit.readout_id, hit.timestamp, hit.decoding_order)
