"""``apx-hil convert``: decode an ``.apx`` file to a hit table (CSV, numpy, ECSV, FITS, HDF5,
Parquet)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import BinaryIO, TextIO

import numpy as np

from ..astep_files import is_astep
from ..errors import ApxHilError
from ..fileio import iter_hit_chunks, read_header
from ..fmt import HIT_DTYPE
from ..hitcsv import write_hits_csv
from ..outputfile import atomic_output
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
                             "format's extension; numpy adds .npy to a name without it)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    astep_convert.add_options(parser)
    parser.set_defaults(run=run)


def output_name(args: argparse.Namespace) -> str:
    """The file the conversion writes: ``-o`` (with ``.npy`` added as :func:`numpy.save` adds
    it), or the input with the format's extension."""
    output = args.output or f"{os.path.splitext(args.apx)[0]}.{args.format}"
    if args.format == "npy" and output != "-" and not output.endswith(".npy"):
        output += ".npy"
    return output


def _write_hits(stream: BinaryIO | TextIO, args: argparse.Namespace, header: dict) -> int:
    chunks = (chunk.hits for chunk in iter_hit_chunks(args.apx))
    if args.format == "npy":
        hits = np.concatenate([*chunks, np.empty(0, dtype=HIT_DTYPE)])
        np.save(stream, hits)
        return len(hits)
    return write_hits_csv(stream, chunks, header)


def _to_stdout(args: argparse.Namespace, header: dict) -> None:
    if is_astep(header):
        astep_convert.convert(args, header, "-")
    elif args.format in TABLE_WRITERS:
        raise ApxHilError(f"--format {args.format} writes a file, not stdout: give -o")
    elif args.format == "bin":
        raise ApxHilError("--format bin is for A-STEP runs (readout_uid 4100) only")
    else:
        _write_hits(sys.stdout.buffer if args.format == "npy" else sys.stdout, args, header)


def _to_file(path: str, args: argparse.Namespace, header: dict) -> tuple[int, str]:
    """Write the conversion to ``path``; the count written and what it counts."""
    if is_astep(header):
        count = astep_convert.convert(args, header, path)
        return count, "bytes" if args.format == "bin" else "rows"
    if args.format == "bin":
        raise ApxHilError("--format bin is for A-STEP runs (readout_uid 4100) only")
    if args.format in TABLE_WRITERS:
        chunks = (chunk.hits for chunk in iter_hit_chunks(args.apx))
        return TABLE_WRITERS[args.format](path, chunks, header), "hits"
    if args.format == "npy":
        with open(path, "wb") as stream:
            return _write_hits(stream, args, header), "hits"
    with open(path, "w", encoding="utf-8", newline="") as stream:
        return _write_hits(stream, args, header), "hits"


def run(args: argparse.Namespace) -> int:
    output = output_name(args)
    header = read_header(args.apx)  # a bad input fails before anything is created
    if output == "-":
        _to_stdout(args, header)
        return 0
    with atomic_output(output, args.force, inputs=[args.apx]) as temporary:
        count, unit = _to_file(temporary, args, header)
    print(f"{count} {unit} written to {output}", file=sys.stderr)
    return 0
