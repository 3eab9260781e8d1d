"""``apx-hil emulate`` end to end: the .apx decodes to the truth CSV byte for byte."""

from __future__ import annotations

import numpy as np
import pytest

from astropix_hil.cli import main
from astropix_hil.fileio import read_header, read_hits
from astropix_hil.hitcsv import read_hits_csv


def emulate(tmp_path, *args: str, name: str = "sim") -> tuple[int, object, object]:
    apx, truth = tmp_path / f"{name}.apx", tmp_path / f"{name}.csv"
    status = main(["emulate", "--out", str(apx), "--truth", str(truth), *args])
    return status, apx, truth


@pytest.mark.parametrize("args", [
    ["--seed", "3", "--readouts", "300", "--mode", "poisson", "--rate", "1e5",
     "--anomalies", "all=0.1"],
    ["--seed", "4", "--readouts", "200", "--mode", "poisson", "--rate", "5e4", "--chip-ids",
     "2,5", "--anomalies", "split,truncated=0.3", "--read-size", "256"],
    ["--seed", "5", "--duration", "1"],
])
def test_convert_of_the_emulated_file_is_the_truth_byte_for_byte(tmp_path, args, capsys):
    status, apx, truth = emulate(tmp_path, *args)
    assert status == 0
    assert "readouts written" in capsys.readouterr().err
    decoded = tmp_path / "decoded.csv"
    assert main(["convert", str(apx), "-o", str(decoded)]) == 0
    assert decoded.read_text() == truth.read_text()
    _, hits = read_hits_csv(truth)
    assert len(hits) > 10 and np.array_equal(read_hits(apx), hits)


def test_header_records_seed_and_configuration(tmp_path):
    status, apx, _ = emulate(tmp_path, "--seed", "9", "--readouts", "5", "--mode", "poisson",
                             "--rate", "2000", "--tot", "uniform:1,2", "--pixel", "3,4")
    assert status == 0
    header = read_header(apx)["emulator"]
    assert header["seed"] == 9
    source = header["config"]["chips"][0]["source"]
    assert source["kind"] == "PoissonSource" and source["rate_hz"] == 2000
    assert source["tot"] == {"kind": "uniform", "a": 1.0, "b": 2.0}
    hits = read_hits(apx)
    assert set(hits["row"].tolist()) == {3} and set(hits["column"].tolist()) == {4}
    assert np.all((hits["tot_us"] >= 1) & (hits["tot_us"] <= 2))


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    args = ["--readouts", "50", "--mode", "poisson", "--anomalies", "all"]
    emulate(tmp_path, "--seed", "1", *args, name="a")
    emulate(tmp_path, "--seed", "1", *args, name="b")
    emulate(tmp_path, "--seed", "2", *args, name="c")
    a, b, c = (tmp_path / f"{n}.apx" for n in "abc")
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_field_options_reach_the_hits(tmp_path):
    status, apx, _ = emulate(tmp_path, "--readouts", "20", "--ts-neg1", "1", "--ts-neg2", "0",
                             "--ts-tdc1", "5", "--ts-tdc2", "17", "--chips", "3",
                             "--mode", "poisson")
    assert status == 0
    hits = read_hits(apx)
    assert set(hits["ts_neg1"].tolist()) == {1} and set(hits["ts_neg2"].tolist()) == {0}
    assert set(hits["ts_tdc1"].tolist()) == {5} and set(hits["ts_tdc2"].tolist()) == {17}
    assert set(hits["chip_id"].tolist()) == {0, 1, 2}


def test_without_truth_only_the_apx_is_written(tmp_path):
    apx = tmp_path / "only.apx"
    assert main(["emulate", "--readouts", "3", "--out", str(apx)]) == 0
    assert len(read_hits(apx)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["only.apx"]


@pytest.mark.parametrize(("args", "message"), [
    (["--anomalies", "split=2"], "a probability is 0 to 1"),
    (["--anomalies", "sparks"], "unknown kind 'sparks'"),
    (["--tot", "normal:1"], "takes 2 number"),
    (["--ts-neg1", "2"], "not 0, 1 or random"),
])
def test_bad_options_are_usage_errors_naming_them(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["emulate", "--readouts", "3", "--out", str(tmp_path / "x.apx"), *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--chips", "40"], "chips=40"), (["--rows", "33"], "rows=33"),
    (["--read-size", "8"], "read_size=8"), (["--chip-ids", "31"], "chip_id=31"),
    (["--mode", "poisson", "--rate", "0"], "rate 0"),
])
def test_unusable_configurations_fail_with_one_line(tmp_path, capsys, args, message):
    assert main(["emulate", "--readouts", "3", "--out", str(tmp_path / "x.apx"),
                 "--truth", str(tmp_path / "x.csv"), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_existing_outputs_are_kept_unless_forced(tmp_path, capsys):
    apx = tmp_path / "keep.apx"
    apx.write_bytes(b"precious")
    assert main(["emulate", "--readouts", "2", "--out", str(apx)]) == 1
    assert "exists" in capsys.readouterr().err and apx.read_bytes() == b"precious"
    assert main(["emulate", "--readouts", "2", "--out", str(apx), "--force"]) == 0
    assert len(read_hits(apx)) == 2
