"""A-STEP readouts: layer frames carrying AstroPix v4 (or v3) sensor frames (spec §3.3, §4).

A *readout* here is one DAQ read of the A-STEP readout FIFO (register 0xA3): a run of layer
frames, each

====== ======= ==============================================================
offset size    content
====== ======= ==============================================================
0      1       LEN: bytes that follow = 1 + (h + 1) + T
1      1       layer id: lane + 1 (1, 2, 3)
2      h + 1   the sensor frame as the chip sent it (header byte: chip id << 3 | h)
3 + h  T       FPGA timestamp frozen at the header (T = 2, 4, 6 or 8 bytes)
====== ======= ==============================================================

The FPGA timestamp is big-endian since firmware of 2025-11-24 and little-endian before
(spec §3.3, §7 #3, §8 Q1): every decoder here takes ``byteorder`` ("big" or "little").
No bit reversal: A-STEP firmware hands over the sensor's bytes in natural order (spec §3.1).

Decoding walks the bytes by LEN (as the firmware-side reference decoder does, spec §4.4): a
byte that cannot start a layer frame (LEN outside 3..17, or a LEN that does not match the
sensor header's length and a 2/4/6/8-byte timestamp) is skipped and counted, which also skips
``0xff`` fill. A frame whose sensor header says another payload length than the chip's
(7 for v4, 4 for v3) is a *wrong-length* frame: counted, not a hit. A frame cut by the end of
a readout is carried into the next one (reads of a fixed size can split frames; packet-mode
reads of the read size never do).

This module is pure: bytes in, numpy records out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .fmt import HitRecord, ReadoutRecord, gray_to_binary

#: Readout class uid of A-STEP readouts in ``.apx`` headers and datagrams.
ASTEP_UID = 4100
#: Payload length h in the sensor header, by chip version.
PAYLOAD_V4, PAYLOAD_V3 = 7, 4
TIMESTAMP_SIZES = (2, 4, 6, 8)
MAX_LEN = 17
BYTEORDERS = ("big", "little")
#: v4 ToT tick in ns: 25 (firmware decode.py; the 20 MHz sample clock with the negedge bit),
#: not astropix-analysis' 5 (spec §7 #14, §8 Q3). A parameter of the decoders.
V4_TOT_NS = 25.0
#: v3 ToT tick in ns (100 MHz sample clock).
V3_TOT_NS = 10.0
V4_ROLLOVER = 2**18

#: Bits of the big-endian 64-bit v4 word W, MSB first: (name, width) (spec §4.2).
V4_FIELDS: tuple[tuple[str, int], ...] = (
    ("chip_id", 5), ("payload", 3), ("row", 5), ("column", 5),
    ("ts_neg1", 1), ("ts_coarse1", 14), ("ts_fine1", 3), ("ts_tdc1", 5),
    ("ts_neg2", 1), ("ts_coarse2", 14), ("ts_fine2", 3), ("ts_tdc2", 5),
)
V4_SHIFTS: dict[str, tuple[int, int]] = {}
_s = 64
for _n, _w in V4_FIELDS:
    _s -= _w
    V4_SHIFTS[_n] = (_s, (1 << _w) - 1)
del _s, _n, _w

#: Columns of a decoded v4 hit.
HIT_DTYPE = np.dtype([
    ("readout_id", "u4"), ("timestamp", "u8"), ("decoding_order", "u4"), ("layer", "u1"),
    ("chip_id", "u1"), ("payload", "u1"), ("row", "u1"), ("column", "u1"),
    ("ts_neg1", "u1"), ("ts_coarse1", "u2"), ("ts_fine1", "u1"), ("ts_tdc1", "u1"),
    ("ts_neg2", "u1"), ("ts_coarse2", "u2"), ("ts_fine2", "u1"), ("ts_tdc2", "u1"),
    ("ts_dec1", "u4"), ("ts_dec2", "u4"), ("tot_total", "u4"), ("tot_us", "f8"),
    ("fpga_ts", "u8"),
])
HIT_COLUMNS: tuple[str, ...] = HIT_DTYPE.names
#: Columns of a decoded v3 half-hit (spec §4.1, the v3 decoder's CSV).
V3_HIT_DTYPE = np.dtype([
    ("readout_id", "u4"), ("timestamp", "u8"), ("decoding_order", "u4"), ("layer", "u1"),
    ("chip_id", "u1"), ("payload", "u1"), ("location", "u1"), ("is_col", "u1"),
    ("ts", "u1"), ("tot_msb", "u1"), ("tot_lsb", "u1"), ("tot_total", "u2"), ("tot_us", "f8"),
    ("fpga_ts", "u8"),
])


def gray_table(bits: int) -> np.ndarray:
    """Gray-to-binary for every ``bits``-bit value."""
    gray = np.arange(1 << bits, dtype=np.uint32)
    for shift in (16, 8, 4, 2, 1):
        gray ^= gray >> np.uint32(shift)
    return gray


_GRAY17 = gray_table(17)


# -- encoding (the emulator's side) ------------------------------------------------------------

def encode_v4(chip_id: int, row: int, column: int, ts_neg1: int, ts_coarse1: int, ts_fine1: int,
              ts_tdc1: int, ts_neg2: int, ts_coarse2: int, ts_fine2: int, ts_tdc2: int,
              payload: int = PAYLOAD_V4) -> bytes:
    """The 8 bytes of a v4 sensor frame in the chip's natural order (big-endian word W)."""
    values = (chip_id, payload, row, column, ts_neg1, ts_coarse1, ts_fine1, ts_tdc1, ts_neg2,
              ts_coarse2, ts_fine2, ts_tdc2)
    word = 0
    for (name, width), value in zip(V4_FIELDS, values, strict=True):
        if not 0 <= value < 1 << width:
            raise ValueError(f"{name}={value} does not fit in {width} bits")
        word = (word << width) | value
    return word.to_bytes(8, "big")


