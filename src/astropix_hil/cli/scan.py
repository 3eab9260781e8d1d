"""``apx-hil scan``: scans of the chip. ``scan fit`` fits the s-curves of a scan run.

``scan injection`` and ``scan threshold`` (which drive the board through a scan) need the
chip configuration to reach the emulated chip; until then a scan run is any ``.apx`` file whose
header has a scan definition (see docs/format.rst).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import ApxHilError
from ..monitor import require


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("scan", help="chip scans and their s-curve fits",
                                   description="Analyse (and later take) scan runs.")
    actions = parser.add_subparsers(dest="scan_command", metavar="ACTION", required=True)
    fit = actions.add_parser(
        "fit", help="fit an s-curve per pixel to a scan run",
        description="Count hits per pixel per step of a scan run, fit an error function to "
                    "the hit fraction versus the scanned value, and write a table (pixel, "
                    "threshold, noise, their errors, chi2/ndf, fit status) as CSV and plots "
                    "(s-curves of a few pixels; threshold and noise maps and histograms) as "
                    "PNG. Needs the [analysis] extra (scipy) and, for plots, [plot].")
    fit.add_argument("apx", help="scan run (.apx with a 'scan' header entry)")
    fit.add_argument("-o", "--output", help="fit table CSV (default: RUN_fit.csv)")
    fit.add_argument("--plots", metavar="PREFIX",
                     help="PNG files PREFIX_scurves.png and PREFIX_maps.png (default: the "
                          "run's name; 'none' for no plots)")
    fit.add_argument("--force", action="store_true", help="overwrite existing outputs")
    fit.set_defaults(run=run_fit)


def run_fit(args: argparse.Namespace) -> int:
    require("scipy", "analysis")
    base = os.path.splitext(args.apx)[0]
    output = args.output or f"{base}_fit.csv"
    prefix = None if args.plots == "none" else (args.plots or base)
    if prefix is not None:
        require("matplotlib", "plot")
    plots = {} if prefix is None else {"scurves": f"{prefix}_scurves.png",
                                       "maps": f"{prefix}_maps.png"}
    for path in (output, *plots.values()):
        if os.path.exists(path) and not args.force:
            raise ApxHilError(f"{path} exists; use --force to overwrite it")
    from ..scan import count_scan
    from ..scan.fit import STATUSES, fit_scan, write_fit_csv

    counts = count_scan(args.apx)
    try:
        table = fit_scan(counts)
    except ValueError as exc:
        raise ApxHilError(str(exc)) from None
    write_fit_csv(output, table)
    if plots:
        import matplotlib

        matplotlib.use("Agg")
        from ..monitor.figures import png_bytes
        from ..scan.plots import maps_figure, scurves_figure

        figures = {"scurves": scurves_figure(counts, table),
                   "maps": maps_figure(table, counts.definition.unit)}
        for name, path in plots.items():
            with open(path, "wb") as stream:
                stream.write(png_bytes(figures[name]))
    tally = ", ".join(f"{s} {int((table['status'] == s).sum())}" for s in STATUSES
                      if (table["status"] == s).any())
    print(f"{len(table)} pixels fitted ({tally or 'none'}) to {output}"
          + (f"; plots {', '.join(plots.values())}" if plots else ""), file=sys.stderr)
    return 0
