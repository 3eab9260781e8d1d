"""A drop-in for the ``ftd2xx`` package (FTDI's D2XX driver) in front of a virtual board.

D2XX programs (the AstroPix team's Nexys DAQ among them) find their board with
``listDevices``/``getDeviceInfoDetail``, open it with ``open``/``openEx`` and talk to it with
the handle's ``write``/``read``. This module answers those calls as one FT2232H dressed as a
Digilent Nexys (interface A ``Digilent USB Device A``, serial ``210276...A``; interface B listed
but not openable, as when the board's JTAG holds it) and forwards every byte of interface A,
unparsed, to the port named by ``$APX_HIL_FTD2XX_PORT``: a pseudo-terminal served by
``apx-hil board --pty`` or any pyserial URL (``apxemu://...``). With the variable unset, no
device is attached: ``listDevices`` returns ``None``, as the real one does.

Semantics follow D2XX: timeouts are in milliseconds and 0 means wait forever (the default);
``read(n)`` returns what arrived when ``n`` bytes are there or the read timeout expires;
errors are :class:`DeviceError` with D2XX's status names. Mode settings (bit mode, latency,
USB parameters, flow control, baud rate) are accepted and remembered in :attr:`FTD2XX.settings`
but change nothing: the byte stream is the same in every mode.

Only the standard library is needed for a pty (pyserial for a URL), so the module also works
as a top-level ``ftd2xx`` on a program's path (``apx-hil run-with-board`` does that).
"""

from __future__ import annotations

import contextlib
import os
import select
import termios
import time
import tty
from contextlib import AbstractContextManager
from typing import Any

from . import defines
from .defines import *  # noqa: F403 - the real package's constants are module attributes too

#: Environment variable naming the port interface A is forwarded to.
PORT_VARIABLE = "APX_HIL_FTD2XX_PORT"
#: Optional overrides of the emulated device's serial number (without the A/B suffix) and
#: description (without the " A"/" B" suffix).
SERIAL_VARIABLE = "APX_HIL_FTD2XX_SERIAL"
DESCRIPTION_VARIABLE = "APX_HIL_FTD2XX_DESCRIPTION"

DEFAULT_SERIAL = "210276A0A0A0"
DEFAULT_DESCRIPTION = "Digilent USB Device"
#: USB vendor/product of an FT2232H, as D2XX packs them into the device id.
DEVICE_ID = 0x0403_6010
#: D2XX library version reported by getLibraryVersion (1.4.27).
LIBRARY_VERSION = 0x0001_0427

_MESSAGES = [
    "OK", "INVALID_HANDLE", "DEVICE_NOT_FOUND", "DEVICE_NOT_OPENED", "IO_ERROR",
    "INSUFFICIENT_RESOURCES", "INVALID_PARAMETER", "INVALID_BAUD_RATE",
    "DEVICE_NOT_OPENED_FOR_ERASE", "DEVICE_NOT_OPENED_FOR_WRITE", "FAILED_TO_WRITE_DEVICE0",
    "EEPROM_READ_FAILED", "EEPROM_WRITE_FAILED", "EEPROM_ERASE_FAILED", "EEPROM_NOT_PRESENT",
    "EEPROM_NOT_PROGRAMMED", "INVALID_ARGS", "NOT_SUPPORTED", "OTHER_ERROR",
]

__all__ = [
    "FTD2XX", "DeviceError", "createDeviceInfoList", "defines", "getDeviceInfoDetail",
    "getLibraryVersion", "getVIDPID", "listDevices", "open", "openEx", "setVIDPID",
]


class DeviceError(Exception):
    """A D2XX status other than OK; ``message`` is its name (e.g. ``DEVICE_NOT_FOUND``)."""

    def __init__(self, message: int | str) -> None:
        self.message = _MESSAGES[message] if isinstance(message, int) else message
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


# -- the emulated device list ------------------------------------------------------------------

