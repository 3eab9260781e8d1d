"""``apx-hil monitor``: live hit maps, ToT and rates of multicast readouts (or a replayed file),
with PNG snapshots and an HTML report for headless use."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from ..errors import ApxHilError
from ..monitor import Accumulator, require
from .argtypes import non_negative_float, positive_float
from .recv import add_network_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "monitor", help="live plots of multicast readouts (hit map, ToT, rates, losses)",
        description="Join the multicast group like recv, decode every readout in bulk and "
                    "show a live figure: hit map per chip, ToT histogram, readout and hit "
                    "rates, and the receiver's accounting (received, lost, duplicated, "
                    "reordered per stream, decoding flags, socket drops). With --png or "
                    "--report no window is opened. Needs the [plot] extra (matplotlib).")
    add_network_options(parser)
    parser.add_argument("--file", metavar="RUN.apx", help="replay this file instead")
    parser.add_argument("--speed", type=non_negative_float, default=1.0, metavar="X",
                        help="with --file: X times the recorded pace (0: as fast as possible; "
                             "default %(default)s)")
    parser.add_argument("--png", metavar="DIR", help="write PNG snapshots to DIR (headless)")
    parser.add_argument("--every", type=positive_float, default=5.0, metavar="S",
                        help="seconds between snapshots (default %(default)s)")
    parser.add_argument("--report", metavar="RUN.html",
                        help="write a self-contained HTML report at the end (headless)")
    parser.add_argument("--save", metavar="ACC.npz",
                        help="write the accumulated histograms and counters at the end")
    parser.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    parser.add_argument("--idle-exit", type=positive_float, metavar="S",
                        help="stop after S seconds without data")
    parser.add_argument("--force", action="store_true",
                        help="overwrite existing --png snapshots, --report or --save files")
    parser.add_argument("--json", action="store_true",
                        help="print the final counters as one JSON line on stdout")
    parser.set_defaults(run=run)


def _check_outputs(args: argparse.Namespace) -> None:
    for path in (args.report, args.save):
        if path is not None and os.path.exists(path) and not args.force:
            raise ApxHilError(f"{path} exists; use --force to overwrite it")
    if args.every <= 0:
        raise ApxHilError(f"--every must be positive, not {args.every}")
    if args.speed < 0:
        raise ApxHilError(f"--speed must be 0 or positive, not {args.speed}")


def run(args: argparse.Namespace) -> int:
    require("matplotlib", "plot")
    _check_outputs(args)
    from ..monitor.live import FileFeed, ProcessFeed, Snapshots, watch

    headless = args.png is not None or args.report is not None
    if not headless:
        _require_display()
    else:
        import matplotlib

        matplotlib.use("Agg")
    snapshots = Snapshots(args.png, args.every, args.force) if args.png else None
    acc = Accumulator()
    if args.file is not None:
        feed = FileFeed(acc, args.file, args.speed)
    else:
        # Receiving runs in a process of its own: drawing never delays it.
        feed = ProcessFeed(acc, args.group, args.port, args.interface, args.key)
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        reason = watch(feed, stop, window=not headless, snapshots=snapshots,
                       duration=args.duration, idle_exit=args.idle_exit)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if args.report is not None:
        from ..monitor.report import write_report

        write_report(args.report, acc)
    if args.save is not None:
        acc.save(args.save)
    summary = acc.summary()
    summary["stop_reason"] = reason
    if snapshots is not None:
        summary["snapshots"] = snapshots.written
    for warning in acc.warnings:
        print(f"apx-hil monitor: warning: {warning}", file=sys.stderr)
    lost = sum(row["lost"] for row in summary["streams"])
    print(f"monitored {acc.readouts} readouts, {acc.hits} hits from {acc.source} "
          f"({reason}); {lost} readouts lost", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    return 0


def _require_display() -> None:
    import matplotlib
    import matplotlib.pyplot as plt  # noqa: F401  (picks the backend)

    backend = matplotlib.get_backend().lower()
    if backend in ("agg", "pdf", "ps", "svg", "cairo", "template") or backend.startswith(
            "module://matplotlib_inline"):
        raise ApxHilError(f"no interactive matplotlib backend (got {backend}): run with a "
                          "display, or headless with --png DIR or --report RUN.html")
