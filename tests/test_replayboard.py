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
    assert board.truth_exact  # nothing served was cut yet
    clock.now = 10**9
    assert board.process(read_request(Register.SPI_READ_FIFO, 4)) == recorded(5)[3].data()[:4]
    assert board.stats.bytes_cut == 6
    assert board.served == [recorded(5)[3]]
    # The DAQ got 4 bytes of a 10-byte readout: the recorded hits are no longer what it holds.
    assert not board.truth_exact
    board.process(FIFO)
    assert not board.truth_exact


def test_the_truth_is_exact_while_every_readout_goes_out_whole():
    board = ReplayBoard(recorded(3))
    board.release_spi_master()  # as the DAQ's start-up does
    served = [board.process(FIFO) for _ in range(4)]
    assert served[3] == b"\xff" * 2048 and board.stats.exhausted
    assert board.truth_exact


def replay_through_a_pty(apx, readouts: int, tmp_path) -> tuple[dict, dict]:
    """Serve ``apx`` with ``apx-hil board --replay`` on a pty, record it with ``apx-hil daq``;
    return the DAQ's and the board's JSON summaries (files: replayed.apx, truth.csv)."""
    board = subprocess.Popen([sys.executable, "-m", "astropix_hil", "board", "--pty",
                              "--replay", str(apx), "--speed", "inf", "--json",
                              "--truth", str(tmp_path / "truth.csv")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pty = board.stdout.readline().strip()
        daq = subprocess.run([sys.executable, "-m", "astropix_hil", "daq", "--port", pty,
                              "--readouts", str(readouts), "--out",
                              str(tmp_path / "replayed.apx"), "--no-multicast", "--json"],
                             capture_output=True, text=True, timeout=120)
        assert daq.returncode == 0, daq.stderr
    finally:
        board.terminate()
        out, err = board.communicate(timeout=60)
    assert board.returncode == 0, err
    return json.loads(daq.stdout), json.loads(out.splitlines()[-1])


def without_timestamps(hits: np.ndarray) -> np.ndarray:
    return hits[[n for n in hits.dtype.names if n != "timestamp"]]


def test_an_emulated_run_replayed_through_a_pty_gives_the_emulator_truth(
        emulated_run, emulated_truth, tmp_path):
    """Checked against hits known independently of the decoder: the emulator's record of the
    hits it generated (the run's readout ids count from 0, as the DAQ numbers them)."""
    with apx_open(emulated_run) as reader:
        original = list(reader)
    assert [r.readout_id for r in original] == list(range(len(original)))
    daq, board = replay_through_a_pty(emulated_run, len(original), tmp_path)
    assert daq["readouts"] == len(original)
    _, truth = read_hits_csv(emulated_truth)
    with apx_open(tmp_path / "replayed.apx") as replayed:
        assert [r.data() for r in replayed] == [r.data() for r in original]
    assert np.array_equal(without_timestamps(read_hits(tmp_path / "replayed.apx")),
                          without_timestamps(truth))
    _, board_truth = read_hits_csv(tmp_path / "truth.csv")
    assert np.array_equal(without_timestamps(board_truth), without_timestamps(truth))
    assert board["truth_hits"] == len(truth) and board["truth_exact"] is True


def test_a_real_run_replayed_through_a_pty_is_stored_byte_for_byte(real_apx, real_csv,
                                                                   tmp_path):
    daq, board = replay_through_a_pty(real_apx, 775, tmp_path)
    assert daq["readouts"] == 775
    with apx_open(real_apx) as original, apx_open(tmp_path / "replayed.apx") as replayed:
        assert [r.data() for r in replayed] == [r.data() for r in original]
    # The truth: the served readouts' hits, numbered as the DAQ numbers readouts, are those of
    # the AstroPix team's reference decoding of the run (its CSV), not of our own decoder.
    _, truth = read_hits_csv(tmp_path / "truth.csv")
    _, reference = read_hits_csv(real_csv)
    assert len(truth) == 776 and board["truth_exact"] is True
    assert np.array_equal(without_timestamps(truth), without_timestamps(reference))
