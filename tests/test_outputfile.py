"""No command destroys a user's file: outputs that are inputs are refused (same inode, through
symlinks and hard links), existing outputs need ``--force``, and a failed command leaves no
half-written file (outputs are written under a temporary name and renamed when complete)."""

from __future__ import annotations

import errno
import io
import os

import numpy as np
import pytest

from astropix_hil.cli import build_parser, main
from astropix_hil.cli.recv import Monitor
from astropix_hil.fileio import ApxReader, read_hits, write_apx
from astropix_hil.fmt import AstroPix4Readout
from astropix_hil.outputfile import OutputError, atomic_output, check_output

LOG = ("vDAC: {'vinj': 170}\n Namespace(name='x')\n"
       "0\tb'bcbce050fecd067cc500bcbcbcbcbcbcffff'\n")
HIT = bytes.fromhex("bcbce050fecd067cc500bcbcbcbcbcbcffff")


@pytest.fixture
def apx(tmp_path):
    path = tmp_path / "run.apx"
    write_apx(path, [AstroPix4Readout(HIT, i, i) for i in range(5)])
    return path


def run(argv: list[str]) -> int | None:
    """The command's exit status; None if it raised (the CLI's catch-all is not ours)."""
    try:
        return main(argv)
    except Exception:
        return None


