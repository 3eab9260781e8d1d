"""``apx-hil convert``: decode an ``.apx`` file to a hit table (CSV or numpy)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..fileio import ReadReport, iter_hit_chunks, read_header
from ..hitcsv import write_hits_csv
from ..hitnpy import write_hits_npy
from .progress import add_quiet_option, progress_bar

FORMATS = ("csv", "npy")
#: Bytes of the file decoded at a time: memory stays bounded whatever the file's size.
CHUNK_BYTES = 4 << 20


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
                             "format's extension)")
    add_quiet_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    output = args.output or f"{os.path.splitext(args.apx)[0]}.{args.format}"
    header = read_header(args.apx)
    report = ReadReport()
    with progress_bar(os.path.getsize(args.apx), "B", "convert", args.quiet) as bar:
        chunks = _hits(args.apx, report, bar)
        if args.format == "npy":
            if output == "-":
                count = write_hits_npy(sys.stdout.buffer, chunks)
            else:
                with open(output, "wb") as stream:
                    count = write_hits_npy(stream, chunks)
        elif output == "-":
            count = write_hits_csv(sys.stdout, chunks, header)
        else:
            with open(output, "w", encoding="utf-8", newline="") as stream:
                count = write_hits_csv(stream, chunks, header)
    if output != "-":
        print(f"{count} hits written to {output}", file=sys.stderr)
    if report.damaged_bytes:
        print(f"apx-hil convert: {args.apx}: skipped {report.damaged_bytes} damaged bytes in "
              f"{report.damaged_regions} regions (first at byte offset "
              f"{report.damaged[0][0]}); every readout outside them was converted",
              file=sys.stderr)
    return 0


def _hits(path: str, report: ReadReport, bar: Any) -> Iterator[np.ndarray]:
    """The file's hits a chunk at a time, moving the bar by the bytes read."""
    done = 0
    for chunk in iter_hit_chunks(path, CHUNK_BYTES, report):
        bar.update(chunk.file_offset - done)
        done = chunk.file_offset
        yield chunk.hits
