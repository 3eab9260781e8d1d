"""The monitor's numbers (Accumulator), figures, HTML report and ``apx-hil report``."""

from __future__ import annotations

import html.parser
import io
import json
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.image
import numpy as np
import pytest

from astropix_hil.cli import main
from astropix_hil.fileio import ApxReader, write_apx
from astropix_hil.fmt import HIT_DTYPE, Decoding
from astropix_hil.monitor import Accumulator, accumulate_file
from astropix_hil.monitor.figures import (
    MonitorView,
    monitor_figure,
    png_bytes,
    report_figures,
    tot_range,
)
from astropix_hil.monitor.report import render_html

from .monitor_helpers import converted_hits, emulate, hitmap_from_csv, tot_from_csv


@pytest.fixture(scope="module")
def messy_run(tmp_path_factory):
    """Two chips, random pixels, every anomaly (decoding flags raised)."""
    path = tmp_path_factory.mktemp("run") / "messy.apx"
    return emulate(path, "--seed", "11", "--mode", "poisson", "--rate", "20000",
                   "--chips", "2", "--anomalies", "all=0.05", "--readouts", "3000")


def test_accumulator_equals_the_converted_csv_bin_for_bin(messy_run, tmp_path):
    acc = accumulate_file(messy_run)
    hits = converted_hits(messy_run, tmp_path)
    assert len(hits) > 3000 and acc.hits == len(hits)
    assert acc.chips == [0, 1]
    assert np.array_equal(acc.hitmap, hitmap_from_csv(hits))
    assert np.array_equal(acc.tot, tot_from_csv(hits, acc.tot.size))
    assert acc.tot.sum() == len(hits)
    # Hits per 1 s bin, from the readout timestamps of the CSV rows.
    with ApxReader(messy_run) as reader:
        stamps = np.array([r.timestamp for r in reader], dtype=np.int64)
    assert acc.readouts == stamps.size == acc.readouts_per_bin.sum()
    expected = np.bincount((hits["timestamp"].astype(np.int64) - stamps.min()) // 10**9,
                           minlength=acc.hits_per_bin.size)
    assert np.array_equal(acc.hits_per_bin, expected)
    info = json.loads(_run_json(["info", str(messy_run), "--json"]))
    assert acc.flag_counts() == info["decoding_flags"] and acc.flag_counts()


def _run_json(argv: list[str]) -> str:
    out = io.StringIO()
    stdout, sys.stdout = sys.stdout, out
    try:
        assert main(argv) == 0
    finally:
        sys.stdout = stdout
    return out.getvalue()


def _hits(chips, rows, columns, tots_cycles, stamps) -> np.ndarray:
    hits = np.zeros(len(chips), dtype=HIT_DTYPE)
    hits["chip_id"], hits["row"], hits["column"] = chips, rows, columns
    hits["ts_dec1"] = 1000
    hits["ts_dec2"] = 1000 + np.asarray(tots_cycles)
    hits["timestamp"] = stamps
    return hits


def test_add_counts_pixels_tot_flags_and_time_bins():
    acc = Accumulator()
    stamps = np.array([5 * 10**9, 5 * 10**9 + 1, 7 * 10**9 + 3], dtype=np.uint64)
    hits = _hits([3, 3, 0], [1, 1, 31], [2, 2, 0], [19, 20, 45], stamps)
    status = np.array([0, 1 << Decoding.VALID_EXTRA_BYTES, 0], dtype=np.uint8)
    acc.add(hits, status, np.array([0, 1, 2]), stamps)
    assert acc.hitmap[3, 1, 2] == 2 and acc.hitmap[0, 31, 0] == 1 and acc.hitmap.sum() == 3
    assert acc.tot[:3].tolist() == [1, 1, 1]  # 19 cycles < 1 µs <= 20 cycles; 45: bin 2
    assert acc.readouts_per_bin.tolist() == [2, 0, 1]
    assert acc.flag_counts() == {"VALID_EXTRA_BYTES": 1}
    assert acc.chips == [0, 3]


