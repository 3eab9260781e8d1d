"""The virtual board's truth only when asked: none by default (memory stays flat at any run
length), in memory with ``truth=True``, or streamed to a CSV file read by read (the ``truth``
option, ``apxemu://?truth=PATH`` and ``apx-hil board --truth``)."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
import serial

import astropix_hil.urlhandler  # noqa: F401 - registers apxemu://
from astropix_hil.boards.nexys.board import VirtualBoard
from astropix_hil.boards.nexys.link import NexysLink
from astropix_hil.cli import main
from astropix_hil.errors import EmulatorError
from astropix_hil.hitcsv import read_hits_csv

from .test_board import MS, FakeClock, daq_poll


def serve(b: VirtualBoard, clock: FakeClock, reads: int) -> int:
    served = 0
    for _ in range(reads):
        clock.now += MS
        served += daq_poll(b) is not None
    return served


def grown_bytes(b: VirtualBoard, clock: FakeClock, reads: int) -> int:
    """Heap growth over ``reads`` more reads, after a warm-up."""
    serve(b, clock, 200)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        serve(b, clock, reads)
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_board_asked_for_no_truth_keeps_none_and_its_memory_stays_flat():
    clock = FakeClock()
    b = VirtualBoard.from_options(seed=1, mode="poisson", rate=50_000, clock=clock,
                                  chunk_hits=2000)
    b.release_spi_master()  # as the DAQ's start-up does
    grown = grown_bytes(b, clock, 1500)
    # 1.5 s of chip time at 50k hits/s: ~75k hits, ~3.5 MB of truth records if they were kept
    # (the chip's batches of 2000 hits are all the memory a board needs).
    assert b.stats.hits_served > 50_000
    assert grown < 500_000, f"memory grew by {grown} bytes"
    with pytest.raises(EmulatorError, match="truth=True"):
        b.truth()


def test_a_streamed_truth_is_the_in_memory_truth_and_costs_no_memory(tmp_path):
    clocks = FakeClock(), FakeClock()
    options = {"seed": 2, "mode": "poisson", "rate": 50_000, "anomalies": "all=0.05",
               "chunk_hits": 2000}
    kept = VirtualBoard.from_options(clock=clocks[0], truth=True, **options)
    streamed = VirtualBoard.from_options(clock=clocks[1], truth=tmp_path / "t.csv", **options)
    for board in (kept, streamed):
        board.release_spi_master()  # as the DAQ's start-up does
    serve(kept, clocks[0], 200)
    grown = grown_bytes(streamed, clocks[1], 1500)
    serve(kept, clocks[0], 1500)
    assert streamed.close_truth() == kept.stats.hits_served == len(kept.truth()) > 30_000
    assert grown < 500_000, f"memory grew by {grown} bytes"
    expected = io.StringIO()
    kept.write_truth_csv(expected)
    assert (tmp_path / "t.csv").read_text() == expected.getvalue()


def test_apxemu_streams_the_truth_of_what_the_daq_read(tmp_path):
    path = tmp_path / "truth.csv"
    port = serial.serial_for_url(f"apxemu://?seed=4&mode=poisson&rate=20000&truth={path}",
                                 timeout=0.05)
    link = NexysLink(port)
    link.enable_readout()  # as the DAQ's start-up does
    polls = 0
    while port.board.stats.readouts_served < 30 and polls < 100_000:
        link.poll_readout()
        polls += 1
    link.close()
    _, truth = read_hits_csv(path)
    assert len(truth) == port.board.stats.hits_served > 0
    assert truth["readout_id"].max() == port.board.stats.readouts_served - 1
    with pytest.raises(serial.SerialException, match="exists"):
        serial.serial_for_url(f"apxemu://?seed=4&truth={path}")


def test_apxemu_keeps_the_truth_in_memory_only_when_asked():
    assert serial.serial_for_url("apxemu://?seed=1&keep_truth=1").board.truth().size == 0
    with pytest.raises(EmulatorError):
        serial.serial_for_url("apxemu://?seed=1").board.truth()


def test_board_command_refuses_an_existing_truth_file_without_force(tmp_path, capsys):
    truth = tmp_path / "truth.csv"
    truth.write_text("precious")
    assert main(["board", "--pty", "--truth", str(truth), "--duration", "0.01"]) == 1
    assert "exists; use --force" in capsys.readouterr().err
    assert truth.read_text() == "precious"
    assert main(["board", "--pty", "--truth", str(truth), "--duration", "0.01", "--force",
                 "--json"]) == 0
    assert truth.read_text().startswith("chip_id,") and np.size(read_hits_csv(truth)[1]) == 0
