"""The AstroPix4 chip configuration as typed data: register fields, TDAC rows, voltage card.

A :class:`ChipConfiguration` holds what the team's v4 YAML files hold (``astropix4.config``
groups of ``[width, value]`` fields in file order, ``tdac_config`` rows, the voltage card) and
the edits their DAQ makes before sending it (:meth:`~ChipConfiguration.enable_pixel`,
:meth:`~ChipConfiguration.enable_injection`, :meth:`~ChipConfiguration.set_threshold`, ...).
The field order is kept because it *is* the bit order on the chip (spec §4.2-4.3).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ..errors import ApxHilError

#: Column registers: bit 0 = injection enable of row <this column's index>, bits 1..35 =
#: comparator *disable* of row bit-1, bit 36 = injection enable of this column, 37 = AmpOut.
COLUMN_BITS = 38
ROW_INJECTION_BIT = 0
COLUMN_INJECTION_BIT = 36
AMPOUT_BIT = 37
#: All comparators disabled, no injection, no AmpOut (the team's ``reset_recconfig``).
COLUMN_ALL_OFF = 0x0FFFFFFFFE
#: Pixels the v4 chip has (16 columns x 13 rows, spec §9.1); the row field carries 5 bits.
COLUMNS = 16
ROWS = 13
#: TDAC row images: 16 groups of 5 bits, (row enable, hit-buffer disable, TDAC[0..2]).
TDAC_ROW_BITS = 80
TDAC_GROUPS = 16
#: The default row image: every group 0b00001 (write the row, hit buffer on, TDAC 0).
TDAC_DEFAULT_ROW = int("00001" * TDAC_GROUPS, 2)
#: Voltage card (GECCO): slot, 8 DACs in volts; index 3 = baseline BL, 7 = threshold thpix.
VOLTAGE_CARD_SLOT = 4
VOLTAGE_CARD_DEFAULT = (1.1, 0.0, 1.1, 1.0, 0.0, 0.0, 1.0, 1.1)
BASELINE_DAC = 3
THRESHOLD_DAC = 7
#: On-chip voltage DACs: 10 bits over 1.8 V; the team's software scales by 1024.
VDAC_FULL_SCALE_V = 1.8
VDAC_SOFTWARE_STEPS = 1024
VDAC_DOC_STEPS = 1023


class ChipConfigError(ApxHilError, ValueError):
    """A chip configuration that cannot be loaded, edited or encoded (names the problem)."""


@dataclass
class Field:
    """One register field: ``width`` bits holding ``value`` (unsigned)."""

    width: int
    value: int

    def __post_init__(self) -> None:
        if not (isinstance(self.width, int) and self.width > 0):
            raise ChipConfigError(f"field width {self.width!r} is not a positive integer")
        if not (isinstance(self.value, int) and 0 <= self.value < 1 << self.width):
            raise ChipConfigError(f"value {self.value!r} does not fit in {self.width} bits")


@dataclass
class VoltageCard:
    """The GECCO voltage card: ``slot`` (1-8) and its DAC voltages (V), index 0 first."""

    slot: int = VOLTAGE_CARD_SLOT
    dacs: list[float] = field(default_factory=lambda: list(VOLTAGE_CARD_DEFAULT))

    @property
    def threshold_mv(self) -> float:
        """Comparator threshold above the baseline, mV (DAC 7 - DAC 3)."""
        return (self.dacs[THRESHOLD_DAC] - self.dacs[BASELINE_DAC]) * 1000.0


@dataclass
class ChipConfiguration:
    """A v4 chip configuration (see the module doc).

    ``groups`` maps group name -> field name -> :class:`Field`, in file (= shift) order;
    ``tdac_rows`` maps row -> 80-bit row image; ``geometry`` is (cols, rows) as the file says.
    """

    groups: dict[str, dict[str, Field]]
    tdac_rows: dict[int, int] = field(default_factory=dict)
    voltage_card: VoltageCard = field(default_factory=VoltageCard)
    injection_card_slot: int = 3
    geometry: tuple[int, int] = (COLUMNS, 35)
    chip: str = "astropix4"

    # -- structure ----------------------------------------------------------------------

    def copy(self) -> ChipConfiguration:
        """A deep copy (edits of the copy leave this one alone)."""
        return copy.deepcopy(self)

    @property
    def nbits(self) -> int:
        """Length of the main shift-register vector."""
        return sum(f.width for group in self.groups.values() for f in group.values())

    def layout(self) -> list[tuple[str, str, int]]:
        """(group, field, width) in shift-vector order."""
        return [(g, name, f.width) for g, fields in self.groups.items()
                for name, f in fields.items()]

    def get(self, group: str, name: str) -> int:
        """Value of ``group.name``."""
        try:
            return self.groups[group][name].value
        except KeyError:
            raise ChipConfigError(f"configuration has no field {group}.{name}") from None

    def set(self, group: str, name: str, value: int) -> None:
        """Set ``group.name`` (must fit its width)."""
        try:
            width = self.groups[group][name].width
        except KeyError:
            raise ChipConfigError(f"configuration has no field {group}.{name}") from None
        self.groups[group][name] = Field(width, int(value))

    # -- typed views ----------------------------------------------------------------------

    @property
    def digital(self) -> dict[str, int]:
        return {k: f.value for k, f in self.groups.get("digitalconfig", {}).items()}

    @property
    def bias(self) -> dict[str, int]:
        return {k: f.value for k, f in self.groups.get("biasconfig", {}).items()}

    @property
    def idacs(self) -> dict[str, int]:
        return {k: f.value for k, f in self.groups.get("idacs", {}).items()}

    @property
    def vdacs(self) -> dict[str, int]:
        return {k: f.value for k, f in self.groups.get("vdacs", {}).items()}

    @property
    def columns(self) -> list[int]:
        """The column registers col0, col1, ... as integers."""
        rec = self.groups.get("recconfig", {})
        return [rec[f"col{c}"].value for c in range(len(rec)) if f"col{c}" in rec]

    def _column(self, col: int) -> int:
        if not 0 <= col < len(self.columns):
            raise ChipConfigError(f"column {col} is not one of the {len(self.columns)} "
                                  f"column registers")
        return self.get("recconfig", f"col{col}")

    def _set_bit(self, col: int, bit: int, on: bool) -> None:
        value = self._column(col)
        value = value | (1 << bit) if on else value & ~(1 << bit)
        self.set("recconfig", f"col{col}", value)

    def _check_pixel(self, row: int, col: int) -> None:
        if not (0 <= row < COLUMN_BITS - 3 and 0 <= col < len(self.columns)):
            raise ChipConfigError(f"pixel (row {row}, column {col}) is outside the "
                                  f"{len(self.columns)} columns x 35 rows of the register")

    def comparator_enabled(self, row: int, col: int) -> bool:
        """True if pixel (row, col) has its comparator enabled (column bit row+1 clear)."""
        self._check_pixel(row, col)
        return not self._column(col) >> (row + 1) & 1

    def injection_enabled(self, row: int, col: int) -> bool:
        """True if charge is injected into (row, col): column bit 36 and col<row> bit 0."""
        self._check_pixel(row, col)
        if row >= len(self.columns):
            return False
        return bool(self._column(col) >> COLUMN_INJECTION_BIT & 1
                    and self._column(row) >> ROW_INJECTION_BIT & 1)

    # -- edits (the team's helpers, spec §4.4) ---------------------------------------------

    def enable_pixel(self, row: int, col: int, enable: bool = True) -> None:
        """Enable (or disable) the comparator of pixel (row, col)."""
        self._check_pixel(row, col)
        self._set_bit(col, row + 1, not enable)

    def enable_injection(self, row: int, col: int, enable: bool = True) -> None:
        """Inject into (row, col): column-injection bit of ``col``, row-injection bit of
        register ``col<row>`` (several calls inject into the cross product)."""
        self._check_pixel(row, col)
        if row >= len(self.columns):
            raise ChipConfigError(f"row {row} has no row-injection bit (only rows 0-"
                                  f"{len(self.columns) - 1})")
        self._set_bit(col, COLUMN_INJECTION_BIT, enable)
        self._set_bit(row, ROW_INJECTION_BIT, enable)

    def enable_ampout(self, col: int) -> None:
        """Route column ``col`` to the analog output (only one column at a time)."""
        self._column(col)
        for c in range(len(self.columns)):
            self._set_bit(c, AMPOUT_BIT, c == col)

    def disable_all_pixels(self) -> None:
        """Every column register to all-comparators-off, no injection, no AmpOut."""
        for c in range(len(self.columns)):
            self.set("recconfig", f"col{c}", COLUMN_ALL_OFF)

    def set_threshold(self, mv: float) -> None:
        """Comparator threshold ``mv`` above the baseline: voltage-card DAC 7 = DAC 3 +
        mv/1000 (the team's ``init_voltages``)."""
        volts = mv / 1000.0 + self.voltage_card.dacs[BASELINE_DAC]
        if not 0.0 <= volts <= VDAC_FULL_SCALE_V:
            raise ChipConfigError(f"threshold {mv:g} mV puts DAC 7 at {volts:.3f} V, outside "
                                  f"0-{VDAC_FULL_SCALE_V} V")
        self.voltage_card.dacs[THRESHOLD_DAC] = volts

    @property
    def threshold_mv(self) -> float:
        """The comparator threshold above the baseline set on the voltage card, mV."""
        return self.voltage_card.threshold_mv

    def set_injection_amplitude(self, mv: float) -> None:
        """On-chip injection amplitude: ``vinj`` VDAC code = int(V/1.8*1024), as the team's
        software computes it."""
        code = int(mv / 1000.0 / VDAC_FULL_SCALE_V * VDAC_SOFTWARE_STEPS)
        if not 0 <= code < 1 << 10:
            raise ChipConfigError(f"injection amplitude {mv:g} mV is outside the 10-bit vinj "
                                  f"DAC (0 to {VDAC_FULL_SCALE_V * 1000:g} mV)")
        self.set("vdacs", "vinj", code)

    @property
    def injection_amplitude_mv(self) -> float:
        """The on-chip injection amplitude, mV (chip doc: 1.8 V * code / 1023)."""
        return self.get("vdacs", "vinj") * VDAC_FULL_SCALE_V * 1000.0 / VDAC_DOC_STEPS
