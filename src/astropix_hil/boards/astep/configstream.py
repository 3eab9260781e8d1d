"""Chip configuration on the A-STEP firmware, as the team's software sends it (spec §6.4).
Pure functions (bytes out) and the board side's decoders (bytes in, bits out); no I/O.

The per-chip bit vector is the Nexys one (:func:`astropix_hil.chipconfig.main_vector`): the
A-STEP ``getChipsConfigs`` walks the YAML groups in file order, each field MSB first except the
``vdacs`` fields (LSB first), and reverses the whole vector, which is exactly the Nexys
``gen_asic_vector`` algorithm (nexys spec §4.3). With N chips per layer the same
configuration goes to every chip.

* **Shift register** (LAYERS_SR_OUT): per lane, the chain's bits (last chip first); each bit
  ``b`` is five register values ``b<<2, |CK1, b<<2, |CK2, b<<2``, each repeated
  :data:`SR_CKDIV` times; then the load (``s | 1 << (lane + 3)``) and 0, :data:`SR_CKDIV`
  times each. For v4, the TDAC row 0 vector follows on lane 0 with LDTDAC0 (bit 6).
* **SPI** (LAYER_n_MOSI): the routing frame ``0x40`` + 2·N zeros, then per chip k the frame
  ``0x60 | k``, one byte (0/1) per bit, 10 × 0x03 (load), 2·(N−1) zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ...chipconfig import ChipConfiguration, main_vector, tdac_row_vector
from ...chipconfig.model import TDAC_DEFAULT_ROW

METHODS = ("sr", "spi")
#: Each LAYERS_SR_OUT value is written this many times (the team's ``ckdiv``).
SR_CKDIV = 8
CK1, CK2, SIN_SHIFT = 0x01, 0x02, 2
#: LD0/LD1/LD2 at bits 3-5; LDTDAC0/LDTDAC1 at bits 6-7 (spec §2.1).
LOAD_SHIFT, LDTDAC_SHIFT = 3, 6
ROUTING_HEADER = 0x40
SPI_CONFIG_HEADER = 0x60
SPI_LOAD, SPI_LOAD_REPEAT = 0x03, 10


def chip_vector(config: ChipConfiguration) -> np.ndarray:
    """One chip's configuration bits, first shifted first (= the Nexys main vector)."""
    return main_vector(config)