def test_time_bins_widen_to_stay_bounded_and_keep_every_count():
    acc = Accumulator(max_time_bins=8)
    second = 10**9
    for start in range(0, 100, 10):
        stamps = np.arange(start, start + 10, dtype=np.uint64) * second
        acc.add(_hits([0] * 10, [0] * 10, [0] * 10, [20] * 10, stamps), np.zeros(10), np.arange(10),
                stamps)
    assert acc.readouts_per_bin.size <= 8
    assert acc.time_bin_ns == 16 * second
    assert acc.readouts_per_bin.sum() == acc.hits_per_bin.sum() == 100
    assert acc.readouts_per_bin.tolist() == [16] * 6 + [4]
    # A clock step back lands in the first bin; a wild timestamp cannot blow memory up.
    wild = np.array([0, 2**63], dtype=np.uint64)
    acc.add(_hits([0, 0], [0, 0], [0, 0], [20, 20], wild), np.zeros(2), np.arange(2), wild)
    assert acc.readouts_per_bin.size <= 8 and acc.readouts_per_bin.sum() == 102


def test_readout_ids_of_a_file_count_lost_duplicated_and_reordered(tmp_path, messy_run):
    with ApxReader(messy_run) as reader:
        readouts = list(reader)[:100]
    kept = [r for r in readouts if r.readout_id not in (5, 6, 7, 40, 98)]
    kept.insert(20, kept[19])  # one duplicate
    kept[60], kept[61] = kept[61], kept[60]  # one readout late by one place
    lossy = tmp_path / "lossy.apx"
    write_apx(lossy, kept, {"note": "known loss"})
    acc = accumulate_file(lossy)
    (row,) = acc.loss_rows()
    assert row["received"] == len(kept) == 96
    assert row["duplicated"] == 1 and row["reordered"] == 1
    assert row["lost"] == 5  # the late one is not lost


def test_readout_id_accounting_carries_across_batches():
    acc = Accumulator()
    for ids in ([0, 1, 3], [2, 4, 4], [9]):
        stamps = np.zeros(len(ids), dtype=np.uint64)
        acc.add(np.zeros(0, dtype=HIT_DTYPE), np.zeros(len(ids)), np.array(ids), stamps,
                count_ids=True)
    assert acc.ids == {"lost": 4, "duplicated": 1, "reordered": 1}


def test_save_and_load_keep_every_histogram(tmp_path, messy_run):
    acc = accumulate_file(messy_run)
    acc.save(tmp_path / "acc.npz")
    back = Accumulator.load(tmp_path / "acc.npz")
    for name in ("hitmap", "tot", "flags", "readouts_per_bin", "hits_per_bin"):
        assert np.array_equal(getattr(back, name), getattr(acc, name)), name
    assert back.summary() == acc.summary() and back.header == acc.header


def test_the_monitor_figure_shows_the_accumulator(messy_run):
    acc = accumulate_file(messy_run)
    fig = monitor_figure(acc)
    images = [ax.images[0] for ax in fig.get_axes() if ax.images]
    assert len(images) == 2  # one hit map per chip
    for chip, image in zip(acc.chips, images, strict=True):
        assert np.array_equal(image.get_array(), acc.hitmap[chip])
    (tot_ax,) = [ax for ax in fig.get_axes() if ax.get_xlabel().startswith("ToT")]
    (stairs,) = tot_ax.patches
    values, edges, _ = stairs.get_data()
    upto = tot_range(acc)
    assert np.array_equal(values, acc.tot[:upto]) and values.sum() == acc.hits
    assert np.allclose(edges, np.arange(upto + 1))
    (rates_ax,) = [ax for ax in fig.get_axes() if ax.get_ylabel() == "rate (1/s)"]
    readout_line, hit_line = rates_ax.get_lines()
    assert np.array_equal(readout_line.get_ydata(), acc.readouts_per_bin)  # 1 s bins
    assert np.array_equal(hit_line.get_ydata(), acc.hits_per_bin)
    text = "\n".join(t.get_text() for ax in fig.get_axes() for t in ax.texts)
    assert f"received {acc.readouts}, lost 0" in text and "VALID_EXTRA_BYTES" in text


def test_the_live_view_updates_its_artists_in_place(messy_run):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 8))
    FigureCanvasAgg(fig)
    view = MonitorView(fig)
    full = accumulate_file(messy_run)
    half = Accumulator()
    half.add(*_first_readouts(messy_run, 1000))
    view.update(half.snapshot())
    axes = fig.get_axes()
    view.update(full.snapshot())
    assert fig.get_axes() == axes  # same axes, new data
    images = [ax.images[0] for ax in axes if ax.images]
    assert [np.asarray(i.get_array()).sum() for i in images] == \
        [full.hitmap[c].sum() for c in full.chips]
    (stairs,) = [p for ax in axes for p in ax.patches]
    assert stairs.get_data()[0].sum() == full.hits
    fig.canvas.draw()


