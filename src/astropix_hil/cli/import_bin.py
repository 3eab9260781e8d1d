"""``apx-hil import-bin``: store an A-STEP raw ``.bin`` (the team's ``main.py`` output) as
``.apx``."""

from __future__ import annotations

import argparse
import os
import sys

from ..astep_files import IMPORT_READ_BYTES, import_bin
from ..errors import ApxHilError
from .argtypes import positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-bin", help="import an A-STEP raw .bin run as .apx",
        description="Store a raw .bin of the A-STEP DAQ (reads of the readout FIFO back to "
                    "back, no header) as an .apx of A-STEP readouts (readout_uid 4100). The "
                    ".bin does not record its reads: the bytes are cut into readouts of "
                    "--read-bytes; frames cut at a boundary are joined again when decoding.")
    parser.add_argument("bin", help="input .bin")
    parser.add_argument("-o", "--output", help="output .apx (default: the input with .apx)")
    parser.add_argument("--chip", choices=("v3", "v4"), default="v4",
                        help="sensor frames in the run: v4 (8 bytes) or v3 (5 bytes, row and "
                             "column half-hits); default v4")
    parser.add_argument("--ts-byteorder", choices=("big", "little"),
                        help="FPGA timestamp byte order (default: big for v4, little for v3, "
                             "as the team's decoders read them)")
    parser.add_argument("--read-bytes", type=positive_int, default=IMPORT_READ_BYTES,
                        help=f"bytes per stored readout (default {IMPORT_READ_BYTES})")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    output = args.output or f"{os.path.splitext(args.bin)[0]}.apx"
    if os.path.exists(output) and not args.force:
        raise ApxHilError(f"{output} exists; use --force to overwrite it")
    if args.read_bytes <= 0:
        raise ApxHilError(f"--read-bytes {args.read_bytes}: must be > 0")
    count = import_bin(args.bin, output, chip=args.chip, byteorder=args.ts_byteorder,
                       read_bytes=args.read_bytes)
    print(f"{count} readouts written to {output}", file=sys.stderr)
    return 0
