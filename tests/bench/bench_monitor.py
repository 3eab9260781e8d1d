"""The monitor keeps up: ``apx-hil send --rate 100000`` to ``apx-hil monitor`` (headless, a
snapshot every second, decoding every hit) on loopback in a network namespace, with no readout
lost; and the in-process decode-and-accumulate rate and redraw time behind it."""

from __future__ import annotations

import json
import subprocess
import time

import matplotlib
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from astropix_hil.fileio import iter_frame_chunks, iter_hit_chunks
from astropix_hil.monitor import Accumulator
from astropix_hil.monitor.figures import MonitorView

from ..netns import made_netns

matplotlib.use("Agg")
RATE = 100_000


@pytest.fixture(scope="module")
def busy_run(tmp_path_factory):
    """Five seconds of readouts at 100k/s: two chips, random pixels."""
    out = tmp_path_factory.mktemp("bench") / "busy.apx"
    subprocess.run(["apx-hil", "emulate", "--seed", "5", "--mode", "poisson", "--rate",
                    "60000", "--chips", "2", "--read-size", "64", "--poll-interval", "0.01",
                    "--readouts", str(5 * RATE), "--out", str(out)], check=True,
                   capture_output=True, timeout=600)
    return out


@pytest.fixture
def ns():
    yield from made_netns()


def bench_monitor_keeps_up_with_100k_readouts_per_s(benchmark, ns, busy_run, tmp_path):
    results = []

    def once():
        monitor = ns.apx_hil("monitor", "--png", str(tmp_path / "png"), "--every", "1",
                             "--force", "--idle-exit", "2", "--json",
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ns.wait_udp_bound(monitor)
        sender = ns.apx_hil("send", str(busy_run), "--rate", str(RATE), "--json",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        sent = json.loads(sender.communicate(timeout=300)[0])
        summary = json.loads(monitor.communicate(timeout=300)[0].splitlines()[-1])
        results.append((sent, summary))

    benchmark.pedantic(once, rounds=1, iterations=1)
    sent, summary = results[0]
    (stream,) = summary["streams"]
    print(f"\nmonitor at {RATE} readouts/s: sent {sent['readouts_sent']}, received "
          f"{stream['received']}, lost {stream['lost']}, socket drops "
          f"{summary['socket_drops']}, snapshots {len(summary['snapshots'])}")
    benchmark.extra_info.update({"received": stream["received"], "lost": stream["lost"]})
    assert stream["received"] == sent["readouts_sent"] and stream["lost"] == 0


def bench_decode_and_accumulate(benchmark, busy_run):
    readouts = sum(len(c.frames.starts) for c in iter_frame_chunks(busy_run))

    def once():
        acc = Accumulator()
        for chunk in iter_hit_chunks(busy_run, 256 << 10):
            acc.add(chunk.hits, chunk.status, chunk.readout_ids, chunk.timestamps)
        return acc

    acc = benchmark.pedantic(once, rounds=3, iterations=1)
    rate = readouts / benchmark.stats.stats.min
    benchmark.extra_info["readouts_per_s"] = rate
    print(f"\ndecode + accumulate: {rate:.0f} readouts/s ({acc.hits} hits)")
    assert rate > RATE


def bench_redraw(benchmark, busy_run):
    """A window refresh: snapshot, update the artists in place, draw (Agg)."""
    acc = Accumulator()
    for chunk in iter_hit_chunks(busy_run):
        acc.add(chunk.hits, chunk.status, chunk.readout_ids, chunk.timestamps)
    fig = Figure(figsize=(14, 8))
    FigureCanvasAgg(fig)
    view = MonitorView(fig)
    view.update(acc.snapshot())
    times = []

    def once():
        start = time.perf_counter()
        view.update(acc.snapshot())
        fig.canvas.draw()
        times.append(time.perf_counter() - start)

    benchmark.pedantic(once, rounds=10, iterations=1)
    print(f"\nrefresh (snapshot, update, draw): best {min(times) * 1e3:.0f} ms, median "
          f"{np.median(times) * 1e3:.0f} ms")
    assert min(times) < 0.45  # fits in the refresh period