def encode_v3(chip_id: int, is_col: int, location: int, ts: int, tot: int) -> bytes:
    """The 5 bytes of a v3 sensor half-hit (spec §4.1)."""
    if not (0 <= chip_id < 32 and 0 <= location < 64 and 0 <= ts < 256 and 0 <= tot < 4096):
        raise ValueError("v3 field out of range")
    return bytes([chip_id << 3 | PAYLOAD_V3, (is_col & 1) << 7 | location, ts, tot >> 8,
                  tot & 0xFF])


def encode_layer_frame(layer: int, sensor: bytes, fpga_ts: int, ts_bytes: int = 4,
                       byteorder: str = "big") -> bytes:
    """One layer frame: LEN, layer id, the sensor frame, the FPGA timestamp (``ts_bytes``,
    truncated to its low bytes as the firmware sends the last T bytes)."""
    if ts_bytes not in TIMESTAMP_SIZES:
        raise ValueError(f"timestamp size {ts_bytes} is not one of {TIMESTAMP_SIZES}")
    stamp = (fpga_ts & ((1 << (8 * ts_bytes)) - 1)).to_bytes(ts_bytes, byteorder)
    return bytes([1 + len(sensor) + ts_bytes, layer]) + bytes(sensor) + stamp


# -- walking the stream ------------------------------------------------------------------------

def frame_length_ok(buf: bytes | np.ndarray, i: int) -> bool:
    """True if the byte at ``i`` can be the LEN of a layer frame (given the header after it)."""
    n = buf[i]
    if not 3 <= n <= MAX_LEN or i + 2 >= len(buf):
        return 3 <= n <= MAX_LEN
    return (n - 2 - (buf[i + 2] & 7)) in TIMESTAMP_SIZES


@dataclass
class Walk:
    """Layer frames found in a byte run: ``starts`` (offset of each LEN byte), ``consumed``
    (bytes up to the first partial frame at the end), ``skipped`` bytes."""

    starts: list[int] = field(default_factory=list)
    consumed: int = 0
    skipped: int = 0


def walk(buf: bytes) -> Walk:
    """Find the layer frames of ``buf`` by LEN (see the module doc)."""
    out = Walk()
    i, n = 0, len(buf)
    while i < n:
        length = buf[i]
        if not 3 <= length <= MAX_LEN:
            out.skipped += 1
            i += 1
            continue
        if i + length + 1 > n:
            break  # a frame cut by the end: kept for the next readout
        if (length - 2 - (buf[i + 2] & 7)) not in TIMESTAMP_SIZES:
            out.skipped += 1
            i += 1
            continue
        out.starts.append(i)
        i += length + 1
    out.consumed = i
    return out


@dataclass
class Decoded:
    """Hits of a run of readouts and what the walk saw beside them."""

    hits: np.ndarray
    #: Layer frames whose sensor payload length was not the chip version's.
    wrong_length: int = 0
    #: Bytes skipped between frames (0xff fill included).
    skipped: int = 0
    #: Frames found, of any length.
    frames: int = 0
    #: A partial frame at the end, for the next readout.
    extra_bytes: bytes = b""


