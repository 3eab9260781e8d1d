"""Figures of a scan fit: s-curves of a few pixels, threshold and noise maps and histograms."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ..monitor.accumulator import COLUMNS, ROWS
from .counts import ScanCounts
from .fit import scurve


def fit_maps(table: np.ndarray, chip: int) -> tuple[np.ndarray, np.ndarray]:
    """Threshold and noise per (row, column) of one chip; NaN where no good fit."""
    thresholds = np.full((ROWS, COLUMNS), np.nan)
    noise = np.full((ROWS, COLUMNS), np.nan)
    good = table[(table["chip_id"] == chip) & (table["status"] == "ok")]
    thresholds[good["row"], good["column"]] = good["threshold"]
    noise[good["row"], good["column"]] = good["noise"]
    return thresholds, noise


def scurves_figure(counts: ScanCounts, table: np.ndarray, count: int = 6) -> Figure:
    """Hit fraction versus the scanned value of up to ``count`` fitted pixels, with the fit."""
    definition = counts.definition
    x = np.asarray(definition.values)
    pulses = definition.pulses or 1
    good = table[table["status"] == "ok"]
    shown = good[np.linspace(0, len(good) - 1, min(count, len(good))).astype(int)] \
        if len(good) else good
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    fine = np.linspace(x.min(), x.max(), 400)
    rising = definition.kind == "injection"
    for row in shown:
        k = counts.hits[:, row["chip_id"], row["row"], row["column"]]
        frac = np.clip(k / pulses, 0, 1)
        error = np.sqrt(np.clip(frac * (1 - frac), 1 / pulses, None) / pulses)
        label = (f"chip {row['chip_id']} ({row['row']},{row['column']}): "
                 f"{row['threshold']:.3g}, noise {row['noise']:.2g}")
        bars = ax.errorbar(x, frac, error, fmt="o", markersize=3, label=label)
        ax.plot(fine, scurve(fine, row["threshold"], row["noise"], rising),
                color=bars[0].get_color())
    ax.set_xlabel(f"{definition.parameter} ({definition.unit})")
    ax.set_ylabel(f"hit fraction ({pulses} pulses)")
    ax.set_title(f"s-curves: {len(shown)} of {len(good)} fitted pixels")
    if len(shown):
        ax.legend(fontsize=7)
    return fig


def maps_figure(table: np.ndarray, unit: str) -> Figure:
    """Per chip: threshold map, noise map; then the histograms of both (good fits)."""
    chips = sorted({int(c) for c in table["chip_id"]}) or [0]
    fig = Figure(figsize=(10, 3.6 * (len(chips) + 1)), layout="constrained")
    axes = fig.subplots(len(chips) + 1, 2, squeeze=False)
    for (t_ax, n_ax), chip in zip(axes, chips, strict=False):
        thresholds, noise = fit_maps(table, chip)
        for ax, data, name in ((t_ax, thresholds, "threshold"), (n_ax, noise, "noise")):
            image = ax.imshow(data, origin="lower", aspect="auto", interpolation="nearest")
            ax.set_title(f"chip {chip}: {name} ({unit})")
            ax.set_xlabel("column")
            ax.set_ylabel("row")
            fig.colorbar(image, ax=ax)
    good = table[table["status"] == "ok"]
    for ax, name in zip(axes[-1], ("threshold", "noise"), strict=True):
        if len(good):
            ax.hist(good[name], bins=min(50, max(len(good) // 4, 5)))
        ax.set_xlabel(f"{name} ({unit})")
        ax.set_ylabel("pixels")
        ax.set_title(f"{name}: {len(good)} pixels" + (
            f", mean {np.mean(good[name]):.3g}, rms {np.std(good[name]):.2g}" if len(good)
            else ""))
    return fig
