"""Configuration <-> bit vectors shifted into the chip (spec §4.3, §4.7). Pure functions.

The main vector: walk the groups and fields in order, each value as a big-endian bit list,
each ``vdacs`` field reversed; then reverse the whole list. ``S[0]`` is the first bit shifted
in; the last (index 851 for v4) is ``interrupt_pushpull``. A TDAC row image is its 80-bit
integer, bit 0 shifted first.
"""

from __future__ import annotations

import numpy as np

from .model import TDAC_ROW_BITS, ChipConfigError, ChipConfiguration, Field

VDAC_GROUP = "vdacs"


def _bits_msb_first(value: int, width: int) -> np.ndarray:
    return np.array([(value >> (width - 1 - i)) & 1 for i in range(width)], dtype=np.uint8)


def main_vector(config: ChipConfiguration) -> np.ndarray:
    """The serial stream S (uint8 0/1, shift order) of the main register."""
    parts = []
    for group, fields in config.groups.items():
        for f in fields.values():
            bits = _bits_msb_first(f.value, f.width)
            parts.append(bits[::-1] if group == VDAC_GROUP else bits)
    vector = np.concatenate(parts) if parts else np.empty(0, dtype=np.uint8)
    return vector[::-1].copy()


def decode_main_vector(stream: np.ndarray | bytes, layout: ChipConfiguration) -> ChipConfiguration:
    """The configuration whose :func:`main_vector` is ``stream``, with the fields (order,
    widths) of ``layout`` and its other parts (TDAC rows, voltage card) copied."""
    bits = np.asarray(bytearray(stream) if isinstance(stream, bytes) else stream,
                      dtype=np.uint8)
    if bits.size != layout.nbits:
        raise ChipConfigError(f"stream of {bits.size} bits for a {layout.nbits}-bit register")
    vector = bits[::-1]
    out = layout.copy()
    pos = 0
    for group, fields in out.groups.items():
        for name, f in fields.items():
            chunk = vector[pos:pos + f.width]
            pos += f.width
            if group == VDAC_GROUP:
                chunk = chunk[::-1]
            value = 0
            for bit in chunk:
                value = value << 1 | int(bit)
            fields[name] = Field(f.width, value)
    return out


def tdac_row_vector(image: int) -> np.ndarray:
    """The serial stream of an 80-bit TDAC row image (integer bit 0 first)."""
    if not 0 <= image < 1 << TDAC_ROW_BITS:
        raise ChipConfigError(f"TDAC row image {image:#x} does not fit in {TDAC_ROW_BITS} bits")
    return _bits_msb_first(image, TDAC_ROW_BITS)[::-1].copy()


def decode_tdac_row(stream: np.ndarray) -> int:
    """The row image whose :func:`tdac_row_vector` is ``stream``."""
    bits = np.asarray(stream, dtype=np.uint8)
    if bits.size != TDAC_ROW_BITS:
        raise ChipConfigError(f"TDAC row stream of {bits.size} bits, expected {TDAC_ROW_BITS}")
    return sum(int(b) << i for i, b in enumerate(bits))


def bit_string(bits: np.ndarray) -> str:
    """Bits as an ASCII '0'/'1' string (the spec's golden-value form)."""
    return "".join("1" if b else "0" for b in bits)