def decode_readouts(readouts: Iterable[tuple[bytes, int, int]], *, chip: str = "v4",
                    byteorder: str = "big", extra_bytes: bytes = b"",
                    tot_ns: float | None = None, use_negedge: bool = True) -> Decoded:
    """Decode ``(data, readout_id, timestamp)`` readouts in order, in bulk.

    Frames cut by a readout's end are joined with the next readout's bytes; the hit belongs to
    the readout holding the frame's last byte (where a DAQ could first see it). ``chip`` is
    "v4" (rows of :data:`HIT_DTYPE`) or "v3" (half-hits, :data:`V3_HIT_DTYPE`).
    """
    if byteorder not in BYTEORDERS:
        raise ValueError(f"byteorder must be one of {BYTEORDERS}, not {byteorder!r}")
    if chip not in ("v3", "v4"):
        raise ValueError(f"chip must be v3 or v4, not {chip!r}")
    payload = PAYLOAD_V4 if chip == "v4" else PAYLOAD_V3
    frames: list[bytes] = []
    ids: list[int] = []
    stamps: list[int] = []
    order: list[int] = []
    skipped = wrong = total = 0
    carry = bytes(extra_bytes)
    for data, readout_id, stamp in readouts:
        buf = carry + bytes(data)
        w = walk(buf)
        skipped += w.skipped
        total += len(w.starts)
        k = 0
        for start in w.starts:
            frame = buf[start:start + buf[start] + 1]
            if frame[2] & 7 != payload:
                wrong += 1
                continue
            frames.append(frame)
            ids.append(readout_id)
            stamps.append(stamp)
            order.append(k)
            k += 1
        carry = buf[w.consumed:]
    hits = (_decode_v4 if chip == "v4" else _decode_v3)(frames, byteorder,
                                                         tot_ns, use_negedge)
    hits["readout_id"] = ids
    hits["timestamp"] = stamps
    hits["decoding_order"] = order
    return Decoded(hits, wrong, skipped, total, carry)


def _fpga_ts(frames: list[bytes], sensor_len: int, byteorder: str) -> list[int]:
    return [int.from_bytes(f[2 + sensor_len:], byteorder) for f in frames]


def _decode_v4(frames: list[bytes], byteorder: str, tot_ns: float | None,
               use_negedge: bool) -> np.ndarray:
    hits = np.zeros(len(frames), dtype=HIT_DTYPE)
    if not frames:
        return hits
    words = np.frombuffer(b"".join(f[2:10] for f in frames), dtype=">u8").astype(np.uint64)
    for name, (shift, mask) in V4_SHIFTS.items():
        hits[name] = (words >> np.uint64(shift)) & np.uint64(mask)
    hits["layer"] = [f[1] for f in frames]
    neg = 1 if use_negedge else 0
    g1 = (words >> np.uint64(28)) & np.uint64(0x1FFFF)
    g2 = (words >> np.uint64(5)) & np.uint64(0x1FFFF)
    dec1 = (_GRAY17[g1].astype(np.int64) << 1) | (hits["ts_neg1"].astype(np.int64) & neg)
    dec2 = (_GRAY17[g2].astype(np.int64) << 1) | (hits["ts_neg2"].astype(np.int64) & neg)
    hits["ts_dec1"], hits["ts_dec2"] = dec1, dec2
    tot = np.where(dec2 > dec1, dec2 - dec1, V4_ROLLOVER - 1 + dec2 - dec1)
    hits["tot_total"] = tot
    hits["tot_us"] = tot * (V4_TOT_NS if tot_ns is None else tot_ns) / 1000
    hits["fpga_ts"] = _fpga_ts(frames, 8, byteorder)
    return hits


def _decode_v3(frames: list[bytes], byteorder: str, tot_ns: float | None,
               use_negedge: bool) -> np.ndarray:
    hits = np.zeros(len(frames), dtype=V3_HIT_DTYPE)
    if not frames:
        return hits
    raw = np.frombuffer(b"".join(f[1:7] for f in frames), dtype=np.uint8).reshape(-1, 6)
    hits["layer"] = raw[:, 0]
    hits["chip_id"] = raw[:, 1] >> 3
    hits["payload"] = raw[:, 1] & 7
    hits["is_col"] = raw[:, 2] >> 7
    hits["location"] = raw[:, 2] & 0x3F
    hits["ts"] = raw[:, 3]
    hits["tot_msb"] = raw[:, 4] & 0x0F
    hits["tot_lsb"] = raw[:, 5]
    tot = (raw[:, 4].astype(np.uint16) & 0x0F) << 8 | raw[:, 5]
    hits["tot_total"] = tot
    hits["tot_us"] = tot * (V3_TOT_NS if tot_ns is None else tot_ns) / 1000
    hits["fpga_ts"] = _fpga_ts(frames, 5, byteorder)
    return hits


