"""``apx-hil run-with-board``: run a DAQ program, unmodified, against the virtual board.

The board is served on a pseudo-terminal in this process (as ``apx-hil board --pty`` serves
it); the program runs as a child with our stand-ins first on its ``PYTHONPATH``
(:mod:`astropix_hil.compat`): ``import ftd2xx`` reaches the board through the pty, and
pyserial's port listing shows the pty first, as an FTDI port. The program's exit status is
ours; then the truth is written and the board's statistics printed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from contextlib import ExitStack

from ..boards.ptyserve import PtyServer
from ..compat import PATH_DIR
from ..compat.ftd2xx import PORT_VARIABLE
from ..compat.sitecustomize import PORTS_VARIABLE
from ..errors import ApxHilError
from .argtypes import positive_float
from .board import add_board_options, finish_board, make_board, open_truth

#: Exit status when the program could not be started, or was stopped by --timeout
#: (as the shell and coreutils' timeout report them).
NOT_STARTED = 127
TIMED_OUT = 124
#: Variable naming the board's port for programs that take it from the environment.
BOARD_PORT_VARIABLE = "APX_HIL_BOARD_PORT"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run-with-board", help="run a DAQ program against the virtual board",
        description="Start the virtual board on a pseudo-terminal, run PROGRAM with the "
                    "ftd2xx stand-in and the FTDI port listing on its path (the board is "
                    "the only FTDI device it sees), then stop the board, write the truth and "
                    "print the board's statistics (one line on stderr, or JSON on stdout "
                    "with --json). The exit status is PROGRAM's.",
        epilog="example: apx-hil run-with-board --truth truth.csv -- python beam_test.py")
    add_board_options(parser)
    parser.add_argument("--timeout", type=positive_float, metavar="S",
                        help=f"stop PROGRAM after S seconds (exit status {TIMED_OUT})")
    parser.add_argument("--json", action="store_true",
                        help="print the statistics as JSON on stdout")
    parser.add_argument("program", nargs=argparse.REMAINDER, metavar="-- PROGRAM ARGS",
                        help="the program to run and its arguments, after --")
    parser.set_defaults(run=run)


def child_environment(port: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The program's environment: stand-ins first on PYTHONPATH, the board's port named."""
    env = dict(os.environ if base is None else base)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = PATH_DIR + (os.pathsep + path if path else "")
    env[PORT_VARIABLE] = port
    env[PORTS_VARIABLE] = port
    env[BOARD_PORT_VARIABLE] = port
    return env


def _program(args: argparse.Namespace) -> list[str]:
    program = list(args.program)
    if program[:1] == ["--"]:
        program = program[1:]
    if not program:
        raise ApxHilError("no program to run: give it after --, e.g. "
                          "apx-hil run-with-board -- python my_daq.py")
    return program


def _run_program(program: list[str], env: dict[str, str], timeout: float | None) -> int:
    """Run the program to its end; forward SIGINT/SIGTERM to it; its exit status."""
    try:
        child = subprocess.Popen(program, env=env)
    except OSError as exc:
        print(f"apx-hil run-with-board: error: cannot run {program[0]!r}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return NOT_STARTED
    forward = {sig: signal.signal(sig, lambda signum, _: child.send_signal(signum))
               for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            status = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"apx-hil run-with-board: error: {program[0]} still running after "
                  f"{timeout:g} s, stopped", file=sys.stderr)
            child.terminate()
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            return TIMED_OUT
    finally:
        for sig, handler in forward.items():
            signal.signal(sig, handler)
    # A program killed by signal N: the shell's convention, 128 + N.
    return status if status >= 0 else 128 - status


def summary_line(status: int, summary: dict) -> str:
    """The statistics a user reads first, on one line."""
    per_register = ", ".join(f"{key} {count}" for key, count in
                             sorted(summary.get("requests_per_register", {}).items()))
    unknown = " ".join(summary.get("unknown_registers", [])) or "none"
    truth = summary.get("truth_hits")
    # The Nexys board counts readouts and overflowed frames, the A-STEP board reads and
    # full-FIFO periods.
    served = summary.get("readouts_served", summary.get("reads_served", 0))
    overflows = summary.get("fifo_overflow_frames", summary.get("fifo_full", 0))
    return (f"apx-hil run-with-board: program exit status {status}; board: "
            f"{summary.get('requests', 0)} requests ({per_register or 'none'}), unknown "
            f"registers {unknown}, readouts served {served}, FIFO overflows {overflows}"
            + (f", {truth} true hits in {summary['truth_file']}" if truth is not None else ""))


def run(args: argparse.Namespace) -> int:
    program = _program(args)
    with ExitStack() as outputs:
        truth = open_truth(args, outputs)
        board = make_board(args, truth)
        stop = threading.Event()
        with PtyServer(board) as server:
            serving = threading.Thread(target=server.serve, args=(stop,), name="board",
                                       kwargs={"on_idle": getattr(board, "advance", None)},
                                       daemon=True)
            serving.start()
            try:
                status = _run_program(program, child_environment(server.path), args.timeout)
            finally:
                stop.set()
                serving.join()
        summary = finish_board(board, args, truth)
    if args.json:
        print(json.dumps({"exit_status": status, "board": summary}), flush=True)
    else:
        print(summary_line(status, summary), file=sys.stderr)
    return status
