"""``apx-hil board --pty`` and ``apx-hil daq`` as separate processes over a real pseudo-terminal,
with a monitor (``apx-hil recv``) on multicast, in a network namespace of the test's own."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
import warnings

import numpy as np
import pytest

from astropix_hil.fileio import apx_open, read_hits
from astropix_hil.hitcsv import read_hits_csv

from .netns import Netns, made_netns

TIMEOUT = 60


@pytest.fixture
def ns():
    yield from made_netns()


class Lines:
    """Collects a process's stderr lines as they come (bounded waits, no blocking reads)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 20) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in reversed(self.lines):
                if (found := re.search(pattern, line)):
                    return found
            time.sleep(0.05)
        pytest.fail(f"no line matching {pattern!r} within {timeout} s: {self.lines[-5:]}")

    def text(self) -> str:
        self._thread.join(timeout=5)
        return "\n".join(self.lines)


def start_board(ns: Netns, *args: str) -> tuple[subprocess.Popen, str]:
    board = ns.apx_hil("board", "--pty", *args, "--json", stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    path = board.stdout.readline().strip()
    assert path.startswith("/dev/pts/"), (path, board.stderr.read() if board.poll() else "")
    return board, path


def start_recv(ns: Netns, *args: str) -> subprocess.Popen:
    proc = ns.apx_hil("recv", "--idle-exit", "3", "-q", "--json", *args,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ns.wait_udp_bound(proc)
    return proc


def stop_board(board: subprocess.Popen) -> dict:
    board.send_signal(signal.SIGTERM)
    out, err = board.communicate(timeout=TIMEOUT)
    assert board.returncode == 0, err
    return json.loads(out.splitlines()[-1])


def columns_but_timestamp(hits: np.ndarray) -> np.ndarray:
    names = [n for n in hits.dtype.names if n != "timestamp"]
    return hits[names]


def test_every_true_hit_reaches_the_file_and_the_monitor(ns, tmp_path):
    truth_csv, out, seen = tmp_path / "truth.csv", tmp_path / "run.apx", tmp_path / "seen.csv"
    board, pty = start_board(ns, "--seed", "4", "--mode", "poisson", "--rate", "20000",
                             "--truth", str(truth_csv))
    recv = start_recv(ns, "--csv", str(seen))
    daq = ns.apx_hil("daq", "--port", pty, "--readouts", "400", "--out", str(out),
                     "--interface", "127.0.0.1", "--json", stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)
    daq_out, daq_err = daq.communicate(timeout=TIMEOUT)
    assert daq.returncode == 0, daq_err
    summary = json.loads(daq_out)
    board_stats = stop_board(board)
    recv_out, recv_err = recv.communicate(timeout=TIMEOUT)
    assert recv.returncode == 0, recv_err
    monitor = json.loads(recv_out.splitlines()[-1])

    assert summary["readouts"] == 400 == board_stats["readouts_served"]
    assert board_stats["truth_exact"]
    hits = read_hits(out)
    _, truth = read_hits_csv(truth_csv)
    assert len(truth) > 1000
    assert np.array_equal(columns_but_timestamp(hits), columns_but_timestamp(truth))
    _, monitored = read_hits_csv(seen)
    assert np.array_equal(monitored, hits)  # timestamps too: the monitor saw the file
    assert monitor["totals"]["readouts_received"] == 400
    assert monitor["totals"]["readouts_lost"] == 0 == monitor["totals"]["datagrams_lost"]


def test_sigkill_of_the_daq_keeps_every_readout_reported_written(ns, tmp_path):
    out = tmp_path / "run.apx"
    board, pty = start_board(ns, "--seed", "5", "--mode", "poisson", "--rate", "50000")
    daq = ns.apx_hil("daq", "--port", pty, "--duration", "60", "--out", str(out),
                     "--no-multicast", "--progress-interval", "0.2",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = Lines(daq)
    lines.wait_for(r"written [1-9]\d{2,}")  # at least 100 readouts reported written
    reported = int(lines.wait_for(r"written (\d+)").group(1))
    daq.send_signal(signal.SIGKILL)
    daq.wait(timeout=TIMEOUT)
    last = [int(m.group(1)) for line in lines.lines if (m := re.search(r"written (\d+)", line))]
    reported = max([reported, *last])
    stop_board(board)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the readout being written may be cut: that is fine
        with apx_open(out) as reader:
            ids = [r.readout_id for r in reader]
    assert len(ids) >= reported > 0
    assert ids == list(range(len(ids)))


def test_closing_the_pty_ends_the_daq_with_a_clear_error_and_a_closed_file(ns, tmp_path):
    out = tmp_path / "run.apx"
    board, pty = start_board(ns, "--seed", "6", "--mode", "poisson", "--rate", "20000")
    daq = ns.apx_hil("daq", "--port", pty, "--duration", "60", "--out", str(out),
                     "--no-multicast", "--reply-timeout", "0.5", "--json",
                     "--progress-interval", "0.2",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = Lines(daq)
    lines.wait_for(r"readouts [1-9]")  # the DAQ is taking data
    board.kill()  # the pty's master side closes under the DAQ
    board.wait(timeout=TIMEOUT)
    start = time.monotonic()
    daq.wait(timeout=TIMEOUT)
    assert time.monotonic() - start < 10
    assert daq.returncode == 1
    daq_err = lines.text()
    assert f"{pty}: " in daq_err and "error" in daq_err
    summary = json.loads(daq.stdout.read())
    assert summary["stopped_by"] == "error"
    with apx_open(out) as reader:  # complete, closed: no truncation warning
        assert len(list(reader)) == summary["readouts"] > 0


def test_sigterm_stops_the_daq_cleanly_with_every_readout_in_a_closed_file(ns, tmp_path):
    out = tmp_path / "run.apx"
    board, pty = start_board(ns, "--seed", "8", "--mode", "poisson", "--rate", "20000")
    daq = ns.apx_hil("daq", "--port", pty, "--duration", "60", "--out", str(out),
                     "--no-multicast", "--progress-interval", "0.2", "--json",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = Lines(daq)
    lines.wait_for(r"readouts [1-9]\d{2,}")
    daq.send_signal(signal.SIGTERM)
    daq.wait(timeout=TIMEOUT)
    assert daq.returncode == 0, lines.text()
    summary = json.loads(daq.stdout.read())
    stop_board(board)
    assert summary["stopped_by"] == "stop" and summary["error"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a closed file: no truncated readout at its end
        with apx_open(out) as reader:
            assert len(list(reader)) == summary["readouts"] == summary["written"]


def test_sigkill_of_the_daq_loses_nothing_a_monitor_saw(ns, tmp_path):
    # The file before the network: whatever a monitor received, the killed DAQ's file holds.
    out, seen = tmp_path / "run.apx", tmp_path / "seen.csv"
    recv = start_recv(ns, "--csv", str(seen))
    daq = ns.apx_hil("daq", "--port", "apxemu://?seed=3&mode=poisson&rate=50000",
                     "--duration", "60", "--out", str(out), "--progress-interval", "0.5",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = Lines(daq)
    lines.wait_for(r"readouts [1-9]\d{3,}")  # well under way, with batches in flight
    daq.send_signal(signal.SIGKILL)
    daq.wait(timeout=TIMEOUT)
    recv_out, recv_err = recv.communicate(timeout=TIMEOUT)
    assert recv.returncode == 0, recv_err
    monitor = json.loads(recv_out.splitlines()[-1])
    assert monitor["totals"]["readouts_received"] > 1000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the batch being written may be cut: that is fine
        in_file = {tuple(row) for row in read_hits(out).tolist()}
    _, monitored = read_hits_csv(seen)
    assert len(monitored) > 1000
    missing = [row for row in monitored.tolist() if tuple(row) not in in_file]
    assert not missing, f"{len(missing)} hits a monitor saw are not in the file"
