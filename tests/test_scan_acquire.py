"""Taking scans (``apx-hil scan injection``, ``apx-hil scan threshold``) against the emulated
board's configured chip, whose truth holds every pixel's threshold and noise: the fit of an
injection scan recovers them, a threshold scan sees the noise rate fall as the model says, and
the commands work through a pty as on a real board."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys

import numpy as np
import pytest

from astropix_hil.boards.nexys.board import VirtualBoard
from astropix_hil.boards.nexys.link import NexysLink
from astropix_hil.chipconfig import load_default
from astropix_hil.cli import main
from astropix_hil.fileio import ApxWriter, read_header, read_hits
from astropix_hil.scan import count_scan
from astropix_hil.scan.acquire import ScanPlan, definition_of, run_scan
from astropix_hil.scan.fit import fit_scan, read_fit_csv

from .test_cli_errors import assert_one_error_line, run_cli
from .test_scan import pulls_agree
from .test_startup_sequence import BoardPort

TIMEOUT = 60
#: The statistical test's chip: injection gain 0.8 (threshold and noise in vinj units are the
#: comparator's divided by it), so a fit in the wrong units fails.
GAIN = 0.8
THRESHOLD_MV = 200.0


class VirtualClock:
    """The board's and the scan's clock (ns): each reading moves it 1 us, ``sleep`` moves it
    by the time asked, so a scan of many steps takes no wall time and is deterministic."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        self.now += 1000
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


def virtual_scan(tmp_path, plan: ScanPlan, seed: int, **options):
    """Run ``plan`` on an in-process board; return (run path, board, step results)."""
    clock = VirtualClock()
    board = VirtualBoard.from_options(seed=seed, clock=clock, pull_interval=0, **options)
    link = NexysLink(BoardPort(board))
    config = load_default()
    definition = definition_of(plan, config)
    path = tmp_path / f"{plan.kind}.apx"
    with ApxWriter(path, {"scan": definition.to_header()}) as writer:
        results = run_scan(link, config, plan, writer, definition, clock=clock,
                           sleep=clock.sleep)
    return path, board, results


def chip_truth(board: VirtualBoard, pixels) -> np.ndarray:
    """Each pixel's threshold and noise in the fit's parametrization: hit probability
    ``Phi((vinj - threshold) / noise)`` with vinj in mV, so the comparator's threshold
    (card threshold + offset) and noise divided by the injection gain."""
    table = board.chip.pixels.table()
    gain = board.chip.pixels.injection_gain
    card = board.chip.state.threshold_mv  # the card's DAC codes, as the chip latched them
    out = np.zeros(len(pixels), dtype=[("chip_id", "u1"), ("row", "u1"), ("column", "u1"),
                                       ("threshold", "f8"), ("noise", "f8")])
    for i, (row, col) in enumerate(pixels):
        rec = table[(table["row"] == row) & (table["column"] == col)][0]
        out[i] = (0, row, col, (card + rec["threshold_offset_mv"]) / gain,
                  rec["noise_mv"] / gain)
    return out


@pytest.fixture(scope="module")
def injection_scan(tmp_path_factory):
    """Every pixel of the chip (13 x 16 = 208), 100 pulses per step, 200 to 300 mV."""
    pixels = [(r, c) for r in range(13) for c in range(16)]
    plan = ScanPlan("injection", list(np.arange(200.0, 300.1, 4.0)), pixels, pulses=100,
                    period_ms=1.0, threshold_mv=THRESHOLD_MV)
    path, board, results = virtual_scan(tmp_path_factory.mktemp("inj"), plan, seed=7,
                                        injection_gain=GAIN)
    return path, board, results, pixels


def test_injection_scan_fit_recovers_the_emulated_chip_s_thresholds_and_noise(injection_scan,
                                                                            tmp_path):
    """The end-to-end test: scan taken through the board protocol, ``apx-hil scan fit``, and
    the pulls (fit - truth) / error of 208 pixels have mean within 0.3 and spread 0.75-1.3
    (``pulls_agree``; the mean's own spread is 0.07: chance alone does not fail it). A wrong
    model fails the same bound: the truth without the injection gain, thresholds 1 mV off
    (less than the vinj DAC's step), or 10 % more noise."""
    path, board, _, pixels = injection_scan
    out = tmp_path / "fit.csv"
    assert main(["scan", "fit", str(path), "-o", str(out), "--plots", "none"]) == 0
    fitted = read_fit_csv(out)
    truth = chip_truth(board, pixels)
    assert len(fitted) == len(pixels)
    assert pulls_agree(fitted, truth)
    no_gain = truth.copy()
    no_gain["threshold"] *= GAIN
    no_gain["noise"] *= GAIN
    shifted = truth.copy()
    shifted["threshold"] += 1.0
    noisier = truth.copy()
    noisier["noise"] *= 1.1
    for wrong in (no_gain, shifted, noisier):
        assert not pulls_agree(fitted, wrong)