def _first_readouts(path, count):
    from astropix_hil.fileio import iter_hit_chunks

    chunk = next(iter_hit_chunks(path))
    hits = chunk.hits[chunk.hits["readout_id"] < chunk.readout_ids[count]]
    return hits, chunk.status[:count], chunk.readout_ids[:count], chunk.timestamps[:count]


def test_figures_render_under_agg(messy_run):
    acc = accumulate_file(messy_run)
    for name, fig in {**report_figures(acc), "monitor": monitor_figure(acc)}.items():
        image = matplotlib.image.imread(io.BytesIO(png_bytes(fig)), format="png")
        assert image.shape[0] > 100 and image.shape[1] > 100, name
    empty = monitor_figure(Accumulator())  # before the first readout
    assert png_bytes(empty).startswith(b"\x89PNG")


class _Cells(html.parser.HTMLParser):
    """The data-column cells of a report's loss table, and its image sources."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, list[str]] = {}
        self.images: list[str] = []
        self._column: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "td" and "data-column" in attrs:
            self._column = attrs["data-column"]
        if tag == "img":
            self.images.append(attrs["src"])

    def handle_data(self, data):
        if self._column is not None:
            self.cells.setdefault(self._column, []).append(data)
            self._column = None


def test_report_of_a_file_with_known_loss_shows_that_loss(tmp_path, messy_run):
    with ApxReader(messy_run) as reader:
        readouts = [r for r in reader if r.readout_id < 500 and r.readout_id % 50 != 7]
    lossy = tmp_path / "lossy.apx"
    write_apx(lossy, readouts, {"run": "lossy"})
    out = tmp_path / "lossy.html"
    assert main(["report", str(lossy), "-o", str(out)]) == 0
    page = _Cells()
    page.feed(out.read_text())
    assert page.cells["received"] == [str(len(readouts))] == ["490"]
    assert page.cells["lost"] == ["10"]
    assert page.cells["duplicated"] == ["0"] and page.cells["reordered"] == ["0"]
    assert len(page.images) == 3
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert "http" not in out.read_text().replace("http-equiv", "")  # nothing to fetch


def test_report_refuses_to_overwrite_and_names_the_missing_extra(tmp_path, messy_run, capsys,
                                                                  monkeypatch):
    out = tmp_path / "r.html"
    out.write_text("mine")
    assert main(["report", str(messy_run), "-o", str(out)]) == 1
    assert "exists; use --force" in capsys.readouterr().err and out.read_text() == "mine"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    for argv in (["report", str(messy_run), "-o", str(tmp_path / "x.html")],
                 ["monitor", "--file", str(messy_run), "--report", str(tmp_path / "y.html")]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "pip install 'astropix-hil[plot]'" in err, err


def test_render_html_escapes_the_header_and_lists_receiver_counters():
    acc = Accumulator()
    acc.header = {"note": "<script>alert(1)</script>"}
    acc.set_receiver({"datagrams": 12, "totals": {"malformed": 2}, "socket_drops": 3,
                      "restarts": 0, "run_header": None,
                      "streams": {"ab12": {"source": ("127.0.0.1", 5), "readouts_received": 9,
                                           "readouts_lost": 4, "duplicates": 1,
                                           "reordered": 2, "late": 0, "ended": False}}})
    text = render_html(acc, {})
    assert "<script>alert" not in text and "&lt;script&gt;" in text
    page = _Cells()
    page.feed(text)
    assert page.cells["lost"] == ["4"] and page.cells["reordered"] == ["2"]
    assert page.cells["stream"] == ["ab12"]
    assert '<td class="text">socket drops</td><td>3</td>' in text


def test_a_truncated_file_is_reported_with_one_warning_line(tmp_path, messy_run, capsys):
    cut = tmp_path / "cut.apx"
    cut.write_bytes(messy_run.read_bytes()[:-5])  # the DAQ died inside the last readout
    out = tmp_path / "cut.html"
    assert main(["report", str(cut), "-o", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    (warning,) = [line for line in err if "warning" in line]
    assert "file ends inside a readout" in warning
    page = _Cells()
    page.feed(out.read_text())
    assert page.cells["received"] == ["2999"]
    assert "file ends inside a readout" in out.read_text()
    assert main(["monitor", "--file", str(cut), "--speed", "0", "--report",
                 str(tmp_path / "m.html"), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["warnings"] and captured.err.count("warning") == 1


def test_a_damaged_file_gets_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "bad.apx"
    bad.write_bytes(b"%APXDF\x05\x00\x00\x00{\"a\":")
    for argv in (["report", str(bad), "-o", str(tmp_path / "b.html")],
                 ["monitor", "--file", str(bad), "--report", str(tmp_path / "c.html")],
                 ["info", str(bad), "--pixels"], ["scan", "fit", str(bad)]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "bad.apx" in err and "header" in err, (argv, err)
    assert not (tmp_path / "b.html").exists() and not (tmp_path / "c.html").exists()


def test_the_window_loop_refreshes_until_stopped(messy_run, monkeypatch):
    """The window path of ``watch`` (pyplot on the Agg backend stands in for a display): it
    keeps the figure updated from the feed and ends on the stop event."""
    import threading
    import time
    import warnings

    import matplotlib.pyplot as plt

    from astropix_hil.monitor import live

    updates = []
    real_update = MonitorView.update

    def counting(self, acc):
        updates.append(acc.readouts)
        real_update(self, acc)

    monkeypatch.setattr(MonitorView, "update", counting)
    acc = Accumulator()
    feed = live.FileFeed(acc, str(messy_run), speed=0)
    stop = threading.Event()

    def stop_when_done():
        # Stop once the whole file is in and a refresh has shown all of it.
        feed.exhausted.wait(60)
        deadline = time.monotonic() + 60
        while not (updates and updates[-1] == 3000) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling a condition, bounded
        stop.set()

    stopper = threading.Thread(target=stop_when_done, daemon=True)
    stopper.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Agg is non-interactive: plt.pause only waits
        reason = live.watch(feed, stop, window=True)
    stopper.join(5)
    assert reason == "signal" and updates[-1] == 3000
    fig = plt.gcf()
    assert len([ax for ax in fig.get_axes() if ax.images]) == 2
    plt.close("all")


class _FakeReceiver:
    """Hands out prepared batches, as a MulticastReceiver would, then times out."""

    def __init__(self, batches) -> None:
        self.batches = list(batches)
        self.group, self.port = "239.1.2.3", 5007
        from astropix_hil.framing import ReceiverStats

        self.stats = ReceiverStats()

    def receive_batch(self, timeout=None):
        if not self.batches:
            raise TimeoutError
        self.stats.datagrams += 1
        return self.batches.pop(0)

    def finish(self):
        pass


def test_batches_waiting_at_the_socket_are_decoded_together_exactly(messy_run):
    """Small batches of two interleaved streams, merged per stream before decoding, give the
    file's histograms (extra bytes carried across merged batches)."""
    from astropix_hil.fileio import iter_frame_chunks
    from astropix_hil.fmt import READOUT_HEADER
    from astropix_hil.framing import ReadoutBatch
    from astropix_hil.monitor.live import NetworkFeed

    body = messy_run.read_bytes()
    (chunk,) = iter_frame_chunks(messy_run)
    heads = (chunk.offset + chunk.frames.starts - READOUT_HEADER.size).tolist()
    ends = (chunk.offset + chunk.frames.ends).tolist()
    batches = []
    for stream in ("a", "b"):  # the same readouts twice, as two senders
        for i in range(0, len(heads), 3):
            lo, hi = heads[i], ends[min(i + 3, len(ends)) - 1]
            batches.append(ReadoutBatch(stream, ("127.0.0.1", 1), body[lo:hi],
                                        min(3, len(ends) - i), i, True))
    # Interleave the streams in runs of a few batches.
    half = len(batches) // 2
    order = []
    for i in range(0, half, 4):
        order += batches[i:i + 4] + batches[half + i:half + i + 4]
    acc = Accumulator()
    feed = NetworkFeed(acc, _FakeReceiver(order))
    decoded = []
    add = feed._add
    feed._add = lambda batch: (decoded.append(batch.count), add(batch))
    feed._loop(lambda: not feed.receiver.batches, 0.0)
    assert len(decoded) < len(order) / 3  # runs of 4 batches of a stream decoded as one
    assert sum(decoded) == sum(b.count for b in order)
    expected = accumulate_file(messy_run)
    assert acc.readouts == 2 * expected.readouts
    assert np.array_equal(acc.hitmap, 2 * expected.hitmap)
    assert np.array_equal(acc.tot, 2 * expected.tot)
    assert np.array_equal(acc.flags, 2 * expected.flags)
