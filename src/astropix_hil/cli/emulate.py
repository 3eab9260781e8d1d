"""``apx-hil emulate``: write emulated readouts to ``.apx`` and their ground truth to CSV."""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack

from .. import __version__
from ..chipconfig import PatternGenerator, StartupOptions, load_config
from ..chipconfig.sequence import final_configuration
from ..emulator import Anomalies, Emulator, EmulatorConfig, TotDistribution, write_run
from ..emulator.chipmodel import ConfiguredSource
from ..emulator.config import MODES, ChipConfig
from ..emulator.pixels import PixelModel
from ..errors import EmulatorConfigError
from ..outputfile import OutputError, atomic_output, same_file
from .argtypes import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    seed,
)
from .configure import add_options
from .progress import add_quiet_option, progress_bar

ANOMALY_HELP = ("anomalies, per hit: KIND=P[,KIND=P...] with P a probability, a bare KIND "
                "forces it (P=1), 'all' or 'all=P' sets every kind (default P 0.05), 'none' "
                "(the default) is clean mode. Kinds: no_idle (no idle bytes between hits), "
                "split (a hit split across two reads), truncated (a hit cut short, the next "
                "one right behind it), ff_runs (0xff runs between idle bytes), start_like (a "
                "start-like byte inside a hit word)")