def test_injection_scan_run_holds_each_step_s_hits_under_its_readout_ids(injection_scan):
    path, board, results, pixels = injection_scan
    header = read_header(path)["scan"]
    definition = count_scan(path).definition
    assert header["kind"] == "injection" and header["pulses"] == 100
    assert [tuple(p) for p in header["pixels"]] == [(0, r, c) for r, c in pixels]
    # The values are the amplitudes the chip was given (the vinj DAC's codes), in order.
    assert header["settings"]["requested_values"][0] == 200.0
    assert all(abs(a - r) < 1.8 for a, r in zip(definition.values,
                                                 header["settings"]["requested_values"],
                                                 strict=True))
    counts = count_scan(path)
    assert counts.outside == 0
    hits = read_hits(path)
    steps = hits["readout_id"] // definition.readout_id_stride
    for result in results:
        in_step = hits[steps == result.index]
        assert len(in_step) == sum(result.hits.values())
        assert counts.readouts[result.index] == result.readouts
    # A step holds only its own hits: far above every threshold each pixel fired on each of
    # the step's pulses, exactly once (no hit of the step before, none left for the next).
    assert counts.hits.max() <= 100
    model, card = board.chip.pixels, board.chip.state.threshold_mv
    sure = [(r, c) for r, c in pixels
            if model.fire_probability(r, c, card, definition.values[-1]) > 1 - 1e-6]
    assert len(sure) > 150
    assert (counts.hits[-1, 0][tuple(np.array(sure).T)] == 100).all()
    assert counts.hits[0].sum() < counts.hits[-1].sum()
    # Nothing but the selected pixels' comparators fired, and the board lost nothing.
    assert all(r.other_hits == 0 for r in results)
    assert board.stats.fifo_overflow_hits == 0
    assert counts.hits.sum() == len(hits) == board.stats.hits_served


def test_threshold_scan_sees_the_noise_rate_fall_as_the_chip_model_says(tmp_path):
    """Noise counting (no injection) for 0.2 s per step: the hits of each step agree with the
    chip's noise rates within 5 Poisson sigma (+1), fall with the threshold, and end at
    none."""
    pixels = [(r, c) for r in range(0, 13, 3) for c in range(0, 16, 3)]
    plan = ScanPlan("threshold", list(np.arange(20.0, 60.1, 5.0)), pixels, time_s=0.2)
    path, board, results = virtual_scan(tmp_path, plan, seed=11)
    header = read_header(path)["scan"]
    assert header["kind"] == "threshold" and header["pulses"] is None
    assert header["settings"]["time_s"] == 0.2
    model = board.chip.pixels
    totals = np.array([sum(r.hits.values()) for r in results])
    offsets = model.threshold_offset_mv
    noise = model.pixel_noise_mv
    rows, cols = np.array(pixels).T
    for result, total in zip(results, totals, strict=True):
        t = np.maximum(result.value + offsets[rows, cols], 0)
        expected = float(np.sum(model.noise_rate_hz * np.exp(-t ** 2 / (2 * noise[rows, cols]
                                                                      ** 2)))) * 0.2
        assert abs(total - expected) <= 5 * np.sqrt(expected) + 1, (result.value, total,
                                                                    expected)
    assert totals[0] > 100 and totals[-1] == 0
    assert (np.diff(totals) <= 0).all()


def test_scan_commands_refuse_bad_input_in_one_line(tmp_path):
    out = tmp_path / "run.apx"
    out.write_bytes(b"mine")
    base = ["--port", "apxemu://?seed=1", "--from", "0", "--to", "10", "--step", "5"]
    status, err = run_cli("scan", "injection", *base, "--pixel", "0,9", "--out", out)
    assert_one_error_line(status, err, "scan", 1, str(out), "--force")
    assert out.read_bytes() == b"mine"
    fresh = tmp_path / "new.apx"
    status, err = run_cli("scan", "injection", *base, "--pixel", "20,9", "--out", fresh)
    assert_one_error_line(status, err, "scan", 1, "20")
    status, err = run_cli("scan", "threshold", "--port", "apxemu://", "--from", "0", "--to",
                          "10", "--step", "-5", "--pixel", "0,9", "--out", fresh)
    assert_one_error_line(status, err, "scan", 1, "step")
    status, err = run_cli("scan", "injection", *base, "--pixel", "0,9", "--pulses", "70000",
                          "--out", fresh)
    assert_one_error_line(status, err, "scan", 1, "65535")
    assert not fresh.exists()


