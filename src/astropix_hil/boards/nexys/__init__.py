"""The Nexys board profile: the register protocol of the older AstroPix DAQ firmware.

* :mod:`.protocol`: requests and replies as pure functions of bytes;
* :mod:`.registers`: the firmware's register file, as the board side sees it;
* :mod:`.board`: the virtual board, fed by the chip emulator;
* :mod:`.replay`: a board serving a recorded run;
* :mod:`.link`: the DAQ side (:class:`~.link.NexysLink`).
"""
