"""The chip side of the board's bit-banged buses: what the chip (register 0x00), the voltage
card (0x0C) and the pattern generator (0x02-0x07) make of the bytes written to them.

Pure state machines fed with register values in order (spec §4.10, §5.2, §6.1-6.2):

* :class:`ShiftRegisterDecoder`: SIN captured at CK1, shifted in at CK2; LOAD latches the last
  852 bits as the main configuration, LdTDAC the last 80 as a TDAC row image; bit 4 holds the
  chip in reset. Main and row registers are modelled as two parallel chains fed by one SIN.
* :class:`VoltageCardDecoder`: data shifted at each clock rising edge; a load whose last 8
  bits select a slot latches the DAC codes before them.
* :class:`PatternGeneratorState`: the generator's internal registers, reset and suspend.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..chipconfig.model import TDAC_ROW_BITS, ChipConfiguration
from ..chipconfig.patgen import (
    ADDR_CLKDIV_HI,
    ADDR_CLKDIV_LO,
    ADDR_DELAY_HI,
    ADDR_DELAY_LO,
    ADDR_PERIOD,
    ADDR_PULSES,
    ADDR_RUN_HI,
    ADDR_RUN_LO,
    OUT_CHIP,
    REG_ADDRESS,
    REG_DATA,
    REG_OUTPUT,
    REG_RESET,
    REG_STROBE,
    REG_SUSPEND,
    PatternGenerator,
)
from ..chipconfig.streams import (
    CHIP_RESET,
    CK1,
    CK2,
    LD_TDAC,
    LOAD,
    SIN,
    VB_CLOCK,
    VB_DATA,
    VB_LOAD,
    vb_volts,
)
from ..chipconfig.vector import decode_main_vector, decode_tdac_row

#: Bits kept of the main register (the longest vector the chip holds).
KEEP_BITS = 4096


def _changes(previous: int, data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Values after each change of a byte sequence, and the values just before them."""
    values = np.frombuffer(bytes(data), dtype=np.uint8).astype(np.int64)
    before = np.concatenate(([previous], values[:-1]))
    changed = values != before
    return before[changed], values[changed]


class ShiftRegisterDecoder:
    """Register-0x00 waveform -> latched main configuration and TDAC row images."""

    def __init__(self, layout: ChipConfiguration) -> None:
        self.layout = layout
        self.pins = 0
        self._sampled = 0
        self._bits = bytearray()
        #: Latched configuration (None until the first LOAD of a full-length vector).
        self.config: ChipConfiguration | None = None
        #: TDAC row images latched by LdTDAC, in order.
        self.tdac_loads: list[int] = []
        self.loads = 0
        self.short_loads = 0

    @property
    def in_reset(self) -> bool:
        return bool(self.pins & CHIP_RESET)

    def feed(self, data: bytes) -> list[str]:
        """Apply register-0x00 values in order; return the events: ``"load"``, ``"tdac"``."""
        events = []
        before, after = _changes(self.pins, data)
        for old, new in zip(before.tolist(), after.tolist(), strict=True):
            rising = new & ~old
            if rising & CK1:
                self._sampled = 1 if new & SIN else 0
            if rising & CK2:
                self._bits.append(self._sampled)
                if len(self._bits) > 2 * KEEP_BITS:
                    del self._bits[:-KEEP_BITS]
            if rising & LOAD:
                events.append("load")
                self._latch_main()
            if rising & LD_TDAC:
                events.append("tdac")
                if len(self._bits) >= TDAC_ROW_BITS:
                    stream = np.frombuffer(bytes(self._bits[-TDAC_ROW_BITS:]), dtype=np.uint8)
                    self.tdac_loads.append(decode_tdac_row(stream))
        if after.size:
            self.pins = int(after[-1])
        return events

    def _latch_main(self) -> None:
        n = self.layout.nbits
        self.loads += 1
        if len(self._bits) < n:
            self.short_loads += 1
            return
        stream = np.frombuffer(bytes(self._bits[-n:]), dtype=np.uint8)
        self.config = decode_main_vector(stream, self.layout)


