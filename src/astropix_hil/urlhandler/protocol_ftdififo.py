"""``ftdififo://``: an FT2232H in synchronous 245 FIFO mode, as a pyserial port (via pyftdi).

The Nexys board's fast link is the FT2232H's synchronous FIFO, which is not a serial port: no
baud rate, just a 60 MHz parallel FIFO behind USB. This backend gives it the same byte-stream
interface as the other ports, so the DAQ code is the same. URL: ``ftdififo://`` followed by a
pyftdi device URL without its scheme, e.g. ``ftdififo://ftdi:2232h/1`` for the first interface
of the first FT2232H (``ftdi://ftdi:2232h/1`` to pyftdi). The set-up mirrors the AstroPix
team's ``nexysio``: bit mode reset, then synchronous FIFO, latency timer 2 ms, 64 kB USB
transfers.

Needs the ``ftdi`` extra (pyftdi, pure Python over libusb). The FTDI calls are confined to
:class:`FifoDevice`; everything above them is tested with a fake device in front of the virtual
board. It has not been tried on a real Nexys board (see ``docs/board.rst``).
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Protocol

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

USB_CHUNK = 64000
LATENCY_MS = 2


class FifoDevice(Protocol):
    """The part of :class:`pyftdi.ftdi.Ftdi` this backend uses."""

    def write_data(self, data: bytes) -> int: ...
    def read_data_bytes(self, size: int, attempt: int = 1) -> bytes: ...
    def purge_rx_buffer(self) -> None: ...
    def close(self) -> None: ...


def open_device(ftdi_url: str) -> FifoDevice:
    """Open an FTDI interface with pyftdi and put it in synchronous FIFO mode."""
    try:
        from pyftdi.ftdi import Ftdi
    except ImportError:
        raise SerialException("ftdififo:// needs pyftdi: pip install 'astropix-hil[ftdi]'") \
            from None
    device = Ftdi()
    try:
        device.open_from_url(ftdi_url)
        device.set_bitmode(0xFF, Ftdi.BitMode.RESET)
        device.set_bitmode(0xFF, Ftdi.BitMode.SYNCFF)
        device.set_latency_timer(LATENCY_MS)
        device.read_data_set_chunksize(USB_CHUNK)
        device.write_data_set_chunksize(USB_CHUNK)
        device.purge_buffers()
    except Exception as exc:  # pyftdi raises FtdiError, USBError, ValueError...
        raise SerialException(f"ftdififo: cannot open {ftdi_url}: {exc}") from exc
    return device


def ftdi_url(url: str) -> str:
    """The pyftdi URL behind an ``ftdififo://`` URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "ftdififo" or not parts.netloc:
        raise SerialException(f"expected ftdififo://<pyftdi device>, e.g. "
                              f"ftdififo://ftdi:2232h/1, got {url!r}")
    return "ftdi://" + url.split("://", 1)[1]


class Serial(SerialBase):
    """pyserial port over an FTDI synchronous FIFO. ``device`` may be given for tests."""

    def __init__(self, *args, device: FifoDevice | None = None, **kwargs) -> None:
        self._device = device
        self._rx = bytearray()
        super().__init__(*args, **kwargs)

    def open(self) -> None:
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        if self.is_open:
            raise SerialException("Port is already open.")
        if self._device is None:
            self._device = open_device(ftdi_url(self.portstr))
        self._rx.clear()
        self.is_open = True

    def _reconfigure_port(self) -> None:
        """A FIFO has no baud rate or framing."""

    def close(self) -> None:
        if self._device is not None and self.is_open:
            try:
                self._device.close()
            except Exception:  # closing a device that is already gone
                pass
        self.is_open = False

    def _call(self, what: str, call, *args):
        if not self.is_open:
            raise PortNotOpenError()
        try:
            return call(*args)
        except SerialException:
            raise
        except Exception as exc:  # USB errors: the device went away or misbehaved
            raise SerialException(f"ftdififo: {what} failed: {exc}") from exc

    def _pull(self, size: int) -> None:
        self._rx += self._call("read", self._device.read_data_bytes, size, 1)

    @property
    def in_waiting(self) -> int:
        if not self._rx:
            self._pull(USB_CHUNK)
        return len(self._rx)

    def read(self, size: int = 1) -> bytes:
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while len(self._rx) < size:
            before = len(self._rx)
            self._pull(size - len(self._rx))
            if len(self._rx) == before:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                time.sleep(0.0005)
        out = bytes(self._rx[:size])
        del self._rx[:size]
        return out

    def write(self, data: bytes) -> int:
        data = bytes(data)
        view, done = memoryview(data), 0
        while done < len(data):
            done += self._call("write", self._device.write_data, view[done:done + USB_CHUNK])
        return done

    def reset_input_buffer(self) -> None:
        self._rx.clear()
        self._call("purge", self._device.purge_rx_buffer)

    def reset_output_buffer(self) -> None:
        """Nothing is buffered on our side."""

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    def _update_break_state(self) -> None:
        pass
