"""The DAQ and a full disk: an error naming the file and the errno, an exact ``written``
count, a file cut after its last whole readout, recovery when space comes back, and the file
before the network (no monitor ever holds a readout the file could lose)."""

from __future__ import annotations

import json
import os
import warnings

import pytest

from astropix_hil.cli import main
from astropix_hil.daq import DaqOptions, DaqRun
from astropix_hil.fileio import ApxReader, ApxWriter

from .fulldisk import FullDisk
from .test_daq import RecordingSender, emulated_link


def file_ids(path) -> list[int]:
    """The readout ids of a file that must read back cleanly (no cut readout at its end)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ApxReader(path) as reader:
            return [r.readout_id for r in reader]


@pytest.fixture
def disk(tmp_path, monkeypatch):
    full = FullDisk(tmp_path, capacity=20_000)
    monkeypatch.setattr(os, "write", full)
    return full


def test_a_full_disk_ends_the_run_with_the_errno_and_the_exact_written_count(tmp_path, disk):
    path = tmp_path / "run.apx"
    sender = RecordingSender()
    result = DaqRun(emulated_link(), ApxWriter(path), sender,
                    DaqOptions(readouts=2000, idle_sleep=0, sync_interval=0.001,
                               max_backlog_bytes=50_000)).run()
    assert result.stopped_by == "error"
    assert str(path) in result.error and "ENOSPC" in result.error and "errno 28" in result.error
    ids = file_ids(path)  # the readout cut by the refused write is gone
    assert 0 < len(ids) == result.progress.written < result.progress.readouts
    assert ids == list(range(len(ids)))
    assert disk.refusals > 0 and result.progress.disk_errors > 0
    # What the monitors got is what the file holds, not one readout more.
    assert [r.readout_id for r in sender.readouts] == ids


def test_a_run_that_ends_with_unwritten_readouts_reports_the_error(tmp_path, disk):
    # The backlog bound is never reached: the run ends by its readout count, disk still full.
    path = tmp_path / "run.apx"
    result = DaqRun(emulated_link(), ApxWriter(path), None,
                    DaqOptions(readouts=500, idle_sleep=0)).run()
    assert result.stopped_by == "readouts"
    assert result.error is not None and "ENOSPC" in result.error
    assert f"{result.progress.written} readouts written" in result.error
    assert len(file_ids(path)) == result.progress.written < 500


def test_space_freed_mid_run_loses_nothing(tmp_path, disk):
    path = tmp_path / "run.apx"
    sender = RecordingSender()
    link = emulated_link()
    run = DaqRun(link, ApxWriter(path), sender,
                 DaqOptions(readouts=1500, idle_sleep=0, sync_interval=0.001))
    real_poll = link.poll_readout

    def poll(limit=None):
        if disk.refusals >= 5:
            disk.free(10 << 20)  # the operator makes room
        return real_poll(limit)

    link.poll_readout = poll
    result = run.run()
    assert disk.refusals >= 5 and result.progress.disk_errors >= 5
    assert result.error is None and result.stopped_by == "readouts"
    assert file_ids(path) == list(range(1500)) == [r.readout_id for r in sender.readouts]
    assert result.progress.written == 1500


def test_the_cli_on_a_full_disk_exits_1_with_one_line_and_an_exact_summary(tmp_path, disk,
                                                                            capsys):
    out = tmp_path / "run.apx"
    status = main(["daq", "--readouts", "800", "--out", str(out), "--no-multicast",
                   "--port", "apxemu://?seed=2&mode=poisson&rate=50000", "--json"])
    captured = capsys.readouterr()
    assert status == 1
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert len(errors) == 1 and str(out) in errors[0] and "ENOSPC" in errors[0]
    summary = json.loads(captured.out)
    assert summary["error"] is not None and "ENOSPC" in summary["error"]
    assert summary["written"] == len(file_ids(out)) < summary["readouts"]


class FileCheckingSender(RecordingSender):
    """Checks, as each readout is multicast, that the file already holds all of it."""

    def __init__(self, path) -> None:
        super().__init__()
        self.path = path
        self.sizes: list[tuple[int, int]] = []

    def send_readout(self, readout) -> None:
        self.sizes.append((readout.readout_id, os.stat(self.path).st_size))
        super().send_readout(readout)


def test_every_readout_is_in_the_file_before_it_is_multicast(tmp_path):
    path = tmp_path / "run.apx"
    sender = FileCheckingSender(path)
    result = DaqRun(emulated_link(rate="50000"), ApxWriter(path), sender,
                    DaqOptions(readouts=600, idle_sleep=0, sync_interval=60,
                               progress_interval=60)).run()
    assert result.error is None
    ends, offset = {}, None
    with ApxReader(path) as reader:
        offset = reader.data_offset
        for readout in reader:
            offset += len(readout.to_bytes())
            ends[readout.readout_id] = offset
    assert len(sender.sizes) == 600
    for readout_id, size in sender.sizes:
        assert size >= ends[readout_id], f"readout {readout_id} sent before it was written"


def test_a_disk_too_full_for_the_header_fails_naming_the_file_and_leaves_none(tmp_path,
                                                                             monkeypatch,
                                                                             capsys):
    monkeypatch.setattr(os, "write", FullDisk(tmp_path, capacity=10))
    out = tmp_path / "run.apx"
    assert main(["daq", "--readouts", "5", "--out", str(out), "--no-multicast"]) == 1
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "error" in line]
    assert len(err) == 1 and str(out) in err[0] and "Errno 28" in err[0]
    assert not out.exists()