def _typed(parse):
    def convert(text: str):
        try:
            return parse(text)
        except (EmulatorConfigError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(f"{text} is not >= 0")
    return value


def _pair(text: str) -> tuple[int, int]:
    row, _, col = text.partition(",")
    return int(row), int(col)


def _neg(text: str) -> int | None:
    if text == "random":
        return None
    if text in ("0", "1"):
        return int(text)
    raise ValueError(f"{text!r} is not 0, 1 or random")


def _ids(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "emulate", help="write emulated readouts (.apx) and their ground truth (CSV)",
        description="Emulate AstroPix4 chips behind the board: readouts byte for byte as the "
                    "DAQ stores them, and the truth, the hits an honest decoder reports, with "
                    "the columns of 'apx-hil convert' (on a clean file or any anomaly mix, "
                    "'apx-hil convert SIM.apx' gives the truth file byte for byte). "
                    "Deterministic for a seed.")
    stop = parser.add_mutually_exclusive_group(required=True)
    stop.add_argument("--readouts", type=_typed(_count), metavar="N", help="emit N readouts")
    stop.add_argument("--duration", type=non_negative_float, metavar="S",
                      help="emit the readouts of the first S seconds of chip time")
    parser.add_argument("--out", required=True, metavar="SIM.apx", help="output .apx file")
    parser.add_argument("--truth", metavar="TRUTH.csv", help="ground-truth hit table (CSV)")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    parser.add_argument("--mode", choices=MODES, default="injection",
                        help="injection: a pulse train at one pixel, as in the real run "
                             "(default); poisson: random hits over the array")
    parser.add_argument("--rate", type=non_negative_float, metavar="HZ",
                        help="hits (poisson, default 1000) or pulses (injection, default one "
                             "per 77.36 ms) per second, per chip")
    parser.add_argument("--anomalies", type=_typed(Anomalies.parse), default=Anomalies(),
                        metavar="SPEC", help=ANOMALY_HELP)
    chips = parser.add_mutually_exclusive_group()
    chips.add_argument("--chips", type=positive_int, default=1, metavar="N",
                       help="chips in the daisy chain, ids 0..N-1 (default 1)")
    chips.add_argument("--chip-ids", type=_typed(_ids), metavar="ID,ID...",
                       help="chip ids of the daisy chain (0 to 30)")
    parser.add_argument("--read-size", type=positive_int, default=2048, metavar="BYTES",
                        help="bytes the DAQ reads per readout (default 2048)")
    parser.add_argument("--poll-interval", type=positive_float, default=1.0, metavar="MS",
                        help="the DAQ polls the FIFO every MS milliseconds (default 1)")
    array = parser.add_argument_group("pixels and TOT")
    array.add_argument("--rows", type=positive_int, default=32,
                       help="array rows (1-32, default 32)")
    array.add_argument("--cols", type=positive_int, default=16,
                       help="array columns (1-32, default 16)")
    array.add_argument("--pixel", type=_typed(_pair), metavar="ROW,COL",
                       help="the fixed pixel (injection default 0,9; poisson: every hit)")
    array.add_argument("--hot-pixels", metavar="R,C:W;...",
                       help="poisson: hot pixels with weights over a uniform weight 1")
    array.add_argument("--tot", type=_typed(TotDistribution.parse), metavar="KIND:A[,B]",
                       help="TOT in us: normal:MEAN,SIGMA uniform:LO,HI exponential:MEAN "
                            "fixed:V (injection default normal:235,18, poisson "
                            "exponential:50)")
    array.add_argument("--jitter", type=non_negative_float, default=25.0, metavar="NS",
                       help="injection: pulse time jitter, sigma in ns (default 25)")
    fields = parser.add_argument_group("hit fields")
    for edge in ("1", "2"):
        fields.add_argument(f"--ts-neg{edge}", type=_typed(_neg), default=None,
                            metavar="0|1|random", help=f"ts_neg{edge} (default random)")
        fields.add_argument(f"--ts-tdc{edge}", type=non_negative_int, default=0, metavar="0-31",
                            help=f"ts_tdc{edge} (default 0)")
    parser.add_argument("--counter-phase", type=non_negative_int, metavar="TICKS",
                        help="the 17-bit counter's value at time 0 (default: from the seed)")
    parser.add_argument("--start-ns", type=non_negative_int, metavar="NS",
                        help="host time (ns since the epoch) of chip time 0, for readout "
                             "timestamps (default 2025-07-23 07:25:36 UTC)")
    chip = parser.add_argument_group(
        "configured chip", "with --config, the chip obeys a configuration (comparators, "
        "injection, threshold) as behind the virtual board; --mode, --rate and the pixel "
        "options then do not apply")
    add_options(chip, config_help="chip configuration YAML (team's v4 schema) the chip runs")
    chip.add_argument("--pixel-table", metavar="CSV",
                      help="write each pixel's true threshold offset and noise (mV) here")
    add_quiet_option(parser)
    parser.set_defaults(run=run)


def configured_config(args: argparse.Namespace) -> tuple[EmulatorConfig, PixelModel]:
    """The emulator configuration of the configured chip running ``--config``."""
    options = StartupOptions(threshold_mv=args.threshold, inject=args.inject,
                             vinj_mv=args.vinj)
    config = final_configuration(load_config(args.config), options)
    generator = None
    if args.inject is not None:
        generator = (PatternGenerator.for_period(args.period, cycle=args.pulses)
                     if args.period is not None else PatternGenerator(cycle=args.pulses))
    pixels = PixelModel(seed=args.seed)
    source = ConfiguredSource(config, generator, pixels)
    extra = {} if args.start_ns is None else {"start_ns": args.start_ns}
    return EmulatorConfig((ChipConfig(0, source),), args.anomalies, args.read_size,
                          round(args.poll_interval * 1e6), args.counter_phase,
                          **extra), pixels


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The emulator configuration the arguments describe."""
    options = {
        "mode": args.mode, "rate": args.rate, "anomalies": args.anomalies,
        "chips": args.chips, "chip_ids": args.chip_ids, "rows": args.rows, "cols": args.cols,
        "pixel": args.pixel, "hot_pixels": args.hot_pixels, "tot": args.tot,
        "jitter_ns": args.jitter, "ts_neg1": args.ts_neg1, "ts_neg2": args.ts_neg2,
        "ts_tdc1": args.ts_tdc1, "ts_tdc2": args.ts_tdc2, "read_size": args.read_size,
        "poll_interval_ns": round(args.poll_interval * 1e6),
        "counter_phase": args.counter_phase,
    }
    if args.start_ns is not None:
        options["start_ns"] = args.start_ns
    return EmulatorConfig.build(**options)


def run(args: argparse.Namespace) -> int:
    pixels = None
    if args.config:
        config, pixels = configured_config(args)
    elif args.pixel_table or args.inject or args.threshold is not None:
        raise EmulatorConfigError("--inject, --threshold and --pixel-table need --config")
    else:
        config = config_from_args(args)
    outputs_given = [path for path in (args.out, args.truth, args.pixel_table) if path]
    for index, path in enumerate(outputs_given):
        for other in outputs_given[index + 1:]:
            if same_file(path, other):
                raise OutputError(f"{path} is one file for two outputs; give each its own name")
    emulator = Emulator(config, args.seed)
    header = {"emulator": {"version": __version__, "seed": args.seed,
                           "config": config.describe()}}
    runs = emulator.runs(readouts=args.readouts, duration=args.duration)
    if args.readouts is not None:
        total, unit = args.readouts, "readouts"
    else:
        total, unit = args.duration, "s"
    with ExitStack() as outputs:
        bar = outputs.enter_context(progress_bar(total, unit, "emulate", args.quiet,
                                                 unit_scale=unit != "s"))
        runs = _counted(runs, bar, unit, config.start_ns)
        out = outputs.enter_context(atomic_output(args.out, args.force))
        if args.truth:
            truth_path = outputs.enter_context(atomic_output(args.truth, args.force))
            truth = outputs.enter_context(open(truth_path, "w", encoding="utf-8", newline=""))
            summary = write_run(out, runs, header, truth)
        else:
            summary = write_run(out, runs, header)
        if pixels is not None and args.pixel_table:
            table = outputs.enter_context(atomic_output(args.pixel_table, args.force))
            with open(table, "w", encoding="utf-8") as stream:
                pixels.write_table(stream)
    print(f"{summary.readouts} readouts written to {args.out}; {summary.hits} hits in the "
          f"truth{f' ({args.truth})' if args.truth else ''}; {summary.truncated} truncated "
          f"and {summary.split_lost} split hits dropped", file=sys.stderr)
    return 0


def _counted(runs, bar, unit: str, start_ns: int):
    """The runs, moving the bar by readouts or by seconds of chip time."""
    done = 0.0
    for run in runs:
        if unit == "s":
            if len(run):
                now = (int(run.timestamps[-1]) - start_ns) / 1e9
                bar.update(max(now - done, 0.0))
                done = max(done, now)
        else:
            bar.update(len(run))
        yield run
