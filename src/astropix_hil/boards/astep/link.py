"""The A-STEP register-file protocol over a byte stream: :class:`AstepLink`.

The protocol has no reply framing (spec §1.4): a read of L bytes gets L raw bytes, a write
nothing. So a lost or extra byte would shift every later reply. The link guards against it:

* before each request, bytes already waiting are stray: drained and counted as a resync;
* a reply is read with a deadline; a short reply (a lost byte, or a board that stopped
  answering) is a timeout: the line is drained and counted, the request's data counted lost;
* after a reply, any byte still arriving means the reply may be misaligned: it is discarded;
* read-back checks: the read size (0xA4) must fit the 16384-byte FIFO (its high bytes are
  zero), and a packet-mode read of that size must be whole layer frames;
* after a timeout or stray bytes, no reply is trusted until an alignment probe (the firmware
  id read twice in one request) comes back as two equal copies with nothing after them;
* ``retries`` consecutive failures end in :class:`~astropix_hil.errors.LinkTimeoutError` or
  :class:`~astropix_hil.errors.LinkError` naming the problem.

The readout poll is the team's loop (read 0xA4, then read that many bytes from 0xA3), with the
next size read sent in the same write as each data read: one round trip per readout.
"""

from __future__ import annotations

import logging

import serial

from ...astep_fmt import walk
from ...errors import LinkError, LinkTimeoutError
from ..link import BoardLink, LinkStats, Port, open_port
from .protocol import read_request, register_read, register_write, write_requests
from .registers import READ_SIZE, READOUT, READOUT_FIFO_BYTES, Register, reg

log = logging.getLogger(__name__)

FIRMWARE_ID = reg("HK_FIRMWARE_ID").address

#: The A-STEP UART rate (the firmware's divisor gives about 930 kBd; spec §1.1, §7 #2).
ASTEP_BAUDRATE = 921_600
#: The team's software opens the port with a 3 s timeout; a reply later than that is taken
#: as lost (a shorter deadline risks a late reply being taken for the next one's).
DEFAULT_REPLY_TIMEOUT = 3.0


