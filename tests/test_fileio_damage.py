"""A damaged readout header costs only the readout it damages: the reader resynchronises at the
next valid header, counts the bytes it skipped and says where they were."""

from __future__ import annotations

import json
import struct
import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from astropix_hil.cli import main
from astropix_hil.errors import DamagedFileWarning, TruncatedFileWarning
from astropix_hil.fileio import (
    ReadReport,
    apx_open,
    encode_header,
    iter_frame_chunks,
    read_hits,
    write_apx,
)
from astropix_hil.fmt import READOUT_HEADER, AstroPix4Readout, decode_stream

W0 = bytes.fromhex("e0401eac0dccc200")
HEAD = len(encode_header(None))


def make_readouts(n: int) -> list[AstroPix4Readout]:
    return [AstroPix4Readout(b"\xbc\xbc" + W0 + b"\xbc" * (1 + i % 7), i, 1000 + i)
            for i in range(n)]


def offsets(readouts) -> list[int]:
    """File offset of each readout's header."""
    out, at = [], HEAD
    for r in readouts:
        out.append(at)
        at += len(r.to_bytes())
    return out


def damaged_file(tmp_path, readouts, edit) -> tuple:
    path = tmp_path / "damaged.apx"
    write_apx(path, readouts)
    raw = bytearray(path.read_bytes())
    edit(raw)
    path.write_bytes(bytes(raw))
    return path


def set_length(raw: bytearray, head: int, value: int) -> None:
    struct.pack_into("<I", raw, head + 15, value)


def read_all(path, chunk_bytes: int = 4 << 20):
    """Readouts (id, timestamp, data) and the report, via the framing the bulk path uses."""
    report = ReadReport()
    got = []
    for window, frames, _ in iter_frame_chunks(path, chunk_bytes, report):
        data = window.tobytes()
        for s, e, rid, ts in zip(frames.starts.tolist(), frames.ends.tolist(),
                                 frames.readout_ids.tolist(), frames.timestamps.tolist(),
                                 strict=True):
            got.append((rid, ts, data[s:e]))
    return got, report


def quiet_read(path, chunk_bytes: int = 4 << 20):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_all(path, chunk_bytes)


def test_a_length_a_few_bytes_too_long_costs_only_its_readout(tmp_path):
    readouts = make_readouts(6)
    at = offsets(readouts)
    path = damaged_file(tmp_path, readouts,
                        lambda raw: set_length(raw, at[2], len(readouts[2].data()) + 3))
    with pytest.warns(DamagedFileWarning, match=f"skipped at byte offset {at[2]}"):
        got, report = read_all(path)
    assert [g[0] for g in got] == [0, 1, 3, 4, 5]
    assert report.damaged == [(at[2], at[3] - at[2])]
    assert report.damaged_bytes == at[3] - at[2] and report.truncated_bytes == 0


def test_a_length_a_few_bytes_too_short_keeps_the_readouts_after_it(tmp_path):
    readouts = make_readouts(6)
    at = offsets(readouts)
    short = len(readouts[2].data()) - 3
    path = damaged_file(tmp_path, readouts, lambda raw: set_length(raw, at[2], short))
    got, report = quiet_read(path)
    assert [g[0] for g in got] == [0, 1, 2, 3, 4, 5]
    assert got[2][2] == readouts[2].data()[:short]  # what its header declares
    assert [g[2] for g in got[3:]] == [r.data() for r in readouts[3:]]
    assert report.damaged == [(at[3] - 3, 3)]


def test_a_broken_magic_costs_only_its_readout(tmp_path):
    readouts = make_readouts(5)
    at = offsets(readouts)

    def edit(raw):
        raw[at[1] + 1] ^= 0x40
    path = damaged_file(tmp_path, readouts, edit)
    got, report = quiet_read(path)
    assert [g[0] for g in got] == [0, 2, 3, 4]
    assert report.damaged == [(at[1], at[2] - at[1])]


def test_an_implausible_length_is_damage_not_the_end_of_the_file(tmp_path):
    readouts = make_readouts(5)
    at = offsets(readouts)
    path = damaged_file(tmp_path, readouts, lambda raw: set_length(raw, at[0], 0xFFFFFFFF))
    got, report = quiet_read(path, chunk_bytes=64)
    assert [g[0] for g in got] == [1, 2, 3, 4]
    assert report.damaged == [(at[0], at[1] - at[0])]
    assert report.truncated_bytes == 0


def test_garbage_between_readouts_is_skipped_across_small_windows(tmp_path):
    readouts = make_readouts(4)
    at = offsets(readouts)

    def edit(raw):
        raw[at[2]:at[2]] = bytes(range(256)) * 3
    path = damaged_file(tmp_path, readouts, edit)
    for chunk in (24, 50, 100, 4 << 20):
        got, report = quiet_read(path, chunk)
        assert [g[0] for g in got] == [0, 1, 2, 3], chunk
        assert report.damaged == [(at[2], 768)], chunk  # one region, however many windows


