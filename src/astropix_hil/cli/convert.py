"""``apx-hil convert``: decode an ``.apx`` file to a hit table (CSV or numpy)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import BinaryIO, TextIO

import numpy as np

from ..fileio import iter_hit_chunks, read_header
from ..fmt import HIT_DTYPE
from ..hitcsv import write_hits_csv
from ..outputfile import atomic_output

FORMATS = ("csv", "npy")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="decode an .apx file to one row per hit",
        description="Decode every hit of an .apx file (extra bytes passed from readout to "
                    "readout) and write them with the reference decoder's columns. CSV starts "
                    "with a '#' line holding the file's JSON header.")
    parser.add_argument("apx", help="input .apx file")
    parser.add_argument("--format", choices=FORMATS, default="csv", help="output format")
    parser.add_argument("-o", "--output",
                        help="output file ('-' for stdout; default: the input with the "
                             "format's extension; numpy adds .npy to a name without it)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    parser.set_defaults(run=run)


def output_name(args: argparse.Namespace) -> str:
    """The file the conversion writes: ``-o`` (with ``.npy`` added as :func:`numpy.save` adds
    it), or the input with the format's extension."""
    output = args.output or f"{os.path.splitext(args.apx)[0]}.{args.format}"
    if args.format == "npy" and output != "-" and not output.endswith(".npy"):
        output += ".npy"
    return output


def _write(stream: BinaryIO | TextIO, args: argparse.Namespace) -> int:
    header = read_header(args.apx)
    chunks = (chunk.hits for chunk in iter_hit_chunks(args.apx))
    if args.format == "npy":
        hits = np.concatenate([*chunks, np.empty(0, dtype=HIT_DTYPE)])
        np.save(stream, hits)
        return len(hits)
    return write_hits_csv(stream, chunks, header)


def run(args: argparse.Namespace) -> int:
    output = output_name(args)
    if output == "-":
        _write(sys.stdout.buffer if args.format == "npy" else sys.stdout, args)
        return 0
    read_header(args.apx)  # a bad input fails before anything is created
    with atomic_output(output, args.force, inputs=[args.apx]) as temporary:
        if args.format == "npy":
            with open(temporary, "wb") as stream:
                count = _write(stream, args)
        else:
            with open(temporary, "w", encoding="utf-8", newline="") as stream:
                count = _write(stream, args)
    print(f"{count} hits written to {output}", file=sys.stderr)
    return 0

