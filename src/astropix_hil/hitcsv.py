"""Hit tables as CSV text, in the layout of the AstroPix team's reference decoder.

The first line is ``#`` followed by the run's JSON header, the second the column names of
:data:`~astropix_hil.fmt.HIT_COLUMNS`, then one row per hit (floats written as Python's
shortest round-trip ``repr``, as the reference does).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import numpy as np

from .errors import FormatError
from .fmt import HIT_COLUMNS, HIT_DTYPE

COMMENT = "#"


def header_line(header: Mapping[str, Any]) -> str:
    """The ``#{json}`` comment line carrying a run header."""
    return f"{COMMENT}{json.dumps(dict(header))}\n"


def column_line() -> str:
    """The CSV line naming the columns."""
    return ",".join(HIT_COLUMNS) + "\n"


def format_rows(hits: np.ndarray) -> str:
    """CSV rows (with trailing newline) for a hit array of dtype ``HIT_DTYPE``."""
    if len(hits) == 0:
        return ""
    columns = [hits[name].tolist() for name in HIT_COLUMNS]
    return "".join(",".join(map(str, row)) + "\n" for row in zip(*columns, strict=True))


def write_hits_csv(stream: TextIO, chunks: Iterable[np.ndarray],
                   header: Mapping[str, Any] | None = None) -> int:
    """Write a header comment (if given), the column line and every hit; return the hit count."""
    if header is not None:
        stream.write(header_line(header))
    stream.write(column_line())
    count = 0
    for hits in chunks:
        stream.write(format_rows(hits))
        count += len(hits)
    return count


def read_hits_csv(path: str | os.PathLike) -> tuple[dict[str, Any] | None, np.ndarray]:
    """Read a hit CSV written by :func:`write_hits_csv` (or the reference decoder).

    Returns the JSON header of the ``#`` line (None if absent) and the hits.
    """
    path = os.fspath(path)
    header = None
    with open(path, encoding="utf-8") as stream:
        first = stream.readline()
        if first.startswith(COMMENT):
            try:
                header = json.loads(first[1:])
            except json.JSONDecodeError as exc:
                raise FormatError(f"header comment is not JSON: {exc}", path, 0) from None
            first = stream.readline()
        names = first.strip().split(",")
        if tuple(names) != HIT_COLUMNS:
            raise FormatError(f"columns {names} are not {list(HIT_COLUMNS)}", path)
        rows = [tuple(line.rstrip("\n").split(",")) for line in stream if line.strip()]
    hits = np.empty(len(rows), dtype=HIT_DTYPE)
    for i, name in enumerate(HIT_COLUMNS):
        kind = float if HIT_DTYPE[name].kind == "f" else int
        try:
            hits[name] = [kind(row[i]) for row in rows]
        except (ValueError, IndexError) as exc:
            raise FormatError(f"bad value in column {name}: {exc}", path) from None
    return header, hits
