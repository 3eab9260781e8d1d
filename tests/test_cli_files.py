"""``apx-hil convert``, ``info`` and ``import-log`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from astropix_hil import hitcsv
from astropix_hil.cli import main
from astropix_hil.fileio import read_hits, write_apx
from astropix_hil.fmt import HIT_COLUMNS, HIT_DTYPE, AstroPix4Readout
from astropix_hil.hitcsv import read_hits_csv


def test_convert_reproduces_the_reference_csv_byte_for_byte(real_apx, real_csv, tmp_path):
    out = tmp_path / "hits.csv"
    assert main(["convert", str(real_apx), "--format", "csv", "-o", str(out)]) == 0
    assert out.read_text() == real_csv.read_text()


def test_convert_to_numpy(emulated_run, emulated_truth, tmp_path):
    out = tmp_path / "hits.npy"
    assert main(["convert", str(emulated_run), "--format", "npy", "-o", str(out)]) == 0
    assert np.array_equal(np.load(out), read_hits_csv(emulated_truth)[1])


def test_convert_gives_the_emulator_truth_byte_for_byte(emulated_run, emulated_truth,
                                                        tmp_path):
    out = tmp_path / "hits.csv"
    assert main(["convert", str(emulated_run), "--format", "csv", "-o", str(out)]) == 0
    assert out.read_text() == emulated_truth.read_text()


def test_import_log_of_the_fixture_log_gives_its_hits(legacy_log, emulated_truth, tmp_path):
    out = tmp_path / "legacy.apx"
    assert main(["import-log", str(legacy_log), "-o", str(out)]) == 0
    hits = read_hits(out)
    truth = read_hits_csv(emulated_truth)[1]
    assert (hits["timestamp"] == 0).all()
    for name in ("readout_id", "decoding_order", "row", "column", "ts_dec1", "ts_dec2"):
        assert np.array_equal(hits[name], truth[name]), name


def test_info_summarizes_the_real_run(real_apx, capsys):
    assert main(["info", str(real_apx), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["readouts"] == 775
    assert summary["hits"] == 776
    assert summary["missing_readout_ids"] == 0
    assert 59 < summary["time_span_s"] < 61
    assert summary["decoding_flags"] == {}
    assert summary["truncated"] is False


def test_info_reports_gaps_and_flags(tmp_path, capsys):
    w = bytes.fromhex("e0401eac0dccc200")
    readouts = [AstroPix4Readout(b"\xbc" + w + b"\xbc" + w[:3], 0, 0),
                AstroPix4Readout(w[3:] + b"\xbc", 1, 10**9),
                AstroPix4Readout(b"\xbc" + w + b"\xbc", 5, 2 * 10**9)]
    path = tmp_path / "gaps.apx"
    write_apx(path, readouts)
    assert main(["info", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["missing_readout_ids"] == 3
    assert summary["hits"] == 3
    assert summary["decoding_flags"] == {"ORPHAN_BYTES_MATCHED": 1, "VALID_EXTRA_BYTES": 1}
    assert summary["readout_rate_hz"] == 1.5


def test_bad_file_gives_one_line_error_and_status_1(tmp_path, capsys):
    bad = tmp_path / "bad.apx"
    bad.write_bytes(b"not an apx file")
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("apx-hil info: error: ")
    assert "not an .apx file" in err and str(bad) in err


def test_import_log_command(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("vDAC: {'vinj': 170}\n Namespace(name='x')\n"
                   "0\tb'bcbce050fecd067cc500bcbcbcbcbcbcffff'\n")
    assert main(["import-log", str(log), "-o", str(tmp_path / "run.apx")]) == 0
    assert len(read_hits(tmp_path / "run.apx")) == 1


def test_wrong_option_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "astropix_hil", "convert", "x.apx",
                           "--format", "xls"], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "invalid choice: 'xls'" in proc.stderr


def _rows_one_by_one(hits: np.ndarray) -> str:
    """The CSV rows as hitcsv wrote them before the vectorised formatter (the oracle)."""
    columns = [hits[name].tolist() for name in HIT_COLUMNS]
    return "".join(",".join(map(str, row)) + "\n" for row in zip(*columns, strict=True))


def _hit_arrays(tot: st.SearchStrategy) -> st.SearchStrategy:
    def build(rows):
        hits = np.zeros(len(rows), dtype=HIT_DTYPE)
        for i, row in enumerate(rows):
            hits[i] = row
        return hits
    fields = [st.integers(0, np.iinfo(HIT_DTYPE[name]).max) if HIT_DTYPE[name].kind == "u"
              else tot for name in HIT_COLUMNS]
    return st.lists(st.tuples(*fields), max_size=40).map(build)


# tot_us as the decoder makes it (multiples of 0.05), and any float at all.
twentieths = st.integers(0, 2**40).map(lambda k: k / 20.0)


@given(_hit_arrays(st.one_of(twentieths, st.integers(0, 300).map(lambda k: k / 20.0))))
def test_vectorised_csv_rows_equal_the_row_by_row_text(hits):
    assert hitcsv.format_rows(hits) == _rows_one_by_one(hits)


@given(_hit_arrays(st.floats(allow_nan=True, allow_infinity=True)))
def test_csv_rows_of_any_floats_equal_the_row_by_row_text(hits):
    assert hitcsv.format_rows(hits) == _rows_one_by_one(hits)


def test_csv_of_decoder_output_takes_the_vectorised_path(real_apx, monkeypatch):
    hits = read_hits(real_apx)
    monkeypatch.setattr(hitcsv, "_format_rows_python", None)  # not called
    assert hitcsv.format_rows(hits) == _rows_one_by_one(hits)