def test_threshold_scan_command_through_the_emulated_port(tmp_path):
    out = tmp_path / "thr.apx"
    status, err = run_cli("scan", "threshold", "--port", "apxemu://?seed=4", "--from", "0",
                          "--to", "60", "--step", "30", "--time", "0.1", "--pixel", "2,3",
                          "--out", out)
    assert status == 0, err
    lines = [line for line in err.splitlines() if line.startswith("step ")]
    assert len(lines) == 3 and "threshold 60.00 mV" in lines[-1] and "(2,3):0" in lines[-1]
    counts = count_scan(out)
    assert counts.hits[0, 0, 2, 3] > 0 and counts.hits[-1].sum() == 0


def test_injection_scan_through_a_pty_then_fit(tmp_path):
    """Processes as on a real board: ``apx-hil board --pty`` serves the chip, ``apx-hil scan
    injection`` scans two pixels through the pty, ``apx-hil scan fit`` finds each threshold
    within 4 fit errors of the board's pixel table (gain 1, threshold 200 mV)."""
    table = tmp_path / "pixels.csv"
    board = subprocess.Popen([sys.executable, "-m", "astropix_hil", "board", "--pty",
                              "--seed", "3", "--pixel-table", str(table)], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        pty = board.stdout.readline().strip()
        assert pty.startswith("/dev/pts/"), board.stderr.read()
        out = tmp_path / "scan.apx"
        scan = subprocess.run(
            [sys.executable, "-m", "astropix_hil", "scan", "injection", "--port", pty,
             "--pixel", "1,2", "--pixel", "5,7", "--threshold", "200", "--from", "160",
             "--to", "240", "--step", "5", "--pulses", "50", "--period", "0.5", "--out",
             str(out)], text=True, capture_output=True, timeout=TIMEOUT)
        assert scan.returncode == 0, scan.stderr
        steps = [line for line in scan.stderr.splitlines() if line.startswith("step ")]
        assert len(steps) == 17 and "(1,2):50 (5,7):50" in steps[-1]
    finally:
        board.send_signal(signal.SIGTERM)
        board.communicate(timeout=TIMEOUT)
    fit = tmp_path / "fit.csv"
    done = subprocess.run([sys.executable, "-m", "astropix_hil", "scan", "fit", str(out),
                           "-o", str(fit), "--plots", "none"], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    with open(table, encoding="utf-8") as stream:
        truth = {(int(r["row"]), int(r["column"])): float(r["threshold_offset_mv"])
                 for r in csv.DictReader(stream)}
    fitted = read_fit_csv(fit)
    assert len(fitted) == 2 and (fitted["status"] == "ok").all()
    for rec in fitted:
        expected = THRESHOLD_MV + truth[(rec["row"], rec["column"])]
        assert abs(rec["threshold"] - expected) < 4 * rec["threshold_error"]


def test_threshold_scan_with_injection_fits_the_falling_s_curve_at_the_true_thresholds(
        tmp_path):
    """``scan threshold --vinj``: a pixel fires while the threshold is below gain x vinj -
    its offset; the falling s-curve's fit finds that point and the pixel's noise (each of 20
    pixels within 4 errors)."""
    pixels = [(r, c) for r in (0, 4, 8, 12) for c in (1, 5, 9, 13, 15)]
    plan = ScanPlan("threshold", list(np.arange(140.0, 260.1, 4.0)), pixels, pulses=100,
                    period_ms=1.0, vinj_mv=200.0)
    path, board, _ = virtual_scan(tmp_path, plan, seed=13)
    header = read_header(path)["scan"]
    vinj = header["settings"]["vinj_applied_mv"]
    assert header["pulses"] == 100 and abs(vinj - 200.0) < 1.8
    fitted = fit_scan(count_scan(path))
    model = board.chip.pixels
    assert (fitted["status"] == "ok").all() and len(fitted) == len(pixels)
    for rec in fitted:
        row, col = int(rec["row"]), int(rec["column"])
        threshold = model.injection_gain * vinj - model.threshold_offset_mv[row, col]
        noise = model.pixel_noise_mv[row, col]
        assert abs(rec["threshold"] - threshold) < 4 * rec["threshold_error"], (row, col)
        assert abs(rec["noise"] - noise) < 4 * rec["noise_error"], (row, col)
