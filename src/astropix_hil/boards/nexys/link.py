"""The Nexys register protocol over a byte stream: :class:`NexysLink`, the DAQ side of
:mod:`astropix_hil.boards.nexys.protocol`.

Link trouble never hangs and never yields a wrong readout silently: a reply that does not come
in time raises :class:`~astropix_hil.errors.LinkTimeoutError` (after retrying a status read),
stray bytes on the line are drained and counted as a resync, a reply followed by unexpected
bytes is discarded (its readout counted as lost), and a port that disappears raises
:class:`~astropix_hil.errors.LinkError`.
"""

from __future__ import annotations

import logging
from collections import deque

import serial

from ...errors import LinkError, LinkTimeoutError
from ..link import DEFAULT_BAUDRATE, DEFAULT_REPLY_TIMEOUT, BoardLink, LinkStats, Port, open_port
from .protocol import (
    READOUT_SIZE,
    SPI_CONFIG_READ_ONLY,
    Register,
    SpiConfig,
    read_request,
    write_request,
)

log = logging.getLogger(__name__)


class NexysLink(BoardLink):
    """The Nexys register protocol (``[op, reg, len_hi, len_lo]`` requests) over ``port``.

    ``reply_timeout`` bounds the wait for each reply; a status read that times out is retried
    up to ``retries`` times (each retry after draining the line) before the board is declared
    silent. Reads of the SPI read FIFO are never retried: the board already handed its data
    out, so a broken reply is counted in :attr:`LinkStats.readouts_lost` instead.
    """

    def __init__(self, port: Port, *, reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
                 retries: int = 2, readout_size: int = READOUT_SIZE, name: str = "",
                 burst: int = 4) -> None:
        self.port = port
        self.reply_timeout = reply_timeout
        self.retries = retries
        self.readout_size = readout_size
        self.burst = max(1, burst)
        # Status sampled by the board right after the last FIFO read (None: not known).
        self._status: SpiConfig | None = None
        self._ready: deque[bytes] = deque()
        self.name = name or str(getattr(port, "port", None) or type(port).__name__)
        self.stats = LinkStats()
        if getattr(port, "timeout", None) is None:
            # A blocking read could wait forever for a reply that never comes.
            port.timeout = min(0.1, reply_timeout)

    # -- I/O shell ---------------------------------------------------------------------------

    def _transact(self, request: bytes, length: int, what: str) -> bytes:
        reply = self._request(request, length, what)
        if len(reply) < length:
            error = self._timeout(what, length, len(reply))
            self._resync()
            raise error
        return reply

    # -- protocol ----------------------------------------------------------------------------

    def read_register(self, address: int, length: int = 1) -> bytes:
        what = f"read of {length} bytes from register 0x{address:02x}"
        return self._transact(read_request(address, length), length, what)

    def write_register(self, address: int, value: int) -> None:
        self.write_registers(address, bytes([value]))

    def write_registers(self, address: int, data: bytes) -> None:
        self._transact(write_request(address, data), 0, f"write to register 0x{address:02x}")

    def read_status(self) -> SpiConfig:
        """The SPI config/status register, retried after a resync if a reply goes missing."""
        for attempt in range(self.retries + 1):
            try:
                status = self.read_register(Register.SPI_CONFIG)
            except LinkTimeoutError:
                if attempt == self.retries:
                    raise LinkTimeoutError(
                        f"{self.name}: the board stopped answering ({self.retries + 1} status "
                        f"reads without reply within {self.reply_timeout} s each)") from None
                continue
            if self._io("status", lambda: self.port.in_waiting):
                # More bytes than the 1 we asked for: our byte may be stray too. Try again.
                self._resync()
                continue
            return SpiConfig(status[0])
        raise LinkError(f"{self.name}: status reads keep arriving with stray bytes; "
                        f"the line is not usable")

    def poll_readout(self, limit: int | None = None) -> bytes | None:
        """One readout buffer if the board has data, else None.

        The protocol is the DAQ loop's: poll SPI config bit 4 (read FIFO empty); when it is
        clear, read ``readout_size`` bytes from the SPI read FIFO. To save a round trip per
        readout, the next status poll travels in the same write as the read, so while data
        keeps coming each readout costs one round trip. When the status says the FIFO is
        full, ``burst`` reads go out at once (a read of a FIFO that ran dry returns padding
        only, and is not a readout), but never more than ``limit``.
        """
        if self._ready:
            return self._ready.popleft()
        status, self._status = self._status, None
        if status is None:
            status = self.read_status()
        if status & SpiConfig.READ_FIFO_EMPTY:
            self.stats.polls_empty += 1
            return None
        self.stats.polls_with_data += 1
        depth = self.burst if status & SpiConfig.READ_FIFO_FULL else 1
        if limit is not None:
            depth = max(1, min(depth, limit))
        size = self.readout_size
        fifo_read = read_request(Register.SPI_READ_FIFO, size)
        request = fifo_read * depth + read_request(Register.SPI_CONFIG, 1)
        what = f"read of {depth} x {size} bytes from the SPI read FIFO and of the status"
        try:
            reply = self._transact(request, depth * size + 1, what)
        except LinkTimeoutError:
            self.stats.readouts_lost += depth
            raise
        if self._io(what, lambda: self.port.in_waiting):
            # The reply was followed by bytes we did not ask for: it may be misaligned.
            self.stats.readouts_lost += depth
            self._resync()
            log.warning("%s: %d readout(s) discarded: stray bytes after the reply", self.name,
                        depth)
            return None
        self._status = SpiConfig(reply[-1])
        for i in range(depth):
            chunk = reply[i * size:(i + 1) * size]
            if i == 0 or chunk.rstrip(b"\xff"):
                self._ready.append(chunk)
        return self._ready.popleft()

    def take_pending(self) -> list[bytes]:
        pending = list(self._ready)
        self._ready.clear()
        return pending

    def enable_readout(self) -> bool:
        """Release the SPI master if the board holds it in reset (0x15 bit 7, set at
        power-up), as the team's ``enable_spi`` does; True if it was held."""
        status = self.read_status()
        if not status & SpiConfig.SPI_MODULE_RESET:
            return False
        stored = status & ~SPI_CONFIG_READ_ONLY & ~SpiConfig.SPI_MODULE_RESET
        self.write_register(Register.SPI_CONFIG, int(stored))
        return True

    def reset_fifos(self) -> None:
        """Reset both SPI FIFOs (pulse the reset bits of the config register)."""
        config = self.read_status() & ~SPI_CONFIG_READ_ONLY
        resets = SpiConfig.WRITE_FIFO_RESET | SpiConfig.READ_FIFO_RESET
        self.write_register(Register.SPI_CONFIG, int(config | resets))
        self.write_register(Register.SPI_CONFIG, int(config))

    def close(self) -> None:
        try:
            self.port.close()
        except (serial.SerialException, OSError):
            pass



def open_link(url: str, *, baudrate: int = DEFAULT_BAUDRATE,
              reply_timeout: float = DEFAULT_REPLY_TIMEOUT) -> NexysLink:
    """Open ``url`` (see :func:`open_port`) and speak the Nexys protocol over it."""
    port = open_port(url, baudrate=baudrate, timeout=min(0.1, reply_timeout))
    return NexysLink(port, reply_timeout=reply_timeout, name=url)
