"""The injection pattern generator (registers 0x02-0x07, spec §6): settings, the register
writes the team's software makes, and the timing the firmware gives them. Pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..boards.nexys.protocol import write_request
from .model import ChipConfigError

REG_RESET = 0x02
REG_SUSPEND = 0x03
REG_STROBE = 0x04
REG_OUTPUT = 0x05
REG_ADDRESS = 0x06
REG_DATA = 0x07
#: Register 0x05 bits.
OUT_CARD = 0x01
OUT_CHIP = 0x02
OUT_SYNC = 0x04
#: Generator internal addresses.
ADDR_PULSES = 7
ADDR_PERIOD = 8
ADDR_RUN_HI, ADDR_RUN_LO = 10, 11
ADDR_DELAY_HI, ADDR_DELAY_LO = 12, 13
ADDR_CLKDIV_HI, ADDR_CLKDIV_LO = 14, 15
#: FPGA clock period, ns.
CLK_NS = 10


@dataclass(frozen=True)
class PatternGenerator:
    """Generator settings as the team's ``Injectionboard`` holds them (defaults: theirs):
    ``period`` P (0-255), ``cycle`` = number of pulse sets (0 = forever), ``clkdiv`` C,
    ``initdelay`` D, ``pulses`` per set, ``onchip`` (DigInj pin) or the GECCO card."""

    period: int = 100
    cycle: int = 0
    clkdiv: int = 300
    initdelay: int = 100
    pulses: int = 1
    onchip: bool = True

    def __post_init__(self) -> None:
        for name, top in (("period", 255), ("cycle", 65535), ("clkdiv", 65535),
                          ("initdelay", 65535), ("pulses", 255)):
            value = getattr(self, name)
            if not (isinstance(value, int) and 0 <= value <= top):
                raise ChipConfigError(f"pattern generator {name}={value!r}: must be 0-{top}")

    @property
    def tick_ns(self) -> int:
        return (self.clkdiv + 1) * CLK_NS

    @property
    def set_ticks(self) -> int:
        """Ticks from one set's first rising edge to the next set's."""
        d = max(self.pulses, 1)
        return (2 * d - 1) * (256 * self.period + 1) + self.initdelay + 1

    @property
    def period_ns(self) -> int:
        """Time between pulse sets, ns (77.36 ms for the defaults)."""
        return self.set_ticks * self.tick_ns

    def rising_edges_ns(self, start: int, stop: int) -> list[int]:
        """Times (ns after the reset was released) of the rising edges in ``[start, stop)``."""
        first = (self.initdelay + 1) * self.tick_ns
        pulse_gap = 2 * (256 * self.period + 1) * self.tick_ns
        period = self.period_ns
        k0 = max(0, (start - first - (max(self.pulses, 1) - 1) * pulse_gap) // period)
        k1 = max(k0, -(-(stop - first) // period))
        if self.cycle:
            k1 = min(k1, self.cycle)
        sets = first + np.arange(k0, k1, dtype=np.int64) * period
        edges = (sets[:, None] + np.arange(max(self.pulses, 1)) * pulse_gap).reshape(-1)
        return edges[(edges >= start) & (edges < stop)].tolist()

    @classmethod
    def for_period(cls, period_ms: float, pulses: int = 1, cycle: int = 0,
                   onchip: bool = True) -> PatternGenerator:
        """Settings giving one pulse set every ``period_ms`` (P = 100, D = 100 as the team's
        defaults; C chosen, so the period is met to within one tick step of 0.26 %)."""
        if not period_ms > 0:
            raise ChipConfigError(f"injection period {period_ms!r} ms is not > 0")
        probe = cls(pulses=pulses, clkdiv=0)
        clkdiv = round(period_ms * 1e6 / (probe.set_ticks * CLK_NS)) - 1
        if not 0 <= clkdiv <= 65535:
            raise ChipConfigError(f"injection period {period_ms:g} ms is out of the generator's "
                                  f"range ({probe.set_ticks * CLK_NS / 1e6:.3f} to "
                                  f"{probe.set_ticks * CLK_NS * 65536 / 1e6:.0f} ms)")
        return cls(clkdiv=clkdiv, pulses=pulses, cycle=cycle, onchip=onchip)


def _internal(address: int, value: int) -> list[tuple[int, int]]:
    return [(REG_ADDRESS, address), (REG_DATA, value), (REG_STROBE, 1), (REG_STROBE, 0)]


def configure_writes(gen: PatternGenerator) -> list[tuple[int, int]]:
    """(register, value) writes of the team's ``__configure`` (345 bytes as requests)."""
    writes = [(REG_OUTPUT, OUT_CHIP if gen.onchip else OUT_CARD)]
    for address, value in enumerate((1, 3, 0, 0, 0, 0, 0, 0)):
        writes += _internal(address, value)
    for address, value in ((ADDR_PERIOD, gen.period), (9, 0x14),
                           (ADDR_RUN_HI, gen.cycle >> 8), (ADDR_RUN_LO, gen.cycle & 0xFF),
                           (ADDR_DELAY_HI, gen.initdelay >> 8),
                           (ADDR_DELAY_LO, gen.initdelay & 0xFF),
                           (ADDR_CLKDIV_HI, gen.clkdiv >> 8),
                           (ADDR_CLKDIV_LO, gen.clkdiv & 0xFF), (ADDR_PULSES, gen.pulses)):
        writes += _internal(address, value)
    return writes


STOP_WRITES = [(REG_SUSPEND, 1), (REG_RESET, 1)]
START_WRITES = [(REG_SUSPEND, 1), (REG_RESET, 1), (REG_RESET, 0), (REG_SUSPEND, 0)]


def start_writes(gen: PatternGenerator) -> list[tuple[int, int]]:
    """The team's ``start()``: stop, stop (no card amplitude on-chip), configure, start."""
    return STOP_WRITES + STOP_WRITES + configure_writes(gen) + START_WRITES


def as_requests(writes: list[tuple[int, int]]) -> bytes:
    """Single-byte write requests ``01 AA 00 01 VV`` for each (register, value)."""
    return b"".join(write_request(reg, bytes([value])) for reg, value in writes)


def numpulses(d: int) -> int:
    """The generator's internal toggle count for ``d`` pulses per set (2d - 1, 0 for 0)."""
    return 2 * d - 1 if d > 0 else 0
