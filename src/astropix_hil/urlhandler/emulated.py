"""What the in-process board schemes (``apxemu://``, ``astepemu://``) share: the URL's board
and fault options, and a pyserial port whose other end is a board object.

Link faults, to test what a DAQ does when the line misbehaves, are options of the port itself:

* ``stall_after=N``: answer the first N requests, then nothing (a board that stops answering);
* ``disconnect_after=N``: after N requests every I/O raises (a port that disappears);
* ``garbage_every=N``: append a stray byte to every N-th reply;
* ``short_every=N``: drop the last byte of every N-th reply.

Bytes written are processed at once; a read waits for the port's timeout only when the reply
is short, as a real port would.
"""

from __future__ import annotations

import time
import urllib.parse
from abc import abstractmethod
from typing import Any

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

FAULTS = ("stall_after", "disconnect_after", "garbage_every", "short_every")


def parse_url(url: str, scheme: str) -> tuple[dict[str, str], dict[str, int]]:
    """Board options and fault options of a ``SCHEME://?option=value...`` URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != scheme:
        raise SerialException(f"expected {scheme}://?option=value..., got {url!r}")
    board: dict[str, str] = {}
    faults: dict[str, int] = {}
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key in FAULTS:
            try:
                faults[key] = int(value)
            except ValueError:
                raise SerialException(f"{scheme}: {key}={value!r} is not an integer") from None
        else:
            board[key] = value
    return board, faults


class EmulatedPort(SerialBase):
    """A pyserial port whose other end is a board made by :meth:`make_board`."""

    #: The URL scheme (subclasses set it).
    SCHEME = ""

    @abstractmethod
    def make_board(self, options: dict[str, str]) -> Any:
        """The board the URL's board options describe (raise SerialException if bad)."""

    def close_board(self) -> None:
        """Called when the port closes (e.g. to end a streamed truth)."""

    def open(self) -> None:
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        if self.is_open:
            raise SerialException("Port is already open.")
        options, self._faults = parse_url(self.portstr, self.SCHEME)
        self.board = self.make_board(options)
        self._rx = bytearray()
        self._requests = 0
        self.is_open = True

    def _reconfigure_port(self) -> None:
        """Nothing to configure: baud rate and framing do not apply."""

    def close(self) -> None:
        if self.is_open:
            self.close_board()
        self.is_open = False

    def _check(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()
        after = self._faults.get("disconnect_after")
        if after is not None and self._requests >= after:
            raise SerialException(f"{self.SCHEME}: device disconnected (disconnect_after)")

    @property
    def in_waiting(self) -> int:
        self._check()
        return len(self._rx)

    def write(self, data: bytes) -> int:
        """Hand the bytes to the board; its reply becomes readable (faults applied).

        Each write counts as one request for the fault options: the link writes one request
        at a time.
        """
        self._check()
        self._requests += 1
        n = self._requests
        reply = self.board.process(bytes(data))
        stall, short = self._faults.get("stall_after"), self._faults.get("short_every")
        garbage = self._faults.get("garbage_every")
        if stall is not None and n > stall:
            reply = b""
        elif reply:
            if short and n % short == 0:
                reply = reply[:-1]
            if garbage and n % garbage == 0:
                reply += b"\x5a"
        self._rx += reply
        return len(data)

    def read(self, size: int = 1) -> bytes:
        self._check()
        if len(self._rx) < size and self._timeout:
            time.sleep(self._timeout)  # nothing more will come: behave like a real timeout
        out = bytes(self._rx[:size])
        del self._rx[:size]
        return out

    def reset_input_buffer(self) -> None:
        self._check()
        self._rx.clear()

    def reset_output_buffer(self) -> None:
        self._check()

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    def _update_break_state(self) -> None:
        pass
