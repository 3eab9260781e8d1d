"""Start-up hook of programs run by ``apx-hil run-with-board``: our ports listed as FTDI devices.

Python imports ``sitecustomize`` at start-up from the first folder on its path that has one;
``run-with-board`` puts :data:`astropix_hil.compat.PATH_DIR` there. Only when
``$APX_HIL_SERIAL_PORTS`` names ports (separated by ``os.pathsep``) does this hook do anything:
it wraps pyserial's ``serial.tools.list_ports.comports`` so that those ports come first, each
described as the FTDI USB-UART of a board (vendor 0x0403, product 0x6010, manufacturer
"FTDI"). Programs that open "the first FTDI port" or ``comports()[0][0]`` then open our board.
Without the variable, or without pyserial, nothing changes. Any ``sitecustomize`` that ours
shadows still runs afterwards.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

PORTS_VARIABLE = "APX_HIL_SERIAL_PORTS"
VENDOR_ID = 0x0403
PRODUCT_ID = 0x6010


def _our_ports() -> list[str]:
    return [port for port in os.environ.get(PORTS_VARIABLE, "").split(os.pathsep) if port]


def describe(device: str, index: int) -> object:
    """A pyserial ``ListPortInfo`` for ``device``, as pyserial lists an FT2232H's UART."""
    from serial.tools.list_ports_common import ListPortInfo

    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid = VENDOR_ID, PRODUCT_ID
    info.manufacturer = "FTDI"
    info.product = "Digilent USB Device"
    info.serial_number = f"210276A0A0{index:02d}"
    info.location = f"1-{index + 1}:1.0"
    info.interface = "Digilent USB Device A"
    info.description = "Digilent USB Device A"
    info.hwid = info.usb_info()
    return info


def install() -> bool:
    """Wrap pyserial's port listing; True if our ports are now listed."""
    ports = _our_ports()
    if not ports:
        return False
    try:
        import serial.tools.list_ports as list_ports
    except ImportError:  # a program without pyserial lists no ports at all
        return False
    original = list_ports.comports
    if getattr(original, "apx_hil_ports", None) is not None:
        return True

    def comports(include_links: bool = False) -> list:
        ours = [describe(port, index) for index, port in enumerate(ports)]
        return ours + [info for info in original(include_links) if info.device not in ports]

    comports.apx_hil_ports = ports  # type: ignore[attr-defined]
    list_ports.comports = comports
    # Programs may import comports from the platform module that list_ports took it from.
    for name in ("serial.tools.list_ports_linux", "serial.tools.list_ports_posix",
                 "serial.tools.list_ports_osx", "serial.tools.list_ports_windows"):
        module = sys.modules.get(name)
        if module is not None and getattr(module, "comports", None) is original:
            module.comports = comports
    return True


def _chain() -> None:
    """Run the ``sitecustomize`` this module shadows, if there is one."""
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [entry for entry in sys.path if os.path.abspath(entry or ".") != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None or spec.origin == os.path.abspath(__file__):
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


if __name__ == "sitecustomize":  # run by Python at start-up, not when imported for tests
    try:
        install()
    finally:
        _chain()
