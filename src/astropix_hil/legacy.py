"""Legacy ``.log`` files of the older AstroPix DAQ scripts, and their import into ``.apx``.

A log holds header lines ``Name: {python dict literal}`` (the chip configuration), a line
`` Namespace(...)`` (the command-line options), then one line per readout
``INDEX<TAB>b'HEX'``. The header becomes the ``.apx`` JSON header (the options under
``"options"``), INDEX the readout_id, and the timestamp is 0: these logs carry no time per
readout. Nothing in the file is evaluated as code, and anything that is not such a log (not
UTF-8 text, an ``.apx`` file, a literal JSON cannot hold, an index that is not a readout_id)
is a :class:`~astropix_hil.errors.FormatError` naming the file and line.
"""

from __future__ import annotations

import ast
import itertools
import os
import warnings
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, NamedTuple

from .errors import FormatError
from .fileio import MAGIC, READOUT_UID_KEY, ApxWriter
from .fmt import AstroPix4Readout
from .jsondata import NotJsonDataError, check_json_data

OPTIONS_KEY = "options"
#: Longest line read (a readout line of a 2048-byte FIFO read is about 4 kB).
MAX_LINE = 1 << 20
#: Largest readout_id (a ``<u32`` in the serialized readout).
MAX_READOUT_ID = 0xFFFFFFFF
# What parsing a hostile literal can raise besides SyntaxError: ValueError (not a literal, an
# integer of 5000 digits), TypeError ({[1]: 2}), RecursionError and MemoryError (nesting).
_LITERAL_ERRORS = (ValueError, SyntaxError, TypeError, RecursionError, MemoryError)


class LogImport(NamedTuple):
    """What :func:`import_log` did."""

    readouts: int
    skipped: int
    header: dict[str, Any]


def _literal(text: str, path: str, line_no: int) -> Any:
    try:
        value = ast.literal_eval(text.strip())
    except _LITERAL_ERRORS as exc:
        raise FormatError(f"line {line_no}: not a Python literal: {_why(exc)}", path) from None
    return _json_data(value, path, line_no)


def _json_data(value: Any, path: str, line_no: int) -> Any:
    try:
        check_json_data(value)
    except NotJsonDataError as exc:
        raise FormatError(f"line {line_no}: cannot go into the .apx header: {exc}",
                          path) from None
    return value


def _why(exc: BaseException) -> str:
    return "nested too deep" if isinstance(exc, (RecursionError, MemoryError)) else str(exc)


def _lines(stream: BinaryIO, path: str, first: int = 1) -> Iterator[tuple[int, str]]:
    """(number, text) of each line of ``stream``; a line that is not UTF-8 or is longer than
    :data:`MAX_LINE` is an error naming it."""
    for number in itertools.count(first):
        raw = stream.readline(MAX_LINE + 1)
        if not raw:
            return
        if len(raw) > MAX_LINE:
            raise FormatError(f"line {number}: longer than {MAX_LINE} bytes: not a legacy log",
                              path)
        try:
            yield number, raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(f"line {number}: not UTF-8 text (byte {exc.start} of the line): "
                              f"not a legacy log", path) from None


def _namespace(text: str, path: str, line_no: int) -> dict[str, Any]:
    """The keyword arguments of ``Namespace(a=1, b='x')``, read without evaluating code."""
    try:
        call = ast.parse(text.strip(), mode="eval").body
    except _LITERAL_ERRORS as exc:
        raise FormatError(f"line {line_no}: bad Namespace(...) line: {_why(exc)}",
                          path) from None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
            and call.func.id == "Namespace" and not call.args):
        raise FormatError(f"line {line_no}: expected Namespace(key=value, ...)", path)
    if any(kw.arg is None for kw in call.keywords):
        raise FormatError(f"line {line_no}: expected Namespace(key=value, ...)", path)
    try:
        options = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except _LITERAL_ERRORS as exc:
        raise FormatError(f"line {line_no}: Namespace value is not a literal: {_why(exc)}",
                          path) from None
    return _json_data(options, path, line_no)


def parse_log(path: str | os.PathLike) -> tuple[dict[str, Any], Iterator[tuple[int, str, int]]]:
    """Read a log's header; return it and an iterator of (index, hex text, line number)."""
    path = os.fspath(path)
    stream = open(path, "rb")  # noqa: SIM115 - closed by the iterator
    try:
        if stream.read(len(MAGIC)) == MAGIC:
            raise FormatError("an .apx file, not a legacy .log (see apx-hil info)", path, 0)
        stream.seek(0)
        header, line_no, pending = _parse_header(stream, path)
    except BaseException:
        stream.close()
        raise

    def readouts() -> Iterator[tuple[int, str, int]]:
        with stream:
            numbered = _lines(stream, path, line_no + 1)
            if pending is not None:
                numbered = itertools.chain([(line_no, pending)], numbered)
            for number, line in numbered:
                if not line.strip():
                    continue
                index, sep, text = line.rstrip("\r\n").partition("\t")
                # str.isdigit() also accepts digits int() refuses ('²'); only ASCII ones here.
                if not sep or not (index.isascii() and index.isdigit()):
                    raise FormatError(f"line {number}: expected INDEX<TAB>b'HEX'", path)
                if len(index) > 10 or int(index) > MAX_READOUT_ID:
                    raise FormatError(f"line {number}: index {index} is not a readout_id "
                                      f"(0..{MAX_READOUT_ID})", path)
                text = text.strip()
                if text[:2] in ("b'", 'b"') and len(text) >= 3 and text[-1] == text[1]:
                    text = text[2:-1]
                yield int(index), text, number

    return header, readouts()


def _parse_header(stream: BinaryIO, path: str) -> tuple[dict[str, Any], int, str | None]:
    """The header lines: the header, the number of the last line read, and that line if it
    is the first readout line."""
    header: dict[str, Any] = {}
    line_no = 0
    pending: str | None = None
    for line_no, line in _lines(stream, path):
        if line[:1].isdigit():
            pending = line
            break
        if not line.strip():
            continue
        if line.lstrip().startswith("Namespace("):
            header[OPTIONS_KEY] = _namespace(line, path, line_no)
        elif ": " in line:
            key, value = line.split(":", 1)
            if key.strip() == READOUT_UID_KEY:
                raise FormatError(f"line {line_no}: {READOUT_UID_KEY} is not a log header "
                                  f"line (the import sets it)", path)
            header[key.strip()] = _literal(value, path, line_no)
        else:
            raise FormatError(f"line {line_no}: neither a header line nor a readout", path)
    return _json_data(header, path, line_no), line_no, pending


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
