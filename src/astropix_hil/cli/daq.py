"""``apx-hil daq``: run the DAQ: poll the board, write ``.apx``, multicast the readouts."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from typing import Any

from ..boards.astep import daqsetup as astep_setup
from ..boards.astep.daqsetup import DEFAULT_PORT as ASTEP_DEFAULT_PORT
from ..boards.astep.daqsetup import add_daq_options as add_astep_options
from ..boards.astep.link import ASTEP_BAUDRATE
from ..boards.astep.link import DEFAULT_REPLY_TIMEOUT as ASTEP_REPLY_TIMEOUT
from ..boards.nexys.link import DEFAULT_BAUDRATE, DEFAULT_REPLY_TIMEOUT, open_link
from ..chipconfig import load_config, load_default, to_mapping
from ..daq import DaqOptions, DaqRun, Progress, run_header
from ..errors import ApxHilError
from ..fileio import ApxWriter
from ..outputfile import check_output
from ..yamlfile import read_yaml
from .argtypes import non_negative_float, positive_float, positive_int, ttl
from .configure import add_options, apply, describe
from .progress import StatusLine

log = logging.getLogger(__name__)

#: The embedded default board: the emulated (configured) chip, in this process; the DAQ
#: configures it with the bundled configuration and injects into DEFAULT_INJECT.
DEFAULT_PORT = "apxemu://?seed=0"
DEFAULT_INJECT = (0, 9)
DEFAULT_MULTICAST = "239.1.1.1:5007"
#: With the emulated board, multicast stays on this host unless an interface is given.
EMULATOR_INTERFACE = "127.0.0.1"


def send_interface(interface: str | None, port: str) -> str | None:
    """The interface to multicast on: as given; else loopback for the emulated board (no
    hardware, no traffic on the lab network); else the routing table's choice (None)."""
    if interface is not None:
        return interface
    return EMULATOR_INTERFACE if port.startswith(("apxemu:", "astepemu:")) else None


