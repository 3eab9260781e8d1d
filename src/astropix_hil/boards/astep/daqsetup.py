"""The A-STEP profile's part of ``apx-hil daq`` and ``apx-hil board``: options, the link and
run sequence, the readout type, and the virtual board for ``--pty``."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from typing import Any

from ...astep_fmt import ASTEP_UID, AstepReadout, count_hits
from ...chipconfig import ChipConfiguration, to_mapping
from ...chipconfig.model import TDAC_DEFAULT_ROW
from ...cli.argtypes import non_negative_float, positive_float, positive_int
from ...errors import ApxHilError, EmulatorConfigError
from .configstream import METHODS
from .link import ASTEP_BAUDRATE, AstepLink, open_link
from .sequence import ChipConfig, SequenceInfo, start_run

log = logging.getLogger(__name__)

DEFAULT_PORT = "astepemu://?layers=1&chips=1&seed=0&rate=100"


def add_daq_options(parser: argparse.ArgumentParser) -> None:
    """The ``--profile astep`` options of ``apx-hil daq``."""
    group = parser.add_argument_group("A-STEP profile (--profile astep)")
    group.add_argument("--layers", type=positive_int, choices=(1, 2, 3), default=1,
                       help="layers (lanes) read out (default 1)")
    group.add_argument("--chips", type=positive_int, choices=(1, 2, 3, 4), default=1,
                       help="chips per daisy chain (default 1)")
    group.add_argument("--ts-freq", type=positive_float, default=1e6,
                       help="FPGA timestamp frequency in Hz (default 1e6: divider 80)")
    group.add_argument("--reset-delay", type=non_negative_float, default=0.5,
                       help="chip reset pulse in seconds (the XML RSTdelay; default 0.5)")
    group.add_argument("--config-method", choices=METHODS, default="sr",
                       help="how --config reaches the chips: sr (shift register through "
                            "LAYERS_SR_OUT, as the team's Gecco v4 runs) or spi (routing and "
                            "configuration frames through the layers' MOSI FIFOs). Default sr")
    group.add_argument("--sr-config", metavar="FILE",
                       help="raw LAYERS_SR_OUT byte stream (shift-register chip "
                            "configuration made elsewhere) to write instead of --config")


def chip_config(args: argparse.Namespace,
                config: ChipConfiguration | None = None) -> ChipConfig:
    """The chip configuration step's input: ``config`` (loaded from ``--config``) or the raw
    SR bytes of ``--sr-config`` (see sequence.py)."""
    if getattr(args, "sr_config", None):
        if config is not None:
            raise ApxHilError("give --config or --sr-config, not both")
        try:
            with open(args.sr_config, "rb") as stream:
                return stream.read()
        except OSError as exc:
            raise ApxHilError(f"--sr-config {args.sr_config}: {exc.strerror}") from None
    return config


def open_run(args: argparse.Namespace, config: ChipConfiguration | None = None
             ) -> tuple[AstepLink, SequenceInfo]:
    """Open the port and run the team's start-up sequence on it, configuring the chips with
    ``config`` (every chip the same) when given."""
    port = args.port or DEFAULT_PORT
    baud = args.baudrate or ASTEP_BAUDRATE
    stream = chip_config(args, config)  # a bad --sr-config fails before the board is touched
    link = open_link(port, baudrate=baud, reply_timeout=args.reply_timeout)
    try:
        info = start_run(link, layers=args.layers, chips=args.chips, ts_freq=args.ts_freq,
                         reset_delay=args.reset_delay, chip_config=stream,
                         config_method=getattr(args, "config_method", "sr"))
    except BaseException:
        link.close()
        raise
    return link, info


def sent_configuration(info: SequenceInfo, config: ChipConfiguration) -> dict[str, Any]:
    """The header's ``configuration``: the chip configuration sent to every chip (team's YAML
    schema) and how it was sent (method, chips, bytes, bits per chip, the TDAC row 0 image)."""
    return {**to_mapping(config),
            "astep": {"method": info.config_method, "layers": info.layers,
                      "chips_per_layer": info.chips, "same_for_every_chip": True,
                      "bits_per_chip": config.nbits, "bytes": info.config_bytes,
                      "tdac_row0": (f"{TDAC_DEFAULT_ROW:#x}" if info.config_method == "sr"
                                    else None)}}


def header_fields(info: SequenceInfo) -> dict[str, Any]:
    """What an A-STEP run adds to the ``.apx`` (and multicast) header."""
    return {"readout_uid": ASTEP_UID, "profile": "astep",
            "astep": {"chip": "v4", "fpga_ts_byteorder": info.fpga_ts_byteorder,
                      **info.as_dict()}}


def readout_factory(info: SequenceInfo) -> Callable[[bytes, int, int], AstepReadout]:
    def make(data: bytes, readout_id: int, timestamp: int) -> AstepReadout:
        return AstepReadout(data, readout_id, timestamp, info.fpga_ts_byteorder)

    return make


def hit_counter(info: SequenceInfo) -> Callable[[list], int]:
    return lambda batch: count_hits(batch, info.fpga_ts_byteorder)


# -- apx-hil board --profile astep -------------------------------------------------------------

def add_board_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("A-STEP profile (--profile astep)")
    group.add_argument("--layers", help="layers of chips, 1..3 (default 1)")
    group.add_argument("--byteorder", choices=("big", "little"),
                       help="emulated firmware's FPGA timestamp byte order (default big: "
                            "firmware of 2025-11-24 on)")


def make_board(args: argparse.Namespace, truth: str | None = None):
    """The A-STEP board of ``apx-hil board --profile astep``; it streams its truth to
    ``truth`` (a path) as reads are served."""
    from .board import AstepBoard

    if args.mode is not None:
        raise EmulatorConfigError("--mode is a nexys option; the A-STEP chips emit Poisson "
                                  "hits at --rate")
    options: dict[str, Any] = dict(args.option)
    for name in ("rate", "anomalies", "chips", "layers", "byteorder"):
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    if args.fifo_size is not None:
        options["fifo_size"] = args.fifo_size
    return AstepBoard.from_options(seed=args.seed, truth=truth, **options)


__all__ = ["DEFAULT_PORT", "add_board_options", "add_daq_options", "header_fields",
           "hit_counter", "make_board", "open_run", "readout_factory", "sent_configuration"]
