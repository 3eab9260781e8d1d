"""``apx-hil board --profile astep --pty`` and ``apx-hil daq --profile astep`` as separate
processes over a pseudo-terminal, with a monitor on multicast, in a namespace of the test's."""

from __future__ import annotations

import json
import signal
import subprocess

import numpy as np
import pytest
import serial

from astropix_hil.astep_files import read_astep_csv, read_hits
from astropix_hil.fileio import read_header

from .astep_reference import reference_hits
from .netns import Netns, made_netns

TIMEOUT = 90


@pytest.fixture
def ns():
    yield from made_netns()


def start_board(ns: Netns, *args: str) -> tuple[subprocess.Popen, str]:
    board = ns.apx_hil("board", "--profile", "astep", "--pty", *args, "--json",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    path = board.stdout.readline().strip()
    assert path.startswith("/dev/pts/"), (path, board.stderr.read() if board.poll() else "")
    return board, path


def stop_board(board: subprocess.Popen) -> dict:
    board.send_signal(signal.SIGTERM)
    out, err = board.communicate(timeout=TIMEOUT)
    assert board.returncode == 0, err
    return json.loads(out.splitlines()[-1])


def served_after_flush(truth: np.ndarray, header: dict) -> np.ndarray:
    """The truth of the reads the DAQ stored: the start-up flush's reads are not stored."""
    flush = header["astep"]["flush_reads"]
    kept = truth[truth["readout_id"] >= flush].copy()
    kept["readout_id"] -= flush
    return kept


def but(hits: np.ndarray, *drop: str) -> np.ndarray:
    return hits[[n for n in hits.dtype.names if n not in drop]]


def test_astep_daq_over_a_pty_equals_the_board_truth_with_fifo_full_and_stray_bytes(
        ns, tmp_path):
    truth_csv, out = tmp_path / "truth.csv", tmp_path / "run.apx"
    seen, raw = tmp_path / "seen.csv", tmp_path / "run.bin"
    board, pty = start_board(ns, "--layers", "3", "--chips", "4", "--seed", "11",
                             "--rate", "40000", "--anomalies",
                             "burst=0.002,stray_byte=0.01,wrong_length=0.005",
                             # Bursts well over the 16 kB FIFO, often: it fills however fast
                             # this machine's DAQ reads.
                             "--option", "burst_hits=4000", "--truth", str(truth_csv))
    recv = ns.apx_hil("recv", "--profile", "astep", "--idle-exit", "15", "-q", "--json",
                      "--csv", str(seen), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True)
    ns.wait_udp_bound(recv)
    daq = ns.apx_hil("daq", "--profile", "astep", "--port", pty, "--layers", "3", "--chips",
                     "4", "--reset-delay", "0.05", "--readouts", "300", "--out", str(out),
                     "--interface", "127.0.0.1", "--json", stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    daq_out, daq_err = daq.communicate(timeout=TIMEOUT)
    assert daq.returncode == 0, daq_err
    summary = json.loads(daq_out)
    stats = stop_board(board)
    recv_out, recv_err = recv.communicate(timeout=TIMEOUT)
    assert recv.returncode == 0, recv_err

    header = read_header(out)
    assert header["readout_uid"] == 4100 and header["astep"]["fpga_ts_byteorder"] == "big", header
    assert summary["readouts"] == 300
    assert stats["reads_served"] == 300 + header["astep"]["flush_reads"]
    assert stats["fifo_full"] > 0 and stats["stray_bytes"] > 0  # the anomalies happened
    assert stats["wrong_length_hits"] > 0
    hits = read_hits(out)
    _, truth = read_astep_csv(truth_csv)
    truth = served_after_flush(truth, header)
    assert len(truth) > 5000
    assert np.array_equal(but(hits, "timestamp"), but(truth, "timestamp"))
    assert summary["hits"] == len(hits)
    # The monitor received the same readouts, typed by the run header.
    assert seen.exists(), (recv_out, recv_err)
    _, monitored = read_astep_csv(seen)
    assert np.array_equal(monitored, hits)
    # The team's .bin of the run decodes, by the spec's rules, to the same hits.
    convert = ns.apx_hil("convert", str(out), "--format", "bin", "-o", str(raw),
                         stderr=subprocess.PIPE, text=True)
    assert convert.wait(timeout=TIMEOUT) == 0, convert.stderr.read()
    ref = reference_hits(raw.read_bytes())
    names = list(ref[0])
    assert [tuple(int(h[n]) for n in names) for h in hits] == \
        [tuple(r[n] for n in names) for r in ref]


def test_the_team_pyserial_call_finds_registers_and_byte_counts_on_the_pty(ns):
    board, pty = start_board(ns, "--seed", "3", "--rate", "50000")
    try:
        port = serial.Serial(port=pty, baudrate=921600, timeout=3)  # as rfg/io/uart.py opens
        port.write(bytes.fromhex("06000400" "06040400"))
        reply = port.read(8)
        assert int.from_bytes(reply[:4], "little") == 0xAB04
        assert int.from_bytes(reply[4:], "little") >= 25112401
        # Readout on (layer 0: no reset, no hold, autoread), then the read-size/read loop.
        port.write(bytes.fromhex("05af040050000000" "0576020013 00".replace(" ", "")
                                 + "011f010008"))
        got = b""
        for _ in range(200):
            port.write(bytes.fromhex("06a40400"))
            size = int.from_bytes(port.read(4), "little")
            if size:
                port.write(bytes([0x02, 0xA3]) + size.to_bytes(2, "little"))
                got += port.read(size)
                if len(got) > 1000:
                    break
        assert len(got) > 1000 and got[0] == 0x0D and got[1] == 1  # v4 frames, layer 1
        # The layer counters: one frame per 14 bytes read (CHIP_VERSION stays 3, as main.py
        # leaves it, so every v4 frame is also a wrong-length one, spec §7 #7).
        port.write(bytes.fromhex("06250400" "063d0400"))
        counters = port.read(8)
        frames = int.from_bytes(counters[:4], "little")
        assert frames >= len(got) // 14 and int.from_bytes(counters[4:], "little") == frames
        port.close()
    finally:
        stats = stop_board(board)
    assert stats["read_size_polls"] > 0
