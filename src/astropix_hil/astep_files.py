"""A-STEP runs on disk: ``.apx`` files of :class:`~astropix_hil.astep_fmt.AstepReadout`, the
team's raw ``.bin`` files (reads concatenated, no header), hit CSVs, and the AstroPix v3
row/column matching (spec §4.6).

An A-STEP ``.apx`` header carries ``"readout_uid": 4100`` and an ``"astep"`` object:
``chip`` ("v4" or "v3") and ``fpga_ts_byteorder`` ("big" or "little"), which decoding uses
unless told otherwise.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TextIO

import numpy as np

from .astep_fmt import (
    ASTEP_UID,
    BYTEORDERS,
    HIT_DTYPE,
    V3_HIT_DTYPE,
    AstepReadout,
    Decoded,
    decode_readouts,
)
from .errors import FormatError
from .fileio import ApxReader, ApxWriter, read_header
from .fmt import READOUT_HEADER
from .hitcsv import header_line

#: Bytes per readout when importing a ``.bin`` (its read boundaries are not recorded).
IMPORT_READ_BYTES = 4096
#: Default FPGA timestamp byte order by chip: v4 data come from current firmware (big-endian);
#: the public v3 runs were taken before 2025-11-24 (little-endian, as the v3 decoder reads).
DEFAULT_BYTEORDER = {"v4": "big", "v3": "little"}

MATCHED_DTYPE = np.dtype([
    ("layer", "u1"), ("chip_id", "u1"), ("row", "u1"), ("column", "u1"),
    ("row_timestamp", "u1"), ("col_timestamp", "u1"), ("row_tot", "u2"), ("col_tot", "u2"),
    ("row_tot_us", "f8"), ("col_tot_us", "f8"), ("row_fpga_ts", "u8"), ("col_fpga_ts", "u8"),
])


def astep_header(chip: str = "v4", byteorder: str | None = None,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run metadata for an A-STEP ``.apx`` file."""
    if chip not in DEFAULT_BYTEORDER:
        raise ValueError(f"chip must be v3 or v4, not {chip!r}")
    order = byteorder or DEFAULT_BYTEORDER[chip]
    if order not in BYTEORDERS:
        raise ValueError(f"byteorder must be big or little, not {order!r}")
    header: dict[str, Any] = {"readout_uid": ASTEP_UID,
                              "astep": {"chip": chip, "fpga_ts_byteorder": order}}
    if extra:
        header.update(extra)
    return header


def is_astep(header: Mapping[str, Any]) -> bool:
    return header.get("readout_uid") == ASTEP_UID


def decoding_of(header: Mapping[str, Any], chip: str | None = None,
                byteorder: str | None = None) -> tuple[str, str]:
    """(chip, byteorder) to decode a file with: as given, else the header's, else defaults."""
    info = header.get("astep") or {}
    chip = chip or info.get("chip") or "v4"
    return chip, byteorder or info.get("fpga_ts_byteorder") or DEFAULT_BYTEORDER[chip]


def iter_readouts(path: str | os.PathLike) -> Iterator[AstepReadout]:
    """The readouts of an A-STEP ``.apx``, decoding with the header's timestamp byte order."""
    with ApxReader(path) as reader:
        order = decoding_of(reader.header)[1]
        for readout in reader:
            yield AstepReadout(readout.data(), readout.readout_id, readout.timestamp, order)


def iter_hits(path: str | os.PathLike, chip: str | None = None, byteorder: str | None = None,
              batch: int = 256, tot_ns: float | None = None,
              batch_bytes: int = 64 << 10,
              progress: Callable[[int], object] | None = None) -> Iterator[Decoded]:
    """Decode an A-STEP ``.apx`` in batches of readouts (at most ``batch`` readouts, or
    ``batch_bytes`` of their data, whichever comes first), partial frames carried along.

    ``progress`` is called after each batch with the bytes of the file it took (readout
    headers and data), e.g. a progress bar's ``update``.
    """
    header = read_header(path)
    if not is_astep(header):
        raise FormatError(f"readout_uid {header.get('readout_uid')} is not A-STEP's "
                          f"({ASTEP_UID})", os.fspath(path))
    chip, byteorder = decoding_of(header, chip, byteorder)
    extra = b""
    pending: list[tuple[bytes, int, int]] = []
    pending_bytes = 0

    def flush() -> Decoded:
        nonlocal extra, pending_bytes
        result = decode_readouts(pending, chip=chip, byteorder=byteorder, extra_bytes=extra,
                                 tot_ns=tot_ns)
        extra = result.extra_bytes
        if progress is not None:
            progress(pending_bytes + READOUT_HEADER.size * len(pending))
        pending.clear()
        pending_bytes = 0
        return result

    for readout in iter_readouts(path):
        data = readout.data()
        pending.append((data, readout.readout_id, readout.timestamp))
        pending_bytes += len(data)
        if len(pending) >= batch or pending_bytes >= batch_bytes:
            yield flush()
    if pending:
        yield flush()


