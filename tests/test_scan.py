"""Scan runs: the stored definition and step tags, hit counting per step, and the s-curve fit
against synthetic runs with known per-pixel thresholds and noise (fixed seeds)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.image
import numpy as np
import pytest

from astropix_hil.cli import main
from astropix_hil.errors import FormatError
from astropix_hil.fileio import read_hits
from astropix_hil.monitor.figures import png_bytes
from astropix_hil.scan import ScanDefinition, count_scan
from astropix_hil.scan.fit import fit_scan, fit_scurve, read_fit_csv
from astropix_hil.scan.plots import fit_maps, maps_figure, scurves_figure

from .scan_helpers import truth_pixels, write_scan


def pulls_agree(fitted: np.ndarray, truth: np.ndarray) -> bool:
    """The statistical bound: threshold and noise pulls ((fit - truth) / error) of the good
    fits have mean within 0.3 of 0 and a spread between 0.75 and 1.3 (for ~150 pixels, the
    mean's own spread is 0.08, so chance alone fails it about once in 10^4 runs)."""
    fitted = np.sort(fitted, order=["chip_id", "row", "column"])
    truth = np.sort(truth, order=["chip_id", "row", "column"])
    good = fitted["status"] == "ok"
    assert good.mean() > 0.95
    for name in ("threshold", "noise"):
        pull = (fitted[name] - truth[name])[good] / fitted[f"{name}_error"][good]
        if not (abs(pull.mean()) < 0.3 and 0.75 < pull.std() < 1.3):
            return False
    return True


@pytest.fixture(scope="module")
def scan_run(tmp_path_factory):
    rng = np.random.default_rng(2024)
    truth = truth_pixels(rng, 150)
    definition = ScanDefinition.steps("injection", "injection_amplitude", "mV", 0, 400, 5,
                                      pulses=100)
    path = tmp_path_factory.mktemp("scan") / "scan.apx"
    write_scan(path, definition, truth, rng)
    return path, definition, truth


def test_the_header_holds_the_definition_and_readout_ids_tag_the_steps(scan_run):
    path, definition, truth = scan_run
    counts = count_scan(path)
    assert counts.definition == definition
    assert counts.readouts.tolist() == [100] * 81  # one readout per pulse, every step
    hits = read_hits(path)
    step = hits["readout_id"] // definition.readout_id_stride
    assert counts.hits.sum() == len(hits) and counts.outside == 0
    # Step 0 (0 mV) is far below every threshold, the last (400 mV) far above.
    assert counts.hits[0].sum() == 0 and (step == 80).sum() == 100 * len(truth)
    chip, row, column = truth[0]["chip_id"], truth[0]["row"], truth[0]["column"]
    per_step = np.bincount(step[(hits["chip_id"] == chip) & (hits["row"] == row)
                                & (hits["column"] == column)], minlength=81)
    assert np.array_equal(counts.hits[:, chip, row, column], per_step)


@pytest.fixture(scope="module")
def fitted_run(scan_run, tmp_path_factory):
    path, _, _ = scan_run
    folder = tmp_path_factory.mktemp("fit")
    out, prefix = folder / "fit.csv", folder / "scan"
    assert main(["scan", "fit", str(path), "-o", str(out), "--plots", str(prefix)]) == 0
    return read_fit_csv(out), prefix


def test_fitted_thresholds_and_noise_agree_with_the_truth(scan_run, fitted_run):
    _, _, truth = scan_run
    fitted, prefix = fitted_run
    assert len(fitted) == len(truth)
    assert pulls_agree(fitted, truth)
    # The bound has the power to see a wrong answer: 10 % too much noise, or thresholds off
    # by a fifth of a step, fail it.
    wider = truth.copy()
    wider["noise"] *= 1.10
    assert not pulls_agree(fitted, wider)
    shifted = truth.copy()
    shifted["threshold"] += 1.0
    assert not pulls_agree(fitted, shifted)
    assert 0.7 < np.median(fitted["chi2_ndf"]) < 1.3
    for name in ("scurves", "maps"):
        image = matplotlib.image.imread(f"{prefix}_{name}.png")
        assert image.shape[0] > 100


def test_a_threshold_scan_falls_and_is_fitted_the_same_way(tmp_path):
    rng = np.random.default_rng(7)
    truth = truth_pixels(rng, 40, chips=(3,))
    definition = ScanDefinition.steps("threshold", "threshold", "mV", 400, 0, -5, pulses=200)
    path = tmp_path / "thr.apx"
    write_scan(path, definition, truth, rng)
    fitted = fit_scan(count_scan(path))
    order = np.argsort(fitted[["chip_id", "row", "column"]], order=["chip_id", "row", "column"])
    truth = np.sort(truth, order=["chip_id", "row", "column"])
    fitted = fitted[order]
    assert (fitted["status"] == "ok").all()
    pull = (fitted["threshold"] - truth["threshold"]) / fitted["threshold_error"]
    assert np.abs(pull).max() < 4.5


def test_fit_status_of_degenerate_pixels():
    x = np.arange(0, 100, 10.0)
    assert fit_scurve(x, np.zeros(10), 50).status == "no_hits"
    assert fit_scurve(x, np.full(10, 50), 50).status == "always_on"
    edge = fit_scurve(x, np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 20]), 50)
    assert edge.status == "outside" and edge.threshold > 90


