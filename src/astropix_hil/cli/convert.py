"""``apx-hil convert``: decode an ``.apx`` file to a hit table (CSV, numpy, ECSV, FITS, HDF5,
Parquet; A-STEP runs also to the team's raw ``.bin``)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np

from ..astep_fmt import ASTEP_UID
from ..errors import ApxHilError
from ..fileio import ReadReport, iter_hit_chunks, read_header
from ..hitcsv import write_hits_csv
from ..hitnpy import write_hits_npy
from ..outputfile import atomic_output
from ..tables import WRITERS as TABLE_WRITERS
from . import astep_convert
from .progress import add_quiet_option, progress_bar

FORMATS = ("csv", "npy", "bin", *TABLE_WRITERS)
#: Bytes of the file decoded at a time: memory stays bounded whatever the file's size.
CHUNK_BYTES = 4 << 20


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
    add_quiet_option(parser)
    astep_convert.add_options(parser)
    parser.set_defaults(run=run)


def output_name(args: argparse.Namespace) -> str:
    """The file the conversion writes: ``-o`` (with ``.npy`` added as :func:`numpy.save` adds
    it), or the input with the format's extension."""
    output = args.output or f"{os.path.splitext(args.apx)[0]}.{args.format}"
    if args.format == "npy" and output != "-" and not output.endswith(".npy"):
        output += ".npy"
    return output


def _hits(path: str, report: ReadReport, bar: Any) -> Iterator[np.ndarray]:
    """The file's hits a chunk at a time, moving the bar by the bytes read."""
    done = 0
    for chunk in iter_hit_chunks(path, CHUNK_BYTES, report):
        bar.update(chunk.file_offset - done)
        done = chunk.file_offset
        yield chunk.hits


def _write_hits(stream: BinaryIO, args: argparse.Namespace, header: dict,
                chunks: Iterator[np.ndarray]) -> int:
    if args.format == "npy":
        return write_hits_npy(stream, chunks)
    return write_hits_csv(stream, chunks, header)


def _convert(output: str, args: argparse.Namespace, header: dict,
             chunks: Iterator[np.ndarray], bar: Any) -> tuple[int, str]:
    """Write the conversion to ``output`` (a path, or ``-`` for stdout); the count written
    and what it counts."""
    if header.get("readout_uid") == ASTEP_UID:
        count = astep_convert.convert(args, header, output, bar.update)
        return count, "bytes" if args.format == "bin" else "rows"
    if args.format == "bin":
        raise ApxHilError("--format bin is for A-STEP runs (readout_uid 4100) only")
    if args.format in TABLE_WRITERS:
        if output == "-":
            raise ApxHilError(f"--format {args.format} writes a file, not stdout: give -o")
        return TABLE_WRITERS[args.format](output, chunks, header), "hits"
    if output == "-":
        sys.stdout.flush()
        return _write_hits(sys.stdout.buffer, args, header, chunks), "hits"
    with open(output, "wb") as stream:
        return _write_hits(stream, args, header, chunks), "hits"


def run(args: argparse.Namespace) -> int:
    output = output_name(args)
    header = read_header(args.apx)  # a bad input fails before anything is created
    report = ReadReport()
    with progress_bar(os.path.getsize(args.apx), "B", "convert", args.quiet) as bar:
        chunks = _hits(args.apx, report, bar)
        if output == "-":
            _convert(output, args, header, chunks, bar)
        else:
            with atomic_output(output, args.force, inputs=[args.apx]) as temporary:
                count, unit = _convert(temporary, args, header, chunks, bar)
    if output != "-":
        print(f"{count} {unit} written to {output}", file=sys.stderr)
    if report.damaged_bytes:
        print(f"apx-hil convert: {args.apx}: skipped {report.damaged_bytes} damaged bytes in "
              f"{report.damaged_regions} regions (first at byte offset "
              f"{report.damaged[0][0]}); every readout outside them was converted",
              file=sys.stderr)
    return 0
