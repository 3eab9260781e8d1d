"""The AstroPix4 readout format: hit words, readouts, their decoding and serialization.

A *readout* is the buffer the DAQ reads from the board's SPI read FIFO: 8-byte hit words
separated by idle bytes ``0xbc``, padded with ``0xff``. Each byte of a hit word is bit-reversed
on the wire; after reversal the 64 bits hold the fields of :data:`HIT_FIELDS`, MSB first.

:func:`decode_readout` is the decoder as a pure function of bytes. It reproduces the AstroPix
team's reference decoder (``astropix_analysis.fmt.AstroPix4Readout.decode``) step for step,
including its documented quirks (see ``docs/format.md``), and defines an answer where the
reference would raise. :class:`AstroPix4Readout` and :class:`AstroPix4Hit` are the per-object
API; :mod:`astropix_hil.bulk` decodes many readouts at once into numpy arrays and agrees with
this module hit for hit.
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Iterator, Sequence
from enum import IntEnum
from typing import BinaryIO, NamedTuple

import numpy as np

from .errors import BadReadoutHeaderError, LengthMismatchError, TruncatedError

IDLE_BYTE = 0xBC
PADDING_BYTE = 0xFF
HIT_SIZE = 8
#: Readout class uid written in ``.apx`` headers and datagrams for AstroPix4.
ASTROPIX4_UID = 4000
CLOCK_HZ = 20_000_000
CLOCK_CYCLES_PER_US = 20.0
CLOCK_ROLLOVER = 2**17

READOUT_MAGIC = b"\xfe\xdc\xba"
#: ``fe dc ba``, readout_id ``<u32``, timestamp ``<u64`` (ns since the epoch), length ``<u32``.
READOUT_HEADER = struct.Struct("<3sIQI")

#: Bit fields of a hit word after bit reversal of every byte, MSB first: (name, width).
HIT_FIELDS: tuple[tuple[str, int], ...] = (
    ("chip_id", 5),
    ("payload", 3),
    ("row", 5),
    ("column", 5),
    ("ts_neg1", 1),
    ("ts_coarse1", 14),
    ("ts_fine1", 3),
    ("ts_tdc1", 5),
    ("ts_neg2", 1),
    ("ts_coarse2", 14),
    ("ts_fine2", 3),
    ("ts_tdc2", 5),
)
#: Shift of each field's LSB in the 64-bit word, and its mask.
FIELD_SHIFTS: dict[str, tuple[int, int]] = {}
_shift = 64
for _name, _width in HIT_FIELDS:
    _shift -= _width
    FIELD_SHIFTS[_name] = (_shift, (1 << _width) - 1)
del _shift, _name, _width

#: Hit columns, in the order of the reference decoder's CSV files.
HIT_COLUMNS: tuple[str, ...] = (
    "chip_id", "payload", "readout_id", "timestamp", "decoding_order", "row", "column",
    "ts_neg1", "ts_coarse1", "ts_fine1", "ts_tdc1", "ts_neg2", "ts_coarse2", "ts_fine2",
    "ts_tdc2", "ts_dec1", "ts_dec2", "tot_us",
)
#: numpy dtype of the bulk hit arrays (one record per hit, columns as :data:`HIT_COLUMNS`).
HIT_DTYPE = np.dtype([
    ("chip_id", "u1"), ("payload", "u1"), ("readout_id", "u4"), ("timestamp", "u8"),
    ("decoding_order", "u4"), ("row", "u1"), ("column", "u1"),
    ("ts_neg1", "u1"), ("ts_coarse1", "u2"), ("ts_fine1", "u1"), ("ts_tdc1", "u1"),
    ("ts_neg2", "u1"), ("ts_coarse2", "u2"), ("ts_fine2", "u1"), ("ts_tdc2", "u1"),
    ("ts_dec1", "u4"), ("ts_dec2", "u4"), ("tot_us", "f8"),
])
assert HIT_DTYPE.names == HIT_COLUMNS

#: ``bytes.translate`` table reversing the bit order inside each byte.
BIT_REVERSE = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))
BIT_REVERSE_NP = np.frombuffer(BIT_REVERSE, dtype=np.uint8)


def is_start_byte(byte: int) -> bool:
    """True for a byte that can start a hit word: ``111xxxxx``, but never ``0xff``."""
    return byte >> 5 == 7 and byte != PADDING_BYTE


#: ``_START[b]`` is :func:`is_start_byte` for every byte value, as a lookup table.
_START = tuple(is_start_byte(b) for b in range(256))
START_BYTE_NP = np.array(_START, dtype=bool)


def gray_to_binary(gray: int) -> int:
    """Decode a Gray-coded counter value (up to 32 bits)."""
    gray ^= gray >> 16
    gray ^= gray >> 8
    gray ^= gray >> 4
    gray ^= gray >> 2
    gray ^= gray >> 1
    return gray


def binary_to_gray(value: int) -> int:
    """Gray-code a counter value."""
    return value ^ (value >> 1)


class Decoding(IntEnum):
    """Bit positions of the flags a readout's decoding reports (as in the reference decoder).

    * ``ORPHAN_BYTES_MATCHED``: bytes before the first start byte were joined with the previous
      readout's extra bytes into a complete hit;
    * ``ORPHAN_BYTES_DROPPED``: there were orphan bytes and extra bytes, but their sizes did not
      add up to a hit;
    * ``ORPHAN_BYTES_NOT_USED``: there were orphan bytes and no extra bytes to join them with;
    * ``VALID_EXTRA_BYTES``: the readout ends with a partial hit starting with a start byte,
      kept for the next readout (:meth:`AstroPix4Readout.extra_bytes`);
    * ``INVALID_EXTRA_BYTES``: the readout ends with a partial word that does not start with a
      start byte;
    * ``INCOMPLETE_DATA_DROPPED``: a truncated hit, followed directly by the next start byte,
      was dropped;
    * ``NOT_ALL_BYTES_VISITED``: decoding stopped at a byte that can neither be skipped nor start
      a hit (the reference decoder's ``FATAL_ERROR``); the bytes after it were not decoded.
    """

    ORPHAN_BYTES_MATCHED = 0
    ORPHAN_BYTES_DROPPED = 1
    ORPHAN_BYTES_NOT_USED = 2
    VALID_EXTRA_BYTES = 3
    INVALID_EXTRA_BYTES = 4
    INCOMPLETE_DATA_DROPPED = 5
    NOT_ALL_BYTES_VISITED = 6


class DecodingStatus:
    """The set of :class:`Decoding` flags raised while decoding one readout.

    ``status[Decoding.X]`` reads one flag (0 or 1), ``bool(status)`` tells whether any is set,
    ``status.code`` is the flags as a bit mask (bit ``Decoding.X`` for flag X).
    """

    __slots__ = ("code",)

    def __init__(self, code: int = 0) -> None:
        self.code = code

    def set(self, flag: Decoding) -> None:
        """Raise one flag."""
        self.code |= 1 << flag

    def __getitem__(self, flag: Decoding) -> int:
        return (self.code >> flag) & 1

    def __bool__(self) -> bool:
        return self.code != 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DecodingStatus):
            return self.code == other.code
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.code)

    def flags(self) -> list[Decoding]:
        """The raised flags, in bit order."""
        return [flag for flag in Decoding if self[flag]]

    def __repr__(self) -> str:
        names = "|".join(flag.name for flag in self.flags()) or "OK"
        return f"DecodingStatus({names})"


def _flag(flag: Decoding) -> int:
    return 1 << flag


_MATCHED = _flag(Decoding.ORPHAN_BYTES_MATCHED)
_DROPPED = _flag(Decoding.ORPHAN_BYTES_DROPPED)
_NOT_USED = _flag(Decoding.ORPHAN_BYTES_NOT_USED)
_VALID_EXTRA = _flag(Decoding.VALID_EXTRA_BYTES)
_INVALID_EXTRA = _flag(Decoding.INVALID_EXTRA_BYTES)
_INCOMPLETE = _flag(Decoding.INCOMPLETE_DATA_DROPPED)
_NOT_VISITED = _flag(Decoding.NOT_ALL_BYTES_VISITED)
_skip_run = re.compile(rb"[\xbc\xff]*").match
_START_BYTE_RE = re.compile(rb"[\xe0-\xfe]")


class DecodeResult(NamedTuple):
    """What :func:`decode_readout` found in one readout."""

    #: Hit words in decoding order, each 8 bytes as on the wire (not yet bit-reversed).
    words: list[bytes]
    #: Partial hit at the end, to be joined with the next readout's orphan bytes, or None.
    extra_bytes: bytes | None
    #: :class:`Decoding` flags as a bit mask.
    status: int


def decode_readout(data: bytes, extra_bytes: bytes | None = None) -> DecodeResult:
    """Find the hit words in one readout's data (trailing padding already stripped).

    ``extra_bytes`` are the previous readout's :attr:`DecodeResult.extra_bytes`: when this
    readout starts with orphan bytes (bytes before its first start byte, once leading idle and
    padding bytes are skipped) and both add up to 8 bytes, they form the readout's first hit.

    The steps are the reference decoder's; where the reference would raise (an all-idle
    readout, orphan bytes with no start byte after them, a re-aligned word running past the
    end) the answer is the natural continuation, described in ``docs/format.md``. Never raises
    on any bytes.
    """
    n = len(data)
    words: list[bytes] = []
    status = 0
    extra: bytes | None = None
    cursor = _skip_run(data, 0).end()
    if cursor < n and not _START[data[cursor]]:
        # Orphan bytes: the tail of a hit that began in the previous readout.
        found = _START_BYTE_RE.search(data, cursor + 1)
        end = found.start() if found else n
        orphan = data[cursor:end].rstrip(b"\xbc")
        if extra_bytes:
            joined = extra_bytes + orphan
            if len(joined) == HIT_SIZE:
                words.append(joined)
                status |= _MATCHED
            else:
                status |= _DROPPED
        else:
            status |= _NOT_USED
        cursor = end
    while cursor < n:
        cursor = _skip_run(data, cursor).end()
        if cursor == n:
            break
        # Like the reference, a word that reaches the last byte is kept aside as extra bytes.
        if cursor + HIT_SIZE >= n:
            if _START[data[cursor]]:
                extra = data[cursor:]
                status |= _VALID_EXTRA
            else:
                status |= _INVALID_EXTRA
            break
        if not _START[data[cursor]]:
            status |= _NOT_VISITED
            break
        if _START_BYTE_RE.search(data, cursor + 1, cursor + HIT_SIZE):
            cursor, dropped = _realign(data, cursor, n)
            if dropped:
                status |= _INCOMPLETE
                if cursor + HIT_SIZE > n:
                    extra = data[cursor:]
                    status |= _VALID_EXTRA
                    break
        words.append(data[cursor:cursor + HIT_SIZE])
        cursor += HIT_SIZE
    return DecodeResult(words, extra, status)


def _realign(data: bytes, cursor: int, n: int) -> tuple[int, bool]:
    """Where the word at ``cursor`` really starts, given a start-like byte inside it.

    That byte is either data or the start of the next hit after a truncated one; the word after
    this one decides: if, past idle and padding bytes, it does not start with a start byte, the
    word was truncated and the hit starts at the inner byte. Offsets keep counting from the
    re-aligned cursor, as in the reference. (The reference skips only idle bytes here, so a
    ``0xff`` run after a hit made it cut good hits; we skip both, as its main loop does.)
    """
    dropped = False
    for offset in range(1, HIT_SIZE):
        pos = cursor + offset
        if pos < n and _START[data[pos]]:
            ahead = _skip_run(data, cursor + HIT_SIZE).end()
            if ahead < n and not _START[data[ahead]]:
                dropped = True
                cursor = pos
    return cursor, dropped


#: Gray decoding of every 17-bit counter value, as a lookup table.
_GRAY_TO_BINARY: list[int] = []


def _gray_table(bits: int) -> list[int]:
    gray = np.arange(1 << bits, dtype=np.uint32)
    for shift in (16, 8, 4, 2, 1):
        gray ^= gray >> np.uint32(shift)
    return gray.tolist()


def _gray_to_binary_17() -> list[int]:
    """The table, built when a hit first needs it (it costs a few ms; most programs that
    import this module decode in bulk)."""
    global _GRAY_TO_BINARY
    if not _GRAY_TO_BINARY:
        _GRAY_TO_BINARY = _gray_table(17)
    return _GRAY_TO_BINARY


def word_fields(word: bytes) -> tuple[int, ...]:
    """The raw fields of one 8-byte wire word, in :data:`HIT_FIELDS` order."""
    value = int.from_bytes(word.translate(BIT_REVERSE), "big")
    return tuple((value >> shift) & mask for shift, mask in FIELD_SHIFTS.values())


def encode_hit(chip_id: int, payload: int, row: int, column: int, ts_neg1: int, ts_coarse1: int,
               ts_fine1: int, ts_tdc1: int, ts_neg2: int, ts_coarse2: int, ts_fine2: int,
               ts_tdc2: int) -> bytes:
    """The 8 wire bytes of a hit with these raw fields (the inverse of :func:`word_fields`).

    Fields are as in :data:`HIT_FIELDS` (timestamps still Gray-coded); each must fit its width.
    A real hit has ``payload`` 7, which makes its first byte a start byte unless chip_id is 31.
    """
    values = (chip_id, payload, row, column, ts_neg1, ts_coarse1, ts_fine1, ts_tdc1,
              ts_neg2, ts_coarse2, ts_fine2, ts_tdc2)
    word = 0
    for (name, width), value in zip(HIT_FIELDS, values, strict=True):
        if not 0 <= value < 1 << width:
            raise ValueError(f"{name}={value} does not fit in {width} bits")
        word = (word << width) | value
    return word.to_bytes(HIT_SIZE, "big").translate(BIT_REVERSE)


def compose_timestamp(ts_coarse: int, ts_fine: int) -> int:
    """Counter value in clock cycles from the Gray-coded coarse and fine fields."""
    return gray_to_binary((ts_coarse << 3) | ts_fine)


class HitRecord:
    """What a decoded hit object offers besides its attributes, from its :meth:`values` in
    ``COLUMNS`` order: a dict, equality and hashing by value (hits of one kind only), and a
    repr that lists the values."""

    __slots__ = ()

    #: The attribute names, in the order of :meth:`values` (each hit class sets them).
    COLUMNS: tuple[str, ...] = ()

    def values(self) -> tuple:
        """The attribute values in ``COLUMNS`` order."""
        raise NotImplementedError

    def as_dict(self) -> dict:
        """The attributes as a dict, in ``COLUMNS`` order."""
        return dict(zip(self.COLUMNS, self.values(), strict=True))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, HitRecord) and other.COLUMNS == self.COLUMNS:
            return self.values() == other.values()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self.as_dict().items())
        return f"{type(self).__name__}({fields})"


class AstroPix4Hit(HitRecord):
    """One decoded AstroPix4 hit; attributes are named as :data:`HIT_COLUMNS`.

    Build it from an 8-byte wire word with the readout it came from; ``ts_dec1``/``ts_dec2``
    are the decoded counters in clock cycles (``ts_dec2`` unwrapped past a rollover) and
    ``tot_us`` the time over threshold in microseconds. The values are kept as one tuple in
    :data:`HIT_COLUMNS` order (the attributes read it), so a hit is cheap to build, also in
    bulk from a decoded hit array (:meth:`from_row`).
    """

    __slots__ = ("_order", "_readout_id", "_row", "_timestamp", "_word")

    COLUMNS = HIT_COLUMNS

    chip_id: int
    payload: int
    readout_id: int
    timestamp: int
    decoding_order: int
    row: int
    column: int
    ts_neg1: int
    ts_coarse1: int
    ts_fine1: int
    ts_tdc1: int
    ts_neg2: int
    ts_coarse2: int
    ts_fine2: int
    ts_tdc2: int
    ts_dec1: int
    ts_dec2: int
    tot_us: float

    SIZE = HIT_SIZE
    ATTRIBUTE_NAMES = HIT_COLUMNS

    def __init__(self, word: bytes, readout_id: int = 0, timestamp: int = 0,
                 decoding_order: int = 0) -> None:
        if len(word) != HIT_SIZE:
            raise ValueError(f"a hit word is {HIT_SIZE} bytes, got {len(word)}")
        self._word = bytes(word)
        self._readout_id = readout_id
        self._timestamp = timestamp
        self._order = decoding_order
        self._row = None  # the values, worked out from the word when first asked for

    def _values(self) -> tuple:
        row = self._row
        if row is None:
            # Field shifts and masks as in HIT_FIELDS, unrolled: the per-object hot path.
            v = int.from_bytes(self._word.translate(BIT_REVERSE), "big")
            # The 17-bit Gray counters are the coarse and fine fields side by side.
            gray = _GRAY_TO_BINARY or _gray_to_binary_17()
            dec1 = gray[(v >> 28) & 0x1FFFF]
            dec2 = gray[(v >> 5) & 0x1FFFF]
            if dec2 < dec1:
                dec2 += CLOCK_ROLLOVER
            row = self._row = (
                v >> 59, (v >> 56) & 0x7, self._readout_id, self._timestamp, self._order,
                (v >> 51) & 0x1F, (v >> 46) & 0x1F, (v >> 45) & 0x1, (v >> 31) & 0x3FFF,
                (v >> 28) & 0x7, (v >> 23) & 0x1F, (v >> 22) & 0x1, (v >> 8) & 0x3FFF,
                (v >> 5) & 0x7, v & 0x1F, dec1, dec2, (dec2 - dec1) / CLOCK_CYCLES_PER_US)
        return row

    @classmethod
    def from_row(cls, row: tuple, word: bytes) -> AstroPix4Hit:
        """A hit from its values in :data:`HIT_COLUMNS` order (a row of a decoded hit array,
        e.g. from :func:`astropix_hil.bulk.decode_frames`) and its wire word; not checked."""
        hit = _new_object(cls)
        hit._word = word
        hit._readout_id, hit._timestamp, hit._order = row[2], row[3], row[4]
        hit._row = tuple(row)
        return hit

    def word(self) -> bytes:
        """The hit's 8 bytes as they stood in the readout."""
        return self._word

    def values(self) -> tuple:
        """The attribute values in :data:`HIT_COLUMNS` order."""
        return self._values()


