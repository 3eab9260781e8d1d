"""Hit tables as CSV text, in the layout of the AstroPix team's reference decoder.

The first line is ``#`` followed by the run's JSON header, the second the column names of
:data:`~astropix_hil.fmt.HIT_COLUMNS`, then one row per hit (floats written as Python's
shortest round-trip ``repr``, as the reference does).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, BinaryIO, TextIO

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
    """CSV rows (with trailing newline) for a hit array of dtype ``HIT_DTYPE``.

    Integers are written in decimal and floats as Python's ``repr``. The text is built with
    numpy digit arithmetic, a whole column at a time; a float column holding values other than
    multiples of 0.05 (``tot_us`` always is one) is formatted row by row instead.
    """
    return b"".join(row_blocks(hits)).decode("ascii")


def row_blocks(hits: np.ndarray) -> Iterator[bytes]:
    """The rows of :func:`format_rows` as ASCII bytes, a block of rows at a time (a writer to
    a binary file skips joining and decoding the whole text)."""
    if len(hits) == 0:
        return
    plans = []
    for name in HIT_COLUMNS:
        column = hits[name]
        if column.dtype.kind == "f":
            whole, cents = _twentieths(column)
            if whole is None:
                yield _format_rows_python(hits).encode("ascii")
                return
            plans.append((whole, cents, _width(whole) + 3))
        else:
            if column.dtype.kind == "i" and column.min() < 0:
                yield _format_rows_python(hits).encode("ascii")
                return
            plans.append((column, None, _width(column)))
    # Characters by position in the row, one row of the table per position (contiguous
    # writes); 0 marks an unused cell, dropped at the end.
    table = np.empty((sum(width + 1 for *_, width in plans), len(hits)), dtype=np.uint8)
    at = 0
    for values, cents, width in plans:
        if cents is None:
            _write_digits(table[at:at + width], values)
        else:
            _write_digits(table[at:at + width - 3], values)
            table[at + width - 3] = ord(".")
            np.add(cents // 10, _ZERO, out=table[at + width - 2], casting="unsafe")
            ones = cents % 10
            np.add(ones, _ZERO, out=table[at + width - 1], casting="unsafe")
            table[at + width - 1] *= ones != 0  # 12.30 -> 12.3 (12.00 -> 12.0)
        table[at + width] = ord(",")
        at += width + 1
    table[-1] = ord("\n")
    # Rows of text, a block at a time (the transposed block stays in the processor's cache).
    for i in range(0, table.shape[1], _BLOCK_ROWS):
        text = np.ascontiguousarray(table[:, i:i + _BLOCK_ROWS].T).ravel()
        yield text[text != 0].tobytes()


def _format_rows_python(hits: np.ndarray) -> str:
    columns = [hits[name].tolist() for name in HIT_COLUMNS]
    return "".join(",".join(map(str, row)) + "\n" for row in zip(*columns, strict=True))


_ZERO = ord("0")
_BLOCK_ROWS = 1 << 12


def _width(values: np.ndarray) -> int:
    """Decimal digits of the largest value."""
    return len(str(int(values.max())))


def _write_digits(rows: np.ndarray, values: np.ndarray) -> None:
    """Write the decimal digits of non-negative integers right-aligned into ``rows`` (one row
    per digit position, most significant first), 0 in place of leading zeros."""
    top = int(values.max())
    work = values.astype(np.uint32 if top < 1 << 32 else np.uint64)
    ten = work.dtype.type(10)
    last = len(rows) - 1
    for j in range(last, -1, -1):
        higher = work // ten  # division by a constant: fast; % is not
        np.add(work - higher * ten, _ZERO, out=rows[j], casting="unsafe")
        if j < last:
            rows[j] *= work != 0
        work = higher


def _twentieths(values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """Whole part and hundredths (multiples of 5) of floats that are all non-negative
    multiples of 0.05, for which ``repr`` is the exact decimal (``12.35``, ``12.3``,
    ``12.0``); else (None, None)."""
    with np.errstate(invalid="ignore", over="ignore"):
        twentieths = np.rint(values * 20.0)
        ok = (twentieths / 20.0 == values) & (twentieths >= 0) & (twentieths < 2.0**48)
    if not ok.all() or np.signbit(values).any():
        return None, None
    k = twentieths.astype(np.uint64)
    whole = k // np.uint64(20)
    return whole, ((k - whole * np.uint64(20)) * np.uint64(5)).astype(np.uint32)


def write_hits_csv(stream: TextIO | BinaryIO, chunks: Iterable[np.ndarray],
                   header: Mapping[str, Any] | None = None) -> int:
    """Write a header comment (if given), the column line and every hit; return the hit count.

    ``stream`` is a text stream, or a binary one (faster: the rows go out as the ASCII bytes
    they are built as).
    """
    write = _bytes_writer(stream)
    if header is not None:
        write(header_line(header).encode("utf-8"))
    write(column_line().encode("ascii"))
    count = 0
    for hits in chunks:
        for block in row_blocks(hits):
            write(block)
        count += len(hits)
    return count


def _bytes_writer(stream: TextIO | BinaryIO) -> Callable[[bytes], object]:
    """A function writing bytes to ``stream``, decoding them for a text stream."""
    if isinstance(stream, io.BufferedIOBase | io.RawIOBase):
        return stream.write
    return lambda data: stream.write(data.decode("utf-8"))  # type: ignore[arg-type]


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