def test_atomic_output_renames_a_complete_file_and_removes_a_failed_one(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(path, force=True) as temporary:
        assert os.path.dirname(temporary) == str(tmp_path)
        with open(temporary, "w") as stream:
            stream.write("half")
        raise RuntimeError("the conversion failed")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.csv"]
    with atomic_output(path, force=True) as temporary:
        with open(temporary, "w") as stream:
            stream.write("new")
        assert path.read_text() == "old"  # not until it is complete
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["out.csv"]


def test_check_output_sees_the_input_through_symlinks_and_hard_links(tmp_path, apx):
    os.symlink(apx, tmp_path / "alias.apx")
    os.link(apx, tmp_path / "hard.apx")
    for same in (apx, tmp_path / "alias.apx", tmp_path / "hard.apx",
                 tmp_path / "." / "run.apx"):
        with pytest.raises(OutputError, match="is the input file"):
            check_output(same, force=True, inputs=[apx])
    with pytest.raises(OutputError, match="exists; use --force"):
        check_output(tmp_path / "alias.apx", inputs=[])
    check_output(tmp_path / "new.csv", inputs=[apx])


@pytest.mark.parametrize("form", ["same", "symlink", "hardlink"])
def test_convert_refuses_to_write_over_its_input(tmp_path, apx, capsys, form):
    before = apx.read_bytes()
    output = {"same": apx, "symlink": tmp_path / "link.csv", "hardlink": tmp_path / "h.csv"}[form]
    if form == "symlink":
        os.symlink(apx, output)
    elif form == "hardlink":
        os.link(apx, output)
    assert main(["convert", str(apx), "-o", str(output), "--force"]) == 1
    err = capsys.readouterr().err
    assert "is the input file" in err and len(err.splitlines()) == 1
    assert apx.read_bytes() == before


def test_convert_and_import_log_refuse_an_existing_output_without_force(tmp_path, apx, capsys):
    csv = tmp_path / "run.csv"
    csv.write_text("precious")
    assert main(["convert", str(apx), "-o", str(csv)]) == 1
    assert "exists; use --force" in capsys.readouterr().err and csv.read_text() == "precious"
    assert main(["convert", str(apx), "-o", str(csv), "--force"]) == 0
    assert csv.read_text().count("\n") == 2 + 5
    log, out = tmp_path / "old.log", tmp_path / "old.apx"
    log.write_text(LOG)
    out.write_bytes(b"precious")
    assert main(["import-log", str(log), "-o", str(out)]) == 1
    assert "exists; use --force" in capsys.readouterr().err and out.read_bytes() == b"precious"
    assert main(["import-log", str(log), "-o", str(out), "--force"]) == 0
    assert len(read_hits(out)) == 1


def test_recv_refuses_an_existing_csv_without_force(tmp_path, capsys):
    csv = tmp_path / "hits.csv"
    csv.write_text("precious")
    listen = ["recv", "--group", "239.255.0.77", "--port", "45977", "--interface", "127.0.0.1",
              "--duration", "0.1", "--quiet", "--csv", str(csv)]
    assert main(listen) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "exists; use --force" in err[0]
    assert csv.read_text() == "precious"
    assert main([*listen, "--force"]) == 0
    assert csv.read_text() == ""  # this run heard nothing: no old hits are left to mislead


def test_recv_does_not_overwrite_a_csv_made_after_its_check(tmp_path):
    csv = tmp_path / "hits.csv"
    csv.write_text("precious")  # made between recv's check and its opening the file
    args = build_parser(["recv"]).parse_args(["recv", "--csv", str(csv)])
    with pytest.raises(FileExistsError):
        Monitor(args, io.StringIO())
    assert csv.read_text() == "precious"


def test_import_log_refuses_to_replace_the_log(tmp_path, capsys):
    log = tmp_path / "run.log"
    log.write_text(LOG)
    assert main(["import-log", str(log), "-o", str(log), "--force"]) == 1
    assert "is the input file" in capsys.readouterr().err and log.read_text() == LOG


def test_a_failed_import_log_leaves_no_apx(tmp_path):
    log = tmp_path / "bad.log"
    log.write_text(LOG + "9 no tab here\n")
    assert run(["import-log", str(log)]) != 0
    assert os.listdir(tmp_path) == ["bad.log"]


def test_a_failed_convert_leaves_no_half_file(tmp_path, apx, monkeypatch):
    from astropix_hil.cli import convert

    real = convert.write_hits_csv

    def full_disk(stream, chunks, header=None):
        real(stream, chunks, header)
        stream.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(convert, "write_hits_csv", full_disk)
    assert main(["convert", str(apx), "-o", str(tmp_path / "run.csv")]) == 1
    assert sorted(os.listdir(tmp_path)) == ["run.apx"]


def test_convert_to_npy_names_the_file_numpy_wrote(tmp_path, apx, capsys):
    assert main(["convert", str(apx), "--format", "npy", "-o", str(tmp_path / "hits")]) == 0
    assert capsys.readouterr().err.strip().endswith(f"written to {tmp_path / 'hits.npy'}")
    assert np.array_equal(np.load(tmp_path / "hits.npy"), read_hits(apx))
    assert sorted(os.listdir(tmp_path)) == ["hits.npy", "run.apx"]


def test_emulate_refuses_one_file_for_both_outputs(tmp_path, capsys):
    path = tmp_path / "sim.apx"
    assert main(["emulate", "--readouts", "2", "--out", str(path), "--truth", str(path)]) == 1
    assert "one file" in capsys.readouterr().err and not path.exists()


def test_a_daq_that_fails_before_its_run_leaves_no_file_behind(tmp_path):
    out = tmp_path / "run.apx"
    # An interface address this host does not have: the sender fails after the file exists.
    argv = ["daq", "--readouts", "3", "--out", str(out), "--interface", "198.18.0.1"]
    assert main(argv) == 1
    assert not out.exists()
    assert main([*argv[:-2], "--no-multicast"]) == 0  # the retry is not blocked
    with ApxReader(out) as reader:
        assert len(list(reader)) == 3


def test_a_daq_with_a_bad_ttl_leaves_no_file_behind(tmp_path):
    out = tmp_path / "run.apx"
    try:
        run(["daq", "--readouts", "3", "--out", str(out), "--ttl", "999"])
    except SystemExit:
        pass  # refused as a usage error: fine too
    assert not out.exists()


def test_an_output_in_a_missing_directory_is_named_as_given(tmp_path, apx, capsys):
    output = tmp_path / "no" / "such" / "run.csv"
    assert main(["convert", str(apx), "-o", str(output)]) == 1
    err = capsys.readouterr().err
    assert f"{output}: cannot write here" in err and ".part" not in err
