"""``apx-hil info``: summary of an ``.apx`` file."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable

import numpy as np

from ..astep_files import is_astep
from ..astep_files import summarize as astep_summary
from ..fileio import ReadReport, iter_hit_chunks, read_header
from ..fmt import Decoding
from .progress import add_quiet_option, progress_bar


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info", help="summarize an .apx file",
        description="Readouts, hits, decoding flags seen, readout-id gaps, time span and rates. "
                    "Exit status 1 if damaged bytes were skipped (a truncated last readout "
                    "is reported, not an error).")
    parser.add_argument("apx", help="input .apx file")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--header", action="store_true", help="also print the JSON header")
    parser.add_argument("--pixels", action="store_true",
                        help="also print a text hit map per chip (row 0 at the bottom)")
    add_quiet_option(parser)
    parser.set_defaults(run=run)


def summarize(path: str, progress: Callable[[int], None] | None = None) -> dict:
    """The summary :func:`run` prints, as a dict; ``progress`` is told the bytes read."""
    header = read_header(path)
    if is_astep(header):
        return astep_summary(path)
    readouts = hits = data_bytes = missing = 0
    flags = dict.fromkeys((flag.name for flag in Decoding), 0)
    first_ts = last_ts = first_id = last_id = None
    report = ReadReport()
    with warnings.catch_warnings():
        # The report counts them; the summary says so.
        warnings.simplefilter("ignore")
        done = 0
        for chunk in iter_hit_chunks(path, report=report):
            if progress is not None:
                progress(chunk.file_offset - done)
                done = chunk.file_offset
            n = len(chunk.readout_ids)
            if n == 0:
                continue
            ids = chunk.readout_ids.astype("i8")
            prev = last_id if last_id is not None else ids[0] - 1
            steps = np.diff(ids, prepend=prev)
            missing += int(np.clip(steps - 1, 0, None).sum())
            first_id = int(ids[0]) if first_id is None else first_id
            last_id = int(ids[-1])
            first_ts = int(chunk.timestamps[0]) if first_ts is None else first_ts
            last_ts = int(chunk.timestamps[-1])
            readouts += n
            hits += len(chunk.hits)
            data_bytes += chunk.data_bytes
            for flag in Decoding:
                flags[flag.name] += int(((chunk.status >> flag) & 1).sum())
    span_s = (last_ts - first_ts) / 1e9 if readouts > 1 else 0.0
    return {
        "file": path,
        "size_bytes": os.path.getsize(path),
        "header_keys": sorted(header),
        "readouts": readouts,
        "hits": hits,
        "data_bytes": data_bytes,
        "first_readout_id": first_id,
        "last_readout_id": last_id,
        "missing_readout_ids": missing,
        "first_timestamp_ns": first_ts,
        "last_timestamp_ns": last_ts,
        "time_span_s": span_s,
        "readout_rate_hz": readouts / span_s if span_s > 0 else None,
        "hit_rate_hz": hits / span_s if span_s > 0 else None,
        "decoding_flags": {name: count for name, count in flags.items() if count},
        "truncated": report.truncated_at is not None,
        "truncated_bytes": report.truncated_bytes,
        "damaged_bytes": report.damaged_bytes,
        "damaged_region_count": report.damaged_regions,
        # (byte offset, length) of the first damaged regions.
        "damaged_regions": [list(region) for region in report.damaged],
    }


def run(args: argparse.Namespace) -> int:
    with progress_bar(os.path.getsize(args.apx), "B", "info", args.quiet) as bar:
        summary = summarize(args.apx, bar.update)
    if args.header:
        summary["header"] = read_header(args.apx)
    if args.json:
        if args.pixels:
            from ..monitor import accumulate_file

            acc = accumulate_file(args.apx)
            summary["pixels"] = {str(chip): acc.hitmap[chip].tolist() for chip in acc.chips}
        print(json.dumps(summary, indent=2))
        return _damage_status(summary)
    print(f"file            {summary['file']} ({summary['size_bytes']} bytes)")
    print(f"readouts        {summary['readouts']} (ids {summary['first_readout_id']}.."
          f"{summary['last_readout_id']}, {summary['missing_readout_ids']} missing)")
    print(f"hits            {summary['hits']}")
    print(f"data bytes      {summary['data_bytes']}")
    print(f"time span       {summary['time_span_s']:.3f} s")
    if summary["readout_rate_hz"] is not None:
        print(f"rate            {summary['readout_rate_hz']:.1f} readouts/s, "
              f"{summary['hit_rate_hz']:.1f} hits/s")
    flags = summary["decoding_flags"]
    print("decoding flags  " + (", ".join(f"{k}: {v}" for k, v in flags.items()) or "none"))
    if summary["truncated"]:
        cut = summary.get("truncated_bytes")
        print("truncated       yes: the file ends inside its last readout"
              + (f" ({cut} bytes of it)" if cut is not None else ""))
    if summary.get("damaged_bytes"):
        where = ", ".join(f"{length} bytes at byte offset {offset}"
                          for offset, length in summary["damaged_regions"])
        more = summary["damaged_region_count"] - len(summary["damaged_regions"])
        print(f"damaged         {summary['damaged_bytes']} bytes skipped in "
              f"{summary['damaged_region_count']} regions: {where}"
              + (f" and {more} more" if more else ""))
    if "astep" in summary:
        print(f"A-STEP          {summary['astep']['chip']} frames, FPGA timestamps "
              f"{summary['astep']['fpga_ts_byteorder']}-endian, (layer, chip) "
              f"{summary['astep']['layer_chips']}")
    print(f"header keys     {', '.join(summary['header_keys'])}")
    if args.header:
        print(json.dumps(summary["header"], indent=2))
    if args.pixels:
        print("\n".join(_pixels(args.apx)))
    return _damage_status(summary)


def _damage_status(summary: dict) -> int:
    """1, with the error line, for a damaged file (its summary says where); else 0."""
    if not summary.get("damaged_bytes"):
        return 0
    print(f"apx-hil info: error: {summary['file']}: damaged: {summary['damaged_bytes']} bytes "
          f"skipped in {summary['damaged_region_count']} regions (every readout outside them "
          f"was read)", file=sys.stderr)
    return 1


def _pixels(path: str) -> list[str]:
    from ..monitor import accumulate_file
    from ..monitor.textmap import text_hitmaps

    acc = accumulate_file(path)
    return text_hitmaps(acc.hitmap, acc.chips)