def read_hits(path: str | os.PathLike, chip: str | None = None,
              byteorder: str | None = None) -> np.ndarray:
    """Every hit (v4) or half-hit (v3) of an A-STEP ``.apx``."""
    chip_used = decoding_of(read_header(path), chip)[0]
    empty = np.empty(0, dtype=HIT_DTYPE if chip_used == "v4" else V3_HIT_DTYPE)
    return np.concatenate([empty, *(d.hits for d in iter_hits(path, chip, byteorder))])


# -- CSV ---------------------------------------------------------------------------------------

def format_rows(hits: np.ndarray) -> str:
    if len(hits) == 0:
        return ""
    columns = [hits[name].tolist() for name in hits.dtype.names]
    return "".join(",".join(map(str, row)) + "\n" for row in zip(*columns, strict=True))


def write_astep_csv(stream: TextIO, chunks: Iterable[np.ndarray],
                    header: Mapping[str, Any] | None = None,
                    dtype: np.dtype = HIT_DTYPE) -> int:
    """A ``#`` header line (if given), the column names of ``dtype``, a row per hit."""
    if header is not None:
        stream.write(header_line(header))
    stream.write(",".join(dtype.names) + "\n")
    count = 0
    for hits in chunks:
        stream.write(format_rows(hits))
        count += len(hits)
    return count


def read_astep_csv(path: str | os.PathLike,
                   dtype: np.dtype = HIT_DTYPE) -> tuple[dict | None, np.ndarray]:
    """Read a CSV of :func:`write_astep_csv`."""
    import json

    path = os.fspath(path)
    header = None
    with open(path, encoding="utf-8") as stream:
        first = stream.readline()
        if first.startswith("#"):
            header = json.loads(first[1:])
            first = stream.readline()
        if tuple(first.strip().split(",")) != dtype.names:
            raise FormatError(f"columns are not {list(dtype.names)}", path)
        rows = [line.rstrip("\n").split(",") for line in stream if line.strip()]
    hits = np.empty(len(rows), dtype=dtype)
    for i, name in enumerate(dtype.names):
        kind = float if dtype[name].kind == "f" else int
        hits[name] = [kind(row[i]) for row in rows]
    return header, hits


# -- raw .bin ----------------------------------------------------------------------------------

def import_bin(bin_path: str | os.PathLike, apx_path: str | os.PathLike, *, chip: str = "v4",
               byteorder: str | None = None, read_bytes: int = IMPORT_READ_BYTES,
               clock_ns: int | None = None) -> int:
    """Store a raw ``.bin`` as an A-STEP ``.apx``: readouts of ``read_bytes`` bytes each (a
    ``.bin`` does not record its reads), ids from 0; return the readout count."""
    header = astep_header(chip, byteorder, {"source": {"bin": os.path.basename(bin_path)}})
    stamp = time.time_ns() if clock_ns is None else clock_ns
    count = 0
    with open(bin_path, "rb") as source, ApxWriter(apx_path, header) as writer:
        while chunk := source.read(read_bytes):
            writer.write(AstepReadout(chunk, count, stamp))
            count += 1
    return count


def export_bin(apx_path: str | os.PathLike, stream) -> int:
    """Write the readouts' bytes back to back (the team's ``.bin``); return the byte count."""
    header = read_header(apx_path)
    if not is_astep(header):
        raise FormatError(f"readout_uid {header.get('readout_uid')} is not A-STEP's; only "
                          f"A-STEP runs have a .bin form", os.fspath(apx_path))
    total = 0
    for readout in iter_readouts(apx_path):
        stream.write(readout.data())
        total += len(readout.data())
    return total


# -- v3 row/column matching --------------------------------------------------------------------

