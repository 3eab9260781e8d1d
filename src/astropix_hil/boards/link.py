"""The DAQ side of the board link: register access and the readout poll over a byte stream.

The byte stream is anything with pyserial's port interface (``write``, ``read`` honouring the
port's ``timeout``, ``in_waiting``, ``reset_input_buffer``, ``close``): a real FTDI USB-serial
port, a pseudo-terminal served by ``apx-hil board --pty``, the in-process emulator
(``apxemu://``), or the FT2232H synchronous FIFO backend (``ftdififo://``). Open one with
:func:`open_port`; the DAQ never knows which it got.

Each board profile speaks its protocol in a subclass of :class:`BoardLink`
(:class:`~astropix_hil.boards.nexys.link.NexysLink` for the Nexys register protocol); the DAQ
only uses the methods defined here.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import serial

from ..errors import LinkError, LinkTimeoutError

log = logging.getLogger(__name__)

#: Default time a reply may take to arrive, in seconds.
DEFAULT_REPLY_TIMEOUT = 1.0
#: Baud rate of the Nexys board's FTDI UART (ignored by pseudo-terminals and the emulator).
DEFAULT_BAUDRATE = 3_000_000


class Port(Protocol):
    """The part of pyserial's port interface the link uses."""

    timeout: float | None

    def write(self, data: bytes) -> int | None: ...
    def read(self, size: int = 1) -> bytes: ...
    @property
    def in_waiting(self) -> int: ...
    def reset_input_buffer(self) -> None: ...
    def close(self) -> None: ...


@dataclass
class LinkStats:
    """What the link saw, beyond the replies it returned."""

    requests: int = 0
    #: Replies that did not arrive complete in time.
    timeouts: int = 0
    #: Times the line was drained of stray bytes before or after a request.
    resyncs: int = 0
    #: Stray bytes drained.
    garbage_bytes: int = 0
    #: Readouts discarded because their reply was short or followed by stray bytes.
    readouts_lost: int = 0
    #: Polls that found data / found the read FIFO empty.
    polls_with_data: int = 0
    polls_empty: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class BoardLink(ABC):
    """A board protocol over a byte stream: the four operations the DAQ needs."""

    stats: LinkStats
    #: The port's name in messages.
    name: str

    def _io(self, what: str, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)`` on the port, its failures as link errors naming ``what``."""
        try:
            return call(*args)
        except serial.SerialTimeoutException as exc:
            raise LinkTimeoutError(f"{self.name}: {what}: write timed out ({exc})") from exc
        except (serial.SerialException, OSError, TypeError) as exc:
            # pyserial raises TypeError from a port closed under it by another thread.
            raise LinkError(f"{self.name}: {what}: port failed or disappeared ({exc})") from exc

    # The line discipline both profiles need (``port`` and ``reply_timeout`` are theirs).
    port: Port
    reply_timeout: float

    def _drain(self, quiet: float | None = None) -> int:
        """Discard bytes until the line stayed quiet for ``quiet`` seconds (default: a short
        time, at most the reply timeout); return how many."""
        drained = 0
        quiet = min(0.05, self.reply_timeout) if quiet is None else quiet
        deadline = time.monotonic() + quiet
        while True:
            waiting = self._io("drain", lambda: self.port.in_waiting)
            if waiting:
                drained += len(self._io("drain", self.port.read, waiting))
                deadline = time.monotonic() + quiet
            elif time.monotonic() >= deadline:
                return drained
            else:
                time.sleep(0.002)

    def _resync(self, before: int = 0, quiet: float | None = None) -> None:
        """Drain the line (``before`` bytes were already taken off it) and count a resync."""
        drained = before + self._drain(quiet)
        self.stats.resyncs += 1
        self.stats.garbage_bytes += drained
        log.warning("%s: resync, %d stray bytes drained", self.name, drained)

    def _request(self, request: bytes, length: int, what: str) -> bytes:
        """Send ``request``; its reply, up to ``length`` bytes within the reply timeout (fewer:
        it timed out, which each protocol handles its own way).

        Bytes already waiting are stray (they would be taken for the start of the reply):
        they are drained first and counted as a resync.
        """
        waiting = self._io(what, lambda: self.port.in_waiting)
        if waiting:
            self._resync(len(self._io(what, self.port.read, waiting)))
        self.stats.requests += 1
        self._io(what, self.port.write, request)
        return self._read_exact(length) if length else b""

    def _timeout(self, what: str, length: int, got: int) -> LinkTimeoutError:
        """The error of a reply that stopped short."""
        self.stats.timeouts += 1
        return LinkTimeoutError(f"{self.name}: {what}: expected {length} reply bytes, got "
                                f"{got} within {self.reply_timeout} s")

    def _read_exact(self, length: int) -> bytes:
        """Up to ``length`` bytes, reading until they are all in or the reply timeout passes."""
        deadline = time.monotonic() + self.reply_timeout
        data = bytearray()
        while len(data) < length:
            data += self._io("read", self.port.read, length - len(data))
            if len(data) < length and time.monotonic() >= deadline:
                break
        return bytes(data)

    @abstractmethod
    def read_register(self, address: int, length: int = 1) -> bytes:
        """Read ``length`` bytes from a register."""

    @abstractmethod
    def write_register(self, address: int, value: int) -> None:
        """Write one byte to a register."""

    @abstractmethod
    def write_registers(self, address: int, data: bytes) -> None:
        """Write several bytes to a register."""

    @abstractmethod
    def poll_readout(self, limit: int | None = None) -> bytes | None:
        """One readout buffer if the board has data, else None; never take more than
        ``limit`` readouts from the board (when the protocol reads ahead)."""

    def enable_readout(self) -> bool:
        """Make the board send readouts if it holds its readout in reset; True if it did."""
        return False

    def take_pending(self) -> list[bytes]:
        """Readouts already taken from the board but not yet returned (read ahead)."""
        return []

    @abstractmethod
    def close(self) -> None:
        """Close the underlying port."""



def open_port(url: str, *, baudrate: int = DEFAULT_BAUDRATE,
              timeout: float = 0.1) -> serial.SerialBase:
    """Open a byte stream to the board with ``serial.serial_for_url``.

    ``url`` is a device (``/dev/ttyUSB0``, ``COM3``), a pseudo-terminal path, or any pyserial
    URL including ours: ``apxemu://?seed=1&rate=1000`` (in-process virtual board) and
    ``ftdififo://ftdi:2232h/1`` (FT2232H synchronous FIFO, needs pyftdi). ``timeout`` is the
    port's read timeout, the granularity at which the link checks its reply deadline.
    """
    from .. import urlhandler  # noqa: F401 - registers our URL schemes with pyserial

    try:
        return serial.serial_for_url(url, baudrate=baudrate, timeout=timeout,
                                     write_timeout=max(1.0, timeout))
    except (serial.SerialException, OSError, ValueError) as exc:
        raise LinkError(f"cannot open board port {url!r}: {exc}") from exc

