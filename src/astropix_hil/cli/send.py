"""``apx-hil send``: replay an ``.apx`` file to a multicast group."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator

import numpy as np

from ..fileio import iter_frame_chunks, read_header
from ..fmt import READOUT_HEADER
from ..framing import DEFAULT_FLUSH_DELAY, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_MAX_DATAGRAM
from ..framing.datagram import HEADER, MAX_UDP_PAYLOAD
from ..sock import DEFAULT_TTL, MulticastSender
from .argtypes import int_range, non_negative_float, positive_float, ttl
from .progress import add_quiet_option, progress_bar
from .recv import StopFlag, add_network_options

_CHUNK = 4 << 20
#: The smallest datagram that holds one readout header (more with --key: the MAC).
MIN_DATAGRAM = HEADER.size + READOUT_HEADER.size
# Most readouts handed to the sender at once when paced (a few ms at 1 MHz).
_STEP = 4096


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "send", help="replay an .apx file to a multicast group",
        description="Multicast the readouts of an .apx file, framed (batched, sequence-numbered, "
                    "with heartbeats carrying the file's header) or as legacy bare datagrams. "
                    "By default at the pace of the readout timestamps. Prints the sender's "
                    "statistics at the end.")
    parser.add_argument("apx", help="input .apx file")
    add_network_options(parser)
    parser.add_argument("--ttl", type=ttl, default=DEFAULT_TTL,
                        help="multicast time-to-live (default %(default)s: the local subnet)")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=positive_float, metavar="HZ", help="readouts per second")
    pace.add_argument("--as-fast-as-possible", action="store_true",
                      help="no pacing at all")
    parser.add_argument("--legacy", action="store_true",
                        help="one bare serialized readout per datagram, as the AstroPix tools")
    parser.add_argument("--max-datagram", type=int_range(MIN_DATAGRAM, MAX_UDP_PAYLOAD),
                        default=DEFAULT_MAX_DATAGRAM,
                        metavar="BYTES", help="largest datagram (default %(default)s: fits a "
                                              "1500-byte MTU)")
    parser.add_argument("--flush-delay", type=non_negative_float, default=DEFAULT_FLUSH_DELAY,
                        metavar="S",
                        help="longest a readout waits for its batch (default %(default)s s)")
    parser.add_argument("--heartbeat", type=positive_float, default=DEFAULT_HEARTBEAT_INTERVAL,
                        metavar="S", help="heartbeat interval (default %(default)s s)")
    parser.add_argument("--linger", type=non_negative_float, default=0.0, metavar="S",
                        help="keep the stream open (heartbeats only) this long after the last "
                             "readout, so receivers learn of a loss at the very end")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    add_quiet_option(parser)
    parser.set_defaults(run=run)


def _file_chunks(path: str) -> Iterator[tuple[memoryview, list[tuple[int, int]], np.ndarray]]:
    """The file's readouts a few MB at a time: bytes, (start, end) spans, timestamps."""
    for window, frames, _ in iter_frame_chunks(path, _CHUNK):
        heads = frames.starts - READOUT_HEADER.size
        spans = list(zip(heads.tolist(), frames.ends.tolist(), strict=True))
        yield memoryview(window).cast("B"), spans, frames.timestamps


def run(args: argparse.Namespace) -> int:
    header = read_header(args.apx)
    stop = StopFlag()
    sender = MulticastSender(args.group, args.port, args.ttl, args.interface,
                             legacy=args.legacy, header=header, key=args.key,
                             max_datagram=args.max_datagram, flush_delay=args.flush_delay,
                             heartbeat_interval=args.heartbeat)
    sent = 0
    first_ts = None
    sending: float | None = None
    start = time.monotonic()
    try:
        with stop.installed(), progress_bar(os.path.getsize(args.apx), "B", "send",
                                            args.quiet) as bar:
            for buf, spans, stamps in _file_chunks(args.apx):
                if first_ts is None and len(stamps):
                    first_ts = int(stamps[0])
                offsets = None
                if args.rate is None and not args.as_fast_as_possible:
                    offsets = (stamps.astype(np.int64) - first_ts) / 1e9
                i = 0
                while i < len(spans) and not stop:
                    if args.as_fast_as_possible:
                        j = min(len(spans), i + _STEP)
                    else:
                        elapsed = time.monotonic() - start
                        if offsets is not None:
                            due = int(np.searchsorted(offsets, elapsed, side="right"))
                        else:
                            due = int(elapsed * args.rate) + 1 - sent + i
                        j = min(len(spans), due, i + _STEP)
                        if j <= i:
                            ahead = (offsets[i] if offsets is not None
                                     else (sent + 1) / args.rate) - elapsed
                            time.sleep(min(max(ahead, 0.0), 0.05))
                            continue
                    _send(sender, buf, spans, i, j, args.legacy)
                    bar.update(spans[j - 1][1] - spans[i][0])
                    sent += j - i
                    i = j
                if stop:
                    break
            sending = time.monotonic() - start
            if args.linger > 0 and not stop:
                stop.wait(args.linger)
    finally:
        sender.close()
    elapsed = time.monotonic() - start
    if sending is None:  # stopped by a signal
        sending = elapsed
    summary = {"file": args.apx, "readouts_sent": sent, "elapsed_s": sending,
               "readouts_per_s": sent / sending if sending > 0 else None,
               "legacy": args.legacy, "sender": sender.stats.as_dict()}
    if args.json:
        print(json.dumps(summary))
    else:
        s = sender.stats
        rate = summary["readouts_per_s"] or 0.0
        print(f"sent {sent} readouts in {sending:.3f} s ({rate:.0f}/s) to {args.group}:"
              f"{args.port}: {s.datagrams_sent} datagrams, {s.bytes_sent} bytes, "
              f"{s.heartbeats_sent} heartbeats, {s.datagrams_failed} refused"
              + (f" {s.errors}" if s.errors else ""), file=sys.stderr)
    return 0


def _send(sender: MulticastSender, buf: memoryview, spans: list[tuple[int, int]], i: int,
          j: int, legacy: bool) -> None:
    if legacy:
        for start, end in spans[i:j]:
            sender.send_data(buf[start:end])
    else:
        sender.send_data(buf[spans[i][0]:spans[j - 1][1]])
