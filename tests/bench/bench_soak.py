"""Soak: a long run at 50k hits/s through the whole chain, in bounded memory. A virtual board
on a pseudo-terminal (``apx-hil board --pty``, Poisson hits at 50 kHz), ``apx-hil daq``
writing the ``.apx`` file and multicasting, and one monitor (``apx-hil recv``), in a network
namespace, for ``APX_HIL_SOAK_S`` seconds (default 600; e.g. 60 to try it). The resident
memory of each process is sampled every few seconds: after the warm-up (the first fifth of the
run, at least 10 s) it must stay flat (grow by less than ``MAX_GROWTH_MB``), and nothing may
be lost: every readout the board served is in the file and reached the monitor. Hits the
board's FIFO dropped because the DAQ could not poll in time (a host too busy to keep up: the
DAQ, the board and the monitor share its cores) are reported, not part of the verdict."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from astropix_hil.fileio import ApxReader

from ..netns import made_netns

DURATION_S = float(os.environ.get("APX_HIL_SOAK_S", "600"))
WARMUP_S = max(10.0, DURATION_S / 5)
SAMPLE_S = 5.0
RATE = 50_000
#: The board's read FIFO: 80 ms of hits at this rate (the default 16 kB holds 20 ms), so that
#: the DAQ being descheduled for a moment on a busy machine costs no hit.
FIFO_BYTES = 1 << 16
#: Growth allowed after the warm-up, per process (allocator noise; the virtual board used to
#: grow by ~2.5 MB/s at this rate).
MAX_GROWTH_MB = 16.0


@pytest.fixture
def ns():
    yield from made_netns()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _soak(ns, tmp_path) -> dict:
    out = tmp_path / "soak.apx"
    board = ns.apx_hil("board", "--pty", "--seed", "7", "--mode", "poisson", "--rate",
                       str(RATE), "--fifo-size", str(FIFO_BYTES), "--json",
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    pty = board.stdout.readline().strip()
    recv = ns.apx_hil("recv", "--quiet", "--json", "--idle-exit", "3",
                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ns.wait_udp_bound(recv)
    daq = ns.apx_hil("daq", "--port", pty, "--duration", str(DURATION_S), "--out", str(out),
                     "--interface", "127.0.0.1", "--json", stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL, text=True)
    procs = {"board": board, "daq": daq, "recv": recv}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in procs}
    start = time.monotonic()
    while daq.poll() is None and time.monotonic() - start < DURATION_S + 120:
        elapsed = time.monotonic() - start
        for name, proc in procs.items():
            try:
                samples[name].append((elapsed, rss_mb(proc.pid)))
            except (OSError, RuntimeError):
                pass  # ended between poll and read
        time.sleep(SAMPLE_S)  # the sampling period of a long measurement, not a wait
    summary = json.loads(daq.communicate(timeout=120)[0])
    board.send_signal(signal.SIGTERM)
    board_stats = json.loads(board.communicate(timeout=60)[0].splitlines()[-1])
    monitor = json.loads(recv.communicate(timeout=60)[0].splitlines()[-1])
    with ApxReader(out) as reader:
        in_file = sum(1 for _ in reader)
    return {"summary": summary, "board": board_stats, "monitor": monitor, "in_file": in_file,
            "samples": samples}


def bench_soak_daq_file_and_monitor_in_flat_memory(benchmark, ns, tmp_path):
    result = benchmark.pedantic(_soak, args=(ns, tmp_path), rounds=1, iterations=1)
    summary, board, totals = result["summary"], result["board"], result["monitor"]["totals"]
    memory = {}
    for name, points in result["samples"].items():
        after = [mb for t, mb in points if t >= WARMUP_S]
        assert after, f"no memory sample of {name} after the warm-up"
        memory[name] = {"at_warmup_MB": round(after[0], 1), "max_MB": round(max(after), 1),
                        "end_MB": round(after[-1], 1),
                        "growth_MB": round(max(after) - after[0], 1)}
    figures = {"duration_s": DURATION_S, "rate_hz": RATE, "readouts": summary["readouts"],
               "hits": summary["hits"], "written": summary["written"],
               "in_file": result["in_file"], "served": board["readouts_served"],
               "board_hits_generated": board["hits_generated"],
               "board_fifo_overflow_hits": board["fifo_overflow_hits"],
               "monitor_received": totals["readouts_received"],
               "monitor_lost": totals["readouts_lost"], "memory": memory}
    benchmark.extra_info.update(figures)
    print(f"\nsoak {DURATION_S:.0f} s at {RATE} hits/s: {summary['readouts']} readouts, "
          f"{summary['hits']} hits (board: {board['hits_generated']} generated, "
          f"{board['fifo_overflow_hits']} lost to a full FIFO); file {result['in_file']}, monitor "
          f"{totals['readouts_received']} (lost {totals['readouts_lost']}); resident memory "
          + "; ".join(f"{name} {m['at_warmup_MB']} -> {m['end_MB']} MB (max +{m['growth_MB']})"
                      for name, m in memory.items()))
    assert summary["error"] is None
    assert board["readouts_served"] == summary["readouts"] == summary["written"] \
        == result["in_file"] == totals["readouts_received"]
    assert totals["readouts_lost"] == 0
    for name, m in memory.items():
        assert m["growth_MB"] < MAX_GROWTH_MB, f"{name} grew by {m['growth_MB']} MB"
