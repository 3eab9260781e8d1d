"""The AstroPix4 chip emulator: byte-accurate readouts with ground truth.

* :mod:`.sources`: when hits happen and where (Poisson, hot-pixel map, injection pulse train),
  their TOT;
* :mod:`.timestamps`: the 17-bit, 20 MHz Gray-coded counter;
* :mod:`.layout`: idle bytes, frames, anomalies, and the fate of every hit;
* :mod:`.chipstream`: the daisy chain's output window by window, for a seed;
* :mod:`.readouts`: reads of the bulk DAQ, and the truth (where an honest decoder reports
  each hit);
* :mod:`.emulator`: :class:`Emulator`, readouts and truth in bulk or one by one;
* :mod:`.replay`: re-emit a recorded ``.apx`` at its pace;
* :mod:`.astep`: AstroPix v4 chips on A-STEP layers (fed to
  :mod:`astropix_hil.boards.astep.board`).

The virtual board that serves the chip's bytes over the register protocol is
:mod:`astropix_hil.boards.nexys.board`.
"""

from ..fmt import encode_hit
from .chipstream import ChipStream
from .config import ANOMALY_KINDS, Anomalies, ChipConfig, EmulatorConfig, parse_options
from .emulator import (
    GENERATED_DTYPE,
    EmulatedReadout,
    EmulatedRun,
    Emulator,
    RunSummary,
    write_run,
)
from .layout import Applied, Fate, Layout
from .replay import replay
from .sources import (
    InjectionSource,
    PixelMap,
    PoissonSource,
    SourceHits,
    TotDistribution,
)
from .timestamps import counter_ticks, edges, gray_fields

__all__ = [
    "ANOMALY_KINDS",
    "GENERATED_DTYPE",
    "Anomalies",
    "Applied",
    "ChipConfig",
    "ChipStream",
    "EmulatedReadout",
    "EmulatedRun",
    "Emulator",
    "EmulatorConfig",
    "Fate",
    "InjectionSource",
    "Layout",
    "PixelMap",
    "PoissonSource",
    "RunSummary",
    "SourceHits",
    "TotDistribution",
    "counter_ticks",
    "edges",
    "encode_hit",
    "gray_fields",
    "parse_options",
    "replay",
    "write_run",
]