def match_rows_columns(half_hits: np.ndarray, ts_window: tuple[int, int] = (0, 1),
                       tot_window: tuple[int, int] = (6, 15)) -> np.ndarray:
    """Pair v3 row and column half-hits as astropix-analysis does (spec §4.6).

    Per layer and chip, in file order: for each row half-hit, skip following row half-hits up
    to the first column half-hit, then test that column half-hit and every one directly after
    it (up to the next row half-hit): a pair matches when ``row ts - col ts`` (8-bit sensor
    timestamps, no wrap handling) and ``row tot_total - col tot_total`` both fall in their
    inclusive windows. Not exclusive: a half-hit can be in several pairs. Only payload 4 and
    location < 35 take part. Every layer id present is matched (the team's loop over 0..2
    misses layer id 3, spec §7 #12).
    """
    keep = half_hits[(half_hits["payload"] == 4) & (half_hits["location"] < 35)]
    out: list[tuple] = []
    for layer in np.unique(keep["layer"]):
        for chip in np.unique(keep["chip_id"][keep["layer"] == layer]):
            group = keep[(keep["layer"] == layer) & (keep["chip_id"] == chip)]
            is_col = group["is_col"].astype(bool)
            n = len(group)
            for i in np.flatnonzero(~is_col):
                j = i + 1
                while j < n and not is_col[j]:
                    j += 1
                while j < n and is_col[j]:
                    r, c = group[i], group[j]
                    dts = int(r["ts"]) - int(c["ts"])
                    dtot = int(r["tot_total"]) - int(c["tot_total"])
                    if ts_window[0] <= dts <= ts_window[1] and \
                            tot_window[0] <= dtot <= tot_window[1]:
                        out.append((layer, chip, r["location"], c["location"], r["ts"], c["ts"],
                                    r["tot_total"], c["tot_total"], r["tot_us"], c["tot_us"],
                                    r["fpga_ts"], c["fpga_ts"]))
                    j += 1
    return np.array(out, dtype=MATCHED_DTYPE)


__all__ = [
    "DEFAULT_BYTEORDER", "MATCHED_DTYPE", "astep_header", "decoding_of", "export_bin",
    "import_bin", "is_astep", "iter_hits", "iter_readouts", "match_rows_columns",
    "read_astep_csv", "read_hits", "write_astep_csv",
]


def summarize(path: str | os.PathLike) -> dict[str, Any]:
    """``apx-hil info``'s summary of an A-STEP ``.apx`` (same keys as for AstroPix4 runs, with
    the decoding counts under ``decoding_flags`` and the layers/chips seen under ``astep``)."""
    import warnings

    from .errors import TruncatedFileWarning

    header = read_header(path)
    chip, order = decoding_of(header)
    readouts = data_bytes = hits = wrong = skipped = missing = 0
    first_id = last_id = first_ts = last_ts = None
    pairs: set[tuple[int, int]] = set()
    extra = b""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TruncatedFileWarning)
        for readout in iter_readouts(path):
            rid = readout.readout_id
            if last_id is not None and rid > last_id + 1:
                missing += rid - last_id - 1
            first_id = rid if first_id is None else first_id
            first_ts = readout.timestamp if first_ts is None else first_ts
            last_id, last_ts = rid, readout.timestamp
            readouts += 1
            data_bytes += len(readout.data())
            result = decode_readouts([(readout.data(), rid, readout.timestamp)], chip=chip,
                                     byteorder=order, extra_bytes=extra)
            extra = result.extra_bytes
            hits += len(result.hits)
            wrong += result.wrong_length
            skipped += result.skipped
            pairs.update(zip(result.hits["layer"].tolist(), result.hits["chip_id"].tolist(),
                             strict=True))
        truncated = any(issubclass(w.category, TruncatedFileWarning) for w in caught)
    span_s = (last_ts - first_ts) / 1e9 if readouts > 1 else 0.0
    flags = {"WRONG_LENGTH_FRAMES": wrong, "SKIPPED_BYTES": skipped,
             "PARTIAL_FRAME_AT_END": len(extra)}
    return {
        "file": os.fspath(path), "size_bytes": os.path.getsize(path),
        "header_keys": sorted(header), "readouts": readouts, "hits": hits,
        "data_bytes": data_bytes, "first_readout_id": first_id, "last_readout_id": last_id,
        "missing_readout_ids": missing, "first_timestamp_ns": first_ts,
        "last_timestamp_ns": last_ts, "time_span_s": span_s,
        "readout_rate_hz": readouts / span_s if span_s > 0 else None,
        "hit_rate_hz": hits / span_s if span_s > 0 else None,
        "decoding_flags": {k: v for k, v in flags.items() if v}, "truncated": truncated,
        "astep": {"chip": chip, "fpga_ts_byteorder": order,
                  "layer_chips": sorted([list(p) for p in pairs])},
    }
