"""The Nexys board's register protocol, as pure functions of bytes (no port, no board).

A request is 4 bytes ``[op, register, length_hi, length_lo]`` (op ``0x00`` read, ``0x01``
write; length big-endian), followed for a write by ``length`` data bytes. A read is answered
with exactly ``length`` bytes; a write is not answered. The board cannot answer with an error.

The client side (:func:`read_request`, :func:`write_request`) is what the DAQ link sends; the
server side (:class:`RequestParser`) is what the virtual board runs on the bytes it receives.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag
from typing import NamedTuple

OP_READ = 0x00
OP_WRITE = 0x01
REQUEST = struct.Struct(">BBH")
MAX_LENGTH = 0xFFFF
#: The DAQ loop reads this many bytes from the SPI read FIFO per readout.
READOUT_SIZE = 2048


class Register(IntEnum):
    """Board registers the readout uses."""

    SPI_CONFIG = 0x15
    SPI_CLOCK_DIVIDER = 0x16
    SPI_WRITE_FIFO = 0x17
    SPI_READ_FIFO = 0x18


class SpiConfig(IntFlag):
    """Bits of :attr:`Register.SPI_CONFIG` (active high)."""

    WRITE_FIFO_RESET = 1 << 0
    WRITE_FIFO_EMPTY = 1 << 1  # read-only
    WRITE_FIFO_FULL = 1 << 2  # read-only
    READ_FIFO_RESET = 1 << 3
    READ_FIFO_EMPTY = 1 << 4  # read-only
    READ_FIFO_FULL = 1 << 5  # read-only
    READBACK_ENABLE = 1 << 6
    SPI_MODULE_RESET = 1 << 7


#: Bits of SPI_CONFIG that reflect the board's state and ignore writes.
SPI_CONFIG_READ_ONLY = (SpiConfig.WRITE_FIFO_EMPTY | SpiConfig.WRITE_FIFO_FULL
                        | SpiConfig.READ_FIFO_EMPTY | SpiConfig.READ_FIFO_FULL)


def _check(register: int, length: int) -> None:
    if not 0 <= register <= 0xFF:
        raise ValueError(f"register 0x{register:x} is not a byte")
    if not 0 <= length <= MAX_LENGTH:
        raise ValueError(f"length {length} does not fit the 16-bit length field")


def read_request(register: int, length: int) -> bytes:
    """The request reading ``length`` bytes from ``register``."""
    _check(register, length)
    return REQUEST.pack(OP_READ, register, length)


def write_request(register: int, data: bytes) -> bytes:
    """The request writing ``data`` to ``register``."""
    _check(register, len(data))
    return REQUEST.pack(OP_WRITE, register, len(data)) + bytes(data)


class Request(NamedTuple):
    """A request the board received: a read of ``length`` bytes, or a write of ``data``."""

    op: int
    register: int
    length: int
    data: bytes = b""

    @property
    def is_read(self) -> bool:
        return self.op == OP_READ


class RequestParser:
    """Incremental server-side parser: :meth:`feed` bytes, get the complete requests.

    A request with an op other than read or write is *malformed*. The real board cannot answer
    it with an error; its firmware drops the 4 bytes and waits for the next request, and so
    does this parser, counting it in :attr:`malformed`.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.malformed = 0
        self.requests = 0

    def feed(self, data: bytes) -> list[Request]:
        """Add received bytes; return the requests they complete, in order."""
        self._buf += data
        out: list[Request] = []
        while len(self._buf) >= REQUEST.size:
            op, register, length = REQUEST.unpack_from(self._buf)
            if op == OP_WRITE:
                end = REQUEST.size + length
                if len(self._buf) < end:
                    break
                out.append(Request(op, register, length, bytes(self._buf[REQUEST.size:end])))
                del self._buf[:end]
            elif op == OP_READ:
                out.append(Request(op, register, length))
                del self._buf[:REQUEST.size]
            else:
                self.malformed += 1
                del self._buf[:REQUEST.size]
        self.requests += len(out)
        return out

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a complete request."""
        return len(self._buf)
