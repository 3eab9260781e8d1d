"""The ``apx-hil`` command line: one module per subcommand, each with ``register(subparsers)``.

A subcommand's function takes the parsed arguments and returns the exit status. Errors of the
package (:class:`~astropix_hil.errors.ApxHilError`) and of the operating system end the
command with a one-line message naming the problem and status 1; usage errors give status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import ApxHilError

#: Subcommand modules, in the order ``apx-hil --help`` lists them.
COMMANDS = (
    "daq", "board", "ports", "emulate", "send", "recv", "convert", "info", "import_log", "agent",
)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered; only the one ``argv`` names when
    it names one (importing every subcommand's modules costs a short command a third of a
    second)."""
    parser = argparse.ArgumentParser(
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
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`); not an error of ours.
        sys.stderr.close()
        return 0
    except (ApxHilError, OSError) as exc:
        print(f"apx-hil {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
