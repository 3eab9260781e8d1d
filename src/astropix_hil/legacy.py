"""Legacy ``.log`` files of the older AstroPix DAQ scripts, and their import into ``.apx``.

A log holds header lines ``Name: {python dict literal}`` (the chip configuration), a line
`` Namespace(...)`` (the command-line options), then one line per readout
``INDEX<TAB>b'HEX'``. The header becomes the ``.apx`` JSON header (the options under
``"options"``), INDEX the readout_id, and the timestamp is 0: these logs carry no time per
readout. Nothing in the file is evaluated as code.
"""

from __future__ import annotations

import ast
import itertools
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from .errors import FormatError
from .fileio import ApxWriter
from .fmt import AstroPix4Readout

OPTIONS_KEY = "options"


class LogImport(NamedTuple):
    """What :func:`import_log` did."""

    readouts: int
    skipped: int
    header: dict[str, Any]


def _literal(text: str, path: str, line_no: int) -> Any:
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError) as exc:
        raise FormatError(f"line {line_no}: not a Python literal: {exc}", path) from None


def _namespace(text: str, path: str, line_no: int) -> dict[str, Any]:
    """The keyword arguments of ``Namespace(a=1, b='x')``, read without evaluating code."""
    try:
        call = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise FormatError(f"line {line_no}: bad Namespace(...) line: {exc}", path) from None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
            and call.func.id == "Namespace" and not call.args):
        raise FormatError(f"line {line_no}: expected Namespace(key=value, ...)", path)
    try:
        return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except ValueError as exc:
        raise FormatError(f"line {line_no}: Namespace value is not a literal: {exc}",
                          path) from None


def parse_log(path: str | os.PathLike) -> tuple[dict[str, Any], Iterator[tuple[int, str, int]]]:
    """Read a log's header; return it and an iterator of (index, hex text, line number)."""
    path = os.fspath(path)
    stream = open(path, encoding="utf-8")  # noqa: SIM115 - closed by the iterator
    header: dict[str, Any] = {}
    line_no = 0
    pending: str | None = None
    for line in stream:
        line_no += 1
        if line[:1].isdigit():
            pending = line
            break
        if not line.strip():
            continue
        if line.lstrip().startswith("Namespace("):
            header[OPTIONS_KEY] = _namespace(line, path, line_no)
        elif ": " in line:
            key, value = line.split(":", 1)
            header[key.strip()] = _literal(value, path, line_no)
        else:
            stream.close()
            raise FormatError(f"line {line_no}: neither a header line nor a readout", path)

    def readouts() -> Iterator[tuple[int, str, int]]:
        with stream:
            numbered = enumerate(stream, start=line_no + 1)
            if pending is not None:
                numbered = itertools.chain([(line_no, pending)], numbered)
            for number, line in numbered:
                if not line.strip():
                    continue
                index, sep, text = line.rstrip("\r\n").partition("\t")
                if not sep or not index.isdigit():
                    raise FormatError(f"line {number}: expected INDEX<TAB>b'HEX'", path)
                text = text.strip()
                if text[:2] in ("b'", 'b"') and len(text) >= 3 and text[-1] == text[1]:
                    text = text[2:-1]
                yield int(index), text, number

    return header, readouts()


def import_log(log_path: str | os.PathLike, apx_path: str | os.PathLike,
               progress: Callable[[int], None] | None = None) -> LogImport:
    """Convert a legacy ``.log`` file to ``.apx``; readouts whose hex is unreadable are skipped
    with a warning naming the line (as the AstroPix tools do). ``progress`` is told about
    each readout line read (its length, as ``INDEX<TAB>b'HEX'``)."""
    header, lines = parse_log(log_path)
    readouts = skipped = 0
    with ApxWriter(apx_path, header) as writer:
        for index, text, line_no in lines:
            if progress is not None:
                progress(len(text) + len(str(index)) + 5)
            try:
                data = bytes.fromhex(text)
            except ValueError as exc:
                warnings.warn(f"{os.fspath(log_path)}: line {line_no}: readout {index} "
                              f"skipped: {exc}", stacklevel=2)
                skipped += 1
                continue
            writer.write(AstroPix4Readout(data, index, timestamp=0))
            readouts += 1
        return LogImport(readouts, skipped, writer.header)