def _attached() -> bool:
    return bool(os.environ.get(PORT_VARIABLE))


def _interfaces() -> list[dict[str, Any]]:
    """The two interfaces of the FT2232H (A forwarded, B listed only), or none."""
    if not _attached():
        return []
    serial = os.environ.get(SERIAL_VARIABLE) or DEFAULT_SERIAL
    description = os.environ.get(DESCRIPTION_VARIABLE) or DEFAULT_DESCRIPTION
    return [{"index": index, "flags": 0x2,  # FT_FLAGS_HISPEED
             "type": defines.DEVICE_2232H, "id": DEVICE_ID, "location": 0x11 + index,
             "serial": f"{serial}{suffix}".encode(),
             "description": f"{description} {suffix}".encode()}
            for index, suffix in enumerate("AB")]


def listDevices(flags: int = 0) -> list[bytes] | list[int] | None:
    """Serial numbers (default), descriptions (``flags`` 2) or locations (4) of the devices,
    or ``None`` when none is attached."""
    devices = _interfaces()
    if not devices:
        return None
    if flags & defines.OPEN_BY_DESCRIPTION:
        return [device["description"] for device in devices]
    if flags & defines.OPEN_BY_LOCATION:
        return [device["location"] for device in devices]
    return [device["serial"] for device in devices]


def getLibraryVersion() -> int:
    """The D2XX library version this module answers for."""
    return LIBRARY_VERSION


def createDeviceInfoList() -> int:
    """Number of devices (interfaces) attached."""
    return len(_interfaces())


def getDeviceInfoDetail(devnum: int = 0, update: bool = True) -> dict[str, Any]:
    """One entry of the device list: index, flags, type, id, location, serial, description,
    handle (``None``: D2XX's handle is only set while the device is open)."""
    devices = _interfaces()
    if not 0 <= devnum < len(devices):
        raise DeviceError(defines.DEVICE_NOT_FOUND)
    return {**devices[devnum], "handle": None}


def getVIDPID() -> tuple[int, int]:
    """USB vendor and product ids the library looks for (Linux and macOS D2XX)."""
    return DEVICE_ID >> 16, DEVICE_ID & 0xFFFF


def setVIDPID(vid: int, pid: int) -> None:
    """Accepted and ignored: the emulated device is always found."""


def open(dev: int = 0) -> FTD2XX:
    """Open interface ``dev`` by index."""
    devices = _interfaces()
    if not 0 <= dev < len(devices):
        raise DeviceError(defines.DEVICE_NOT_FOUND)
    return FTD2XX(devices[dev])


def openEx(id_str: bytes | str, flags: int = defines.OPEN_BY_SERIAL_NUMBER) -> FTD2XX:
    """Open the interface whose serial number (default) or description is ``id_str``."""
    wanted = id_str.encode() if isinstance(id_str, str) else bytes(id_str)
    key = "description" if flags & defines.OPEN_BY_DESCRIPTION else "serial"
    if flags & defines.OPEN_BY_LOCATION:
        key, wanted = "location", int(id_str)
    for device in _interfaces():
        if device[key] == wanted:
            return FTD2XX(device)
    raise DeviceError(defines.DEVICE_NOT_FOUND)


# -- the byte stream behind interface A --------------------------------------------------------