class AstepLink(BoardLink):
    """A-STEP requests over ``port`` (see the module doc)."""

    def __init__(self, port: Port, *, reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
                 retries: int = 3, name: str = "", fifo_bytes: int = READOUT_FIFO_BYTES,
                 check_frames: bool = True) -> None:
        self.port = port
        self.reply_timeout = reply_timeout
        self.retries = retries
        self.fifo_bytes = fifo_bytes
        self.check_frames = check_frames
        self.name = name or str(getattr(port, "port", None) or type(port).__name__)
        self.stats = LinkStats()
        #: Read-back checks that failed (implausible size, reply not whole frames).
        self.suspect_replies = 0
        self._size: int | None = None
        self._failures = 0
        #: Set after a timeout or stray bytes: replies are trusted again only after a probe.
        self._suspect = False
        #: Alignment probes that confirmed the replies line up again.
        self.realignments = 0
        #: Bytes sent (best effort) when the link is closed, e.g. layers' readout off.
        self.on_close = b""
        if getattr(port, "timeout", None) is None:
            port.timeout = min(0.1, reply_timeout)

    # -- I/O shell ---------------------------------------------------------------------------

    def _resync(self, before: int = 0, quiet: float | None = None) -> None:
        super()._resync(before, quiet)
        self._size = None  # the read size that came with the last reply is not trusted

    def _transact(self, request: bytes, length: int, what: str, probe: bool = False) -> bytes:
        if self._suspect and not probe:
            self._realign()
        reply = self._request(request, length, what)
        if length == 0:
            return b""  # a write: nothing comes back to check
        if len(reply) < length:
            error = self._timeout(what, length, len(reply))
            self._suspect = True
            # A late reply must not be taken for the next one: wait for a longer silence.
            self._resync(len(reply), quiet=min(0.5, self.reply_timeout))
            raise error
        if self._io(what, lambda: self.port.in_waiting):
            self._suspect = True
            self._resync()
            raise _Misaligned(f"{self.name}: {what}: bytes followed the reply")
        return reply

    def _realign(self) -> None:
        """Before trusting a reply after a timeout or stray bytes: a late reply could still be
        on its way and shift every later one. Read the (constant) firmware id twice in one
        request until both copies agree and nothing follows them."""
        probe = register_read(FIRMWARE_ID, 4) * 2
        for _ in range(self.retries + 1):
            try:
                reply = self._transact(probe, 8, "alignment probe", probe=True)
            except (LinkTimeoutError, _Misaligned):
                continue
            if reply[:4] == reply[4:]:
                self._suspect = False
                self.realignments += 1
                return
            self._resync(quiet=min(0.5, self.reply_timeout))
        raise LinkTimeoutError(f"{self.name}: the board stopped answering or its replies do "
                               f"not line up ({self.retries + 1} alignment probes failed)")

    def _retrying(self, request: bytes, length: int, what: str) -> bytes:
        """A request whose reply can be asked again (registers, not FIFOs)."""
        for attempt in range(self.retries + 1):
            try:
                return self._transact(request, length, what)
            except _Misaligned:
                if attempt == self.retries:
                    raise LinkError(f"{self.name}: {what}: replies keep arriving with stray "
                                    f"bytes; the line is not usable") from None
            except LinkTimeoutError:
                if attempt == self.retries:
                    raise LinkTimeoutError(
                        f"{self.name}: the board stopped answering ({what}: no complete "
                        f"reply within {self.reply_timeout} s, {self.retries + 1} tries)"
                    ) from None
        raise AssertionError("unreachable")

    # -- registers ---------------------------------------------------------------------------

    def read_register(self, address: int, length: int = 1, increment: bool | None = None
                      ) -> bytes:
        inc = length > 1 if increment is None else increment
        return self._retrying(read_request(address, length, inc), length,
                              f"read of {length} bytes from 0x{address:02x}")

    def write_register(self, address: int, value: int) -> None:
        self.write_registers(address, bytes([value]))

    def write_registers(self, address: int, data: bytes, increment: bool = False) -> None:
        """Write ``data`` to one address (a FIFO or a bit stream), or incrementing."""
        self._transact(write_requests(address, data, increment), 0,
                       f"write of {len(data)} bytes to 0x{address:02x}")

    def read_value(self, register: Register) -> int:
        """A register's value (LE, read with increment if wider than a byte)."""
        reply = self._retrying(register_read(register.address, register.width),
                               register.width, f"read of {register.name}")
        return int.from_bytes(reply, "little")

    def write_value(self, register: Register, value: int, verify: bool = False) -> None:
        """Write a register; with ``verify``, read it back (the only acknowledgement there is)."""
        self._transact(register_write(register.address, value, register.width), 0,
                       f"write of {register.name}")
        if verify:
            got = self.read_value(register)
            if got != value:
                raise LinkError(f"{self.name}: {register.name} reads back 0x{got:x} after "
                                f"writing 0x{value:x}")

    # -- readout -----------------------------------------------------------------------------

    def read_size(self) -> int:
        """The readout FIFO's readable byte count (0xA4), plausibility-checked."""
        for attempt in range(self.retries + 1):
            size = int.from_bytes(self.read_register(READ_SIZE, 4), "little")
            if size <= self.fifo_bytes:
                return size
            self.suspect_replies += 1
            self._suspect = True
            self._resync()
            if attempt == self.retries:
                raise LinkError(f"{self.name}: read size {size} exceeds the "
                                f"{self.fifo_bytes}-byte FIFO {self.retries + 1} times: the "
                                f"replies are misaligned")
        raise AssertionError("unreachable")

    def poll_readout(self, limit: int | None = None) -> bytes | None:
        """One readout (the bytes of 0xA3, as many as 0xA4 said) or None when the FIFO is empty.

        A broken reply is never returned: it is counted in ``readouts_lost`` (its bytes left
        the board) and the next poll starts after a resync; ``retries`` failures in a row end
        in an error."""
        size = self._size if self._size is not None else self.read_size()
        self._size = None
        if size == 0:
            self.stats.polls_empty += 1
            return None
        self.stats.polls_with_data += 1
        request = read_request(READOUT, size) + register_read(READ_SIZE, 4)
        what = f"read of {size} bytes from the readout FIFO and of the read size"
        try:
            reply = self._transact(request, size + 4, what)
        except (LinkTimeoutError, _Misaligned) as exc:
            self.stats.readouts_lost += 1
            self._failures += 1
            log.warning("%s: readout lost: %s", self.name, exc)
            if self._failures > self.retries:
                raise LinkTimeoutError(f"{self.name}: {self._failures} readouts in a row "
                                       f"lost ({exc})") from None
            return None
        data, next_size = reply[:size], int.from_bytes(reply[size:], "little")
        if next_size > self.fifo_bytes or (self.check_frames and not _whole_frames(data)):
            self.suspect_replies += 1
            self.stats.readouts_lost += 1
            self._failures += 1
            self._suspect = True
            self._resync()
            log.warning("%s: readout discarded: the reply fails the read-back checks",
                        self.name)
            if self._failures > self.retries:
                raise LinkError(f"{self.name}: {self._failures} replies in a row failed the "
                                f"read-back checks: the line is not usable")
            return None
        self._failures = 0
        self._size = next_size
        return data

    def close(self) -> None:
        try:
            if self.on_close:
                self.port.write(self.on_close)
        except (serial.SerialException, OSError, TypeError):
            pass
        try:
            self.port.close()
        except (serial.SerialException, OSError):
            pass


class _Misaligned(LinkError):
    """Bytes followed a reply: it may be shifted."""


def _whole_frames(data: bytes) -> bool:
    found = walk(data)
    return found.consumed == len(data) and found.skipped == 0


def open_link(url: str, *, baudrate: int = ASTEP_BAUDRATE,
              reply_timeout: float = DEFAULT_REPLY_TIMEOUT) -> AstepLink:
    """Open ``url`` (see :func:`~astropix_hil.boards.link.open_port`) at 921600 Bd, 8N1, no
    flow control (what ``serial.Serial(port, 921600, timeout=...)`` opens) as an A-STEP link."""
    port = open_port(url, baudrate=baudrate, timeout=min(0.1, reply_timeout))
    return AstepLink(port, reply_timeout=reply_timeout, name=url)


__all__ = ["ASTEP_BAUDRATE", "AstepLink", "open_link"]
