"""Bit-bang byte streams the team's software writes to the board (spec §4.6, §4.7, §5).

Pure functions returning the exact request bytes (``01 AA LH LL`` + payload): the main
configuration and TDAC rows on register 0x00, the voltage card on register 0x0C.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..boards.nexys.protocol import write_request
from .model import ChipConfigError, ChipConfiguration
from .vector import main_vector, tdac_row_vector

#: Register 0x00 bits (shift-register pins).
REG_CHIP_CONFIG = 0x00
CK1 = 0x01
CK2 = 0x02
SIN = 0x04
LOAD = 0x08
CHIP_RESET = 0x10
READBACK = 0x20
LD_TDAC = 0x40
#: Every bit-bang byte is repeated this many times; load bytes 10 times as many.
SR_CLKDIV = 8
LOAD_REPEAT = 10
#: Register 0x0C bits (voltage-card bus).
REG_VOLTAGE_BOARD = 0x0C
VB_CLOCK = 0x01
VB_DATA = 0x02
VB_LOAD = 0x04
VB_CLKDIV = 8
#: The team's calibration for ``init_voltages`` (spec §5.1).
VB_VSUPPLY = 2.7
VB_VCAL = 0.989
VB_CODE_FULL = 16383


def sr_payload(bits: np.ndarray, load: int = LOAD, clkdiv: int = SR_CLKDIV) -> bytes:
    """Register-0x00 values that shift ``bits`` in (SIN, CK1, -, CK2, - per bit), then pulse
    ``load`` (0x08 main register, 0x40 TDAC row), each byte repeated ``clkdiv`` times."""
    bits = np.asarray(bits, dtype=np.uint8)
    sin = bits.astype(np.uint8) * SIN
    phases = np.stack([sin, sin | CK1, sin, sin | CK2, sin], axis=1).reshape(-1)
    body = np.repeat(phases, clkdiv)
    tail = np.repeat(np.array([0x00, load, 0x00], dtype=np.uint8), LOAD_REPEAT * clkdiv)
    return np.concatenate([body, tail]).astype(np.uint8).tobytes()


def sr_request(bits: np.ndarray, load: int = LOAD, clkdiv: int = SR_CLKDIV) -> bytes:
    """One write request of :func:`sr_payload` to register 0x00 (header length
    (5 n + 30) * clkdiv)."""
    return write_request(REG_CHIP_CONFIG, sr_payload(bits, load, clkdiv))


def config_request(config: ChipConfiguration) -> bytes:
    """The main configuration request (34324 bytes for the 852-bit v4 register)."""
    return sr_request(main_vector(config), LOAD)


def tdac_request(config: ChipConfiguration, row: int = 0) -> bytes:
    """The request loading TDAC row image ``row`` (3444 bytes)."""
    try:
        image = config.tdac_rows[row]
    except KeyError:
        raise ChipConfigError(f"configuration has no TDAC row {row}") from None
    return sr_request(tdac_row_vector(image), LD_TDAC)


# -- voltage card ---------------------------------------------------------------------------

def vb_codes(dacs: Sequence[float], vsupply: float = VB_VSUPPLY,
             vcal: float = VB_VCAL) -> list[int]:
    """14-bit DAC codes of the card, index 0 first: int(V * 16383 / vsupply / vcal); a
    voltage outside 0-1.8 V becomes 0 (the team's software does so)."""
    return [int((v if 0 <= v <= 1.8 else 0.0) * VB_CODE_FULL / vsupply / vcal) for v in dacs]


def vb_vector(dacs: Sequence[float], slot: int, vsupply: float = VB_VSUPPLY,
              vcal: float = VB_VCAL) -> np.ndarray:
    """Bits sent to the card: the DACs from the highest index down, each 14 bits MSB first
    plus ``00``, then the one-hot slot byte 0x80 >> (slot - 1)."""
    if not 1 <= slot <= 8:
        raise ChipConfigError(f"voltage card slot {slot} is not 1-8")
    bits: list[int] = []
    for code in reversed(vb_codes(dacs, vsupply, vcal)):
        bits += [(code >> (13 - i)) & 1 for i in range(14)] + [0, 0]
    slot_byte = 0x80 >> (slot - 1)
    bits += [(slot_byte >> (7 - i)) & 1 for i in range(8)]
    return np.array(bits, dtype=np.uint8)


def vb_payload(bits: np.ndarray, clkdiv: int = VB_CLKDIV) -> bytes:
    """Register-0x0C values: per bit data, data|clock, data; load; 8 empty clocks; load."""
    data = np.asarray(bits, dtype=np.uint8) * VB_DATA
    body = np.stack([data, data | VB_CLOCK, data], axis=1).reshape(-1)
    tail = np.array([VB_LOAD, 0] + [VB_CLOCK, 0] * 8 + [VB_LOAD, 0], dtype=np.uint8)
    return np.repeat(np.concatenate([body, tail]), clkdiv).astype(np.uint8).tobytes()


def voltage_request(config: ChipConfiguration) -> bytes:
    """The voltage-card request (3428 bytes for 8 DACs)."""
    card = config.voltage_card
    return write_request(REG_VOLTAGE_BOARD, vb_payload(vb_vector(card.dacs, card.slot)))


def vb_volts(code: int, vsupply: float = VB_VSUPPLY, vcal: float = VB_VCAL) -> float:
    """The voltage a card DAC code stands for (inverse of :func:`vb_codes`, to 1 code)."""
    return code * vsupply * vcal / VB_CODE_FULL
