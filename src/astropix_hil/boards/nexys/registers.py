"""The Nexys firmware's register file, as the board side sees it; boards differ by their read
FIFO and by what drives the chip.

:class:`NexysRegisters` answers the register protocol (:mod:`.protocol`) as the firmware
(``astropix-fw`` ``RegisterFile.v``, spec §1) does: every decoded address has its reset value,
read-back and write effect (:data:`REGISTER_TABLE`); a read of any other address returns the
last byte read (stale ``read_data``); writes to them are ignored. The SPI block powers up held
in reset (``0x15`` = 0x80): no data reach the read FIFO until the DAQ clears bit 7. Reads of the
read FIFO ``0x18`` come in groups of 8 bytes (a 3-bit counter that only those reads move): a
group whose first byte found the FIFO empty is all ``0xff``. ``0x46`` is the chip's interrupt
pin (0 while the chip has hits for the FIFO), ``0x50`` reads 0xAB.

A subclass supplies the read FIFO (the emulated chip's, :class:`~.board.VirtualBoard`, or a
recorded run's, :class:`~.replay.ReplayBoard`) and may listen to the chip-facing registers
(``0x00`` shift-register pins, ``0x02``-``0x07`` pattern generator, ``0x0C`` voltage card)
through :meth:`NexysRegisters._chip_write`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

from .protocol import Register, RequestParser, SpiConfig

log = logging.getLogger(__name__)

#: Config bits of 0x15 that hold the read FIFO in reset (level); bit 7 (SPI master reset)
#: stops the transfers from the chip but keeps what the FIFO holds.
RESETS_READ_FIFO = SpiConfig.READ_FIFO_RESET
#: Bits of 0x15 a write keeps visible (the others read live FIFO flags).
SPI_CONFIG_STORED = (SpiConfig.WRITE_FIFO_RESET | SpiConfig.READ_FIFO_RESET
                     | SpiConfig.READBACK_ENABLE | SpiConfig.SPI_MODULE_RESET)
#: SPI write FIFO: 1024 bytes, "prog full" from 1019.
WRITE_FIFO_SIZE = 1024
WRITE_FIFO_PROG_FULL = 1019
#: 0x18 and 0x3C deliver their FIFO in groups of this many bytes.
FIFO_GROUP = 8
PADDING = 0xFF
TEST_VALUE = 0xAB
#: Undecoded addresses the team's software accesses by design: its ``_test_io`` writes 0x55 to
#: 0x09 and reads it back (spec §7 step 1). Counted like any undecoded access, but not worth a
#: warning at every start-up.
EXPECTED_UNDECODED = frozenset({0x09})
#: 0x12 reads its unconnected inputs (bits 6, 4, 1) as 0.
RESETS_INPUT_BITS = 0x52
#: 0x3D: stored bits (b7, b6, b3, b0) and, since the SR-readback FIFO is always empty here,
#: its live empty flags (b4, b1).
SR_READBACK_STORED = 0xC9
SR_READBACK_EMPTY = 0x12


class RegisterSpec(NamedTuple):
    """One decoded address: name, reset value (None: not readable as stored), kind."""

    name: str
    reset: int | None
    kind: str  # "stored", "chip" (stored, drives the chip), "status", "fifo", "const"


#: The firmware's decoded addresses (spec §1.1).
REGISTER_TABLE: dict[int, RegisterSpec] = {
    0x00: RegisterSpec("chip config pins", 0x00, "chip"),
    0x02: RegisterSpec("pattern generator reset", 0x01, "chip"),
    0x03: RegisterSpec("pattern generator suspend", 0x00, "chip"),
    0x04: RegisterSpec("pattern generator write strobe", 0x00, "chip"),
    0x05: RegisterSpec("pattern generator output", 0x00, "chip"),
    0x06: RegisterSpec("pattern generator address", 0x00, "chip"),
    0x07: RegisterSpec("pattern generator data", 0x00, "chip"),
    0x0C: RegisterSpec("voltage board bus", 0x00, "chip"),
    0x10: RegisterSpec("chip config loads (no effect)", 0x00, "stored"),
    0x11: RegisterSpec("chip config write RAM (no effect)", 0x00, "stored"),
    0x12: RegisterSpec("resets (no effect)", 0x24, "stored"),
    0x13: RegisterSpec("config mode (no effect)", 0x00, "stored"),
    0x15: RegisterSpec("SPI config / status", 0x80, "status"),
    0x16: RegisterSpec("SPI clock divider", 0x00, "stored"),
    0x17: RegisterSpec("SPI write FIFO", None, "fifo"),
    0x18: RegisterSpec("SPI read FIFO", None, "fifo"),
    0x1C: RegisterSpec("pattern generator skip signals (no effect)", 0x00, "stored"),
    0x3C: RegisterSpec("SR readback FIFO", None, "fifo"),
    0x3D: RegisterSpec("SR readback config", 0x00, "status"),
    0x46: RegisterSpec("interrupt", None, "const"),
    0x50: RegisterSpec("test register", TEST_VALUE, "const"),
}
STORED_RESET = {a: s.reset for a, s in REGISTER_TABLE.items()
                if s.kind in ("stored", "chip", "status") and s.reset is not None}


@dataclass
class RegisterStats:
    """Counters of the register file (all start at 0)."""

    #: Complete requests handled (reads and writes).
    requests: int = 0
    #: Requests with an op other than read or write, dropped as the firmware does.
    malformed: int = 0
    reads: int = 0
    writes: int = 0
    #: Reads and writes of addresses the firmware does not decode (reads return the last
    #: byte read, writes are ignored).
    unknown_register_accesses: int = 0
    #: Writes to read-only registers (the read FIFOs, 0x46, 0x50), ignored.
    ignored_writes: int = 0
    #: Rising edges of the reset bits of SPI_CONFIG.
    fifo_resets: int = 0
    spi_resets: int = 0
    write_fifo_resets: int = 0
    #: Bytes written to the SPI write FIFO (sent to the chip), and bytes the full FIFO dropped.
    spi_bytes_written: int = 0
    spi_bytes_dropped: int = 0
    #: Padding bytes of 8-byte groups that began on an empty read FIFO in an earlier read.
    padding_bytes_groups: int = 0
    #: Bytes written to the chip-facing registers 0x00, 0x02-0x07, 0x0C.
    chip_bytes_written: int = 0
    #: Requests per register and direction, keyed ``"0x15 read"``, ``"0x17 write"``, ...
    requests_per_register: dict[str, int] = field(default_factory=dict)
    #: Registers the board does not have that the host touched, as ``"0x0c"``, sorted.
    unknown_registers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        """The counters as a dict."""
        return asdict(self)


class NexysRegisters(ABC):
    """The firmware's register file; subclasses supply the read FIFO (see the module doc)."""

    stats: RegisterStats

    def __init__(self) -> None:
        self._parser = RequestParser()
        self._regs: dict[int, int] = dict(STORED_RESET)
        self._last_read = 0x00
        self._group_count = 0  # the 3-bit rdcount of 0x18
        self._group_live = False  # FIFO non-empty when the current group began
        self._write_fifo = 0  # bytes waiting in the SPI write FIFO (master held in reset)
        self._unknown_seen: set[int] = set()

    # -- what a board must supply -------------------------------------------------------------

    @abstractmethod
    def _read_fifo(self, length: int) -> bytes:
        """A read of ``length`` bytes of the read FIFO: data, then ``0xff`` padding."""

    @abstractmethod
    def _fifo_empty(self) -> bool:
        """Bit 4 of SPI_CONFIG."""

    @abstractmethod
    def _fifo_full(self) -> bool:
        """Bit 5 of SPI_CONFIG."""

    @abstractmethod
    def _reset_read_fifo(self) -> None:
        """A read-FIFO reset: drop what the read FIFO holds."""

    def _before_request(self) -> None:  # noqa: B027 - optional hook, does nothing by default
        """Called before each request (e.g. to let the chip fill the FIFO up to now)."""

    def _chip_write(self, register: int, data: bytes) -> None:  # noqa: B027 - optional hook
        """Bytes written to a chip-facing register (0x00, 0x02-0x07, 0x0C), in order."""

    def _interrupt_asserted(self) -> bool:
        """The chip's interrupt pin is low: it holds hits for the read FIFO."""
        return not self._fifo_empty()

    # -- state --------------------------------------------------------------------------

    @property
    def _config(self) -> int:
        """The stored byte of SPI_CONFIG (0x15)."""
        return self._regs[Register.SPI_CONFIG]

    @property
    def spi_enabled(self) -> bool:
        """True once the SPI master is out of reset (0x15 bit 7 clear)."""
        return not self._config & SpiConfig.SPI_MODULE_RESET

    @property
    def transfers_blocked(self) -> bool:
        """True while nothing moves from the chip into the read FIFO (master or read FIFO
        held in reset)."""
        return bool(self._config & (SpiConfig.SPI_MODULE_RESET | SpiConfig.READ_FIFO_RESET))

    def release_spi_master(self) -> None:
        """Clear 0x15 bit 7 as the DAQ's SPI enable does, without a request (for tools and
        tests that drive the board's FIFO directly)."""
        self._write_config(self._config & ~SpiConfig.SPI_MODULE_RESET)

    def register_value(self, address: int) -> int | None:
        """The stored byte of a decoded register (None for FIFOs and unknown addresses)."""
        return self._regs.get(address)

    # -- the protocol -------------------------------------------------------------------------

    def process(self, data: bytes) -> bytes:
        """Handle the bytes the host sent; return the bytes the board sends back."""
        replies = []
        for request in self._parser.feed(data):
            self.stats.requests += 1
            key = f"0x{request.register:02x} {'read' if request.is_read else 'write'}"
            per_register = self.stats.requests_per_register
            per_register[key] = per_register.get(key, 0) + 1
            self._before_request()
            if request.is_read:
                self.stats.reads += 1
                reply = self._read(request.register, request.length)
                if reply:
                    self._last_read = reply[-1]
                replies.append(reply)
            else:
                self.stats.writes += 1
                self._write(request.register, request.data)
        self.stats.malformed = self._parser.malformed
        return b"".join(replies)

    def _read(self, register: int, length: int) -> bytes:
        if length == 0:
            return b""
        if register == Register.SPI_READ_FIFO:
            return self._read_spi_fifo(length)
        if register == Register.SPI_CONFIG:
            return bytes([self._status()]) * length
        spec = REGISTER_TABLE.get(register)
        if spec is None:
            self._unknown("read", register, length)
            return bytes([self._last_read]) * length
        if register == 0x12:
            value = self._regs[register] & ~RESETS_INPUT_BITS
        elif register == 0x3D:
            value = self._regs[register] & SR_READBACK_STORED | SR_READBACK_EMPTY
        elif register == 0x46:
            value = 0x00 if self._interrupt_asserted() else 0x01
        elif register == 0x50:
            value = TEST_VALUE
        elif register == 0x3C:
            value = PADDING  # the SR-readback FIFO is not modelled: always empty
        elif register == Register.SPI_WRITE_FIFO:
            value = self._last_read  # write-only port: stale read_data
        else:
            value = self._regs[register]
        return bytes([value]) * length

    def _read_spi_fifo(self, length: int) -> bytes:
        """Groups of 8: a group takes FIFO bytes iff the FIFO held data at its first byte.

        The board's FIFO content does not change within a request, and its frames are whole
        8-byte words, so only a group left unfinished by an earlier read (a read length that
        is not a multiple of 8) needs care: if it began on an empty FIFO, its remaining bytes
        are padding. One request stays one read of the board's FIFO (one readout)."""
        head = 0
        if self._group_count and not self._group_live:
            head = min(FIFO_GROUP - self._group_count, length)
        body = self._read_fifo(length - head) if length > head else b""
        if head:
            self.stats.padding_bytes_groups += head
        end = (self._group_count + length) % FIFO_GROUP
        data = len(body.rstrip(b"\xff"))
        if end and length - end >= head:
            self._group_live = data > length - end - head
        elif end:
            pass  # the read ended inside the group it began in: same group, same flag
        self._group_count = end
        return bytes([PADDING]) * head + body

    def _write(self, register: int, data: bytes) -> None:
        if not data:
            return
        spec = REGISTER_TABLE.get(register)
        if register == Register.SPI_CONFIG:
            for value in data:
                self._write_config(value)
        elif register == Register.SPI_WRITE_FIFO:
            self._push_write_fifo(len(data))
        elif spec is None:
            self._unknown("write", register, len(data))
        elif spec.kind in ("fifo", "const"):
            self.stats.ignored_writes += 1
            log.debug("write of %d bytes to read-only register 0x%02x ignored", len(data),
                      register)
        else:
            self._regs[register] = data[-1]
            if spec.kind == "chip":
                self.stats.chip_bytes_written += len(data)
                self._chip_write(register, data)

    def _push_write_fifo(self, count: int) -> None:
        if self._config & SpiConfig.WRITE_FIFO_RESET:
            self.stats.spi_bytes_dropped += count
            return
        room = WRITE_FIFO_SIZE - self._write_fifo
        taken = min(room, count)
        self.stats.spi_bytes_dropped += count - taken
        self._write_fifo += taken
        self.stats.spi_bytes_written += taken
        self._drain_write_fifo()

    def _drain_write_fifo(self) -> None:
        # The master sends queued bytes as soon as it runs: the link is far slower than SPI.
        if self.spi_enabled:
            self._write_fifo = 0

    def _unknown(self, what: str, register: int, length: int) -> None:
        self.stats.unknown_register_accesses += 1
        expected = register in self._unknown_seen or register in EXPECTED_UNDECODED
        level = logging.DEBUG if expected else logging.WARNING
        if register not in self._unknown_seen:
            self._unknown_seen.add(register)
            self.stats.unknown_registers = sorted(f"0x{r:02x}" for r in self._unknown_seen)
        log.log(level, "%s of %d bytes at undecoded register 0x%02x (%s)", what, length,
                register, "reads the last byte read" if what == "read" else "ignored")

    def _status(self) -> int:
        value = self._config & SPI_CONFIG_STORED
        if self._write_fifo == 0:
            value |= SpiConfig.WRITE_FIFO_EMPTY
        if self._write_fifo >= WRITE_FIFO_PROG_FULL:
            value |= SpiConfig.WRITE_FIFO_FULL
        if self._fifo_empty():
            value |= SpiConfig.READ_FIFO_EMPTY
        elif self._fifo_full():
            value |= SpiConfig.READ_FIFO_FULL
        return int(value)

    def _write_config(self, value: int) -> None:
        rising = value & ~self._config
        if rising & SpiConfig.WRITE_FIFO_RESET:
            self.stats.write_fifo_resets += 1
        if rising & SpiConfig.READ_FIFO_RESET:
            self.stats.fifo_resets += 1
        if rising & SpiConfig.SPI_MODULE_RESET:
            self.stats.spi_resets += 1
        self._regs[Register.SPI_CONFIG] = value
        if value & SpiConfig.WRITE_FIFO_RESET:
            self._write_fifo = 0
        if value & RESETS_READ_FIFO:
            self._reset_read_fifo()
        self._drain_write_fifo()
