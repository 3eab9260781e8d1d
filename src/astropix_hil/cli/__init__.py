"""The ``apx-hil`` command line: one module per subcommand, each with ``register(subparsers)``.

A subcommand's function takes the parsed arguments and returns the exit status. Whatever goes
wrong ends the command with ONE line on stderr, ``apx-hil CMD: error: ...``, never a traceback:
usage errors (a bad option value, see :mod:`.argtypes`) with status 2, everything else with
status 1. Errors of the package (:class:`~astropix_hil.errors.ApxHilError`) and of the
operating system name the problem themselves; any other exception is unexpected, and its line
says to rerun with ``-v`` for the traceback (``-v`` prints it). Python warnings are printed as
one line ``warning: ...`` each.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from .. import __version__
from ..errors import ApxHilError

#: Subcommand modules, in the order ``apx-hil --help`` lists them.
COMMANDS = (
    "daq", "configure", "board", "run_with_board", "ports", "emulate", "send", "recv",
    "monitor", "convert", "info", "report", "scan", "import_log", "import_bin", "agent",
)


#: Longest error or warning message printed (a message may quote a whole bad value).
MAX_MESSAGE = 400


class ArgumentParser(argparse.ArgumentParser):
    """argparse with usage errors on one line: the problem, and where the usage is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(text: object) -> str:
    """``text`` on one line, at most :data:`MAX_MESSAGE` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_MESSAGE else line[:MAX_MESSAGE - 3] + "..."


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
    """A :func:`warnings.showwarning` printing one line ``warning: MESSAGE`` (our warnings
    name their file first), without the source path and line of the code that warned."""
    print(f"warning: {one_line(message)}", file=sys.stderr if file is None else file)


def report_error(command: str, exc: BaseException, verbose: int) -> int:
    """Print the one line for an exception that ended ``command``; return the exit status."""
    if verbose:
        traceback.print_exception(exc)
    if isinstance(exc, (ApxHilError, OSError)):
        message = one_line(exc)
    else:
        hint = "" if verbose else " (unexpected; rerun with -v for the traceback)"
        message = f"{one_line(f'{type(exc).__name__}: {exc}')}{hint}"
    print(f"apx-hil {command}: error: {message}", file=sys.stderr)
    return 1


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered; only the one ``argv`` names when
    it names one (importing every subcommand's modules costs a short command a third of a
    second)."""
    parser = ArgumentParser(
        prog="apx-hil",
        description="AstroPix4 DAQ hardware-in-the-loop harness: emulate the chip and board, "
                    "run the DAQ, multicast readouts, convert and inspect .apx files.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v info, -vv debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _chosen_command(argv)
    for name in COMMANDS if chosen is None else (chosen,):
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue  # not built yet
        module.register(subparsers)
    return parser


def _chosen_command(argv: Sequence[str] | None) -> str | None:
    """The module of the subcommand ``argv`` names (its first word that is not an option)."""
    words = sys.argv[1:] if argv is None else argv
    first = next((word for word in words if not word.startswith("-")), None)
    name = None if first is None else first.replace("-", "_")
    return name if name in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``apx-hil`` with ``argv`` (default: the process arguments); return the exit status."""
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if args.command is None:
        parser.print_help()
        return 2
    previous: Any = warnings.showwarning
    warnings.showwarning = show_warning
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`); not an error of ours.
        sys.stderr.close()
        return 0
    except Exception as exc:  # the rule: whatever it is, one line (see the module docstring)
        return report_error(args.command, exc, args.verbose)
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
