"""``apx-hil monitor`` as a separate process: live against ``apx-hil daq`` (emulated board,
multicast on loopback in a network namespace of the test's own) and replaying a file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from astropix_hil.monitor import Accumulator

from .monitor_helpers import converted_hits, emulate, hitmap_from_csv, tot_from_csv
from .netns import made_netns

TIMEOUT = 60


@pytest.fixture
def ns():
    yield from made_netns()


def assert_matches_conversion(saved, apx, tmp_path) -> Accumulator:
    acc = Accumulator.load(saved)
    hits = converted_hits(apx, tmp_path)
    assert acc.hits == len(hits) > 0
    assert np.array_equal(acc.hitmap, hitmap_from_csv(hits))
    assert np.array_equal(acc.tot, tot_from_csv(hits, acc.tot.size))
    return acc


def test_live_monitor_of_the_daq_equals_the_conversion_of_its_file(ns, tmp_path):
    run, saved, report, snaps = (tmp_path / "run.apx", tmp_path / "acc.npz",
                                 tmp_path / "run.html", tmp_path / "png")
    monitor = ns.apx_hil("monitor", "--png", str(snaps), "--every", "0.5", "--report",
                         str(report), "--save", str(saved), "--idle-exit", "3", "--json",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ns.wait_udp_bound(monitor)
    port = "apxemu://?seed=7&mode=poisson&rate=20000&chips=2&anomalies=all=0.05"
    daq = ns.apx_hil("daq", "--port", port, "--readouts", "2000", "--out", str(run), "--json",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    daq_out, daq_err = daq.communicate(timeout=TIMEOUT)
    assert daq.returncode == 0, daq_err
    out, err = monitor.communicate(timeout=TIMEOUT)
    assert monitor.returncode == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["readouts"] == 2000 == json.loads(daq_out)["readouts"]
    (stream,) = summary["streams"]
    assert stream["received"] == 2000 and stream["lost"] == 0
    acc = assert_matches_conversion(saved, run, tmp_path)
    assert acc.chips == [0, 1]
    assert acc.flag_counts().get("ORPHAN_BYTES_MATCHED")  # hits split across readouts
    assert acc.header is not None and "daq" in json.dumps(acc.header).lower()
    assert summary["snapshots"] and all(p.endswith(".png") for p in summary["snapshots"])
    assert report.read_text().count("data:image/png;base64,") == 3


def test_monitor_replays_a_file_at_a_given_speed(tmp_path):
    run = emulate(tmp_path / "sim.apx", "--seed", "3", "--mode", "poisson", "--rate", "2000",
                  "--duration", "2")
    saved = tmp_path / "acc.npz"
    proc = subprocess.run(
        [sys.executable, "-m", "astropix_hil", "monitor", "--file", str(run), "--speed", "4",
         "--save", str(saved), "--png", str(tmp_path / "png"), "--every", "0.2", "--json"],
        capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["stop_reason"] == "end of file"
    # 2 s of data at 4x: a snapshot every 0.2 s shows the run growing.
    assert len(summary["snapshots"]) >= 2
    acc = assert_matches_conversion(saved, run, tmp_path)
    assert acc.ids == {"lost": 0, "duplicated": 0, "reordered": 0}


def test_sigterm_stops_a_replay_and_still_writes_the_report(tmp_path):
    run = emulate(tmp_path / "sim.apx", "--seed", "4", "--readouts", "2000")
    report = tmp_path / "r.html"
    proc = subprocess.Popen(
        [sys.executable, "-m", "astropix_hil", "monitor", "--file", str(run), "--speed", "1",
         "--report", str(report), "--png", str(tmp_path / "png"), "--every", "0.1", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = tmp_path / "png" / "monitor_0001.png"
        end = time.monotonic() + TIMEOUT
        while not first.exists() and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.05)
        assert first.exists(), proc.stderr.read() if proc.poll() is not None else ""
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["stop_reason"] == "signal" and 0 < summary["readouts"] < 2000
    assert report.exists()


def test_without_a_display_the_monitor_says_how_to_run_headless(tmp_path):
    run = emulate(tmp_path / "sim.apx", "--seed", "4", "--readouts", "20")
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    proc = subprocess.run([sys.executable, "-m", "astropix_hil", "monitor", "--file", str(run)],
                          capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "--png DIR or --report RUN.html" in proc.stderr


def test_a_bad_group_or_key_ends_the_monitor_with_one_line(tmp_path, capsys):
    from astropix_hil.cli import main

    report = tmp_path / "r.html"
    for option, value, words in (("--group", "10.1.1.1", "not a multicast group"),
                                 ("--key", str(tmp_path / "missing"), "cannot read key file")):
        assert main(["monitor", option, value, "--report", str(report)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    assert not report.exists()
