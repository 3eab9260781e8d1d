"""``apx-hil report``: an HTML report of an ``.apx`` file (hit maps, ToT, rates, losses)."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import ApxHilError
from ..monitor import accumulate_file, require


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="write a self-contained HTML report of an .apx file",
        description="Decode a run and write one HTML page (no external resources): hit "
                    "maps, ToT histogram and rates as embedded PNG, the readouts lost, "
                    "duplicated or reordered (from the readout ids), decoding flags and the "
                    "run header. Needs the [plot] extra (matplotlib).")
    parser.add_argument("apx", help="input .apx file")
    parser.add_argument("-o", "--output", help="output .html (default: the input's name)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    require("matplotlib", "plot")
    output = args.output or f"{os.path.splitext(args.apx)[0]}.html"
    if os.path.exists(output) and not args.force:
        raise ApxHilError(f"{output} exists; use --force to overwrite it")
    import matplotlib

    matplotlib.use("Agg")
    from ..monitor.report import write_report

    acc = accumulate_file(args.apx)
    write_report(output, acc)
    for warning in acc.warnings:
        print(f"apx-hil report: warning: {warning}", file=sys.stderr)
    print(f"report of {acc.readouts} readouts, {acc.hits} hits written to {output}",
          file=sys.stderr)
    return 0