def test_a_clean_truncation_stays_a_truncation(tmp_path):
    readouts = make_readouts(4)
    path = damaged_file(tmp_path, readouts, lambda raw: raw.__delitem__(slice(-5, None)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got, report = read_all(path)
    assert [g[0] for g in got] == [0, 1, 2]
    assert [w.category for w in caught] == [TruncatedFileWarning]
    assert report.damaged_bytes == 0
    assert report.truncated_bytes == len(readouts[3].to_bytes()) - 5


def test_damage_then_a_truncated_last_readout(tmp_path):
    readouts = make_readouts(4)
    at = offsets(readouts)

    def edit(raw):
        set_length(raw, at[1], len(readouts[1].data()) + 2)
        del raw[-4:]
    path = damaged_file(tmp_path, readouts, edit)
    got, report = quiet_read(path)
    assert [g[0] for g in got] == [0, 2]
    assert report.damaged == [(at[1], at[2] - at[1])]
    assert report.truncated_at == at[3]


def test_per_object_and_bulk_readers_skip_the_same_damage(tmp_path):
    readouts = make_readouts(8)
    at = offsets(readouts)
    path = damaged_file(tmp_path, readouts,
                        lambda raw: set_length(raw, at[5], len(readouts[5].data()) + 1))
    with pytest.warns(DamagedFileWarning), apx_open(path) as reader:
        objects = list(reader)
    assert [r.readout_id for r in objects] == [0, 1, 2, 3, 4, 6, 7]
    assert reader.skipped_bytes == at[6] - at[5]
    with pytest.warns(DamagedFileWarning):
        hits = read_hits(path)
    expected = [h.values() for h in decode_stream(objects)]
    assert [tuple(row) for row in hits.tolist()] == expected


def test_info_prints_a_damaged_line_and_fails(tmp_path, capsys):
    readouts = make_readouts(5)
    at = offsets(readouts)
    path = damaged_file(tmp_path, readouts,
                        lambda raw: set_length(raw, at[3], len(readouts[3].data()) + 4))
    assert main(["info", str(path)]) == 1
    out = capsys.readouterr().out
    damaged = [line for line in out.splitlines() if line.startswith("damaged")]
    assert len(damaged) == 1
    assert f"{at[4] - at[3]} bytes" in damaged[0] and f"byte offset {at[3]}" in damaged[0]
    assert main(["info", str(path), "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["damaged_bytes"] == at[4] - at[3]
    assert summary["damaged_regions"] == [[at[3], at[4] - at[3]]]
    assert summary["readouts"] == 4


def test_info_of_a_truncated_file_still_succeeds(tmp_path, capsys):
    readouts = make_readouts(3)
    path = damaged_file(tmp_path, readouts, lambda raw: raw.__delitem__(slice(-2, None)))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.startswith("truncated") for line in lines)
    assert not any(line.startswith("damaged") for line in lines)


def test_convert_goes_on_and_says_how_many_bytes_it_skipped(tmp_path, capsys):
    readouts = make_readouts(5)
    at = offsets(readouts)
    path = damaged_file(tmp_path, readouts, lambda raw: raw.__setitem__(at[2], 0))
    out = tmp_path / "hits.csv"
    assert main(["convert", str(path), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"skipped {at[3] - at[2]} damaged bytes" in err
    assert len(out.read_text().splitlines()) == 2 + 4


# --- property: one damaged header, any chunk size ------------------------------------------

damage = st.one_of(
    st.tuples(st.just("delta"), st.integers(-8, 8).filter(bool)),
    st.tuples(st.just("length"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("magic"), st.tuples(st.integers(0, 2), st.integers(1, 255))),
)


@given(datas=st.lists(st.binary(min_size=0, max_size=48), min_size=1, max_size=10),
       stamps=st.integers(0, 2**64 - 1), which=st.integers(0, 9), how=damage,
       chunk=st.integers(1, 300))
def test_one_damaged_header_costs_at_most_its_readout(tmp_path_factory, datas, stamps, which,
                                                      how, chunk):
    readouts = [AstroPix4Readout._parsed(d, i, stamps ^ i) for i, d in enumerate(datas)]
    k = which % len(readouts)
    at = [*offsets(readouts), HEAD + sum(len(r.to_bytes()) for r in readouts)]
    length = len(readouts[k].data())
    kind, value = how
    if kind in ("delta", "length"):
        new = length + value if kind == "delta" else value
        assume(0 <= new < 2**32 and new != length)
        # A length that lands exactly on a later header links the chain: not detectable.
        assume(at[k] + READOUT_HEADER.size + new not in at)

        def edit(raw):
            set_length(raw, at[k], new)
    else:
        index, flip = value

        def edit(raw):
            raw[at[k] + index] ^= flip
    path = damaged_file(tmp_path_factory.mktemp("p"), readouts, edit)
    got, report = quiet_read(path, max(chunk, 1))
    original = [(r.readout_id, r.timestamp, r.data()) for r in readouts]
    others = [o for o in original if o[0] != k]
    assert [g for g in got if g[0] != k] == others
    kept = [g for g in got if g[0] == k]
    if kept:  # only a readout whose length was made shorter is kept, as its header says
        assert kind != "magic" and kept[0][2] == readouts[k].data()[:len(kept[0][2])]
    body = at[-1] - HEAD
    delivered = sum(READOUT_HEADER.size + len(g[2]) for g in got)
    assert delivered + report.damaged_bytes + report.truncated_bytes == body
    assert report.damaged_bytes + report.truncated_bytes <= at[k + 1] - at[k]
    # The bulk decoder reads the same readouts.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hits = read_hits(path)
    expected = [h.values() for h in decode_stream(
        AstroPix4Readout._parsed(d, rid, ts) for rid, ts, d in got)]
    assert [tuple(row) for row in hits.tolist()] == expected
    assert np.all(np.isin(hits["readout_id"], [g[0] for g in got]))
