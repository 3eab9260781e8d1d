"""Board profiles: one subpackage per FPGA firmware, and the pieces they share.

* :mod:`.nexys`: the Nexys register protocol of the older AstroPix DAQ (protocol, register
  file, virtual and replay boards, DAQ link);
* :mod:`.link`: the DAQ side of any board (:class:`~.link.BoardLink`, :func:`~.link.open_port`);
* :mod:`.ptyserve`: serve any board on a pseudo-terminal.

A profile provides a pure protocol module, a register file, a virtual board fed by the chip
emulator, and a :class:`~.link.BoardLink` subclass; the DAQ, the file and network code never
know which profile they run on.
"""
