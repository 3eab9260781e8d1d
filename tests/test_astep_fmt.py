"""A-STEP layer frames, v4/v3 sensor frames, readouts, .bin import/export, v3 matching."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from astropix_hil.astep_files import (
    MATCHED_DTYPE,
    import_bin,
    match_rows_columns,
    read_astep_csv,
    read_hits,
)
from astropix_hil.astep_fmt import (
    V3_HIT_DTYPE,
    AstepReadout,
    decode_readouts,
    encode_layer_frame,
    encode_v3,
    encode_v4,
)
from astropix_hil.cli import main
from astropix_hil.fileio import read_header
from astropix_hil.fmt import binary_to_gray

from .astep_reference import an_v3_half_hits, an_v4_hits, reference_hits


@st.composite
def v4_hits(draw) -> dict:
    c1, c2 = draw(st.integers(0, 2**17 - 1)), draw(st.integers(0, 2**17 - 1))
    g1, g2 = binary_to_gray(c1), binary_to_gray(c2)
    return {"layer": draw(st.integers(1, 3)), "chip_id": draw(st.integers(0, 31)),
            "row": draw(st.integers(0, 31)), "column": draw(st.integers(0, 31)),
            "ts_neg1": draw(st.integers(0, 1)), "ts_coarse1": g1 >> 3, "ts_fine1": g1 & 7,
            "ts_tdc1": draw(st.integers(0, 31)), "ts_neg2": draw(st.integers(0, 1)),
            "ts_coarse2": g2 >> 3, "ts_fine2": g2 & 7, "ts_tdc2": draw(st.integers(0, 31)),
            "c1": c1, "c2": c2, "ts_bytes": draw(st.sampled_from((2, 4, 6, 8))),
            "fpga_ts": draw(st.integers(0, 2**64 - 1))}


def frame_of(hit: dict, byteorder: str) -> bytes:
    sensor = encode_v4(hit["chip_id"], hit["row"], hit["column"], hit["ts_neg1"],
                       hit["ts_coarse1"], hit["ts_fine1"], hit["ts_tdc1"], hit["ts_neg2"],
                       hit["ts_coarse2"], hit["ts_fine2"], hit["ts_tdc2"])
    return encode_layer_frame(hit["layer"], sensor, hit["fpga_ts"], hit["ts_bytes"], byteorder)


@given(st.lists(v4_hits(), max_size=30), st.sampled_from(("big", "little")),
       st.lists(st.integers(0, 500), max_size=6), st.integers(0, 3))
def test_layer_frames_round_trip_split_into_readouts_anywhere(hits, order, cuts, fill):
    stream = b"".join(frame_of(h, order) + b"\xff" * fill for h in hits)
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    reads = [(stream[a:b], i, 0) for i, (a, b) in enumerate(pairwise(bounds))]
    decoded = decode_readouts(reads, byteorder=order)
    assert decoded.extra_bytes == b"" and decoded.wrong_length == 0
    assert decoded.skipped == fill * len(hits)
    assert len(decoded.hits) == len(hits)
    for got, want in zip(decoded.hits, hits, strict=True):
        for name in ("layer", "chip_id", "row", "column", "ts_coarse1", "ts_fine1", "ts_tdc1",
                     "ts_coarse2", "ts_fine2", "ts_tdc2", "ts_neg1", "ts_neg2"):
            assert got[name] == want[name], name
        assert got["payload"] == 7
        assert got["ts_dec1"] == want["c1"] << 1 | want["ts_neg1"]  # Gray decoded, negedge
        assert got["ts_dec2"] == want["c2"] << 1 | want["ts_neg2"]
        assert got["fpga_ts"] == want["fpga_ts"] % (1 << (8 * want["ts_bytes"]))
    # The hit belongs to the readout holding the frame's last byte.
    ends = np.cumsum([len(frame_of(h, order)) + fill for h in hits]) - fill
    expected_ids = np.searchsorted(np.array(bounds[1:]), ends, side="left")
    assert decoded.hits["readout_id"].tolist() == expected_ids.tolist()


@given(st.lists(v4_hits(), max_size=20))
def test_bulk_decoding_agrees_with_the_spec_reference_decoder(hits):
    for h in hits:
        h["ts_bytes"] = 4  # the reference walk skips LEN > 16
    stream = b"".join(frame_of(h, "big") for h in hits)
    got = decode_readouts([(stream, 0, 0)]).hits
    ref = reference_hits(stream)
    assert [{k: int(row[k]) for k in r} for row, r in zip(got, ref, strict=True)] == ref
    # And astropix-analysis' v4 frame search, with 0xff fill between frames.
    filled = b"".join(b"\xff" * (k % 3) + frame_of(h, "big") for k, h in enumerate(hits))
    an = an_v4_hits(filled)
    assert [(int(h["layer"]), int(h["fpga_ts"])) for h in got] == [(a[0], a[2]) for a in an]
    assert [a[1] for a in an] == [int.from_bytes(frame_of(h, "big")[2:10], "big")
                                 for h in hits]


def test_per_object_readouts_agree_with_bulk_and_carry_partial_frames():
    frames = [encode_layer_frame(1 + i % 3, encode_v4(i % 4, i, 31 - i, 0, 5, 1, 2, 1, 9, 3, 4),
                                 1000 + i) for i in range(20)]
    stream = b"".join(frames)
    a = AstepReadout(stream[:100], 0, 7)
    b = AstepReadout(stream[100:], 1, 8)
    first = a.decode()
    second = b.decode(a.extra_bytes())
    bulk = decode_readouts([(stream[:100], 0, 7), (stream[100:], 1, 8)]).hits
    assert [h.values() for h in first + second] == [tuple(r.tolist()) for r in bulk]
    assert len(bulk) == 20 and a.extra_bytes() == stream[98:100]
    assert AstepReadout.from_bytes(a.to_bytes()) == a


def test_fmt_offers_the_astep_readout():
    from astropix_hil.fmt import AstepReadout as Offered

    assert Offered is AstepReadout


def test_the_spec_v3_example_frame():
    # Spec §3.3: v3, layer 1, timestamp 0x00012345: 0A 01 HH LL TT MM NN 00 01 23 45.
    sensor = encode_v3(chip_id=2, is_col=1, location=17, ts=0x9C, tot=0x3A7)
    frame = bytes.fromhex("0a01") + sensor + bytes.fromhex("00012345")
    assert frame == encode_layer_frame(1, sensor, 0x12345, 4, "big")
    hit = decode_readouts([(frame, 0, 0)], chip="v3", byteorder="big").hits[0]
    assert (hit["layer"], hit["chip_id"], hit["payload"], hit["is_col"], hit["location"],
            hit["ts"], hit["tot_msb"], hit["tot_lsb"], hit["tot_total"], hit["fpga_ts"]) == \
        (1, 2, 4, 1, 17, 0x9C, 3, 0xA7, 0x3A7, 0x12345)
    assert hit["tot_us"] == pytest.approx(0x3A7 * 10 / 1000)
    # Little-endian timestamps (firmware before 2025-11-24): the same bytes read otherwise.
    little = decode_readouts([(frame, 0, 0)], chip="v3", byteorder="little").hits[0]
    assert little["fpga_ts"] == 0x45230100


def v3_half(layer, chip, is_col, location, ts, tot, fpga=0) -> np.void:
    h = np.zeros(1, dtype=V3_HIT_DTYPE)[0]
    h["layer"], h["chip_id"], h["payload"], h["is_col"] = layer, chip, 4, is_col
    h["location"], h["ts"], h["tot_total"], h["fpga_ts"] = location, ts, tot, fpga
    return h


def test_v3_row_column_matching_follows_the_team_rules():
    halves = np.array([
        v3_half(1, 0, 0, 5, 10, 100),   # row 5
        v3_half(1, 0, 0, 6, 10, 100),   # row 6, skipped over by row 5's scan
        v3_half(1, 0, 1, 7, 10, 90),    # col 7: dts 0, dtot 10 -> both rows match
        v3_half(1, 0, 1, 8, 9, 94),     # col 8: dts 1, dtot 6 -> match (inclusive)
        v3_half(1, 0, 1, 9, 8, 94),     # col 9: dts 2 -> no
        v3_half(1, 0, 0, 3, 10, 100),   # row 3: stops the column run
        v3_half(1, 0, 1, 4, 10, 84),    # col 4: dtot 16 -> no (max 15)
        v3_half(3, 1, 0, 2, 50, 60),    # layer id 3 is matched too (spec §7 #12)
        v3_half(3, 1, 1, 2, 50, 50),
        v3_half(2, 0, 1, 40, 50, 50),   # location >= 35: ignored
    ])
    matched = match_rows_columns(halves)
    pairs = [(int(m["layer"]), int(m["row"]), int(m["column"])) for m in matched]
    assert pairs == [(1, 5, 7), (1, 5, 8), (1, 6, 7), (1, 6, 8), (3, 2, 2)]
    wider = match_rows_columns(halves, ts_window=(0, 2), tot_window=(6, 16))
    assert {(1, 5, 9), (1, 3, 4)} <= {(int(m["layer"]), int(m["row"]), int(m["column"]))
                                      for m in wider}
    assert matched.dtype == MATCHED_DTYPE


def test_import_bin_of_hand_built_v3_frames_and_convert_with_matching(tmp_path):
    halves = [(1, 0, 0, 5, 10, 100), (1, 0, 1, 7, 10, 90), (2, 3, 0, 1, 200, 30),
              (2, 3, 1, 2, 199, 20)]
    stream = b"".join(encode_layer_frame(layer, encode_v3(chip, col, loc, ts, tot), 77 + k, 4,
                                         "little")
                      for k, (layer, chip, col, loc, ts, tot) in enumerate(halves))
    raw = tmp_path / "run.bin"
    raw.write_bytes(b"\xff\xff" + stream)
    out = tmp_path / "run.apx"
    assert main(["import-bin", str(raw), "-o", str(out), "--chip", "v3", "--read-bytes",
                 "7"]) == 0
    assert read_header(out)["astep"] == {"chip": "v3", "fpga_ts_byteorder": "little"}
    half = read_hits(out)
    assert half["location"].tolist() == [5, 7, 1, 2]
    ours = [(h["layer"], h["chip_id"], h["is_col"], h["location"], h["ts"], h["tot_total"],
             h["fpga_ts"]) for h in half]
    assert [tuple(int(v) for v in row) for row in ours] == an_v3_half_hits(raw.read_bytes())
    assert half["fpga_ts"].tolist() == [77, 78, 79, 80]
    csv = tmp_path / "m.csv"
    assert main(["convert", str(out), "--match", "-o", str(csv)]) == 0
    _, matched = read_astep_csv(csv, MATCHED_DTYPE)
    assert [(m["layer"], m["row"], m["column"]) for m in matched] == [(1, 5, 7), (2, 1, 2)]
    assert main(["convert", str(out), "--match", "-o", str(csv)]) == 1  # exists: no --force
    back = tmp_path / "back.bin"
    assert main(["convert", str(out), "--format", "bin", "-o", str(back)]) == 0
    assert back.read_bytes() == raw.read_bytes()


def test_convert_and_import_refuse_bad_requests_with_one_line(tmp_path, capsys):
    raw = tmp_path / "run.bin"
    raw.write_bytes(encode_layer_frame(1, encode_v4(0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0), 5))
    out = tmp_path / "run.apx"
    import_bin(raw, out)
    assert main(["convert", str(out), "--match", "-o", str(tmp_path / "x.csv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--match" in err[0]
    assert main(["import-bin", str(raw), "-o", str(out)]) == 1
    assert "exists" in capsys.readouterr().err


def test_info_summarizes_an_astep_run(tmp_path, capsys):
    frames = [encode_layer_frame(1 + i % 3, encode_v4(i % 4, i % 32, 3, 0, 7, 1, 2, 1, 9, 3, 4),
                                 i) for i in range(30)]
    stray = encode_layer_frame(2, bytes([0x13]) + b"\x3d" * 3, 99)  # a stray byte's frame
    raw = tmp_path / "run.bin"
    raw.write_bytes(b"".join(frames[:10]) + stray + b"".join(frames[10:]))
    out = tmp_path / "run.apx"
    import_bin(raw, out, read_bytes=50)
    assert main(["info", str(out), "--json"]) == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    assert summary["hits"] == 30 and summary["readouts"] == -(-len(raw.read_bytes()) // 50)
    assert summary["decoding_flags"] == {"WRONG_LENGTH_FRAMES": 1}
    assert summary["astep"]["layer_chips"] == [[1, 0], [1, 1], [1, 2], [1, 3], [2, 0], [2, 1],
                                               [2, 2], [2, 3], [3, 0], [3, 1], [3, 2], [3, 3]]


def test_the_file_reader_yields_astep_readouts_with_the_header_byte_order(tmp_path):
    from astropix_hil.astep_files import iter_readouts
    from astropix_hil.fileio import apx_open

    raw = tmp_path / "run.bin"
    raw.write_bytes(encode_layer_frame(1, encode_v4(0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0), 0x0102,
                                       4, "little"))
    out = tmp_path / "run.apx"
    import_bin(raw, out, byteorder="little")
    with apx_open(out) as reader:
        (readout,) = list(reader)
    assert isinstance(readout, AstepReadout)
    (typed,) = list(iter_readouts(out))
    assert typed.decode()[0].fpga_ts == 0x0102