class VoltageCardDecoder:
    """Register-0x0C waveform -> the card's DAC voltages (index 0 first) and slot."""

    def __init__(self, dacs: int = 8) -> None:
        self.ndacs = dacs
        self.pins = 0
        self._bits = bytearray()
        self.dacs: list[float] | None = None
        self.slot: int | None = None

    def feed(self, data: bytes) -> bool:
        """Apply register-0x0C values; True if a load latched new DAC values."""
        latched = False
        before, after = _changes(self.pins, data)
        for old, new in zip(before.tolist(), after.tolist(), strict=True):
            rising = new & ~old
            if rising & VB_CLOCK:
                self._bits.append(1 if new & VB_DATA else 0)
                del self._bits[:-(16 * self.ndacs + 8)]
            if rising & VB_LOAD:
                latched |= self._load()
        if after.size:
            self.pins = int(after[-1])
        return latched

    def _load(self) -> bool:
        n = 16 * self.ndacs + 8
        if len(self._bits) < n:
            return False
        bits = list(self._bits[-n:])
        slot_byte = int("".join(map(str, bits[-8:])), 2)
        if bin(slot_byte).count("1") != 1:
            return False  # no card selected (the trailing clear-and-load of the team's stream)
        codes = [int("".join(map(str, bits[16 * i:16 * i + 14])), 2) for i in range(self.ndacs)]
        self.dacs = [vb_volts(code) for code in reversed(codes)]
        self.slot = 8 - slot_byte.bit_length() + 1
        return True


@dataclass
class PatternGeneratorState:
    """The generator's registers and when it started running (ns, chip time)."""

    internal: dict[int, int] = field(default_factory=dict)
    regs: dict[int, int] = field(default_factory=lambda: {REG_RESET: 1, REG_SUSPEND: 0,
                                                          REG_STROBE: 0, REG_OUTPUT: 0,
                                                          REG_ADDRESS: 0, REG_DATA: 0})
    #: Settings latched when the reset was released, and the time it was (None: held).
    running: PatternGenerator | None = None
    started_ns: int = 0

    def feed(self, register: int, data: bytes, now_ns: int) -> None:
        """Apply writes to ``register`` (0x02-0x07) made at chip time ``now_ns``."""
        for value in data:
            if register == REG_STROBE and value & 1:
                self.internal[self.regs[REG_ADDRESS] & 0x0F] = self.regs[REG_DATA]
            self.regs[register] = value
            if register in (REG_RESET, REG_SUSPEND):
                self._update(now_ns)

    def _update(self, now_ns: int) -> None:
        held = self.regs[REG_RESET] & 1 or self.regs[REG_SUSPEND] & 1
        if held:
            if self.regs[REG_RESET] & 1:
                self.running = None
            return
        if self.running is None:
            self.running = self.settings()
            self.started_ns = now_ns

    def settings(self) -> PatternGenerator:
        """The settings the internal registers hold."""
        r = self.internal
        return PatternGenerator(
            period=r.get(ADDR_PERIOD, 0),
            cycle=r.get(ADDR_RUN_HI, 0) << 8 | r.get(ADDR_RUN_LO, 0),
            clkdiv=r.get(ADDR_CLKDIV_HI, 0) << 8 | r.get(ADDR_CLKDIV_LO, 0),
            initdelay=r.get(ADDR_DELAY_HI, 0) << 8 | r.get(ADDR_DELAY_LO, 0),
            pulses=r.get(ADDR_PULSES, 0), onchip=bool(self.regs[REG_OUTPUT] & OUT_CHIP))

    @property
    def chip_output(self) -> bool:
        """DigInj reaches the chip (0x05 bit 1)."""
        return bool(self.regs[REG_OUTPUT] & OUT_CHIP)

    def pulses_ns(self, t0_ns: int, t1_ns: int) -> np.ndarray:
        """Chip times of DigInj rising edges in ``[t0_ns, t1_ns)``."""
        gen = self.running
        if gen is None or not self.chip_output or self.regs[REG_SUSPEND] & 1:
            return np.empty(0, dtype=np.int64)
        start = self.started_ns
        edges = gen.rising_edges_ns(max(t0_ns - start, 0), t1_ns - start)
        return np.asarray(edges, dtype=np.int64) + start
