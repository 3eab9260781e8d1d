"""``apx-hil convert``: decode an ``.apx`` file to a hit table (CSV, numpy, ECSV, FITS, HDF5,
Parquet)."""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from ..astep_files import is_astep
from ..errors import ApxHilError
from ..fileio import iter_hit_chunks, read_header
from ..fmt import HIT_DTYPE
from ..hitcsv import write_hits_csv
from ..tables import WRITERS as TABLE_WRITERS
from . import astep_convert

FORMATS = ("csv", "npy", "bin", *TABLE_WRITERS)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="decode an .apx file to one row per hit",
        description="Decode every hit of an .apx file (extra bytes passed from readout to "
                    "readout) and write them with the reference decoder's columns. CSV starts "
                    "with a '#' line holding the file's JSON header. A-STEP runs decode to "
                    "their own columns (layer, chip_id, ..., fpga_ts); --format bin writes "
                    "an A-STEP run as the team's raw .bin (reads back to back).")
    parser.add_argument("apx", help="input .apx file")
    parser.add_argument("--format", choices=FORMATS, default="csv", help="output format")
    parser.add_argument("-o", "--output",
                        help="output file ('-' for stdout; default: the input with the "
                             "format's extension)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    astep_convert.add_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    output = args.output or f"{os.path.splitext(args.apx)[0]}.{args.format}"
    if output != "-" and os.path.exists(output) and not args.force:
        raise ApxHilError(f"{output} exists; use --force to overwrite it")
    header = read_header(args.apx)
    if is_astep(header):
        count = astep_convert.convert(args, header, output)
        if output != "-":
            unit = "bytes" if args.format == "bin" else "rows"
            print(f"{count} {unit} written to {output}", file=sys.stderr)
        return 0
    if args.format == "bin":
        raise ApxHilError("--format bin is for A-STEP runs (readout_uid 4100) only")
    chunks = (chunk.hits for chunk in iter_hit_chunks(args.apx))
    if args.format in TABLE_WRITERS:
        if output == "-":
            raise ApxHilError(f"--format {args.format} writes a file, not stdout: give -o")
        count = TABLE_WRITERS[args.format](output, chunks, header)
    elif args.format == "npy":
        hits = np.concatenate([*chunks, np.empty(0, dtype=HIT_DTYPE)])
        np.save(sys.stdout.buffer if output == "-" else output, hits)
        count = len(hits)
    elif output == "-":
        count = write_hits_csv(sys.stdout, chunks, header)
    else:
        with open(output, "w", encoding="utf-8", newline="") as stream:
            count = write_hits_csv(stream, chunks, header)
    if output != "-":
        print(f"{count} hits written to {output}", file=sys.stderr)
    return 0

