"""``apx-hil recv``: a monitor; receive readouts, optionally decode, print and count them."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

import numpy as np

from ..astep_files import format_rows as astep_rows
from ..astep_fmt import AstepReadout
from ..bulk import decode_frames
from ..fmt import AstroPix4Readout, Decoding, parse_readout
from ..framing import ReadoutBatch
from ..hitcsv import column_line, format_rows, header_line
from ..outputfile import check_output
from ..sock import DEFAULT_GROUP, DEFAULT_PORT, MulticastReceiver
from .argtypes import non_negative_float, port_number, positive_float, positive_int

# Longest the loop waits before looking at the clock and the stop flag.
_TICK = 0.1


class StopFlag:
    """Set by SIGTERM or SIGINT while :meth:`installed`; true once set."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self._event.is_set()

    def set(self, signum: int | None = None) -> None:
        self.signal = signum
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` s; true if stopped meanwhile."""
        return self._event.wait(timeout)

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.signal(sig, lambda signum, _frame: self.set(signum))
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def add_network_options(parser: argparse.ArgumentParser) -> None:
    """--group, --port, --interface, --key (shared by send and recv)."""
    parser.add_argument("--group", default=DEFAULT_GROUP,
                        help="multicast group (default %(default)s)")
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                        help="UDP port (default %(default)s)")
    parser.add_argument("--interface", metavar="ADDR|NAME",
                        help="network interface, by IPv4 address or name (default: routing)")
    parser.add_argument("--key", metavar="FILE",
                        help="shared key file: authenticate every datagram (HMAC-SHA256)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "recv", help="receive multicast readouts (a monitor)",
        description="Receive framed and legacy readouts, print them (and their hits with "
                    "--hits), and print the receiver's statistics at the end, also when "
                    "stopped by SIGTERM or SIGINT.")
    add_network_options(parser)
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--count", type=positive_int, metavar="N", help="stop after N readouts")
    stop.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    parser.add_argument("--idle-exit", type=positive_float, metavar="S",
                        help="once datagrams have come, stop after S seconds without any (a "
                             "monitor started before its sender waits for it; bound that wait "
                             "with --duration)")
    parser.add_argument("--hits", action="store_true",
                        help="decode hits (in bulk) and print them under their readout")
    parser.add_argument("--csv", metavar="OUT",
                        help="write the decoded hits to OUT in the reference CSV layout, as "
                             "they come (what was received stays there if recv is killed)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --csv file")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print no readouts or hits, only the statistics")
    parser.add_argument("--json", action="store_true",
                        help="print the statistics as one JSON line, the last of stdout")
    parser.add_argument("--allow-sender", action="append", metavar="ADDR",
                        help="accept datagrams only from this address (repeatable)")
    parser.add_argument("--rcvbuf", type=positive_int, metavar="BYTES",
                        help="socket receive buffer (default 8 MiB)")
    parser.add_argument("--consume-delay", type=non_negative_float, default=0.0, metavar="S",
                        help="sleep S seconds per readout (simulates a slow consumer)")
    parser.add_argument("--reorder-window", type=positive_int, default=1024, metavar="N",
                        help="datagrams held back waiting for a missing one (default "
                             "%(default)s)")
    parser.add_argument("--reorder-timeout", type=positive_float, default=0.05, metavar="S",
                        help="how long a missing datagram is waited for (default %(default)s)")
    parser.add_argument("--profile", choices=("nexys", "astep"), default="nexys",
                        help="readout type to receive: nexys (AstroPix4, uid 4000) or astep "
                             "(A-STEP layer frames, uid 4100); default nexys")
    parser.set_defaults(run=run)


class Monitor:
    """What ``recv`` does with each batch: count, decode, print, write CSV."""

    def __init__(self, args: argparse.Namespace, out: TextIO) -> None:
        self.args = args
        self.out = out
        self.decode = args.hits or args.csv is not None
        self.readouts = 0
        self.hits = 0
        self.flags = np.zeros(len(Decoding), dtype=np.int64)
        self.extra: dict[str, bytes | None] = {}
        self.csv: TextIO | None = None
        if args.csv is not None:
            # Made at once (a run that hears nothing leaves an empty file, not an old one);
            # "x" without --force: a file made since the check is not overwritten either.
            self.csv = open(args.csv, "w" if args.force else "x",  # noqa: SIM115
                            encoding="utf-8", newline="")
        self._csv_started = False

    def batch(self, batch: ReadoutBatch, limit: int | None, receiver: MulticastReceiver) -> int:
        """Handle up to ``limit`` readouts of ``batch``; return how many."""
        data, count = batch.data, batch.count
        if limit is not None and count > limit:
            frames = batch.frames()
            data = data[:int(frames.ends[limit - 1])]
            count = limit
        hits = None
        frames = None
        if self.decode and self.args.profile == "astep":
            frames = batch.frames()
            hits = self._astep_hits(batch.stream, data, frames, receiver)
            self.hits += len(hits)
            if self.args.csv is not None:
                self._csv(hits, receiver)
        elif self.decode:
            batch = ReadoutBatch(batch.stream, batch.source, data, count, batch.first_readout,
                                 batch.contiguous)
            frames = batch.frames()
            extra = self.extra.get(batch.stream) if batch.contiguous else None
            result = decode_frames(np.frombuffer(data, dtype=np.uint8), frames.starts,
                                   frames.ends, frames.readout_ids, frames.timestamps, extra)
            self.extra[batch.stream] = result.extra_bytes
            hits = result.hits
            self.hits += len(hits)
            for flag in Decoding:
                self.flags[flag] += int(np.count_nonzero((result.status >> flag) & 1))
            if self.args.csv is not None:
                self._csv(hits, receiver)
        if not self.args.quiet:
            self._print(batch.stream, data, hits)
        self.readouts += count
        if self.args.consume_delay > 0:
            time.sleep(self.args.consume_delay * count)
        return count

    def _astep_hits(self, stream: str, data: bytes, frames, receiver: MulticastReceiver
                    ) -> np.ndarray:
        """A-STEP readouts' hits, partial frames carried per stream; the FPGA timestamp byte
        order comes from the run header."""
        from ..astep_fmt import decode_readouts as astep_decode

        header = receiver.stats.run_header or {}
        order = (header.get("astep") or {}).get("fpga_ts_byteorder", "big")
        buf = bytes(data)
        rows = [(buf[s:e], int(r), int(t)) for s, e, r, t in zip(
            frames.starts.tolist(), frames.ends.tolist(), frames.readout_ids.tolist(),
            frames.timestamps.tolist(), strict=True)]
        result = astep_decode(rows, byteorder=order, extra_bytes=self.extra.get(stream) or b"")
        self.extra[stream] = result.extra_bytes
        return result.hits

    def _csv(self, hits: np.ndarray, receiver: MulticastReceiver) -> None:
        assert self.csv is not None
        if not self._csv_started:
            self._csv_started = True
            header = receiver.stats.run_header
            if header is not None:
                self.csv.write(header_line(header))
            self.csv.write(",".join(hits.dtype.names) + "\n" if self.args.profile == "astep"
                           else column_line())
        self.csv.write(format_rows(hits) if self.args.profile != "astep"
                       else astep_rows(hits))

    def _print(self, stream: str, data: bytes, hits: np.ndarray | None) -> None:
        lines = []
        offset = h = 0
        while offset < len(data):
            readout, offset = parse_readout(data, offset)
            lines.append(f"readout {readout.readout_id} stream {stream} timestamp "
                         f"{readout.timestamp} {len(readout.data())} bytes {readout.hex()}")
            if hits is not None:
                while h < len(hits) and hits["readout_id"][h] == readout.readout_id:
                    row = hits[h]
                    lines.append(f"  hit chip {row['chip_id']} row {row['row']} column "
                                 f"{row['column']} ts_dec1 {row['ts_dec1']} ts_dec2 "
                                 f"{row['ts_dec2']} tot_us {row['tot_us']}")
                    h += 1
        self.out.write("\n".join(lines) + "\n")

    def close(self) -> None:
        if self.csv is not None:
            self.csv.close()


def run(args: argparse.Namespace) -> int:
    if args.csv is not None:
        check_output(args.csv, force=args.force)  # before joining: refused at once
    stop = StopFlag()
    readout_class = AstepReadout if args.profile == "astep" else AstroPix4Readout
    receiver = MulticastReceiver(
        readout_class, group=args.group, port=args.port, interface=args.interface, key=args.key,
        allow=args.allow_sender, reorder_window=args.reorder_window,
        reorder_timeout=args.reorder_timeout,
        **({} if args.rcvbuf is None else {"rcvbuf": args.rcvbuf}))
    monitor = Monitor(args, sys.stdout)
    start = time.monotonic()
    first = last = None
    heard = receiver.stats.datagrams
    # The idle clock starts with the first datagram: a sender still starting is not silence.
    heard_at: float | None = None
    reason = "stopped"
    try:
        with stop.installed():
            while True:
                if stop:
                    reason = f"signal {signal.Signals(stop.signal).name}" if stop.signal \
                        else "stopped"
                    break
                now = time.monotonic()
                if args.count is not None and monitor.readouts >= args.count:
                    reason = "count"
                    break
                wait = _TICK
                if args.duration is not None:
                    if now - start >= args.duration:
                        reason = "duration"
                        break
                    wait = min(wait, start + args.duration - now)
                if args.idle_exit is not None:
                    if receiver.stats.datagrams != heard:
                        heard, heard_at = receiver.stats.datagrams, now
                    elif heard_at is not None and now - heard_at >= args.idle_exit:
                        reason = "idle"
                        break
                    if heard_at is not None:
                        wait = min(wait, heard_at + args.idle_exit - now)
                try:
                    batch = receiver.receive_batch(timeout=max(wait, 0.0))
                except TimeoutError:
                    continue
                limit = None if args.count is None else args.count - monitor.readouts
                monitor.batch(batch, limit, receiver)
                last = time.monotonic()
                first = first if first is not None else last
            if reason in ("count", "duration"):
                # Stopping of our own accord: the stream's last heartbeats may be in flight.
                receiver.settle(args.reorder_timeout)
            receiver.finish()
            # What was received before the stop is consumed, not dropped with the process.
            for batch in receiver.take_ready():
                if args.count is not None and monitor.readouts >= args.count:
                    break
                limit = None if args.count is None else args.count - monitor.readouts
                monitor.batch(batch, limit, receiver)
                last = time.monotonic()
                first = first if first is not None else last
    finally:
        receiver.close()
        monitor.close()
    _report(args, receiver, monitor, reason, first, last, time.monotonic() - start)
    return 0


def _report(args: argparse.Namespace, receiver: MulticastReceiver, monitor: Monitor,
            reason: str, first: float | None, last: float | None, elapsed: float) -> None:
    stats = receiver.stats.as_dict()
    busy = (last - first) if first is not None and last is not None else 0.0
    consumed: dict[str, Any] = {
        "readouts": monitor.readouts,
        "hits": monitor.hits if monitor.decode else None,
        "decoding_flags": {flag.name: int(monitor.flags[flag]) for flag in Decoding
                           if monitor.flags[flag]},
        "elapsed_s": elapsed,
        "receiving_s": busy,
        "stop_reason": reason,
    }
    if args.json:
        sys.stdout.write(json.dumps({"consumed": consumed, **stats}) + "\n")
        sys.stdout.flush()
        return
    totals = stats["totals"]
    lines = [f"received {monitor.readouts} readouts"
             + (f", {monitor.hits} hits" if monitor.decode else "")
             + f" in {elapsed:.3f} s ({reason})",
             f"datagrams {stats['datagrams']}: lost {totals['datagrams_lost']}, duplicates "
             f"{totals['duplicates']}, reordered {totals['reordered']}, late {totals['late']}, "
             f"malformed {totals['malformed']}",
             f"readouts lost {totals['readouts_lost']}, fragments incomplete "
             f"{totals['fragments_incomplete']}, restarts {stats['restarts']}, socket drops "
             f"{stats['socket_drops']}"]
    bad = {k: v for k, v in stats["malformed"].items() if v}
    if bad:
        lines.append("malformed " + ", ".join(f"{k}: {v}" for k, v in bad.items()))
    if stats["unverified"]:
        lines.append(f"unverified {stats['unverified']}: datagrams carrying an HMAC accepted "
                     "unchecked (no --key); anyone on the network could have sent them")
    for key, s in stats["streams"].items():
        lines.append(f"stream {key} from {s['source']}: {s['readouts_received']} readouts, "
                     f"{s['readouts_lost']} lost, {s['datagrams_received']} datagrams, "
                     f"{s['datagrams_lost']} lost" + (", ended" if s["ended"] else "")
                     + (", joined late" if s["joined_late"] else ""))
    if stats["run_header"] is not None:
        lines.append(f"run header keys: {', '.join(sorted(stats['run_header']))}")
    print("\n".join(lines), file=sys.stderr)
