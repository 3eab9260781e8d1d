"""The Nexys board's register file, as the board side sees it; boards differ by their read FIFO.

:class:`NexysRegisters` answers the register protocol (:mod:`.protocol`): the SPI
config/status register ``0x15`` (writable bits kept, read-only bits computed, a rising reset bit
clears the read FIFO), the clock divider ``0x16``, the write FIFO ``0x17`` (bytes to the chip,
counted), the read FIFO ``0x18``; unknown registers read as zeros, and accesses to them are
logged and counted. A subclass supplies the read FIFO: the emulated chip's
(:class:`~.board.VirtualBoard`) or a recorded run's
(:class:`~.replay.ReplayBoard`).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field

from .protocol import SPI_CONFIG_READ_ONLY, Register, RequestParser, SpiConfig

log = logging.getLogger(__name__)

#: Config bits whose rising edge clears the read FIFO.
RESETS_READ_FIFO = SpiConfig.READ_FIFO_RESET | SpiConfig.SPI_MODULE_RESET


@dataclass
class RegisterStats:
    """Counters of the register file (all start at 0)."""

    #: Complete requests handled (reads and writes).
    requests: int = 0
    #: Requests with an op other than read or write, dropped as the firmware does.
    malformed: int = 0
    reads: int = 0
    writes: int = 0
    #: Reads and writes of registers the board does not have (reads return zeros).
    unknown_register_accesses: int = 0
    #: Writes to read-only registers (the read FIFO), ignored.
    ignored_writes: int = 0
    #: Rising edges of the reset bits of SPI_CONFIG.
    fifo_resets: int = 0
    spi_resets: int = 0
    write_fifo_resets: int = 0
    #: Bytes written to the SPI write FIFO (sent to the chip).
    spi_bytes_written: int = 0
    #: Requests per register and direction, keyed ``"0x15 read"``, ``"0x17 write"``, ...
    requests_per_register: dict[str, int] = field(default_factory=dict)
    #: Registers the board does not have that the host touched, as ``"0x0c"``, sorted.
    unknown_registers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        """The counters as a dict."""
        return asdict(self)


class NexysRegisters(ABC):
    """The board side of the register protocol; subclasses supply the read FIFO."""

    stats: RegisterStats

    def __init__(self) -> None:
        self._parser = RequestParser()
        self._config = 0
        self._divider = 0
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
        """A read-FIFO or SPI-module reset: drop what the read FIFO holds."""

    def _before_request(self) -> None:  # noqa: B027 - optional hook, does nothing by default
        """Called before each request (e.g. to let the chip fill the FIFO up to now)."""

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
                replies.append(self._read(request.register, request.length))
            else:
                self.stats.writes += 1
                self._write(request.register, request.data)
        self.stats.malformed = self._parser.malformed
        return b"".join(replies)

    def _read(self, register: int, length: int) -> bytes:
        if register == Register.SPI_READ_FIFO:
            return self._read_fifo(length)
        if register == Register.SPI_CONFIG:
            return bytes([self._status()]) * length
        if register == Register.SPI_CLOCK_DIVIDER:
            return bytes([self._divider]) * length
        if register == Register.SPI_WRITE_FIFO:
            return bytes(length)  # write-only: nothing to read back
        self._unknown("read", register, length)
        return bytes(length)

    def _write(self, register: int, data: bytes) -> None:
        if register == Register.SPI_CONFIG:
            for value in data:
                self._write_config(value)
        elif register == Register.SPI_CLOCK_DIVIDER:
            if data:
                self._divider = data[-1]
        elif register == Register.SPI_WRITE_FIFO:
            self.stats.spi_bytes_written += len(data)
        elif register == Register.SPI_READ_FIFO:
            self.stats.ignored_writes += 1
            log.debug("write of %d bytes to the read-only read FIFO ignored", len(data))
        else:
            self._unknown("write", register, len(data))

    def _unknown(self, what: str, register: int, length: int) -> None:
        self.stats.unknown_register_accesses += 1
        level = logging.DEBUG if register in self._unknown_seen else logging.WARNING
        if register not in self._unknown_seen:
            self._unknown_seen.add(register)
            self.stats.unknown_registers = sorted(f"0x{r:02x}" for r in self._unknown_seen)
        log.log(level, "%s of %d bytes at unknown register 0x%02x (%s)", what, length, register,
                "reads as zeros" if what == "read" else "ignored")

    def _status(self) -> int:
        value = self._config | SpiConfig.WRITE_FIFO_EMPTY
        if self._fifo_empty():
            value |= SpiConfig.READ_FIFO_EMPTY
        elif self._fifo_full():
            value |= SpiConfig.READ_FIFO_FULL
        return int(value)

    def _write_config(self, value: int) -> None:
        value &= ~SPI_CONFIG_READ_ONLY & 0xFF
        rising = value & ~self._config
        if rising & SpiConfig.WRITE_FIFO_RESET:
            self.stats.write_fifo_resets += 1
        if rising & SpiConfig.READ_FIFO_RESET:
            self.stats.fifo_resets += 1
        if rising & SpiConfig.SPI_MODULE_RESET:
            self.stats.spi_resets += 1
        if rising & RESETS_READ_FIFO:
            self._reset_read_fifo()
        self._config = value
