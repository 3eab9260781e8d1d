"""Serve a board on a pseudo-terminal, so another process opens it as a serial port.

The server owns the pty's master side and keeps its slave side open, so the path stays valid
while DAQ processes open and close it. Bytes the DAQ writes are handed to ``board.process`` and
its reply is written back, exactly as the real board answers over its FTDI link. Killing the
server closes the pty under the DAQ, which then sees the port disappear.
"""

from __future__ import annotations

import errno
import os
import select
import threading
import time
import tty
from collections.abc import Callable
from typing import Protocol

READ_CHUNK = 1 << 16


class ByteBoard(Protocol):
    """A board as a function of the bytes it receives."""

    def process(self, data: bytes) -> bytes: ...


class PtyServer:
    """A pseudo-terminal whose other end is ``board``. :attr:`path` is what a DAQ opens."""

    def __init__(self, board: ByteBoard) -> None:
        self.board = board
        self._master, self._slave = os.openpty()
        # Raw: no echo, no line editing, all 8 bits through (the DAQ side sets raw mode too).
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self.bytes_in = 0
        self.bytes_out = 0

    def _write_all(self, data: bytes, stop: threading.Event) -> None:
        view = memoryview(data)
        while view and not stop.is_set():
            try:
                done = os.write(self._master, view)
            except BlockingIOError:
                select.select([], [self._master], [], 0.05)
                continue
            self.bytes_out += done
            view = view[done:]

    def serve(self, stop: threading.Event | None = None, duration: float | None = None,
              on_idle: Callable[[], None] | None = None) -> None:
        """Answer requests until ``stop`` is set or ``duration`` seconds have passed."""
        stop = stop or threading.Event()
        deadline = None if duration is None else time.monotonic() + duration
        while not stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                if on_idle is not None:
                    on_idle()
                continue
            try:
                data = os.read(self._master, READ_CHUNK)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:  # no slave side open at the moment
                    time.sleep(0.01)
                    continue
                raise
            self.bytes_in += len(data)
            reply = self.board.process(data)
            if reply:
                self._write_all(reply, stop)

    def close(self) -> None:
        """Close both sides: a DAQ still using the pty sees its port disappear."""
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> PtyServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