class _PtyWire:
    """A pseudo-terminal, opened raw and non-blocking (standard library only)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        with contextlib.suppress(termios.error):
            tty.setraw(self.fd)

    def write(self, data: bytes, deadline: float | None) -> int:
        view, done = memoryview(data), 0
        while done < len(data):
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            _, ready, _ = select.select([], [self.fd], [], wait)
            if not ready:
                break
            try:
                done += os.write(self.fd, view[done:])
            except BlockingIOError:
                continue
        return done

    def read_available(self, wait: float | None) -> bytes:
        """What is readable now, after waiting up to ``wait`` s (None: forever) for a byte."""
        ready, _, _ = select.select([self.fd], [], [], wait)
        if not ready:
            return b""
        try:
            return os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class _UrlWire:
    """Any pyserial URL (``apxemu://...`` needs astropix-hil importable)."""

    #: Longest single wait on the port, so that a wait forever still notices new data.
    POLL = 0.05

    def __init__(self, url: str) -> None:
        import serial

        with contextlib.suppress(ImportError):
            import astropix_hil  # noqa: F401 - registers our URL schemes with pyserial
        self.port = serial.serial_for_url(url, timeout=0)

    def write(self, data: bytes, deadline: float | None) -> int:
        return self.port.write(data) or 0

    def read_available(self, wait: float | None) -> bytes:
        waiting = self.port.in_waiting
        if waiting:
            return self.port.read(waiting)
        self.port.timeout = self.POLL if wait is None else min(wait, self.POLL)
        data = self.port.read(1)
        self.port.timeout = 0
        if data and self.port.in_waiting:
            data += self.port.read(self.port.in_waiting)
        return data

    def close(self) -> None:
        self.port.close()


def _open_wire(target: str) -> _PtyWire | _UrlWire:
    try:
        return _UrlWire(target) if "://" in target else _PtyWire(target)
    except Exception as exc:  # any failure to reach the board is D2XX's "not opened"
        raise DeviceError(f"DEVICE_NOT_OPENED: cannot open {target!r}: {exc}") from exc


class FTD2XX(AbstractContextManager):
    """An open interface: the D2XX handle methods over the forwarded byte stream."""

    def __init__(self, device: dict[str, Any], update: bool = True) -> None:
        if device["index"] != 0:  # interface B: in use by the board's JTAG
            raise DeviceError(defines.DEVICE_NOT_OPENED)
        self._device = device
        self._wire = _open_wire(os.environ[PORT_VARIABLE])
        self._rx = bytearray()
        self.handle = device["index"] + 1
        self.status = 1
        #: Read and write timeouts in ms (0: wait forever).
        self.read_timeout = 0
        self.write_timeout = 0
        #: What the program set (bit mode, latency timer, USB parameters, ...), for tests.
        self.settings: dict[str, Any] = {}
        self.__dict__.update(self.getDeviceInfo())

    # -- data ---------------------------------------------------------------------------------

    def _check(self) -> None:
        if not self.status:
            raise DeviceError(defines.INVALID_HANDLE)

    @staticmethod
    def _deadline(timeout_ms: int) -> float | None:
        return None if timeout_ms == 0 else time.monotonic() + timeout_ms / 1000

    def _pump(self, wait: float | None) -> None:
        try:
            self._rx += self._wire.read_available(wait)
        except OSError as exc:
            raise DeviceError(defines.IO_ERROR) from exc

    def write(self, data: bytes) -> int:
        """Send ``data``; returns the number of bytes written before the write timeout."""
        self._check()
        try:
            return self._wire.write(bytes(data), self._deadline(self.write_timeout))
        except OSError as exc:
            raise DeviceError(defines.IO_ERROR) from exc

    def read(self, nchars: int, raw: bool = True) -> bytes:
        """Up to ``nchars`` bytes: all of them, or what arrived when the read timeout expired.
        With ``raw`` False the result stops at the first NUL, as D2XX's ``value`` does."""
        self._check()
        deadline = self._deadline(self.read_timeout)
        while len(self._rx) < nchars:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                break
            self._pump(wait)
        data = bytes(self._rx[:nchars])
        del self._rx[:nchars]
        return data if raw else data.split(b"\0", 1)[0]

    def getQueueStatus(self) -> int:
        """Bytes waiting to be read."""
        self._check()
        self._pump(0)
        return len(self._rx)

    def getStatus(self) -> tuple[int, int, int]:
        """(bytes waiting to be read, bytes waiting to be sent, event status)."""
        return self.getQueueStatus(), 0, 0

    def purge(self, mask: int = 0) -> None:
        """Drop received bytes (``PURGE_RX``, also the default); ``PURGE_TX`` has nothing to
        drop: writes are sent at once."""
        self._check()
        mask = mask or (defines.PURGE_RX | defines.PURGE_TX)
        if mask & defines.PURGE_RX:
            self._pump(0)
            self._rx.clear()

    def close(self) -> None:
        """Close the handle; later calls raise ``INVALID_HANDLE``."""
        if self.status:
            self._wire.close()
            self.status = 0

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- settings -----------------------------------------------------------------------------

    def setTimeouts(self, read: int, write: int) -> None:
        """Read and write timeouts in ms; 0 waits forever."""
        self._check()
        if read < 0 or write < 0:
            raise DeviceError(defines.INVALID_PARAMETER)
        self.read_timeout, self.write_timeout = int(read), int(write)

    def _remember(self, name: str, value: Any) -> None:
        self._check()
        self.settings[name] = value

    def setBitMode(self, mask: int, enable: int) -> None:
        self._remember("bit_mode", (mask, enable))

    def getBitMode(self) -> int:
        self._check()
        return self.settings.get("bit_mode", (0, 0))[0]

    def setLatencyTimer(self, latency: int) -> None:
        self._remember("latency_timer", latency)

    def getLatencyTimer(self) -> int:
        self._check()
        return self.settings.get("latency_timer", 16)

    def setUSBParameters(self, in_tx_size: int, out_tx_size: int = 0) -> None:
        self._remember("usb_parameters", (in_tx_size, out_tx_size))

    def setFlowControl(self, flowcontrol: int, xon: int = -1, xoff: int = -1) -> None:
        if flowcontrol == defines.FLOW_XON_XOFF and (xon == -1 or xoff == -1):
            raise ValueError("XON/XOFF flow control needs the xon and xoff characters")
        self._remember("flow_control", (flowcontrol, xon, xoff))

    def setBaudRate(self, baud: int) -> None:
        self._remember("baud_rate", baud)

    def setDivisor(self, div: int) -> None:
        self._remember("divisor", div)

    def setDataCharacteristics(self, wordlen: int, stopbits: int, parity: int) -> None:
        self._remember("data_characteristics", (wordlen, stopbits, parity))

    def setChars(self, evch: int, evch_en: int, erch: int, erch_en: int) -> None:
        self._remember("chars", (evch, evch_en, erch, erch_en))

    def setDeadmanTimeout(self, timeout: int) -> None:
        self._remember("deadman_timeout", timeout)

    def setDtr(self) -> None:
        self._remember("dtr", True)

    def clrDtr(self) -> None:
        self._remember("dtr", False)

    def setRts(self) -> None:
        self._remember("rts", True)

    def clrRts(self) -> None:
        self._remember("rts", False)

    def setBreakOn(self) -> None:
        self._remember("break", True)

    def setBreakOff(self) -> None:
        self._remember("break", False)

    def getModemStatus(self) -> int:
        self._check()
        return 0

    def getEventStatus(self) -> int:
        self._check()
        return 0

    def resetDevice(self) -> None:
        """Reset the device: settings back to their defaults, received bytes dropped."""
        self._check()
        self.settings.clear()
        self.read_timeout = self.write_timeout = 0
        self.purge(defines.PURGE_RX)

    def resetPort(self) -> None:
        self.resetDevice()

    def cyclePort(self) -> None:
        self.resetDevice()

    def stopInTask(self) -> None:
        self._check()

    def restartInTask(self) -> None:
        self._check()

    def getDeviceInfo(self) -> dict[str, Any]:
        """type, id, description and serial of this interface."""
        return {key: self._device[key] for key in ("type", "id", "description", "serial")}

    def getDriverVersion(self) -> int:
        self._check()
        return LIBRARY_VERSION

    def getComPortNumber(self) -> int:
        """-1: a D2XX device has no COM port."""
        self._check()
        return -1
