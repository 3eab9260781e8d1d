"""``apx-hil configure``: configure the chip through the board as the team's DAQ does."""

from __future__ import annotations

import argparse
import json
import sys

from ..boards.nexys.link import DEFAULT_BAUDRATE, DEFAULT_REPLY_TIMEOUT, open_link
from ..chipconfig import ChipConfiguration, load_config, load_default
from ..chipconfig.configure import ConfigureReport, configure
from .argtypes import (
    finite_float,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)


def pixel(text: str) -> tuple[int, int]:
    """``ROW,COL`` as a pair of integers."""
    try:
        row, col = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not ROW,COL (e.g. 0,9)") from None
    return row, col


def add_options(parser: argparse.ArgumentParser, *, config_help: str) -> None:
    """The configuration options shared by ``configure`` and ``daq``."""
    parser.add_argument("--config", help=config_help)
    parser.add_argument("--threshold", type=finite_float, metavar="MV",
                        help="comparator threshold above the baseline, mV (voltage-card DAC 7 "
                             "= DAC 3 + MV; default: the file's)")
    parser.add_argument("--inject", type=pixel, metavar="ROW,COL",
                        help="enable pixel ROW,COL and inject into it (pattern generator on)")
    parser.add_argument("--vinj", type=non_negative_float, metavar="MV",
                        help="injection amplitude, mV (on-chip vinj DAC; default: the file's)")
    parser.add_argument("--period", type=positive_float, metavar="MS",
                        help="time between injections, ms (default 77.36, the team's)")
    parser.add_argument("--pulses", type=non_negative_int, default=0, metavar="N",
                        help="number of injections (default 0: forever)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "configure", help="configure the chip (SPI, shift register, voltage card, injection)",
        description="Run the AstroPix team's v4 start-up sequence (beam_test.py) on the "
                    "board: SPI reset and enable, chip reset, configuration, voltage card, "
                    "TDAC row 0, injection; check what the firmware reads back; print what "
                    "was set.")
    parser.add_argument("--port", required=True,
                        help="board port: a device, a pty path or a pyserial URL")
    parser.add_argument("--baudrate", type=positive_int, default=DEFAULT_BAUDRATE)
    parser.add_argument("--reply-timeout", type=positive_float, default=DEFAULT_REPLY_TIMEOUT)
    add_options(parser, config_help="chip configuration YAML (team's v4 schema; default: "
                                    "the bundled default_v4.yml)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.set_defaults(run=run)


def chosen_config(args: argparse.Namespace) -> ChipConfiguration:
    """The configuration file given, else the bundled default."""
    return load_config(args.config) if args.config else load_default()


def apply(link, config: ChipConfiguration, args: argparse.Namespace) -> ConfigureReport:
    """Configure through ``link`` with the command's options."""
    return configure(link, config, threshold_mv=args.threshold, inject=args.inject,
                     vinj_mv=args.vinj, period_ms=args.period, pulses=args.pulses)


def describe(report: ConfigureReport) -> str:
    """One line saying what was set."""
    s = report.summary()
    text = (f"threshold {s['threshold_mv']:.1f} mV, vinj {s['vinj_mv']:.1f} mV, "
            f"{s['writes']} writes ({s['bytes_written']} bytes), "
            f"{s['reads_verified']} read-backs ok")
    if s["inject"]:
        inj = s["injection"]
        text += (f", injecting pixel row {s['inject'][0]} column {s['inject'][1]} every "
                 f"{inj['period_ms']:.3f} ms ({inj['pulses'] or 'endless'} pulses)")
    return text


def run(args: argparse.Namespace) -> int:
    config = chosen_config(args)
    link = open_link(args.port, baudrate=args.baudrate, reply_timeout=args.reply_timeout)
    try:
        report = apply(link, config, args)
    finally:
        link.close()
    if args.json:
        print(json.dumps(report.summary()), flush=True)
    print(f"apx-hil configure: {args.port}: {describe(report)}", file=sys.stderr)
    return 0