def test_scan_figures_show_the_fit_table(scan_run, fitted_run):
    path, _, _ = scan_run
    counts = count_scan(path)
    table = fitted_run[0]
    fig = maps_figure(table, "mV")
    thresholds, noise = fit_maps(table, 1)
    (t_image,) = [ax.images[0] for ax in fig.get_axes()
                  if ax.images and ax.get_title() == "chip 1: threshold (mV)"]
    assert np.array_equal(np.asarray(t_image.get_array().filled(np.nan)), thresholds,
                          equal_nan=True)
    (n_image,) = [ax.images[0] for ax in fig.get_axes()
                  if ax.images and ax.get_title() == "chip 1: noise (mV)"]
    assert np.array_equal(np.asarray(n_image.get_array().filled(np.nan)), noise,
                          equal_nan=True)
    good = table[(table["chip_id"] == 1) & (table["status"] == "ok")]
    assert np.count_nonzero(~np.isnan(thresholds)) == len(good) > 0
    curves = scurves_figure(counts, table)
    (ax,) = curves.get_axes()
    assert len(ax.get_lines()) >= 6
    for figure in (fig, curves):
        assert matplotlib.image.imread(io.BytesIO(png_bytes(figure))).shape[0] > 100


def test_a_scan_run_is_not_reported_as_lost_between_its_steps(scan_run):
    from astropix_hil.monitor import accumulate_file

    path, _, _ = scan_run
    acc = accumulate_file(path)
    assert acc.readouts == 8100
    assert acc.ids == {"lost": 0, "duplicated": 0, "reordered": 0}


def test_scan_fit_of_a_run_without_a_scan_says_so(tmp_path, capsys):
    main(["emulate", "--out", str(tmp_path / "plain.apx"), "--readouts", "10"])
    capsys.readouterr()
    assert main(["scan", "fit", str(tmp_path / "plain.apx"), "--plots", "none"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a scan run" in err


def test_definition_round_trips_through_the_header_and_rejects_bad_ones():
    definition = ScanDefinition.steps("injection", "injection_amplitude", "V", 0.1, 0.5, 0.1,
                                      pulses=50, pixels=((0, 1, 2),))
    assert definition.values == (0.1, 0.2, 0.3, 0.4, 0.5)
    back = ScanDefinition.from_header({"scan": definition.to_header()})
    assert back == definition
    with pytest.raises(FormatError, match="bad scan definition"):
        ScanDefinition.from_header({"scan": {"kind": "sideways", "parameter": "x",
                                             "unit": "V", "values": [1], "pulses": 1}})
    with pytest.raises(ValueError):
        ScanDefinition.steps("injection", "a", "V", 0, 1, -0.1, pulses=1)
