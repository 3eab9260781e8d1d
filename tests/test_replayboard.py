"""The board that serves a recorded run: pace, status bits, resets, and a real run replayed
through a pty to the DAQ."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from astropix_hil.boards.nexys.protocol import Register, SpiConfig, read_request, write_request
from astropix_hil.boards.nexys.replay import FULL_BACKLOG, ReplayBoard
from astropix_hil.fileio import apx_open, read_hits
from astropix_hil.fmt import AstroPix4Readout
from astropix_hil.hitcsv import read_hits_csv

STATUS = read_request(Register.SPI_CONFIG, 1)
FIFO = read_request(Register.SPI_READ_FIFO, 2048)


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def recorded(n: int, gap_ns: int = 1_000_000) -> list[AstroPix4Readout]:
    return [AstroPix4Readout(bytes([0xBC, 0xE0, i % 256, 1, 2, 3, 4, 5, 6, 0xBC]), i,
                             10**18 + i * gap_ns) for i in range(n)]


def test_nothing_is_served_while_the_spi_master_is_held_in_reset():
    board = ReplayBoard(recorded(2))
    assert board.process(STATUS) == b"\x92"  # power-up: master in reset, FIFO empty
    assert board.process(FIFO) == b"\xff" * 2048
    board.process(write_request(Register.SPI_CONFIG, b"\x00"))
    assert board.process(FIFO).rstrip(b"\xff") == recorded(2)[0].data()


def test_readouts_come_at_their_recorded_pace_scaled():
    clock = Clock()
    board = ReplayBoard(recorded(3), speed=2.0, clock=clock)
    board.release_spi_master()
    assert board.process(STATUS)[0] & SpiConfig.READ_FIFO_EMPTY == 0  # the first is due at 0
    assert board.process(FIFO)[:10] == recorded(3)[0].data()
    assert board.process(STATUS)[0] & SpiConfig.READ_FIFO_EMPTY  # next due at 0.5 ms
    assert board.process(FIFO) == b"\xff" * 2048
    clock.now = 500_000
    assert board.process(FIFO).rstrip(b"\xff") == recorded(3)[1].data()
    assert board.stats.readouts_served == 2 and board.stats.empty_reads == 1
    assert not board.stats.exhausted


def test_as_fast_as_asked_with_the_full_bit_while_a_backlog_lasts():
    board = ReplayBoard(recorded(FULL_BACKLOG + 2))
    board.release_spi_master()
    assert board.process(STATUS)[0] & SpiConfig.READ_FIFO_FULL
    served = [board.process(FIFO).rstrip(b"\xff") for _ in range(FULL_BACKLOG + 2)]
    assert served == [r.data() for r in recorded(FULL_BACKLOG + 2)]
    assert board.stats.exhausted
    assert board.process(STATUS)[0] & SpiConfig.READ_FIFO_EMPTY


def test_a_read_fifo_reset_drops_what_is_due_and_short_reads_cut():
    clock = Clock()
    board = ReplayBoard(recorded(5), speed=1.0, clock=clock)
    board.release_spi_master()
    clock.now = 2_500_000  # three readouts due
    board.process(write_request(Register.SPI_CONFIG, bytes([SpiConfig.READ_FIFO_RESET, 0])))
    assert board.stats.readouts_reset == 3 and board.stats.fifo_resets == 1
    clock.now = 10**9
    assert board.process(read_request(Register.SPI_READ_FIFO, 4)) == recorded(5)[3].data()[:4]
    assert board.stats.bytes_cut == 6
    assert board.served == [recorded(5)[3]]


def test_a_real_run_replayed_through_a_pty_is_stored_byte_for_byte(real_apx, tmp_path):
    board = subprocess.Popen([sys.executable, "-m", "astropix_hil", "board", "--pty",
                              "--replay", str(real_apx), "--speed", "inf", "--json",
                              "--truth", str(tmp_path / "truth.csv")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pty = board.stdout.readline().strip()
        out = tmp_path / "replayed.apx"
        daq = subprocess.run([sys.executable, "-m", "astropix_hil", "daq", "--port", pty,
                              "--readouts", "775", "--out", str(out), "--no-multicast",
                              "--json"], capture_output=True, text=True, timeout=120)
        assert daq.returncode == 0, daq.stderr
        assert json.loads(daq.stdout)["readouts"] == 775
    finally:
        board.terminate()
        board.communicate(timeout=60)
    with apx_open(real_apx) as original, apx_open(out) as replayed:
        assert [r.data() for r in replayed] == [r.data() for r in original]
    # The truth: the served readouts' hits, numbered as the DAQ numbers readouts.
    _, truth = read_hits_csv(tmp_path / "truth.csv")
    hits = read_hits(out)
    names = [n for n in hits.dtype.names if n != "timestamp"]
    assert len(truth) == 776 and np.array_equal(truth[names], hits[names])
