"""Stand-ins that let the AstroPix team's own programs talk to our virtual boards, unmodified.

* :mod:`astropix_hil.compat.ftd2xx`: a drop-in for the ``ftd2xx`` package (FTDI's D2XX
  driver) that describes one FT2232H as a Digilent Nexys shows itself and forwards every byte of
  interface A, unparsed, to the pty or pyserial URL named by ``$APX_HIL_FTD2XX_PORT``;
* :mod:`astropix_hil.compat.sitecustomize`: with ``$APX_HIL_SERIAL_PORTS`` set, pyserial's
  ``serial.tools.list_ports.comports()`` lists those ports first, as FTDI devices.

This folder is also what ``apx-hil run-with-board`` puts first on the child's ``PYTHONPATH``
(:data:`PATH_DIR`): there ``import ftd2xx`` finds the stand-in and Python runs
``sitecustomize`` at start-up. Both are self-contained (standard library only; pyserial only
for URLs and the port listing), so they work in a program's own virtual environment even where
astropix-hil is not installed.
"""

from __future__ import annotations

from pathlib import Path

#: The folder to put first on a child's ``PYTHONPATH``.
PATH_DIR = str(Path(__file__).resolve().parent)