_new_object = object.__new__
for _index, _name in enumerate(HIT_COLUMNS):
    setattr(AstroPix4Hit, _name, property(
        lambda self, _i=_index: self._values()[_i], doc=f"The hit's ``{_name}``."))
del _index, _name


class ReadoutRecord:
    """What every readout class shares: its bytes (``_data``), ``readout_id`` and
    ``timestamp``, the serialization of ``.apx`` files and datagrams (``fe dc ba``, id,
    timestamp, length, data), and equality by those three within one readout kind (``UID``)."""

    __slots__ = ()

    #: The readout class uid used in file headers and datagrams (each class sets it).
    UID = 0
    _data: bytes
    readout_id: int
    timestamp: int

    @classmethod
    def uid(cls) -> int:
        """The readout class uid used in file headers and datagrams."""
        return cls.UID

    def data(self) -> bytes:
        """The readout's bytes."""
        return self._data

    def hex(self) -> str:
        """The data as hexadecimal text."""
        return self._data.hex()

    def to_bytes(self) -> bytes:
        """The serialized readout, as in ``.apx`` files and legacy datagrams."""
        return READOUT_HEADER.pack(READOUT_MAGIC, self.readout_id, self.timestamp,
                                   len(self._data)) + self._data

    def write(self, output_file: BinaryIO) -> None:
        """Append the serialized readout to a binary file."""
        output_file.write(self.to_bytes())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ReadoutRecord) and other.UID == self.UID:
            return (self._data, self.readout_id, self.timestamp) == \
                (other._data, other.readout_id, other.timestamp)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self._data, self.readout_id, self.timestamp))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self._data)} bytes, "
                f"readout_id={self.readout_id}, timestamp={self.timestamp})")


