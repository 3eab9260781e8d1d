"""The DAQ runner in one process: the loop, durability, stopping, the header, the CLI."""

from __future__ import annotations

import errno
import json
import os
import threading
import time

import numpy as np
import pytest
import serial

import astropix_hil.urlhandler  # noqa: F401 - registers apxemu://
from astropix_hil.boards.nexys.board import VirtualBoard
from astropix_hil.boards.nexys.link import NexysLink
from astropix_hil.boards.nexys.protocol import SpiConfig
from astropix_hil.cli import main
from astropix_hil.cli.daq import group_and_port, read_config, send_interface
from astropix_hil.daq import DaqOptions, DaqRun, DiskBacklogError, run_header
from astropix_hil.fileio import ApxWriter, apx_open, read_hits


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        self.now += 200_000  # the board's time moves 0.2 ms per question
        return self.now


class RecordingSender:
    """Stands in for the multicast sender: keeps what it was given."""

    def __init__(self, fail: bool = False) -> None:
        self.readouts = []
        self.closed = False

    def send_readout(self, readout) -> None:
        self.readouts.append(readout)

    def close(self) -> None:
        self.closed = True


def emulated_link(seed: int = 11, rate: str = "20000") -> NexysLink:
    port = serial.serial_for_url(f"apxemu://?seed={seed}&mode=poisson&rate={rate}",
                                 timeout=0.05)
    port.board = VirtualBoard.from_options(seed=seed, mode="poisson", rate=rate,
                                           clock=FakeClock(), pull_interval=0, truth=True)
    return NexysLink(port)


def test_run_writes_and_sends_every_readout_with_consecutive_ids(tmp_path):
    link = emulated_link()
    board = link.port.board
    sender = RecordingSender()
    path = tmp_path / "run.apx"
    result = DaqRun(link, ApxWriter(path, {"run": "t"}), sender,
                    DaqOptions(readouts=200, idle_sleep=0)).run()
    assert result.stopped_by == "readouts" and result.error is None
    with apx_open(path) as reader:
        readouts = list(reader)
    assert [r.readout_id for r in readouts] == list(range(200))
    assert [r.to_bytes() for r in readouts] == [r.to_bytes() for r in sender.readouts]
    assert sender.closed
    hits = read_hits(path)
    assert result.progress.hits == len(hits) and result.progress.hits_exact
    truth = board.truth(timestamps=[r.timestamp for r in readouts])
    assert np.array_equal(hits, truth[truth["readout_id"] < 200])
    assert result.progress.written == 200


def test_stop_from_another_thread_closes_the_file(tmp_path):
    link = emulated_link()
    path = tmp_path / "run.apx"
    run = DaqRun(link, ApxWriter(path), None, DaqOptions(idle_sleep=0))
    timer = threading.Timer(0.3, run.stop)
    timer.start()
    result = run.run()
    assert result.stopped_by == "stop"
    with apx_open(path) as reader:
        assert len(list(reader)) == result.progress.readouts > 0


def test_a_disk_that_refuses_writes_loses_nothing(tmp_path, monkeypatch):
    link = emulated_link()
    path = tmp_path / "run.apx"
    writer = ApxWriter(path)
    real_write = os.write
    refusals = {"left": 3}

    def flaky(fd, data):
        if fd == writer._fd and refusals["left"]:
            refusals["left"] -= 1
            raise OSError(errno.EIO, "Input/output error")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", flaky)
    result = DaqRun(link, writer, None,
                    DaqOptions(readouts=300, idle_sleep=0, sync_interval=0.001)).run()
    assert result.progress.disk_errors == 3
    with apx_open(path) as reader:
        assert [r.readout_id for r in reader] == list(range(300))


def test_a_disk_that_never_recovers_stops_the_run_with_an_error(tmp_path, monkeypatch):
    link = emulated_link()
    writer = ApxWriter(tmp_path / "run.apx")

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    result = DaqRun(link, writer, None,
                    DaqOptions(readouts=10_000, idle_sleep=0, sync_interval=0.001,
                               max_backlog_bytes=2000)).run()
    assert result.stopped_by == "error"
    assert "ENOSPC" in result.error and "bytes were waiting" in result.error
    assert issubclass(DiskBacklogError, OSError)


def test_a_link_failure_ends_the_run_with_the_error_and_a_readable_file(tmp_path):
    from astropix_hil.boards.nexys.link import open_link

    link = open_link("apxemu://?seed=1&mode=poisson&rate=20000&disconnect_after=50")
    link.enable_readout()
    deadline = time.monotonic() + 10
    while link.read_status() & SpiConfig.READ_FIFO_EMPTY and time.monotonic() < deadline:
        time.sleep(0.002)  # until the board has data, so that the run reads some
    path = tmp_path / "run.apx"
    result = DaqRun(link, ApxWriter(path), None, DaqOptions(idle_sleep=0)).run()
    assert result.stopped_by == "error"
    assert "disappeared" in result.error
    with apx_open(path) as reader:
        assert len(list(reader)) == result.progress.readouts > 0


