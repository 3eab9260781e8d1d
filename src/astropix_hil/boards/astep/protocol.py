"""The A-STEP register-file request codec (spec §1.3): pure functions, no I/O.

A request is a header byte, the address (1 byte, or 2 bytes LSB first when header bit 3 is
set), the length L as 2 bytes **LSB first**, then L data bytes for a write. Bit 0 = write (wins
over bit 1), bit 1 = read, bit 2 = increment the address after every byte, bits 7:4 = virtual
channel. Writes get no reply; a read of L bytes gets exactly L bytes.

Spec §7 #1: the firmware docs call header bit 3 "RSVD"; the RTL (and this codec) take it as the
16-bit extended address.
"""

from __future__ import annotations

from dataclasses import dataclass

WRITE, READ, INCREMENT, EXTENDED = 0x01, 0x02, 0x04, 0x08
#: The four header values the team's software sends.
WRITE_FIXED, WRITE_INCREMENT, READ_FIXED, READ_INCREMENT = 0x01, 0x05, 0x02, 0x06
#: Longest length one request can carry.
MAX_LENGTH = 0xFFFF


@dataclass(frozen=True)
class Request:
    """One decoded request. ``data`` is empty for reads; ``length`` is L."""

    write: bool
    address: int
    length: int
    increment: bool = False
    extended: bool = False
    vchannel: int = 0
    data: bytes = b""

    @property
    def header(self) -> int:
        return ((WRITE if self.write else READ) | (INCREMENT if self.increment else 0)
                | (EXTENDED if self.extended else 0) | (self.vchannel << 4))

    def addresses(self) -> list[int]:
        """The address of every byte transferred, in order."""
        if not self.increment:
            return [self.address] * self.length
        mask = 0xFFFF if self.extended else 0xFF
        return [(self.address + i) & mask for i in range(self.length)]


def encode(request: Request) -> bytes:
    """The bytes of ``request`` on the wire."""
    if not 0 < request.length <= MAX_LENGTH:
        # L = 0 makes the engine process 65536 bytes (spec §1.3): never send it.
        raise ValueError(f"length {request.length} is not 1..{MAX_LENGTH}")
    if request.write and len(request.data) != request.length:
        raise ValueError(f"write of length {request.length} with {len(request.data)} data bytes")
    if not 0 <= request.vchannel < 16:
        raise ValueError(f"vchannel {request.vchannel} is not 0..15")
    width = 2 if request.extended else 1
    if not 0 <= request.address < 1 << (8 * width):
        raise ValueError(f"address 0x{request.address:x} does not fit in {width} byte(s)")
    return (bytes([request.header]) + request.address.to_bytes(width, "little")
            + request.length.to_bytes(2, "little") + (request.data if request.write else b""))


def read_request(address: int, length: int, increment: bool = False) -> bytes:
    """A read of ``length`` bytes (``02``/``06``, or extended for addresses above 0xFF)."""
    return encode(Request(False, address, length, increment, address > 0xFF))


def write_request(address: int, data: bytes, increment: bool = False) -> bytes:
    """A write of ``data`` (``01``/``05``)."""
    return encode(Request(True, address, len(data), increment, address > 0xFF, data=bytes(data)))


def write_requests(address: int, data: bytes, increment: bool = False) -> bytes:
    """``data`` as consecutive writes of at most 65535 bytes (as the team's ``flush`` splits)."""
    return b"".join(write_request(address, data[i:i + MAX_LENGTH], increment)
                    for i in range(0, len(data), MAX_LENGTH))


def register_write(address: int, value: int, width: int) -> bytes:
    """Write ``value`` to a ``width``-byte register, LE, incrementing if wider than a byte."""
    return write_request(address, value.to_bytes(width, "little"), width > 1)


def register_read(address: int, width: int) -> bytes:
    """Read a ``width``-byte register (the reply is LE)."""
    return read_request(address, width, width > 1)


class RequestParser:
    """Server side: turns a byte stream split anywhere into :class:`Request` events.

    Long writes are not buffered whole: :meth:`feed` yields ``(request, chunk, offset)`` pieces
    as data arrives (``offset``: the request's data bytes before this chunk), so a 34 kB write
    costs no more memory than its chunks. A read yields ``(request, b"", 0)`` once its header
    is complete. Bytes with neither bit 0 nor bit 1 set are
    skipped while waiting for a header, as the engine does (0x00 is a filler); they are counted
    in :attr:`skipped`.
    """

    def __init__(self) -> None:
        self._head = bytearray()
        self._need = 0
        self._request: Request | None = None
        self._left = 0
        self._done = 0
        self.skipped = 0

    @property
    def idle(self) -> bool:
        """True between requests (no partial header or write data pending)."""
        return not self._head and self._request is None

    def feed(self, data: bytes):
        """Yield ``(request, data_chunk, offset)`` events for ``data``; see the class doc."""
        view = memoryview(data)
        i, n = 0, len(view)
        while i < n:
            if self._request is not None:  # inside a write's data
                take = min(self._left, n - i)
                chunk = bytes(view[i:i + take])
                i += take
                self._left -= take
                request, offset = self._request, self._done
                self._done += take
                if self._left == 0:
                    self._request = None
                yield request, chunk, offset
                continue
            if not self._head:
                byte = view[i]
                i += 1
                if not byte & (WRITE | READ):
                    self.skipped += 1
                    continue
                self._head.append(byte)
                self._need = 1 + (2 if byte & EXTENDED else 1) + 2
                continue
            take = min(self._need - len(self._head), n - i)
            self._head += view[i:i + take]
            i += take
            if len(self._head) < self._need:
                continue
            head = bytes(self._head)
            self._head.clear()
            ext = bool(head[0] & EXTENDED)
            address = int.from_bytes(head[1:3] if ext else head[1:2], "little")
            length = int.from_bytes(head[-2:], "little") or 0x10000  # L = 0 underflows
            write = bool(head[0] & WRITE)
            request = Request(write, address, length, bool(head[0] & INCREMENT), ext,
                              head[0] >> 4)
            if write:
                self._request, self._left, self._done = request, length, 0
            else:
                yield request, b"", 0


__all__ = [
    "MAX_LENGTH", "READ_FIXED", "READ_INCREMENT", "WRITE_FIXED", "WRITE_INCREMENT", "Request",
    "RequestParser", "encode", "read_request", "register_read", "register_write",
    "write_request", "write_requests",
]