class AstroPix4Readout(ReadoutRecord):
    """One readout from the board: its data (trailing ``0xff`` padding stripped), a run-local
    ``readout_id`` and the host ``timestamp`` in ns since the epoch (taken now if None).
    """

    __slots__ = ("_data", "_extra_bytes", "_hits", "_source", "_status", "readout_id",
                 "timestamp")

    HIT_CLASS = AstroPix4Hit
    UID = ASTROPIX4_UID
    IDLE_BYTE = bytes([IDLE_BYTE])
    PADDING_BYTE = bytes([PADDING_BYTE])

    def __init__(self, data: bytes, readout_id: int, timestamp: int | None = None) -> None:
        self.timestamp = time.time_ns() if timestamp is None else timestamp
        self._data = bytes(data).rstrip(b"\xff")
        self.readout_id = readout_id
        self._hits: list[AstroPix4Hit] | None = None
        self._extra_bytes: bytes | None = None
        self._status: DecodingStatus | None = None
        self._source = None

    @classmethod
    def _parsed(cls, data: bytes, readout_id: int, timestamp: int,
                source: tuple | None = None) -> AstroPix4Readout:
        """A readout exactly as serialized, so that re-serializing gives the same bytes even
        if another writer left padding in it (decoding strips it either way).

        ``source``: (block, index) where a bulk decode of this readout can be had (see
        :class:`astropix_hil.bulk.ReadoutBlock`).
        """
        readout = _new_object(cls)
        readout._data = bytes(data)
        readout.readout_id = readout_id
        readout.timestamp = timestamp
        readout._hits = None
        readout._extra_bytes = None
        readout._status = None
        readout._source = source
        return readout

    @classmethod
    def _parsed_block(cls, data: bytes, starts: list[int], ends: list[int],
                      readout_ids: list[int], timestamps: list[int],
                      block: object) -> list[AstroPix4Readout]:
        """:meth:`_parsed` for readouts ``data[starts[i]:ends[i]]`` of one bulk ``block``."""
        new = _new_object
        readouts = []
        append = readouts.append
        index = 0
        for start, end, rid, stamp in zip(starts, ends, readout_ids, timestamps, strict=True):
            readout = new(cls)
            readout._data = data[start:end]
            readout.readout_id = rid
            readout.timestamp = stamp
            readout._hits = None
            readout._source = (block, index)
            append(readout)
            index += 1  # noqa: SIM113 - enumerate() over zip() costs a tuple per readout
        return readouts

    def decoded(self) -> bool:
        """True once :meth:`decode` has run."""
        return self._hits is not None

    def decode(self, extra_bytes: bytes | None = None) -> list[AstroPix4Hit]:
        """Decode the hits (once; later calls return the same list).

        ``extra_bytes`` are the previous readout's :meth:`extra_bytes`, to re-join a hit split
        across the two readouts.
        """
        hits = self._hits
        if hits is not None:
            return hits
        found = None
        if self._source is not None:
            block, index = self._source
            found = block.result(index, extra_bytes, self.HIT_CLASS, self.readout_id,
                                 self.timestamp)
            self._source = None
        if found is None:
            words, extra, code = decode_readout(self._data.rstrip(b"\xff"), extra_bytes)
            rid, ts = self.readout_id, self.timestamp
            hits = [AstroPix4Hit(word, rid, ts, order) for order, word in enumerate(words)]
        else:
            hits, extra, code = found
        self._extra_bytes = extra
        self._status = code  # a DecodingStatus is made when asked for
        self._hits = hits
        return hits

    def hits(self) -> list[AstroPix4Hit]:
        """The decoded hits (decoding without extra bytes if not done yet)."""
        return self.decode()

    def extra_bytes(self) -> bytes | None:
        """The partial hit at the end of the readout, for the next readout's decode."""
        if self._hits is None:
            self.decode()
        return self._extra_bytes

    def decoding_status(self) -> DecodingStatus:
        """The :class:`Decoding` flags raised by :meth:`decode`."""
        if self._hits is None:
            self.decode()
        if not isinstance(self._status, DecodingStatus):
            self._status = DecodingStatus(self._status)
        return self._status

    @classmethod
    def from_bytes(cls, buffer: bytes) -> AstroPix4Readout:
        """Parse exactly one serialized readout; raise :class:`~astropix_hil.errors.FormatError`
        naming the problem otherwise."""
        readout, end = parse_readout(buffer, 0)
        if end != len(buffer):
            raise LengthMismatchError(
                f"readout declares {end - READOUT_HEADER.size} data bytes but "
                f"{len(buffer) - READOUT_HEADER.size} follow its header", offset=0)
        return readout

    @classmethod
    def from_file(cls, input_file: BinaryIO) -> AstroPix4Readout | None:
        """Read the next serialized readout from a binary file; None at a clean end of file."""
        head = input_file.read(READOUT_HEADER.size)
        if not head:
            return None
        if len(head) < READOUT_HEADER.size:
            raise TruncatedError(f"readout header cut short ({len(head)} bytes)")
        magic, readout_id, timestamp, length = READOUT_HEADER.unpack(head)
        if magic != READOUT_MAGIC:
            raise BadReadoutHeaderError(f"readout header {magic.hex()} is not fedcba")
        data = input_file.read(length)
        if len(data) < length:
            raise TruncatedError(f"readout {readout_id} declares {length} data bytes, "
                                 f"only {len(data)} follow")
        return cls._parsed(data, readout_id, timestamp)



