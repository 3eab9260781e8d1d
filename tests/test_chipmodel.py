"""The configured chip's front end (per-pixel thresholds, s-curve, noise) and
``apx-hil emulate --config``."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from astropix_hil.chipconfig import load_bundled
from astropix_hil.cli import main
from astropix_hil.emulator.chipmodel import ConfiguredSource
from astropix_hil.emulator.pixels import ChipState, PixelModel
from astropix_hil.errors import EmulatorConfigError
from astropix_hil.fileio import read_hits

NONE = "src/astropix_hil/chipconfig/data/config_v4_none.yml"


def one_pixel_state(row: int, col: int, threshold: float, vinj: float) -> ChipState:
    state = ChipState.off()
    comparator = state.comparator.copy()
    comparator[row, col] = True
    return state._replace(comparator=comparator, injection=comparator.copy(),
                          threshold_mv=threshold, vinj_mv=vinj)


def test_injected_pulses_fire_along_the_s_curve_of_the_pixels_threshold_and_noise():
    model = PixelModel(seed=5)
    row, col, vinj = 4, 7, 300.0
    centre = vinj - model.threshold_offset_mv[row, col]
    rng = np.random.default_rng(0)
    pulses = np.arange(4000, dtype=np.int64) * 1000
    for threshold, expected in ((centre - 10, None), (centre, 0.5), (centre + 10, None)):
        state = one_pixel_state(row, col, threshold, vinj)
        hits = model.sample(rng, state, pulses, 0, 4_000_000)
        p = model.fire_probability(row, col, threshold, vinj)
        if expected is not None:
            assert p == pytest.approx(expected)
        assert len(hits.time_ns) / 4000 == pytest.approx(p, abs=0.03)
        assert set(hits.row.tolist()) <= {row} and set(hits.column.tolist()) <= {col}


def test_noise_rate_falls_steeply_with_the_threshold_and_needs_an_enabled_comparator():
    model = PixelModel(seed=1, threshold_spread_mv=0, noise_spread_mv=0)  # sigma 5 mV
    rates = [model.noise_rates(one_pixel_state(0, 0, t, 0))[0, 0] for t in (0, 10, 20, 50)]
    assert rates[0] == pytest.approx(model.noise_rate_hz)
    assert rates[0] > 5 * rates[1] and rates[1] > 100 * rates[2] and rates[3] < 1e-10
    assert model.noise_rates(ChipState.off()).sum() == 0


def test_the_pixel_table_is_the_truth_the_model_uses(tmp_path):
    model = PixelModel(seed=9, threshold_spread_mv=8.0)
    table = model.table()
    assert len(table) == 13 * 16
    assert np.std(table["threshold_offset_mv"]) == pytest.approx(8.0, rel=0.25)
    path = tmp_path / "pixels.csv"
    with open(path, "w", encoding="utf-8") as stream:
        model.write_table(stream)
    with open(path, encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    pick = rows[3 * 16 + 5]
    assert (int(pick["row"]), int(pick["column"])) == (3, 5)
    assert float(pick["threshold_offset_mv"]) == pytest.approx(
        model.threshold_mv(3, 5, 0.0), abs=1e-5)
    with pytest.raises(EmulatorConfigError, match="noise_mv"):
        PixelModel(noise_mv=0)


def test_configured_source_fires_only_enabled_injected_pixels():
    config = load_bundled("config_v4_none.yml")
    assert ConfiguredSource(config).mean_rate() == 0
    config.enable_pixel(1, 1)
    config.enable_injection(1, 1)
    source = ConfiguredSource(config)  # no generator: no injection, no noise at 200 mV
    assert len(source.sample(np.random.default_rng(1), 0, 10**9).time_ns) == 0


def test_emulate_with_a_config_obeys_it(tmp_path, capsys):
    out, none_out, table = tmp_path / "inj.apx", tmp_path / "none.apx", tmp_path / "p.csv"
    assert main(["emulate", "--config", NONE, "--duration", "1", "--out", str(none_out)]) == 0
    assert len(read_hits(none_out)) == 0
    assert main(["emulate", "--config", NONE, "--inject", "3,4", "--period", "10",
                 "--duration", "1", "--out", str(out), "--pixel-table", str(table)]) == 0
    hits = read_hits(out)
    assert 98 <= len(hits) <= 101
    assert set(zip(hits["row"].tolist(), hits["column"].tolist(), strict=True)) == {(3, 4)}
    assert table.read_text().startswith("row,column,threshold_offset_mv,noise_mv")
    assert main(["emulate", "--inject", "3,4", "--duration", "1", "--out",
                 str(tmp_path / "x.apx")]) == 1
    assert "need --config" in capsys.readouterr().err