def group_and_port(text: str) -> tuple[str, int]:
    """``GROUP:PORT`` as a (group, port) pair; the group must be an IPv4 multicast address."""
    group, sep, port = text.rpartition(":")
    try:
        octets = [int(part) for part in group.split(".")]
        number = int(port)
    except ValueError:
        octets, number = [], -1
    if not sep or len(octets) != 4 or not 224 <= octets[0] <= 239 or not 0 < number < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not GROUP:PORT with a multicast group "
                                         f"(224.0.0.0/4), e.g. 239.1.1.1:5007")
    return group, number


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "daq", help="run the DAQ: board -> .apx file + multicast",
        description="Poll the board (SPI config bit 4 clear -> read 2048 bytes of the read "
                    "FIFO), stamp each readout with a run-local id and the host time, write it "
                    "to the .apx file and multicast it. With no options: the emulated board, "
                    "multicast on loopback. Ctrl-C or SIGTERM stop cleanly.")
    parser.add_argument("--profile", choices=("nexys", "astep"), default="nexys",
                        help="board protocol: nexys (AstroPix4 Nexys register protocol) or "
                             "astep (A-STEP firmware: 921600 Bd UART, layer frames; runs the "
                             "team's start-up sequence first). Default nexys")
    parser.add_argument("--port", default=None,
                        help="board port: a device (/dev/ttyUSB0, COM3), a pty path, or a "
                             "pyserial URL: apxemu://?seed=1&rate=1000 (virtual board), "
                             "ftdififo://ftdi:2232h/1 (FT2232H sync FIFO), "
                             "astepemu://?layers=3&chips=4&seed=1 (virtual A-STEP board) "
                             f"(default: {DEFAULT_PORT}, or {ASTEP_DEFAULT_PORT} for astep)")
    parser.add_argument("--baudrate", type=positive_int, default=None,
                        help=f"serial baud rate (default {DEFAULT_BAUDRATE}; 921600 for "
                             "astep)")
    parser.add_argument("--reply-timeout", type=positive_float, default=None,
                        help=f"seconds a board reply may take (default {DEFAULT_REPLY_TIMEOUT}; "
                             "3 for astep, as the team's software)")
    parser.add_argument("--out", help="output .apx (default: apx_<UTC date>_<time>.apx)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--readouts", type=positive_int, help="stop after N readouts")
    stop.add_argument("--duration", type=positive_float, help="stop after S seconds")
    add_options(parser, config_help="configure the chip with this YAML file (team's v4 "
                                    "schema) before taking data; stored in the header. "
                                    "Default: with the emulated board, the bundled "
                                    "default_v4.yml injecting into row 0, column 9; with a "
                                    "real board, the chip is left as it is. With --profile "
                                    "astep: the same configuration to every chip of every "
                                    "layer, sent as --config-method says (default: shift "
                                    "register); no --config, no chip configuration")
    parser.add_argument("--no-configure", action="store_true",
                        help="do not configure the chip (another tool did); only release the "
                             "SPI readout if the board holds it in reset")
    net = parser.add_argument_group("multicast")
    net.add_argument("--multicast", type=group_and_port, default=DEFAULT_MULTICAST,
                     metavar="GROUP:PORT", help=f"where to send (default {DEFAULT_MULTICAST})")
    net.add_argument("--no-multicast", action="store_true", help="do not send")
    net.add_argument("--interface",
                     help="address or name of the interface to send on (default: "
                          f"{EMULATOR_INTERFACE} with the emulated board, else the routing "
                          "table's choice)")
    net.add_argument("--ttl", type=ttl, default=1,
                     help="multicast TTL (default 1: the local subnet)")
    net.add_argument("--key", help="shared key file: authenticate every datagram")
    net.add_argument("--legacy", action="store_true",
                     help="send bare readouts, one per datagram (AstroPix tools' format)")
    net.add_argument("--linger", type=non_negative_float, default=0.0, metavar="S",
                     help="after the run, keep sending heartbeats for S seconds before the "
                          "stream ends, so slow monitors catch up and can count their loss")
    parser.add_argument("--sync-interval", type=positive_float, default=1.0,
                        help="seconds of data at most at risk: written readouts are synced "
                             "to the disk at least this often (default %(default)s)")
    parser.add_argument("--progress-interval", type=positive_float, default=1.0,
                        help="seconds between progress lines (default %(default)s)")
    parser.add_argument("--no-hits", action="store_true",
                        help="do not decode hits for the progress line")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON summary on stdout at the end")
    add_astep_options(parser)
    parser.set_defaults(run=run)


def read_config(path: str) -> dict[str, Any]:
    """The chip configuration YAML (as the AstroPix DAQ scripts write it)."""
    content = read_yaml(path, "chip configuration")
    if not isinstance(content, dict):
        raise ApxHilError(f"{path}: expected a mapping at the top, got "
                          f"{type(content).__name__}")
    return content


def prepare_chip(link, args: argparse.Namespace) -> dict[str, Any] | None:
    """Configure the chip as ``args`` say (see ``--config``, ``--no-configure``); return the
    configuration sent and what was set (for the header), or None if none was sent."""
    emulated = args.port.startswith("apxemu:")
    if args.no_configure or (args.config is None and not emulated):
        if link.enable_readout():
            print("apx-hil daq: SPI readout released (the chip was not configured)",
                  file=sys.stderr)
        return None
    config = load_config(args.config) if args.config else load_default()
    if args.config is None and args.inject is None:
        args.inject = DEFAULT_INJECT
    report = apply(link, config, args)
    print(f"apx-hil daq: configured: {describe(report)}", file=sys.stderr, flush=True)
    return {**to_mapping(report.config), "startup": report.summary()}


def _make_sender(args: argparse.Namespace, header: dict[str, Any]):
    if args.no_multicast:
        return None
    from ..sock import MulticastSender

    group, port = args.multicast
    return MulticastSender(group, port, ttl=args.ttl, interface=args.interface,
                           legacy=args.legacy, key=args.key, header=header,
                           readout_uid=header["readout_uid"])


