"""``apx-hil import-log``: convert a legacy ``.log`` file to ``.apx``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from ..legacy import import_log
from ..outputfile import atomic_output
from .progress import add_quiet_option, progress_bar


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-log", help="convert a legacy .log file to .apx",
        description="Import a log of the older AstroPix DAQ scripts: its header lines go to the "
                    "JSON header (command-line options under 'options'), INDEX becomes the "
                    "readout_id and the timestamp is 0.")
    parser.add_argument("log", help="input .log file")
    parser.add_argument("-o", "--output", help="output .apx (default: the input with .apx)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    add_quiet_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    output = args.output or f"{os.path.splitext(args.log)[0]}.apx"
    with warnings.catch_warnings(), \
            atomic_output(output, args.force, inputs=[args.log]) as temporary:
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *rest: print(f"warning: {message}",
                                                            file=sys.stderr)
        with progress_bar(os.path.getsize(args.log), "B", "import-log", args.quiet) as bar:
            result = import_log(args.log, temporary, progress=bar.update)
    print(f"{result.readouts} readouts written to {output}"
          + (f", {result.skipped} unreadable skipped" if result.skipped else ""),
          file=sys.stderr)
    return 0
