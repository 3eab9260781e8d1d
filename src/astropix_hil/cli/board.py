"""``apx-hil board --pty``: serve the virtual board on a pseudo-terminal."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from contextlib import ExitStack

from ..boards.astep.daqsetup import add_board_options as add_astep_board_options
from ..boards.astep.daqsetup import make_board as make_astep_board
from ..boards.nexys.board import VirtualBoard
from ..boards.nexys.replay import ReplayBoard
from ..boards.ptyserve import PtyServer
from ..bulk import decode_readouts
from ..errors import ApxHilError
from ..fileio import apx_open
from ..fmt import AstroPix4Readout
from ..hitcsv import write_hits_csv
from ..outputfile import atomic_output
from .argtypes import non_negative_float, positive_float, seed, speed_factor


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
    add_board_options(parser)
    parser.add_argument("--duration", type=positive_float, help="stop after S seconds")
    parser.add_argument("--json", action="store_true", help="print statistics as JSON")
    parser.set_defaults(run=run)


def add_board_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose and shape the virtual board (shared with run-with-board)."""
    parser.add_argument("--profile", choices=("nexys", "astep"), default="nexys",
                        help="board to serve: nexys (AstroPix4 behind the Nexys register "
                             "protocol) or astep (A-STEP firmware, AstroPix v4 layers; "
                             "options --layers, --chips, --rate, --anomalies, --byteorder)")
    parser.add_argument("--seed", type=seed, default=0, help="emulator seed (default 0)")
    parser.add_argument("--rate", type=non_negative_float,
                        help="hit rate in Hz (default: the emulator's)")
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
    parser.add_argument("--speed", type=speed_factor, default=1.0,
                        help="with --replay: speed-up of the recorded pace ('inf': as fast "
                             "as the DAQ asks; default 1)")
    parser.add_argument("--truth", help="write the true hits of the reads served to this CSV "
                                        "(streamed as reads are served: flat memory)")
    parser.add_argument("--pixel-table", metavar="CSV",
                        help="with the configured chip: write each pixel's true threshold "
                             "offset and noise (mV) to this CSV before serving")
    parser.add_argument("--force", action="store_true",
                        help="overwrite an existing --truth or --pixel-table")
    add_astep_board_options(parser)


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


def open_truth(args: argparse.Namespace, outputs: ExitStack) -> str | None:
    """Where to write the truth of ``--truth``: a temporary name beside it, renamed when the
    board stops."""
    if not args.truth:
        return None
    inputs = [args.replay] if args.replay else []
    return outputs.enter_context(atomic_output(args.truth, args.force, inputs=inputs))


def make_board(args: argparse.Namespace, truth: str | None = None):
    """The board the options of :func:`add_board_options` describe; an emulated board
    streams its truth to ``truth`` as reads are served."""
    if args.profile == "astep":
        if args.replay:
            raise ApxHilError("--replay is for the nexys profile only")
        return make_astep_board(args, truth)
    if args.replay:
        board = replay_board(args)
    else:
        board = VirtualBoard.from_options(seed=args.seed, truth=truth, **board_options(args))
    if args.pixel_table:
        pixels = getattr(board.chip, "pixels", None) if not args.replay else None
        if pixels is None:
            raise ApxHilError("--pixel-table needs the configured chip (no --replay, --mode, "
                              "--rate or other hit-source option)")
        with atomic_output(args.pixel_table, args.force) as temporary, \
                open(temporary, "w", encoding="utf-8") as stream:
            pixels.write_table(stream)
    return board


def finish_board(board, args: argparse.Namespace, truth: str | None) -> dict:
    """Complete the truth (if asked); the board's summary (truth and statistics)."""
    if isinstance(board, ReplayBoard):
        hits = write_replay_truth(board, truth) if truth else None
    else:  # the emulated boards stream their truth as they serve reads
        count = board.close_truth()
        hits = count if truth else None
    exact = getattr(board, "truth_exact", True)
    return {"truth_file": args.truth, "truth_hits": hits, "truth_exact": exact,
            **board.stats.as_dict()}


def run(args: argparse.Namespace) -> int:
    with ExitStack() as outputs:
        truth = open_truth(args, outputs)
        board = make_board(args, truth)
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            with PtyServer(board) as server:
                print(server.path, flush=True)
                server.serve(stop, args.duration, on_idle=getattr(board, "advance", None))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        summary = finish_board(board, args, truth)
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print("apx-hil board: " + ", ".join(f"{k} {v}" for k, v in summary.items()),
              file=sys.stderr)
    return 0
