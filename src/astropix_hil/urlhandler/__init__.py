"""pyserial URL schemes of astropix-hil, registered on import.

* ``apxemu://?seed=1&rate=1000`` opens an in-process virtual board
  (:mod:`.protocol_apxemu`);
* ``astepemu://?layers=3&chips=4&seed=1`` opens an in-process virtual A-STEP board
  (:mod:`.protocol_astepemu`);
* ``ftdififo://ftdi:2232h/1`` opens an FT2232H in synchronous FIFO mode through pyftdi
  (:mod:`.protocol_ftdififo`).

Any pyserial program can use them after ``import astropix_hil`` (or of this module), which
appends this package to pyserial's ``protocol_handler_packages``, as pyftdi does for
``ftdi://``.
"""

import serial

if __name__ not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append(__name__)
