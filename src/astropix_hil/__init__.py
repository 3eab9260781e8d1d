"""astropix-hil: hardware-in-the-loop test and simulation harness for the AstroPix4 DAQ.

Data flows one way: chip model (:mod:`~astropix_hil.emulator`) -> board -> link -> DAQ ->
``.apx`` file (:mod:`~astropix_hil.fileio`) and multicast (:mod:`~astropix_hil.sock`) ->
monitors. The readout format itself is :mod:`~astropix_hil.fmt`.

Importing the package registers its pyserial URL schemes (``apxemu://``, ``ftdififo://``), so
``serial.serial_for_url("apxemu://?seed=1&rate=1000")`` works in any program that imported it.
"""

__version__ = "0.1.0"


def _register_url_schemes() -> None:
    # pyserial looks the scheme's module up in these packages only when a URL is opened.
    try:
        import serial
    except ImportError:  # pragma: no cover - pyserial is a core dependency
        return
    if __name__ + ".urlhandler" not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(__name__ + ".urlhandler")


_register_url_schemes()
