"""The A-STEP side of ``apx-hil convert`` (not a subcommand: called by :mod:`.convert`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator

import numpy as np

from ..errors import ApxHilError
from .argtypes import int_range, non_negative_int


def add_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("A-STEP runs (readout_uid 4100)")
    group.add_argument("--chip", choices=("v3", "v4"),
                       help="sensor frames to decode (default: the file header's)")
    group.add_argument("--ts-byteorder", choices=("big", "little"),
                       help="FPGA timestamp byte order (default: the file header's; big for "
                            "firmware of 2025-11-24 on, little before)")
    group.add_argument("--match", action="store_true",
                       help="v3: write matched row/column pairs instead of half-hits")
    group.add_argument("--ts-window", nargs=2, type=int_range(-(1 << 31), (1 << 31) - 1),
                       default=(0, 1), metavar=("MIN", "MAX"),
                       help="v3 matching: row ts - column ts window, inclusive (default 0 1)")
    group.add_argument("--tot-window", nargs=2, type=non_negative_int, default=(6, 15),
                       metavar=("MIN", "MAX"),
                       help="v3 matching: row ToT - column ToT window in ToT ticks, inclusive "
                            "(default 6 15)")


def convert(args: argparse.Namespace, header: dict, output: str,
            progress: Callable[[int], object] | None = None) -> int:
    """Convert an A-STEP ``.apx``; return the row (or byte) count written.

    Hits are written a batch of readouts at a time (memory bounded by a batch), except with
    ``--match``, which pairs halves across the whole run. ``progress`` is told the bytes of
    the file decoded.
    """
    # Imported here: most conversions are of AstroPix4 runs, and every module imported is
    # start-up time of the whole process.
    from ..astep_files import (
        MATCHED_DTYPE,
        decoding_of,
        export_bin,
        iter_hits,
        match_rows_columns,
        write_astep_csv,
    )
    from ..astep_fmt import HIT_DTYPE, V3_HIT_DTYPE
    from ..hitnpy import write_hits_npy

    if args.format == "bin":
        if output == "-":
            return export_bin(args.apx, sys.stdout.buffer)
        with open(output, "wb") as stream:
            return export_bin(args.apx, stream)
    if args.format not in ("csv", "npy"):
        raise ApxHilError(f"--format {args.format} is not available for A-STEP runs "
                          "(csv, npy or bin)")
    chip, order = decoding_of(header, args.chip, args.ts_byteorder)
    if args.match and chip != "v3":
        raise ApxHilError("--match pairs AstroPix v3 half-hits; this run is decoded as v4 "
                          "(use --chip v3 if it holds v3 frames)")
    dtype = HIT_DTYPE if chip == "v4" else V3_HIT_DTYPE
    decoded = iter_hits(args.apx, chip, order, progress=progress)
    chunks: Iterator[np.ndarray] = (d.hits for d in decoded)
    if args.match:
        hits = np.concatenate([np.empty(0, dtype=dtype), *chunks])
        chunks, dtype = iter([match_rows_columns(hits, tuple(args.ts_window),
                                                 tuple(args.tot_window))]), MATCHED_DTYPE
    if args.format == "npy":
        if output == "-":
            return write_hits_npy(sys.stdout.buffer, chunks, dtype)
        with open(output, "wb") as stream:  # a path would get .npy appended
            return write_hits_npy(stream, chunks, dtype)
    if output == "-":
        return write_astep_csv(sys.stdout, chunks, header, dtype)
    with open(output, "w", encoding="utf-8", newline="") as stream:
        return write_astep_csv(stream, chunks, header, dtype)