def test_run_header_holds_the_run_metadata(chip_config):
    config = read_config(chip_config)
    header = run_header("apxemu://", {"duration": 5}, config)
    assert header["configuration"]["astropix4"]["geometry"] == {"cols": 16, "rows": 35}
    assert header["software"]["name"] == "astropix-hil"
    assert header["args"] == {"duration": 5}
    assert header["start_time_utc"].endswith("Z")
    json.dumps(header)


def test_option_parsing_names_bad_values():
    assert group_and_port("239.1.1.1:5007") == ("239.1.1.1", 5007)
    import argparse

    for bad in ("239.1.1.1", "10.0.0.1:5007", "239.1.1.1:70000", "x:1"):
        with pytest.raises(argparse.ArgumentTypeError, match="GROUP:PORT"):
            group_and_port(bad)
    assert send_interface(None, "apxemu://?seed=1") == "127.0.0.1"
    assert send_interface(None, "/dev/ttyUSB0") is None
    assert send_interface("eth1", "apxemu://") == "eth1"


def test_cli_runs_the_embedded_default_in_one_process(tmp_path, capsys):
    out = tmp_path / "run.apx"
    status = main(["daq", "--port", "apxemu://?seed=2&mode=poisson&rate=5000",
                   "--readouts", "50", "--out", str(out), "--no-multicast", "--json"])
    assert status == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["readouts"] == 50 and summary["stopped_by"] == "readouts"
    assert "readouts 50" in captured.err
    with apx_open(out) as reader:
        assert reader.header["port"].startswith("apxemu://")
        assert reader.header["args"]["readouts"] == 50
        assert len(list(reader)) == 50
    assert summary["hits"] == len(read_hits(out))


def test_cli_refuses_to_overwrite_a_run(tmp_path, capsys):
    out = tmp_path / "run.apx"
    out.write_bytes(b"precious")
    assert main(["daq", "--readouts", "1", "--out", str(out), "--no-multicast"]) == 1
    assert "exists; use --force" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"


def test_cli_config_that_is_not_yaml_is_refused(tmp_path, capsys):
    bad = tmp_path / "chip.yml"
    bad.write_text("a: [1, 2\n")
    assert main(["daq", "--readouts", "1", "--out", str(tmp_path / "r.apx"),
                 "--config", str(bad), "--no-multicast"]) == 1
    assert "not valid YAML" in capsys.readouterr().err


def test_hit_counting_over_its_budget_skips_batches_and_says_so(tmp_path):
    from astropix_hil.fmt import AstroPix4Readout

    word = bytes.fromhex("e0401eac0dccc200")
    readouts = [AstroPix4Readout(b"\xbc\xbc" + word + b"\xbc" * 6, i, i) for i in range(10)]
    run = DaqRun(emulated_link(), ApxWriter(tmp_path / "r.apx"), None, DaqOptions())
    run._batch = readouts[:5]
    run._count_hits()  # within budget: counted
    run._counting.result(timeout=10)
    run.stage_s["hits"] = 1e6  # now far over budget
    run._batch = readouts[5:8]
    run._count_hits()
    assert run.readouts_uncounted == 3
    run._batch = readouts[8:]
    run._count_hits(final=True)  # the last batch is always counted
    assert run.hits == 7
    progress = run._progress()
    assert not progress.hits_exact and progress.readouts_uncounted == 3
    assert "hits >= 7 (counted in" in progress.line()
    run.writer.close()


def test_linger_keeps_the_sender_open_after_the_run(tmp_path):
    import time as _time

    class TimedSender(RecordingSender):
        def close(self) -> None:
            self.closed_at = _time.monotonic()
            super().close()

    sender = TimedSender()
    run = DaqRun(emulated_link(), ApxWriter(tmp_path / "r.apx"), sender,
                 DaqOptions(readouts=5, idle_sleep=0, linger=0.3))
    result = run.run()
    ended = _time.monotonic()
    assert result.stopped_by == "readouts" and sender.closed
    assert ended - sender.closed_at < 0.2
    assert sender.closed_at - run._start >= 0.3


def test_without_hit_counting_the_progress_says_hits_were_not_counted(tmp_path):
    result = DaqRun(emulated_link(), ApxWriter(tmp_path / "r.apx"), None,
                    DaqOptions(readouts=20, idle_sleep=0, count_hits=False)).run()
    assert result.progress.hits == 0
    assert not result.progress.hits_exact
    assert result.progress.readouts_uncounted == 20
    assert "hits >= 0 (counted in 0 readouts)" in result.progress.line()
