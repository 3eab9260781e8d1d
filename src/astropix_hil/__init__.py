"""astropix-hil: hardware-in-the-loop test and simulation harness for the AstroPix4 DAQ.

Data flows one way: chip model (:mod:`~astropix_hil.emulator`) -> board -> link -> DAQ ->
``.apx`` file (:mod:`~astropix_hil.fileio`) and multicast (:mod:`~astropix_hil.sock`) ->
monitors. The readout format itself is :mod:`~astropix_hil.fmt`.
"""

__version__ = "0.1.0"