def run(args: argparse.Namespace) -> int:
    out = args.out or time.strftime("apx_%Y%m%d_%H%M%S.apx", time.gmtime())
    # Written in place, not renamed at the end: every readout must survive a crash of the DAQ.
    check_output(out, force=args.force, inputs=[args.config] if args.config else [])
    astep = args.profile == "astep"
    args.port = args.port or (ASTEP_DEFAULT_PORT if astep else DEFAULT_PORT)
    args.baudrate = args.baudrate or (ASTEP_BAUDRATE if astep else DEFAULT_BAUDRATE)
    args.reply_timeout = args.reply_timeout or (ASTEP_REPLY_TIMEOUT if astep
                                                else DEFAULT_REPLY_TIMEOUT)
    if args.key and not args.no_multicast:
        from ..framing.keys import load_key

        load_key(args.key)  # a bad key file fails before the board is touched
    configures = bool(args.config) and not args.no_configure
    # A bad file fails before the board is touched.
    chip = load_config(args.config) if configures else None
    configuration = read_config(args.config) if args.config and not configures else None
    args.interface = send_interface(args.interface, args.port)
    profile: dict[str, Any] = {}
    profile_header: dict[str, Any] = {}
    if astep:
        link, info = astep_setup.open_run(args, chip)
        if chip is not None:
            configuration = astep_setup.sent_configuration(info, chip)
        profile_header = astep_setup.header_fields(info)
        profile = {"make_readout": astep_setup.readout_factory(info),
                   "count_hits": astep_setup.hit_counter(info)}
    else:
        link = open_link(args.port, baudrate=args.baudrate, reply_timeout=args.reply_timeout)
    try:
        sent = None if astep else prepare_chip(link, args)
        options = {k: v for k, v in vars(args).items() if k not in ("run", "verbose")}
        options["multicast"] = None if args.no_multicast else "{}:{}".format(*args.multicast)
        header = run_header(args.port, options, sent if sent is not None else configuration)
        header.update(profile_header)
        writer = ApxWriter(out, header)
        try:
            # Heartbeats carry the file's own header: a late monitor knows exactly the run.
            sender = _make_sender(args, writer.header)
        except BaseException:
            # No run, no file: a header-only .apx would only block the retry.
            writer.close()
            os.unlink(out)
            raise
    except BaseException:
        link.close()
        raise
    # On a terminal: one line, rewritten in place and cut to its width; log lines and
    # warnings go above it.
    status = StatusLine(sys.stderr)

    def show(progress: Progress) -> None:
        status.show(f"apx-hil daq: {progress.line()}")

    daq = DaqRun(link, writer, sender,
                 DaqOptions(readouts=args.readouts, duration=args.duration,
                            sync_interval=args.sync_interval,
                            progress_interval=args.progress_interval,
                            count_hits=not args.no_hits, linger=args.linger),
                 on_progress=show, **profile)
    previous = {sig: signal.signal(sig, lambda *_: daq.stop())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    where = "" if sender is None else (f" + multicast {options['multicast']} (interface "
                                       f"{args.interface or 'by route'}, ttl {args.ttl})")
    print(f"apx-hil daq: {args.port} -> {out}{where}", file=sys.stderr, flush=True)
    try:
        with status.messages_above():
            result = daq.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        status.close()
    summary = {"file": out, "stopped_by": result.stopped_by, "error": result.error,
               **result.progress.as_dict()}
    if args.json:
        print(json.dumps(summary), flush=True)
    print(f"apx-hil daq: {result.progress.readouts} readouts, {result.progress.hits} hits "
          f"in {out} (stopped by {result.stopped_by})", file=sys.stderr)
    if result.error:
        print(f"apx-hil daq: error: {result.error}", file=sys.stderr)
        return 1
    return 0
