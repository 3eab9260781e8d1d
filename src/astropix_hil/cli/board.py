"""``apx-hil board --pty``: serve the virtual board on a pseudo-terminal."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from ..boards.nexys.board import VirtualBoard
from ..boards.nexys.replay import ReplayBoard
from ..boards.ptyserve import PtyServer
from ..bulk import decode_readouts
from ..errors import ApxHilError
from ..fileio import apx_open
from ..fmt import AstroPix4Readout
from ..hitcsv import write_hits_csv


def _option(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "board", help="serve the virtual board on a pseudo-terminal",
        description="Serve the virtual AstroPix4 board (emulated chip behind the Nexys register "
                    "protocol) on a pseudo-terminal. The pty's path is the first line of "
                    "stdout; open it as a serial port, e.g. apx-hil daq --port PATH. Runs "
                    "until SIGTERM/SIGINT or --duration; then writes the truth file and prints "
                    "the board's statistics on stderr (JSON with --json, on stdout).")
    parser.add_argument("--pty", action="store_true", required=True,
                        help="serve on a new pseudo-terminal (the only transport so far)")
    parser.add_argument("--seed", type=int, default=0, help="emulator seed (default 0)")
    parser.add_argument("--rate", help="hit rate in Hz (default: the emulator's)")
    parser.add_argument("--mode",
                        help="chip: the configured chip, silent until the DAQ configures it "
                             "(default); injection or poisson: a free-running chip that fires "
                             "whatever its configuration (the default with --rate)")
    parser.add_argument("--anomalies", help="anomaly mix, see apx-hil emulate --help")
    parser.add_argument("--chips", help="number of chips in the daisy chain")
    parser.add_argument("--fifo-size", help="read FIFO size in bytes")
    parser.add_argument("--option", type=_option, action="append", default=[],
                        metavar="KEY=VALUE", help="any other emulator option (repeatable)")
    parser.add_argument("--replay", metavar="RUN.apx",
                        help="serve the readouts of a recorded run instead of emulating the "
                             "chip, one per non-empty read")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="with --replay: speed-up of the recorded pace ('inf': as fast "
                             "as the DAQ asks; default 1)")
    parser.add_argument("--truth", help="write the true hits of the reads served to this CSV")
    parser.add_argument("--pixel-table", metavar="CSV",
                        help="with the configured chip: write each pixel's true threshold "
                             "offset and noise (mV) to this CSV before serving")
    parser.add_argument("--duration", type=float, help="stop after S seconds")
    parser.add_argument("--json", action="store_true", help="print statistics as JSON")
    parser.set_defaults(run=run)


def board_options(args: argparse.Namespace) -> dict[str, str]:
    """Emulator options from the command line, as ``VirtualBoard.from_options`` takes them."""
    options = dict(args.option)
    for name in ("rate", "mode", "anomalies", "chips"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.fifo_size is not None:
        options["fifo_size"] = args.fifo_size
    return options


def replay_board(args: argparse.Namespace) -> ReplayBoard:
    """The board serving a recorded run."""
    with apx_open(args.replay) as reader:
        readouts = list(reader)
    return ReplayBoard(readouts, args.speed)


def write_replay_truth(board: ReplayBoard, path: str) -> int:
    """The hits of the readouts served, numbered as the DAQ numbers them (from 0, in order)."""
    served = [AstroPix4Readout(readout.data(), index, readout.timestamp)
              for index, readout in enumerate(board.served)]
    with open(path, "w", encoding="utf-8", newline="") as stream:
        return write_hits_csv(stream, [decode_readouts(served).hits])


def run(args: argparse.Namespace) -> int:
    if args.replay:
        board = replay_board(args)
    else:
        board = VirtualBoard.from_options(seed=args.seed, **board_options(args))
    if args.pixel_table:
        pixels = getattr(board.chip, "pixels", None) if not args.replay else None
        if pixels is None:
            raise ApxHilError("--pixel-table needs the configured chip (no --replay, --mode, "
                              "--rate or other hit-source option)")
        with open(args.pixel_table, "w", encoding="utf-8") as stream:
            pixels.write_table(stream)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with PtyServer(board) as server:
            print(server.path, flush=True)
            server.serve(stop, args.duration)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if args.replay:
        hits = write_replay_truth(board, args.truth) if args.truth else None
        exact = True
    else:
        hits = board.write_truth_csv(args.truth) if args.truth else None
        exact = board.truth_exact
    summary = {"truth_file": args.truth, "truth_hits": hits, "truth_exact": exact,
               **board.stats.as_dict()}
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print("apx-hil board: " + ", ".join(f"{k} {v}" for k, v in summary.items()),
              file=sys.stderr)
    return 0
