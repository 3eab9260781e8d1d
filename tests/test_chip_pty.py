"""The configured chip through a pseudo-terminal: ``apx-hil board --pty`` in its own process,
configured by ``apx-hil configure``/``apx-hil daq`` or by the configure API over the pty, as
the team's software would configure the real board."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from astropix_hil.boards.nexys.link import open_link
from astropix_hil.boards.nexys.protocol import SpiConfig
from astropix_hil.bulk import decode_readouts
from astropix_hil.chipconfig import load_bundled, load_config
from astropix_hil.chipconfig.configure import configure
from astropix_hil.fileio import read_hits
from astropix_hil.fmt import AstroPix4Readout
from astropix_hil.hitcsv import read_hits_csv

TIMEOUT = 60
REAL_CONFIG = "config_v4_none_20250723_092534.yml"
NONE = Path(__file__).parents[1] / "src/astropix_hil/chipconfig/data/config_v4_none.yml"


def apx_hil(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "astropix_hil", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.fixture
def board(tmp_path):
    """A board process with the configured chip: (pty path, truth CSV, pixel table, stop)."""
    truth, table = tmp_path / "truth.csv", tmp_path / "pixels.csv"
    proc = apx_hil("board", "--pty", "--seed", "3", "--truth", str(truth), "--pixel-table",
                   str(table), "--json")
    path = proc.stdout.readline().strip()
    assert path.startswith("/dev/pts/"), proc.stderr.read() if proc.poll() is not None else ""
    stats: dict = {}

    def stop() -> dict:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, err
            stats.update(json.loads(out.splitlines()[-1]))
        return stats

    yield path, truth, table, stop
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=TIMEOUT)


def pixel_offset(table: Path, row: int, col: int) -> float:
    with open(table, encoding="utf-8") as stream:
        for rec in csv.DictReader(stream):
            if int(rec["row"]) == row and int(rec["column"]) == col:
                return float(rec["threshold_offset_mv"])
    raise AssertionError(f"pixel ({row}, {col}) not in the table")


def collect(link, seconds: float) -> np.ndarray:
    """Poll the link as the DAQ does for ``seconds``, then until the FIFO is empty; hits."""
    readouts = []
    end = time.monotonic() + seconds
    while True:
        data = link.poll_readout()
        if data is not None:
            readouts.append(AstroPix4Readout(data, len(readouts), 0))
        elif time.monotonic() >= end:
            if link.read_status() & SpiConfig.READ_FIFO_EMPTY:
                break
        else:
            time.sleep(0.002)
    return decode_readouts(readouts).hits


def test_config_v4_none_gives_no_hits_even_at_a_threshold_in_the_noise(board, tmp_path):
    path, _, _, stop = board
    out = tmp_path / "run.apx"
    daq = apx_hil("daq", "--port", path, "--config", str(NONE), "--threshold", "1",
                  "--duration", "1.5", "--out", str(out), "--no-multicast", "--json")
    daq_out, daq_err = daq.communicate(timeout=TIMEOUT)
    assert daq.returncode == 0, daq_err
    assert "configured: threshold 1.0 mV" in daq_err
    assert json.loads(daq_out)["hits"] == 0 and len(read_hits(out)) == 0
    stats = stop()
    assert stats["hits_generated"] == 0 and stats["readouts_served"] == 0
    assert stats["chip_bytes_written"] > 2 * 34320  # two configurations and the card


def test_one_injected_pixel_gives_hits_only_there_equal_to_the_truth(board, tmp_path,
                                                                     realdata):
    path, truth_csv, _, stop = board
    out = tmp_path / "run.apx"
    daq = apx_hil("daq", "--port", path, "--config", str(realdata / REAL_CONFIG),
                  "--inject", "0,9", "--period", "20", "--pulses", "30", "--duration", "1.5",
                  "--out", str(out), "--no-multicast", "--json")
    _, daq_err = daq.communicate(timeout=TIMEOUT)
    assert daq.returncode == 0, daq_err
    stop()
    hits = read_hits(out)
    _, truth = read_hits_csv(truth_csv)
    assert len(hits) == 30  # every injection fires: 301 mV into a 200 mV threshold
    assert set(zip(hits["row"].tolist(), hits["column"].tolist(), strict=True)) == {(0, 9)}
    names = [n for n in hits.dtype.names if n != "timestamp"]
    assert np.array_equal(hits[names], truth[names])


def test_injections_come_at_the_generators_period_and_count(board):
    path, _, _, stop = board
    link = open_link(path)
    try:
        report = configure(link, load_bundled("config_v4_none.yml"), inject=(3, 5),
                           period_ms=10, pulses=40)
        period_ticks = report.options.generator.period_ns // 50
        hits = collect(link, 40 * 0.010 + 0.1)
    finally:
        link.close()
    stop()
    assert len(hits) == 40
    assert set(zip(hits["row"].tolist(), hits["column"].tolist(), strict=True)) == {(3, 5)}
    steps = np.diff(hits["ts_dec1"].astype(np.int64)) % (1 << 17)
    assert np.all(np.abs(steps - period_ticks % (1 << 17)) <= 1)


def test_a_threshold_far_above_the_injection_gives_no_hits(board):
    path, _, _, stop = board
    link = open_link(path)
    try:
        report = configure(link, load_bundled("config_v4_none.yml"), inject=(3, 5),
                           threshold_mv=600, period_ms=5, pulses=40)
        assert report.config.injection_amplitude_mv < 310
        hits = collect(link, 40 * 0.005 + 0.1)
    finally:
        link.close()
    assert len(hits) == 0
    assert stop()["chip_bytes_written"] > 0


def test_a_threshold_sweep_gives_an_s_curve_centred_on_the_pixels_true_threshold(board):
    path, _, table, stop = board
    row, col, pulses = 2, 4, 50
    config = load_config(NONE)
    amplitude = config.injection_amplitude_mv
    offset = pixel_offset(table, row, col)
    centre = amplitude - offset  # the set threshold at which the pixel's equals the pulse
    thresholds = np.arange(round(centre) - 20, round(centre) + 21, 5.0)
    fractions = []
    link = open_link(path)
    try:
        for threshold in thresholds:
            configure(link, config, inject=(row, col), threshold_mv=float(threshold),
                      period_ms=2, pulses=pulses)
            hits = collect(link, pulses * 0.002 + 0.05)
            assert set(zip(hits["row"].tolist(), hits["column"].tolist(),
                           strict=True)) <= {(row, col)}
            fractions.append(len(hits) / pulses)
    finally:
        link.close()
    stop()
    fractions = np.array(fractions)
    assert fractions[0] >= 0.9 and fractions[-1] <= 0.1  # 4 sigma either side
    assert np.all(np.diff(fractions) <= 0.25)  # falls, up to binomial scatter
    # 50 % point by linear interpolation of the falling curve
    above = np.flatnonzero(fractions >= 0.5)[-1]
    x0, x1, y0, y1 = thresholds[above], thresholds[above + 1], fractions[above], \
        fractions[above + 1]
    fifty = x0 + (y0 - 0.5) * (x1 - x0) / (y0 - y1)
    assert abs(fifty - centre) < 4.0, (fifty, centre, fractions)


def test_configure_command_prints_what_it_set_and_the_chip_injects(board):
    path, _, _, stop = board
    proc = apx_hil("configure", "--port", path, "--config", str(NONE), "--inject", "1,1",
                   "--vinj", "400", "--threshold", "150", "--period", "5", "--pulses", "10",
                   "--json")
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    summary = json.loads(out)
    assert summary["readback_ok"] and summary["inject"] == [1, 1]
    assert summary["threshold_mv"] == pytest.approx(150, abs=0.2)
    assert summary["vinj_mv"] == pytest.approx(400, abs=2)
    assert "injecting pixel row 1 column 1" in err
    link = open_link(path)
    try:
        hits = collect(link, 10 * 0.005 + 0.1)
    finally:
        link.close()
    stop()
    assert len(hits) == 10 and set(hits["column"].tolist()) == {1}


def test_the_embedded_default_configures_the_emulated_chip_and_stores_what_it_sent(tmp_path):
    from astropix_hil.chipconfig import from_mapping, load_default
    from astropix_hil.chipconfig.sequence import StartupOptions, final_configuration
    from astropix_hil.cli import main
    from astropix_hil.fileio import apx_open

    out = tmp_path / "run.apx"
    assert main(["daq", "--duration", "1", "--no-multicast", "--out", str(out)]) == 0
    hits = read_hits(out)
    assert len(hits) >= 5  # 12.9 injections a second
    assert set(zip(hits["row"].tolist(), hits["column"].tolist(), strict=True)) == {(0, 9)}
    with apx_open(out) as reader:
        sent = reader.header["configuration"]
    assert sent["startup"]["inject"] == [0, 9] and sent["startup"]["readback_ok"]
    expected = final_configuration(load_default(), StartupOptions(inject=(0, 9)))
    assert from_mapping(sent) == expected


def test_a_bad_config_file_is_one_line_and_touches_no_board(tmp_path, capsys):
    from astropix_hil.cli import main

    bad = tmp_path / "bad.yml"
    bad.write_text("astropix4:\n  config:\n    g:\n      f: [2, 7]\n")
    assert main(["daq", "--config", str(bad), "--out", str(tmp_path / "x.apx"),
                 "--no-multicast", "--duration", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit in 2 bits" in err[0]
    assert not (tmp_path / "x.apx").exists()
