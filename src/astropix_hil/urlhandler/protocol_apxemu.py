"""``apxemu://``: a virtual AstroPix4 board in this process, as a pyserial port.

URL: ``apxemu://?seed=1&rate=1000[&option=value...]``. Board options (seed, rate, ...) go to
:meth:`astropix_hil.boards.nexys.board.VirtualBoard.from_options`. The board keeps no truth
unless asked: ``truth=PATH`` streams it to a new CSV file (closed with the port; an existing
file is refused), ``keep_truth=1`` keeps it in memory (``port.board.truth()``, for tests).
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

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from ..boards.truth import TruthTarget
from ..outputfile import OutputError, check_output

FAULTS = ("stall_after", "disconnect_after", "garbage_every", "short_every")


def parse_url(url: str) -> tuple[dict[str, str], dict[str, int]]:
    """Board options and fault options of an ``apxemu://`` URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "apxemu":
        raise SerialException(f"expected apxemu://?option=value..., got {url!r}")
    board: dict[str, str] = {}
    faults: dict[str, int] = {}
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key in FAULTS:
            try:
                faults[key] = int(value)
            except ValueError:
                raise SerialException(f"apxemu: {key}={value!r} is not an integer") from None
        else:
            board[key] = value
    return board, faults


class Serial(SerialBase):
    """pyserial port whose other end is a :class:`~astropix_hil.boards.nexys.board.VirtualBoard`."""

    def open(self) -> None:
        from ..boards.nexys.board import VirtualBoard

        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        if self.is_open:
            raise SerialException("Port is already open.")
        options, self._faults = parse_url(self.portstr)
        truth: TruthTarget = options.pop("keep_truth", "0") not in ("", "0")
        if "truth" in options:
            truth = options.pop("truth")
            try:
                check_output(truth)
            except OutputError as exc:
                raise SerialException(f"apxemu: truth={truth}: {exc}") from None
        try:
            self.board = VirtualBoard.from_options(truth=truth, **options)
        except (TypeError, ValueError, OSError) as exc:
            raise SerialException(f"apxemu: bad board option: {exc}") from None
        self._rx = bytearray()
        self._requests = 0
        self.is_open = True

    def _reconfigure_port(self) -> None:
        """Nothing to configure: baud rate and framing do not apply."""

    def close(self) -> None:
        if self.is_open:
            self.board.close_truth()
        self.is_open = False

    def _check(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()
        after = self._faults.get("disconnect_after")
        if after is not None and self._requests >= after:
            raise SerialException("apxemu: device disconnected (disconnect_after)")

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
