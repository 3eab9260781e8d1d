"""``apx-hil info``: summary of an ``.apx`` file."""

from __future__ import annotations

import argparse
import json
import os
import warnings

import numpy as np

from ..astep_files import is_astep
from ..astep_files import summarize as astep_summary
from ..errors import TruncatedFileWarning
from ..fileio import iter_hit_chunks, read_header
from ..fmt import Decoding


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info", help="summarize an .apx file",
        description="Readouts, hits, decoding flags seen, readout-id gaps, time span and rates.")
    parser.add_argument("apx", help="input .apx file")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--header", action="store_true", help="also print the JSON header")
    parser.add_argument("--pixels", action="store_true",
                        help="also print a text hit map per chip (row 0 at the bottom)")
    parser.set_defaults(run=run)


def summarize(path: str) -> dict:
    """The summary :func:`run` prints, as a dict."""
    header = read_header(path)
    if is_astep(header):
        return astep_summary(path)
    readouts = hits = data_bytes = missing = 0
    flags = dict.fromkeys((flag.name for flag in Decoding), 0)
    first_ts = last_ts = first_id = last_id = None
    truncated = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TruncatedFileWarning)
        for chunk in iter_hit_chunks(path):
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
        truncated = any(issubclass(w.category, TruncatedFileWarning) for w in caught)
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
        "truncated": truncated,
    }


def run(args: argparse.Namespace) -> int:
    summary = summarize(args.apx)
    if args.header:
        summary["header"] = read_header(args.apx)
    if args.json:
        if args.pixels:
            from ..monitor import accumulate_file

            acc = accumulate_file(args.apx)
            summary["pixels"] = {str(chip): acc.hitmap[chip].tolist() for chip in acc.chips}
        print(json.dumps(summary, indent=2))
        return 0
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
        print("truncated       yes: the file ends inside its last readout")
    if "astep" in summary:
        print(f"A-STEP          {summary['astep']['chip']} frames, FPGA timestamps "
              f"{summary['astep']['fpga_ts_byteorder']}-endian, (layer, chip) "
              f"{summary['astep']['layer_chips']}")
    print(f"header keys     {', '.join(summary['header_keys'])}")
    if args.header:
        print(json.dumps(summary["header"], indent=2))
    if args.pixels:
        print("\n".join(_pixels(args.apx)))
    return 0


def _pixels(path: str) -> list[str]:
    from ..monitor import accumulate_file
    from ..monitor.textmap import text_hitmaps

    acc = accumulate_file(path)
    return text_hitmaps(acc.hitmap, acc.chips)
