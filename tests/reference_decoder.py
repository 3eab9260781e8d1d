"""A slow, plain reference decoder of AstroPix4 readouts, written from docs/format.rst alone.

It shares no code with :mod:`astropix_hil` (no tables, no helpers): the tests compare both of
the package's decoding paths (per object, :mod:`astropix_hil.fmt`, and in bulk,
:mod:`astropix_hil.bulk`) with it, so that a mistake common to both paths (they share code)
is still caught. Clarity over speed: one byte at a time, bit strings for the fields.

Where docs/format.rst leaves a detail open, the choice is the one of the team's reference
decoder it describes, noted at the place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

IDLE = 0xBC
PADDING = 0xFF
WORD = 8

# Flag bits (docs/format.rst: "the flag bits are the reference decoder's").
ORPHAN_BYTES_MATCHED = 0
ORPHAN_BYTES_DROPPED = 1
ORPHAN_BYTES_NOT_USED = 2
VALID_EXTRA_BYTES = 3
INVALID_EXTRA_BYTES = 4
INCOMPLETE_DATA_DROPPED = 5
NOT_ALL_BYTES_VISITED = 6

# The fields of a hit word, after reversing the bits of every byte, MSB first.
FIELDS = (("chip_id", 5), ("payload", 3), ("row", 5), ("column", 5), ("ts_neg1", 1),
          ("ts_coarse1", 14), ("ts_fine1", 3), ("ts_tdc1", 5), ("ts_neg2", 1),
          ("ts_coarse2", 14), ("ts_fine2", 3), ("ts_tdc2", 5))


def is_start(byte: int) -> bool:
    """A start byte has the form 111xxxxx, except 0xff."""
    return byte >> 5 == 0b111 and byte != PADDING


def reverse_bits(byte: int) -> int:
    return int(format(byte, "08b")[::-1], 2)


def gray_to_binary(gray: int) -> int:
    value = 0
    while gray:
        value ^= gray
        gray >>= 1
    return value


def hit_fields(word: bytes, readout_id: int, timestamp: int, order: int) -> dict:
    """Every column of a hit table for one 8-byte wire word."""
    bits = "".join(format(reverse_bits(b), "08b") for b in word)
    hit: dict = {"readout_id": readout_id, "timestamp": timestamp, "decoding_order": order}
    at = 0
    for name, width in FIELDS:
        hit[name] = int(bits[at:at + width], 2)
        at += width
    dec1 = gray_to_binary(hit["ts_coarse1"] * 8 + hit["ts_fine1"])
    dec2 = gray_to_binary(hit["ts_coarse2"] * 8 + hit["ts_fine2"])
    if dec2 < dec1:
        dec2 += 2**17
    hit["ts_dec1"], hit["ts_dec2"] = dec1, dec2
    hit["tot_us"] = (dec2 - dec1) / 20
    return hit


@dataclass
class Decoded:
    """One readout decoded: hit words, flags (set of bit numbers), extra bytes."""

    words: list[bytes] = field(default_factory=list)
    flags: set[int] = field(default_factory=set)
    extra: bytes | None = None

    @property
    def status(self) -> int:
        return sum(1 << flag for flag in self.flags)


def decode(data: bytes, extra: bytes | None = None) -> Decoded:
    """The steps of docs/format.rst "Decoding a readout", one byte at a time."""
    out = Decoded()
    # 1. Trailing 0xff padding is not part of the data.
    while data and data[-1] == PADDING:
        data = data[:-1]
    n = len(data)

    def skip_idle_and_padding(i: int) -> int:
        while i < n and data[i] in (IDLE, PADDING):
            i += 1
        return i

    # 2. Leading idle and padding bytes are skipped; then maybe orphan bytes.
    cursor = skip_idle_and_padding(0)
    if cursor < n and not is_start(data[cursor]):
        end = cursor + 1
        while end < n and not is_start(data[end]):  # no start byte: they run to the end
            end += 1
        orphan = data[cursor:end]
        while orphan and orphan[-1] == IDLE:  # trailing idle bytes removed
            orphan = orphan[:-1]
        if extra is not None:
            if len(extra) + len(orphan) == WORD:
                out.words.append(extra + orphan)
                out.flags.add(ORPHAN_BYTES_MATCHED)
            else:
                out.flags.add(ORPHAN_BYTES_DROPPED)
        else:
            out.flags.add(ORPHAN_BYTES_NOT_USED)
        cursor = end

    # 3. Repeatedly: skip, keep a word reaching the last byte aside, stop at a non-start
    # byte, else take 8 bytes.
    while True:
        cursor = skip_idle_and_padding(cursor)
        if cursor >= n:
            return out
        if cursor + WORD >= n:  # the word reaches the last byte (">=", as the reference)
            if is_start(data[cursor]):
                out.extra = data[cursor:]
                out.flags.add(VALID_EXTRA_BYTES)
            else:
                # As in the reference decoder, only a word with a start byte is kept.
                out.flags.add(INVALID_EXTRA_BYTES)
            return out
        if not is_start(data[cursor]):
            out.flags.add(NOT_ALL_BYTES_VISITED)
            return out
        # 4. A start-like byte inside the word: look one word ahead (past idle AND padding
        # bytes); if what follows is not a start byte, the word was truncated and the hit
        # starts at the inner byte. Offsets keep counting from the new position.
        offset = 1
        while offset < WORD:
            inner = cursor + offset
            if inner < n and is_start(data[inner]):
                ahead = skip_idle_and_padding(cursor + WORD)
                # At the end of the data nothing says the word was cut: it is kept.
                if ahead < n and not is_start(data[ahead]):
                    out.flags.add(INCOMPLETE_DATA_DROPPED)
                    cursor = inner
            offset += 1
        if cursor + WORD > n:  # a re-aligned word running past the end: extra bytes
            out.extra = data[cursor:]
            out.flags.add(VALID_EXTRA_BYTES)
            return out
        out.words.append(data[cursor:cursor + WORD])
        cursor += WORD


def decode_stream(readouts: list[tuple[bytes, int, int]],
                  extra: bytes | None = None) -> tuple[list[dict], list[int], bytes | None]:
    """Decode (data, readout_id, timestamp) readouts in order, each one's extra bytes passed
    to the next; return the hits (dicts of every column), each readout's status and the last
    extra bytes."""
    hits, statuses = [], []
    for data, readout_id, timestamp in readouts:
        result = decode(data, extra)
        hits += [hit_fields(word, readout_id, timestamp, order)
                 for order, word in enumerate(result.words)]
        statuses.append(result.status)
        extra = result.extra
    return hits, statuses, extra
