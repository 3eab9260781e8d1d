"""``apx-hil scan``: scans of the chip. ``scan injection`` and ``scan threshold`` take a scan
run through the board (:mod:`astropix_hil.scan.acquire`); ``scan fit`` fits its s-curves.
A scan run is one ``.apx`` file whose header has a scan definition (see docs/format.rst).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..boards.nexys.link import DEFAULT_BAUDRATE, DEFAULT_REPLY_TIMEOUT, open_link
from ..errors import ApxHilError
from ..monitor import require
from .argtypes import finite_float, non_negative_float, positive_float, positive_int
from .configure import pixel

#: Summary lines name at most this many pixels (then a total).
SHOWN_PIXELS = 8


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("scan", help="chip scans and their s-curve fits",
                                   description="Take scan runs through the board and fit "
                                               "their s-curves.")
    actions = parser.add_subparsers(dest="scan_command", metavar="ACTION", required=True)
    injection = actions.add_parser(
        "injection", help="step the injection amplitude; count hits per pixel",
        description="For each injection amplitude from --from to --to by --step (mV): "
                    "configure the board and chip, inject --pulses pulses into the selected "
                    "pixels, count their hits; store everything in one .apx scan run.")
    _common(injection, "injection amplitude")
    injection.add_argument("--threshold", type=finite_float, metavar="MV",
                           help="comparator threshold above the baseline, mV (default: the "
                                "configuration's)")
    injection.add_argument("--pulses", type=positive_int, default=100, metavar="N",
                           help="injected pulses per step (default 100)")
    injection.add_argument("--period", type=positive_float, default=1.0, metavar="MS",
                           help="time between pulses, ms (default 1)")
    injection.set_defaults(run=run_take, kind="injection", vinj=None, time=None)
    threshold = actions.add_parser(
        "threshold", help="step the comparator threshold; count noise (or injected) hits",
        description="For each comparator threshold from --from to --to by --step (mV): "
                    "configure the board and chip with the selected pixels enabled and count "
                    "their noise hits for --time seconds (no injection), or, with --vinj, "
                    "inject --pulses pulses of that amplitude; store everything in one .apx "
                    "scan run.")
    _common(threshold, "threshold")
    threshold.add_argument("--time", type=positive_float, default=1.0, metavar="S",
                           help="seconds of noise counting per step (default 1)")
    threshold.add_argument("--vinj", type=non_negative_float, metavar="MV",
                           help="inject pulses of this amplitude instead of counting noise")
    threshold.add_argument("--pulses", type=positive_int, default=100, metavar="N",
                           help="injected pulses per step with --vinj (default 100)")
    threshold.add_argument("--period", type=positive_float, default=1.0, metavar="MS",
                           help="time between pulses with --vinj, ms (default 1)")
    threshold.set_defaults(run=run_take, kind="threshold", threshold=None)
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


def _common(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--port", required=True,
                        help="board port: a device, a pty path or a pyserial URL (apxemu://)")
    parser.add_argument("--baudrate", type=positive_int, default=DEFAULT_BAUDRATE)
    parser.add_argument("--reply-timeout", type=positive_float, default=DEFAULT_REPLY_TIMEOUT)
    parser.add_argument("--config", help="chip configuration YAML (team's v4 schema; default: "
                                         "the bundled default_v4.yml)")
    parser.add_argument("--pixel", type=pixel, action="append", required=True,
                        metavar="ROW,COL", help="a pixel to scan (repeat for more)")
    parser.add_argument("--from", dest="start", type=finite_float, required=True,
                        metavar="MV", help=f"first {what}, mV")
    parser.add_argument("--to", dest="stop", type=finite_float, required=True, metavar="MV",
                        help=f"last {what}, mV (included)")
    parser.add_argument("--step", type=finite_float, required=True, metavar="MV",
                        help=f"{what} step, mV (negative to scan downwards)")
    parser.add_argument("--out", required=True, help="the scan run (.apx) to write")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")


def run_take(args: argparse.Namespace) -> int:
    from ..chipconfig import load_config, load_default
    from ..chipconfig.model import ChipConfigError
    from ..chipconfig.patgen import PatternGenerator
    from ..daq import run_header
    from ..fileio import ApxWriter
    from ..outputfile import atomic_output, check_output
    from ..scan.acquire import ScanPlan, definition_of, run_scan, scan_config
    from ..scan.definition import ScanDefinition

    inputs = [args.config] if args.config else []
    check_output(args.out, force=args.force, inputs=inputs)
    config = load_config(args.config) if args.config else load_default()
    try:
        values = ScanDefinition.steps(args.kind, "x", "mV", args.start, args.stop, args.step,
                                      None).values
        plan = ScanPlan(args.kind, values, [tuple(p) for p in args.pixel], pulses=args.pulses,
                        period_ms=args.period, threshold_mv=args.threshold, vinj_mv=args.vinj,
                        time_s=args.time or 1.0, settings={"config": args.config})
        definition = definition_of(plan, config)
        scan_config(config, plan.pixels, plan.injects)  # a bad pixel fails here
        if plan.injects:  # so do a pulse count or period the generator cannot make
            PatternGenerator.for_period(plan.period_ms, cycle=plan.pulses)
    except (ValueError, ChipConfigError) as exc:
        raise ApxHilError(str(exc)) from None
    options = {k: v for k, v in vars(args).items() if k not in ("run", "verbose")}
    header = run_header(args.port, options)
    header["scan"] = definition.to_header()
    link = open_link(args.port, baudrate=args.baudrate, reply_timeout=args.reply_timeout)
    steps = len(definition.values)

    def show(result) -> None:
        shown = list(result.hits.items())[:SHOWN_PIXELS]
        text = " ".join(f"({r},{c}):{n}" for (_, r, c), n in shown)
        more = len(result.hits) - len(shown)
        if more:
            text += f" +{more} pixels, total {sum(result.hits.values())}"
        if result.other_hits:
            text += f"; {result.other_hits} hits of other pixels"
        print(f"step {result.index + 1}/{steps} {definition.parameter} {result.value:.2f} "
              f"{definition.unit}: {result.readouts} readouts, hits {text}", file=sys.stderr,
              flush=True)

    try:
        with atomic_output(args.out, args.force, inputs=inputs) as temporary, \
                ApxWriter(temporary, header) as writer:
            run_scan(link, config, plan, writer, definition, on_step=show)
    finally:
        link.close()
    print(f"apx-hil scan {args.kind}: {steps} steps to {args.out}", file=sys.stderr)
    return 0


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