def parse_readout(buffer: bytes, offset: int) -> tuple[AstroPix4Readout, int]:
    """Parse the serialized readout at ``offset``; return it and the offset just past it.

    Raises :class:`~astropix_hil.errors.TruncatedError` when the buffer ends inside it and
    :class:`~astropix_hil.errors.BadReadoutHeaderError` when it does not start with the magic.
    """
    end_of_header = offset + READOUT_HEADER.size
    if end_of_header > len(buffer):
        if buffer[offset:offset + 3] != READOUT_MAGIC[:len(buffer) - offset]:
            raise BadReadoutHeaderError(
                f"readout header {bytes(buffer[offset:offset + 3]).hex()} is not fedcba",
                offset=offset)
        raise TruncatedError(f"readout header cut short ({len(buffer) - offset} of "
                             f"{READOUT_HEADER.size} bytes)", offset=offset)
    magic, readout_id, timestamp, length = READOUT_HEADER.unpack_from(buffer, offset)
    if magic != READOUT_MAGIC:
        raise BadReadoutHeaderError(f"readout header {magic.hex()} is not fedcba", offset=offset)
    end = end_of_header + length
    if end > len(buffer):
        raise TruncatedError(f"readout {readout_id} declares {length} data bytes, only "
                             f"{len(buffer) - end_of_header} follow", offset=offset)
    return AstroPix4Readout._parsed(buffer[end_of_header:end], readout_id, timestamp), end


def iter_readouts(buffer: bytes, offset: int = 0) -> Iterator[AstroPix4Readout]:
    """Parse back-to-back serialized readouts until the end of ``buffer``."""
    while offset < len(buffer):
        readout, offset = parse_readout(buffer, offset)
        yield readout


def decode_stream(readouts: Sequence[AstroPix4Readout] | Iterator[AstroPix4Readout],
                  extra_bytes: bytes | None = None) -> Iterator[AstroPix4Hit]:
    """Decode readouts in order, passing each one's extra bytes to the next."""
    for readout in readouts:
        yield from readout.decode(extra_bytes)
        extra_bytes = readout.extra_bytes()


def __getattr__(name: str):
    # The A-STEP readout lives in its own module (it imports this one); offered here too.
    if name == "AstepReadout":
        from .astep_fmt import AstepReadout

        return AstepReadout
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