def chain_vector(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """A daisy chain's bits for the shift register: chip N-1's bits first, chip 0's last."""
    return np.concatenate([np.asarray(v, dtype=np.uint8) for v in reversed(vectors)])


def sr_stream(bits: np.ndarray, load: int) -> bytes:
    """LAYERS_SR_OUT values shifting ``bits`` in, then the load value ``load`` (a mask of
    LD/LDTDAC bits, or-ed with the last SIN) and 0, every value :data:`SR_CKDIV` times."""
    b = np.asarray(bits, dtype=np.uint8)
    s = b << SIN_SHIFT
    steps = np.stack([s, s | CK1, s, s | CK2, s], axis=1).reshape(-1)
    last = int(s[-1]) if s.size else 0
    values = np.concatenate([steps, np.array([last | load, 0], dtype=np.uint8)])
    return np.repeat(values, SR_CKDIV).tobytes()


def sr_streams(config: ChipConfiguration, layers: int, chips: int) -> list[bytes]:
    """The shift-register configuration: one LAYERS_SR_OUT write per lane (main register,
    load LD<lane>), then the TDAC row 0 write on lane 0 (load LDTDAC0)."""
    chain = chain_vector([chip_vector(config)] * chips)
    writes = [sr_stream(chain, 1 << (LOAD_SHIFT + lane)) for lane in range(layers)]
    tdac = chain_vector([tdac_row_vector(TDAC_DEFAULT_ROW)] * chips)
    writes.append(sr_stream(tdac, 1 << LDTDAC_SHIFT))
    return writes


def routing_frame(chips: int, first: int = 0) -> bytes:
    """The SPI routing frame giving a chain's chips the ids ``first, first + 1, ...``."""
    return bytes([ROUTING_HEADER | first]) + bytes(2 * chips)


def spi_config_frame(bits: np.ndarray, chip: int, chips: int) -> bytes:
    """The SPI configuration frame for chip ``chip`` of a ``chips``-long chain."""
    body = np.asarray(bits, dtype=np.uint8).tobytes()
    return (bytes([SPI_CONFIG_HEADER | chip]) + body + bytes([SPI_LOAD]) * SPI_LOAD_REPEAT
            + bytes(2 * (chips - 1)))


def spi_frames(config: ChipConfiguration, chips: int) -> list[bytes]:
    """The SPI configuration frames, chip 0 first (the same configuration for every chip)."""
    bits = chip_vector(config)
    return [spi_config_frame(bits, k, chips) for k in range(chips)]


# -- the board side ----------------------------------------------------------------------------

@dataclass
class ConfigRecord:
    """What reached a board's configuration inputs, decoded: per lane the bits shifted before
    the last load (``sr``: LD<lane>, ``tdac``: LDTDAC<lane>), and per (layer, chip id) the
    bits of the last SPI configuration frame (``spi``). Bits are in arrival order."""

    sr: dict[int, np.ndarray] = field(default_factory=dict)
    tdac: dict[int, np.ndarray] = field(default_factory=dict)
    spi: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    sr_loads: int = 0
    spi_frames: int = 0


class SrDecoder:
    """The chips' shift-register inputs driven by LAYERS_SR_OUT: SIN sampled on the rising edge
    of CK1, shifted in on the rising edge of CK2; a rising LD/LDTDAC edge records the bits
    shifted since the previous load for that lane (nexys spec §4.10's model)."""

    def __init__(self, record: ConfigRecord) -> None:
        self.record = record
        self.value = 0
        self._sampled = 0
        self._bits = bytearray()

    def feed(self, values: bytes) -> None:
        arr = np.frombuffer(values, dtype=np.uint8)
        if not arr.size:
            return
        prev = np.concatenate([[self.value], arr[:-1]]).astype(np.uint8)
        for i in np.flatnonzero(arr != prev):
            self._edge(int(prev[i]), int(arr[i]))
        self.value = int(arr[-1])

    def _edge(self, old: int, new: int) -> None:
        rising = new & ~old
        if rising & CK1:
            self._sampled = (new >> SIN_SHIFT) & 1
        if rising & CK2:
            self._bits.append(self._sampled)
        loads = rising >> LOAD_SHIFT
        if not loads:
            return
        bits = np.frombuffer(bytes(self._bits), dtype=np.uint8).copy()
        for lane in range(3):
            if loads >> lane & 1:
                self.record.sr[lane] = bits
        for lane in range(2):
            if loads >> (LDTDAC_SHIFT - LOAD_SHIFT + lane) & 1:
                self.record.tdac[lane] = bits
        self.record.sr_loads += 1
        self._bits = bytearray()


class SpiDecoder:
    """One layer's SPI configuration frames (``0x60 | id``, bit bytes, load) as the chip with
    that id receives them; other bytes (routing, flush filler, trailing zeros) pass."""

    def __init__(self, record: ConfigRecord, layer: int) -> None:
        self.record, self.layer = record, layer
        self._chip: int | None = None
        self._bits = bytearray()

    def feed(self, data: bytes) -> None:
        for byte in data:
            if self._chip is None:
                if SPI_CONFIG_HEADER <= byte < SPI_CONFIG_HEADER | 0x1F:
                    self._chip, self._bits = byte & 0x1F, bytearray()
            elif byte & 0x02:  # a load byte ends the frame
                bits = np.frombuffer(bytes(self._bits), dtype=np.uint8).copy()
                self.record.spi[(self.layer, self._chip)] = bits
                self.record.spi_frames += 1
                self._chip = None
            else:
                self._bits.append(byte & 1)


__all__ = ["METHODS", "SR_CKDIV", "ConfigRecord", "SpiDecoder", "SrDecoder", "chain_vector",
           "chip_vector", "routing_frame", "spi_config_frame", "spi_frames", "sr_stream",
           "sr_streams"]