def decode_v4_word(sensor: bytes, use_negedge: bool = True) -> dict[str, int]:
    """The fields of one 8-byte v4 sensor frame, with ``ts_dec1``/``ts_dec2``/``tot_total``."""
    word = int.from_bytes(sensor, "big")
    out = {name: (word >> shift) & mask for name, (shift, mask) in V4_SHIFTS.items()}
    neg = 1 if use_negedge else 0
    d1 = gray_to_binary(out["ts_coarse1"] << 3 | out["ts_fine1"]) << 1 | (out["ts_neg1"] & neg)
    d2 = gray_to_binary(out["ts_coarse2"] << 3 | out["ts_fine2"]) << 1 | (out["ts_neg2"] & neg)
    out["ts_dec1"], out["ts_dec2"] = d1, d2
    out["tot_total"] = d2 - d1 if d2 > d1 else V4_ROLLOVER - 1 + d2 - d1
    return out


# -- the readout object ------------------------------------------------------------------------

class AstepHit(HitRecord):
    """One decoded v4 hit of an A-STEP readout; attributes are named as :data:`HIT_COLUMNS`."""

    __slots__ = HIT_COLUMNS
    COLUMNS = HIT_COLUMNS

    def __init__(self, record: np.void) -> None:
        for name in HIT_COLUMNS:
            setattr(self, name, record[name].item())

    def values(self) -> tuple:
        """The attribute values in :data:`HIT_COLUMNS` order."""
        return tuple(getattr(self, name) for name in HIT_COLUMNS)


class AstepReadout(ReadoutRecord):
    """One DAQ read of the A-STEP readout FIFO: its bytes exactly as read (``0xff`` can be a
    data byte, so nothing is stripped), a run-local ``readout_id`` and the host ``timestamp``
    in ns. Serialized like every readout (``fe dc ba``, id, timestamp, length, data)."""

    __slots__ = ("_data", "_decoded", "byteorder", "readout_id", "timestamp")

    UID = ASTEP_UID

    def __init__(self, data: bytes, readout_id: int, timestamp: int | None = None,
                 byteorder: str = "big") -> None:
        self._data = bytes(data)
        self.readout_id = readout_id
        self.timestamp = time.time_ns() if timestamp is None else timestamp
        self.byteorder = byteorder
        self._decoded: Decoded | None = None

    @classmethod
    def _parsed_block(cls, data: bytes, starts: list[int], ends: list[int],
                      readout_ids: list[int], timestamps: list[int],
                      block: object = None) -> list[AstepReadout]:
        """The readouts of a framed file chunk (see :class:`astropix_hil.fileio.ApxReader`);
        A-STEP readouts decode on their own, so ``block`` is not used."""
        return [cls._parsed(data[start:end], readout_id, timestamp)
                for start, end, readout_id, timestamp
                in zip(starts, ends, readout_ids, timestamps, strict=True)]

    @classmethod
    def _parsed(cls, data: bytes, readout_id: int, timestamp: int) -> AstepReadout:
        return cls(data, readout_id, timestamp)

    def decode(self, extra_bytes: bytes | None = None) -> list[AstepHit]:
        """The v4 hits of this readout (``extra_bytes``: the previous readout's partial frame)."""
        if self._decoded is None:
            self._decoded = decode_readouts([(self._data, self.readout_id, self.timestamp)],
                                            byteorder=self.byteorder,
                                            extra_bytes=extra_bytes or b"")
        return [AstepHit(record) for record in self._decoded.hits]

    def hits(self) -> list[AstepHit]:
        return self.decode()

    def hit_records(self) -> np.ndarray:
        """The hits as :data:`HIT_DTYPE` records."""
        self.decode()
        return self._decoded.hits

    def extra_bytes(self) -> bytes | None:
        self.decode()
        return self._decoded.extra_bytes or None

    @classmethod
    def from_bytes(cls, buffer: bytes) -> AstepReadout:
        from .fmt import AstroPix4Readout

        base = AstroPix4Readout.from_bytes(buffer)
        return cls(base.data(), base.readout_id, base.timestamp)


def count_hits(readouts: Sequence[AstepReadout], byteorder: str = "big") -> int:
    """Hits in a batch of consecutive readouts (for a DAQ's progress line)."""
    return len(decode_readouts(((r.data(), r.readout_id, r.timestamp) for r in readouts),
                               byteorder=byteorder).hits)


__all__ = [
    "ASTEP_UID", "HIT_COLUMNS", "HIT_DTYPE", "V3_HIT_DTYPE", "AstepHit", "AstepReadout",
    "Decoded", "decode_readouts", "decode_v4_word", "encode_layer_frame", "encode_v3",
    "encode_v4", "walk",
]
