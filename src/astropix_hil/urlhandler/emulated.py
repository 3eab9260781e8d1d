"""What the in-process board schemes (``apxemu://``, ``astepemu://``) share: the URL's board
and fault options, and a pyserial port whose other end is a board object.

Link faults, to test what a DAQ does when the line misbehaves, are options of the port itself:

* ``stall_after=N``: answer the first N requests, then nothing (a board that stops answering);
* ``disconnect_after=N``: after N requests every I/O raises (a port that disappears);
* ``garbage_every=N``: append a stray byte to every N-th reply;
* ``short_every=N``: drop the last byte of every N-th reply.

Bytes written are processed at once; a read waits for the port's timeout only when the reply
is short, as a real port would. While nobody writes, a helper thread moves the board's chip on
(``board.advance()``, as the pty server's idle hook does), so the first request after any idle
time is answered at once rather than after the whole backlog is drawn.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
import weakref
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from ..boards.truth import TruthTarget
from ..outputfile import OutputError, check_output

FAULTS = ("stall_after", "disconnect_after", "garbage_every", "short_every")
#: A board nobody wrote to for this long is moved on by the port's helper thread.
IDLE_ADVANCE_S = 0.05


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


def truth_option(options: dict[str, str], scheme: str) -> TruthTarget:
    """Take the truth options out of a URL's board options: ``truth=PATH`` streams the truth
    to a new CSV file (an existing one is refused), ``keep_truth=1`` keeps it in memory."""
    truth: TruthTarget = options.pop("keep_truth", "0") not in ("", "0")
    if "truth" in options:
        truth = options.pop("truth")
        try:
            check_output(truth)
        except OutputError as exc:
            raise SerialException(f"{scheme}: truth={truth}: {exc}") from None
    return truth


class EmulatedPort(SerialBase):
    """A pyserial port whose other end is a board of :meth:`board_class`, made from the URL's
    board options (``from_options``, with the truth options of :func:`truth_option`)."""

    #: The URL scheme (subclasses set it).
    SCHEME = ""

    @abstractmethod
    def board_class(self) -> Any:
        """The board class (imported when a port opens: a scheme costs nothing until used)."""

    def make_board(self, options: dict[str, str]) -> Any:
        """The board the URL's board options describe (SerialException if they are bad)."""
        truth = truth_option(options, self.SCHEME)
        try:
            return self.board_class().from_options(truth=truth, **options)
        except (TypeError, ValueError, OSError) as exc:
            raise SerialException(f"{self.SCHEME}: bad board option: {exc}") from None

    def close_board(self) -> None:
        """End the board's streamed truth, if any, when the port closes."""
        self.board.close_truth()

    def open(self) -> None:
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        if self.is_open:
            raise SerialException("Port is already open.")
        options, self._faults = parse_url(self.portstr, self.SCHEME)
        self.board = self.make_board(options)
        self._rx = bytearray()
        self._requests = 0
        #: Held while the board works (a request, or the helper moving it on).
        self.lock = threading.Lock()
        self._last_request = time.monotonic()
        self._closed = threading.Event()
        self.is_open = True
        advance = getattr(self.board, "advance", None)
        if advance is not None:
            threading.Thread(target=_advance_while_idle, args=(weakref.ref(self), advance),
                             name=f"{self.SCHEME} idle", daemon=True).start()

    def _reconfigure_port(self) -> None:
        """Nothing to configure: baud rate and framing do not apply."""

    def close(self) -> None:
        if self.is_open:
            self._closed.set()
            with self.lock:
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
        with self.lock:
            reply = self.board.process(bytes(data))
            self._last_request = time.monotonic()
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


def _advance_while_idle(port_ref: Callable[[], EmulatedPort | None],
                        advance: Callable[[], None]) -> None:
    """Move the board on whenever nobody wrote for :data:`IDLE_ADVANCE_S`, until the port is
    closed or dropped (a weak reference: an unclosed port does not live on for the thread)."""
    while True:
        port = port_ref()
        if port is None:
            return
        closed, lock = port._closed, port.lock
        quiet = time.monotonic() - port._last_request
        del port  # not kept alive while waiting
        if quiet >= IDLE_ADVANCE_S:
            with lock:
                if closed.is_set():
                    return
                try:
                    advance()
                except Exception:  # the next request meets the same error, where it is handled
                    return
            quiet = 0.0
        if closed.wait(IDLE_ADVANCE_S - quiet):
            return
