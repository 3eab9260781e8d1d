"""matplotlib figures of an :class:`~astropix_hil.monitor.Accumulator`.

Each function draws what one accumulator holds at one moment (plot a
:meth:`~astropix_hil.monitor.Accumulator.snapshot` while another thread feeds the original);
nothing here looks at individual hits. Figures are built with matplotlib's object API, so they
render without a display (:func:`png_bytes`) as well as in a window.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure

from .accumulator import Accumulator

#: ToT axis reaches at least this far (µs), so a near-empty histogram is still readable.
_MIN_TOT_RANGE_US = 10.0


def draw_hitmaps(fig: Figure | SubFigure, acc: Accumulator) -> list[Axes]:
    """One hit map (row versus column, hits per pixel) per chip id seen; one empty panel
    before any hit."""
    chips = acc.chips or [None]
    axes = fig.subplots(1, len(chips), squeeze=False)[0]
    for ax, chip in zip(axes, chips, strict=True):
        if chip is None:
            image = ax.imshow(np.zeros(acc.hitmap.shape[1:]), origin="lower", aspect="auto",
                              cmap="viridis", vmin=0, vmax=1)
            ax.set_title("hit map: no hits yet")
        else:
            counts = acc.hitmap[chip]
            image = ax.imshow(counts, origin="lower", aspect="auto", cmap="viridis",
                              interpolation="nearest")
            ax.set_title(f"chip {chip}: {int(counts.sum())} hits")
        ax.set_xlabel("column")
        ax.set_ylabel("row")
        fig.colorbar(image, ax=ax, label="hits")
    return list(axes)


def tot_range(acc: Accumulator) -> int:
    """How many ToT bins to show: up to the last filled one."""
    filled = np.flatnonzero(acc.tot)
    last = int(filled[-1]) + 1 if filled.size else 0
    minimum = int(np.searchsorted(acc.tot_edges_us, _MIN_TOT_RANGE_US))
    return min(max(last, minimum), acc.tot.size)


def draw_tot(ax: Axes, acc: Accumulator) -> None:
    """The ToT histogram (hits per ToT bin)."""
    upto = tot_range(acc)
    ax.stairs(acc.tot[:upto], acc.tot_edges_us[:upto + 1], fill=True, alpha=0.8)
    ax.set_xlabel("ToT (µs)")
    ax.set_ylabel(f"hits / {acc.tot_bin_cycles / 20:g} µs")
    ax.set_title(f"ToT: {acc.hits} hits")


def draw_rates(ax: Axes, acc: Accumulator) -> None:
    """Readout rate and hit rate versus time since the first readout."""
    centres, readout_rate, hit_rate = acc.rates()
    ax.plot(centres, readout_rate, drawstyle="steps-mid", label="readouts/s")
    ax.plot(centres, hit_rate, drawstyle="steps-mid", label="hits/s")
    ax.set_xlabel(f"time since first readout (s), bins of {acc.time_bin_ns / 1e9:g} s")
    ax.set_ylabel("rate (1/s)")
    ax.set_title(f"rates: {acc.readouts} readouts")
    ax.legend(loc="upper left")


def status_lines(acc: Accumulator, width: int = 60) -> list[str]:
    """The text panel: run header, per-stream accounting, decoding flags, socket drops."""
    lines = [f"source: {acc.source}"[:width], f"readouts {acc.readouts}, hits {acc.hits}"]
    for row in acc.loss_rows():
        lines.append(f"{row['stream'][:16]}: received {row['received']}, lost {row['lost']}, "
                     f"dup {row['duplicated']}, reord {row['reordered']}")
    flags = acc.flag_counts()
    lines.append("decoding flags (readouts):" + ("" if flags else " none"))
    lines += [f"  {name}: {count}" for name, count in flags.items()]
    if acc.receiver is not None:
        drops = acc.receiver.get("socket_drops")
        malformed = acc.receiver.get("totals", {}).get("malformed", 0)
        lines.append(f"socket drops: {'unknown' if drops is None else drops}, "
                     f"malformed datagrams: {malformed}")
    lines += [f"warning: {w}"[:width] for w in acc.warnings]
    lines.append("run header:")
    lines += [f"  {k}: {v}"[:width] for k, v in header_items(acc.header)]
    return lines


def header_items(header: dict[str, Any] | None, limit: int = 12) -> list[tuple[str, str]]:
    """Up to ``limit`` header entries as short text (long values are cut)."""
    if not header:
        return [("(none)", "")]
    items = []
    for key, value in header.items():
        text = value if isinstance(value, str) else json.dumps(value)
        items.append((str(key), text if len(text) <= 48 else text[:45] + "..."))
    return items[:limit]


def draw_status(ax: Axes, acc: Accumulator) -> None:
    """The text panel in an axes of its own."""
    ax.axis("off")
    ax.text(0, 1, "\n".join(status_lines(acc)), va="top", ha="left", family="monospace",
            fontsize=8, transform=ax.transAxes)


def draw_monitor(fig: Figure, acc: Accumulator) -> None:
    """The whole monitor: hit maps, ToT, rates and the text panel, on a cleared figure."""
    fig.clear()
    top, bottom = fig.subfigures(2, 1, height_ratios=(1.1, 1))
    maps, tot = top.subfigures(1, 2, width_ratios=(2, 1))
    draw_hitmaps(maps, acc)
    draw_tot(tot.subplots(), acc)
    rates_ax, status_ax = bottom.subplots(1, 2, gridspec_kw={"width_ratios": (2, 1)})
    draw_rates(rates_ax, acc)
    draw_status(status_ax, acc)


def monitor_figure(acc: Accumulator, size: tuple[float, float] = (14, 8)) -> Figure:
    """A new (display-less) figure of the whole monitor."""
    fig = Figure(figsize=size, layout="constrained")
    draw_monitor(fig, acc)
    return fig


class MonitorView:
    """The monitor figure kept between refreshes: each :meth:`update` changes the data of the
    existing artists (no new axes, no layout pass) unless the set of chips changed."""

    def __init__(self, fig: Figure) -> None:
        self.fig = fig
        self._chips: list[int] | None = None

    def update(self, acc: Accumulator) -> None:
        """Show ``acc`` (a snapshot); call ``fig.canvas.draw_idle()`` (or render) after."""
        if acc.chips != self._chips:
            self._build(acc)
            return
        for image, chip in zip(self._images, self._chips, strict=True):
            counts = acc.hitmap[chip]
            image.set_data(counts)
            image.set_clim(0, max(int(counts.max()), 1))
            image.axes.set_title(f"chip {chip}: {int(counts.sum())} hits")
        upto = tot_range(acc)
        self._stairs.set_data(acc.tot[:upto], acc.tot_edges_us[:upto + 1])
        self._tot_ax.set_title(f"ToT: {acc.hits} hits")
        centres, readout_rate, hit_rate = acc.rates()
        self._lines[0].set_data(centres, readout_rate)
        self._lines[1].set_data(centres, hit_rate)
        self._rates_ax.set_title(f"rates: {acc.readouts} readouts")
        self._rates_ax.set_xlabel(
            f"time since first readout (s), bins of {acc.time_bin_ns / 1e9:g} s")
        for ax in (self._tot_ax, self._rates_ax):
            ax.relim()
            ax.autoscale_view()
        self._text.set_text("\n".join(status_lines(acc)))

    def _build(self, acc: Accumulator) -> None:
        self.fig.set_layout_engine("constrained")
        draw_monitor(self.fig, acc)
        axes = self.fig.get_axes()
        self._chips = acc.chips
        self._images = [ax.images[0] for ax in axes if ax.images] if acc.chips else []
        (self._tot_ax,) = [ax for ax in axes if ax.get_xlabel().startswith("ToT")]
        (self._stairs,) = self._tot_ax.patches
        (self._rates_ax,) = [ax for ax in axes if ax.get_ylabel() == "rate (1/s)"]
        self._lines = self._rates_ax.get_lines()
        (self._text,) = [t for ax in axes for t in ax.texts]
        # Lay out once now; later refreshes keep these positions (a layout pass is slow).
        self.fig.canvas.draw()
        self.fig.set_layout_engine("none")


def report_figures(acc: Accumulator) -> dict[str, Figure]:
    """The report's figures by name: hit maps, ToT histogram, rates."""
    chips = max(len(acc.chips), 1)
    maps = Figure(figsize=(4.5 * chips + 1, 4), layout="constrained")
    draw_hitmaps(maps, acc)
    tot = Figure(figsize=(7, 4), layout="constrained")
    draw_tot(tot.subplots(), acc)
    rates = Figure(figsize=(10, 4), layout="constrained")
    draw_rates(rates.subplots(), acc)
    return {"hitmap": maps, "tot": tot, "rates": rates}


def png_bytes(fig: Figure, dpi: int = 90) -> bytes:
    """The figure rendered to PNG (Agg, no display)."""
    FigureCanvasAgg(fig)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=dpi)
    return out.getvalue()
