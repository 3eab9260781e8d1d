"""Progress a person can read on stderr: a bar for long commands, a status line for the DAQ.

Both appear only when stderr is a terminal, and never with ``-q``. The bar is tqdm's (the
``[progress]`` extra); without tqdm there is none. Warnings and log lines printed meanwhile go
on their own line above the bar or status line instead of overwriting it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TextIO

_CLEAR_LINE = "\r\x1b[K"


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    """``-q``/``--quiet``: no progress bar."""
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar (there is none either when stderr is not a "
                             "terminal)")


class _NoBar:
    """Stands in for a bar that is not shown."""

    def update(self, n: float = 1) -> None:
        """Nothing to show."""


def _wanted(quiet: bool, stream: TextIO) -> bool:
    return not quiet and stream.isatty()


@contextlib.contextmanager
def progress_bar(total: float | None, unit: str, desc: str, quiet: bool = False,
                 unit_scale: bool = True) -> Iterator[Any]:
    """A tqdm bar on stderr (done/total, rate, time left), gone when the block ends; a
    do-nothing stand-in when stderr is not a terminal, with ``quiet``, or without tqdm."""
    stream = sys.stderr
    if not _wanted(quiet, stream):
        yield _NoBar()
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield _NoBar()
        return
    bar = tqdm(total=total, unit=unit, unit_scale=unit_scale, desc=desc, file=stream,
               leave=False, dynamic_ncols=True, mininterval=0.2)
    with _messages_above(lambda text: tqdm.write(text, file=stream)):
        try:
            yield bar
        finally:
            bar.close()


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns: whole fields (separated by two spaces) are dropped
    from the end first."""
    while len(text) > width and "  " in text.strip():
        text = text.rstrip().rsplit("  ", 1)[0]
    return text[:width]


class StatusLine:
    """One line at the bottom of a terminal, rewritten in place and cut to the terminal's
    width (read at every update: the window may be resized); :meth:`message` prints a line
    above it. On a stream that is not a terminal every update is a line of its own."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.interactive = self.stream.isatty()
        self.text = ""

    def width(self) -> int:
        """Columns available (one less than the terminal's: no automatic wrap)."""
        return max(shutil.get_terminal_size((80, 24)).columns - 1, 10)

    def show(self, text: str) -> None:
        """Replace the status line."""
        if not self.interactive:
            print(text, file=self.stream, flush=True)
            return
        self.text = fit(text, self.width())
        self.stream.write(_CLEAR_LINE + self.text)
        self.stream.flush()

    def message(self, line: str) -> None:
        """Print ``line`` on its own, above the status line."""
        if not self.interactive or not self.text:
            print(line, file=self.stream, flush=True)
            return
        self.stream.write(f"{_CLEAR_LINE}{line}\n{self.text}")
        self.stream.flush()

    def close(self) -> None:
        """Leave the last status line on the screen and end it."""
        if self.interactive and self.text:
            self.stream.write("\n")
            self.stream.flush()
        self.text = ""

    @contextlib.contextmanager
    def messages_above(self) -> Iterator[StatusLine]:
        """Within the block, log records and warnings are printed through :meth:`message`."""
        with _messages_above(self.message):
            yield self


class _LineHandler(logging.Handler):
    def __init__(self, emit_line: Callable[[str], None], like: logging.Handler | None) -> None:
        super().__init__()
        self.emit_line = emit_line
        if like is not None:
            self.setFormatter(like.formatter)
            self.setLevel(like.level)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.emit_line(self.format(record))
        except Exception:  # a broken terminal must not stop the work
            self.handleError(record)


@contextlib.contextmanager
def _messages_above(emit_line: Callable[[str], None]) -> Iterator[None]:
    """Route the root logger's stderr output and warnings to ``emit_line`` meanwhile."""
    root = logging.getLogger()
    replaced = [h for h in root.handlers if isinstance(h, logging.StreamHandler)
                and getattr(h, "stream", None) in (sys.stderr, sys.__stderr__)]
    handler = _LineHandler(emit_line, replaced[0] if replaced else None)
    for old in replaced:
        root.removeHandler(old)
    root.addHandler(handler)
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        emit_line(f"warning: {message}")

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous
        root.removeHandler(handler)
        for old in replaced:
            root.addHandler(old)
