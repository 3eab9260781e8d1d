"""The datagram format: header layout, kinds, flags, and single datagrams as pure
functions: encode, parse and validate, heartbeat payloads, readouts in a payload."""

from __future__ import annotations

import hmac
import struct
from collections.abc import Iterable
from enum import IntEnum, IntFlag
from typing import NamedTuple

import numpy as np

from ..bulk import frame_readouts
from ..errors import DatagramError, FormatError, TruncatedError
from ..fmt import ASTROPIX4_UID, READOUT_HEADER, READOUT_MAGIC, parse_readout
from ..jsontext import JsonLimitError, loads_bounded
from .keys import TransportKey, _keyring

MAGIC = b"APXM"
VERSION = 1
#: magic, version, kind, flags, reserved, stream id, sequence number, readout sequence number,
#: stream age in ms, payload type, count/fragment index, fragment count, reserved, key id,
#: payload length.
HEADER = struct.Struct("<4sBBBBQQQIHHHHII")
#: Start of a heartbeat payload: last sequence number of the stream, interval in ms.
HEARTBEAT = struct.Struct("<QI")
MAC_SIZE = 32
#: Largest datagram that fits a 1500-byte Ethernet MTU (minus IPv4 and UDP headers).
DEFAULT_MAX_DATAGRAM = 1472
#: Largest UDP payload over IPv4.
MAX_UDP_PAYLOAD = 65507
DEFAULT_FLUSH_DELAY = 0.010
DEFAULT_HEARTBEAT_INTERVAL = 1.0
#: Heartbeats sent when a stream ends; each carries the sequence number of the last one.
END_HEARTBEATS = 3
#: A stream counts as started after the receiver only if its age says so by this margin (s).
JOIN_MARGIN = 0.002
#: Largest run header (JSON bytes) a heartbeat may carry: what fits in one UDP datagram.
MAX_HEADER_SIZE = MAX_UDP_PAYLOAD - HEADER.size - HEARTBEAT.size
#: Deepest nesting of the run header's JSON a receiver parses (an ``.apx`` header needs a few).
MAX_HEADER_DEPTH = 64
_AGE_MAX = 0xFFFFFFFF
_RH_SIZE = READOUT_HEADER.size
_RH_UNPACK = READOUT_HEADER.unpack_from
# Batches at least this large are validated with numpy rather than readout by readout.
_BULK_CHECK_BYTES = 8192


class Kind(IntEnum):
    """Datagram kinds."""

    DATA = 1
    FRAGMENT = 2
    HEARTBEAT = 3


class Flag(IntFlag):
    """Header flag bits."""

    AUTH = 1  #: an HMAC-SHA256 trailer follows the payload
    END = 2  #: heartbeat: the stream ends; no datagram follows its last sequence number


#: Counter names of :attr:`ReceiverStats.malformed`, in the order checks run.
MALFORMED_REASONS: tuple[str, ...] = (
    "unexpected_source",  # sender address not in the allow-list
    "truncated",  # shorter than its header or its declared length
    "bad_magic",  # neither ``APXM`` nor a legacy readout (``fe dc ba``)
    "bad_version",  # framed, but a version this receiver does not speak
    "length_mismatch",  # longer than its declared length
    "unauthenticated",  # the receiver has a key and the datagram carries no HMAC
    "unknown_key",  # HMAC with a key id the receiver does not hold
    "bad_auth",  # HMAC does not match: altered, or another key
    "unknown_kind",
    "unknown_type",  # payload type is not the receiver's readout class uid
    "bad_payload",  # DATA payload is not exactly its count of whole readouts
    "bad_fragment",  # fragment index/count inconsistent, or reassembled bytes not one readout
    "too_large",  # a fragmented readout beyond the receiver's size limit
    "bad_heartbeat",  # heartbeat fields unreadable, run header not JSON, too deep or too large
    "bad_legacy",  # ``fe dc ba`` datagram that is not exactly one readout
)


class Datagram(NamedTuple):
    """A parsed framed datagram."""

    kind: Kind
    flags: int
    stream_id: int
    seq: int
    #: DATA: sequence number of the first readout; FRAGMENT: of the readout;
    #: HEARTBEAT: readouts the sender had sent before it.
    readout_seq: int
    age_ms: int
    payload_type: int
    #: DATA: readouts in the payload; FRAGMENT: fragment index.
    count: int
    #: FRAGMENT: number of fragments of the readout.
    total: int
    key_id: int
    payload: bytes | memoryview
    #: HEARTBEAT: last sequence number of the stream (its own, or the final one at the end).
    last_seq: int = 0
    #: HEARTBEAT: the sender's heartbeat interval in seconds.
    interval: float = 0.0
    #: HEARTBEAT: the run header, or None if the sender has none.
    header: dict | None = None


def encode_datagram(kind: Kind, stream_id: int, seq: int, readout_seq: int, payload: bytes,
                    *, age_ms: int = 0, count: int = 0, total: int = 0, flags: int = 0,
                    key: TransportKey | None = None,
                    payload_type: int = ASTROPIX4_UID) -> bytes:
    """One datagram with this header and payload (HMAC trailer added when ``key`` is given)."""
    if key is not None:
        flags |= Flag.AUTH
    head = HEADER.pack(MAGIC, VERSION, kind, flags, 0, stream_id, seq, readout_seq,
                       min(age_ms, _AGE_MAX), payload_type, count, total, 0,
                       key.key_id if key is not None else 0, len(payload))
    if key is None:
        return head + payload
    body = head + payload
    return body + hmac.digest(key.secret, body, "sha256")


def heartbeat_payload(last_seq: int, interval: float, header_json: bytes = b"") -> bytes:
    """A heartbeat's payload: last sequence number, interval, run header JSON (may be empty)."""
    return HEARTBEAT.pack(last_seq, round(interval * 1000)) + header_json


def is_legacy(raw: bytes | memoryview) -> bool:
    """True for a datagram that starts like a bare serialized readout (``fe dc ba``)."""
    return len(raw) >= 3 and raw[0] == 0xFE and raw[1] == 0xDC and raw[2] == 0xBA


def check_data_payload(payload: bytes | memoryview, count: int) -> bool:
    """True when ``payload`` is exactly ``count`` whole serialized readouts."""
    offset, size = 0, len(payload)
    for _ in range(count):
        if offset + _RH_SIZE > size:
            return False
        magic, _, _, length = _RH_UNPACK(payload, offset)
        if magic != READOUT_MAGIC:
            return False
        offset += _RH_SIZE + length
    return offset == size


def check_data_payloads(buf: bytes, offsets: list[int], counts: list[int]) -> list[bool]:
    """:func:`check_data_payload` for many payloads stored back to back in ``buf``.

    Payload ``i`` is ``buf[offsets[i]:offsets[i + 1]]`` (the last one runs to the end). One
    numpy pass checks them all when every one is good, the common case; otherwise each is
    checked on its own.
    """
    if len(buf) >= _BULK_CHECK_BYTES:
        try:
            frames = frame_readouts(np.frombuffer(buf, dtype=np.uint8))
        except FormatError:
            frames = None
        if frames is not None and frames.consumed == len(buf):
            heads = frames.starts - _RH_SIZE
            first = np.searchsorted(heads, offsets)
            starts_ok = first < len(heads)
            starts_ok[starts_ok] = heads[first[starts_ok]] == np.asarray(offsets)[starts_ok]
            found = np.diff(np.append(first, len(heads)))
            if starts_ok.all() and np.array_equal(found, counts):
                return [True] * len(offsets)
    ends = [*offsets[1:], len(buf)]
    view = memoryview(buf)
    return [check_data_payload(view[lo:hi], n)
            for lo, hi, n in zip(offsets, ends, counts, strict=True)]


def parse_datagram(raw: bytes | memoryview,
                   keys: TransportKey | Iterable[TransportKey] | None = None,
                   payload_type: int = ASTROPIX4_UID, *, source: object = None,
                   check_payload: bool = True) -> Datagram:
    """Parse and check one framed datagram; raise :class:`~astropix_hil.errors.DatagramError`
    whose ``reason`` names the :data:`MALFORMED_REASONS` counter it belongs to.

    With ``keys``, the datagram must carry a valid HMAC by one of them; without, an HMAC
    trailer is accepted unchecked. ``check_payload`` checks that a DATA payload is whole readouts.
    """
    return _parse(raw, _keyring(keys), payload_type, source, check_payload)


def _parse(raw: bytes | memoryview, keys: dict[int, bytes] | None, payload_type: int,
           source: object, check_payload: bool) -> Datagram:
    size = len(raw)
    if size < HEADER.size:
        if bytes(raw[:4]) == MAGIC[:min(size, 4)]:
            raise DatagramError("truncated", f"{size} bytes, shorter than the "
                                f"{HEADER.size}-byte header", source)
        raise DatagramError("bad_magic", f"starts with {bytes(raw[:4]).hex()}", source)
    (magic, version, kind, flags, _, stream_id, seq, readout_seq, age_ms, ptype, count, total,
     _, key_id, length) = HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise DatagramError("bad_magic", f"starts with {magic.hex()}, not APXM", source)
    if version != VERSION:
        raise DatagramError("bad_version", f"version {version}, this receiver speaks "
                            f"{VERSION}", source)
    end = HEADER.size + length
    expected = end + MAC_SIZE if flags & Flag.AUTH else end
    if size < expected:
        raise DatagramError("truncated", f"{size} bytes, header declares {expected}", source)
    if size > expected:
        raise DatagramError("length_mismatch", f"{size} bytes, header declares {expected}",
                            source)
    if keys is not None:
        if not flags & Flag.AUTH:
            raise DatagramError("unauthenticated", "no HMAC, and this receiver has a key",
                                source)
        secret = keys.get(key_id)
        if secret is None:
            raise DatagramError("unknown_key", f"key id 0x{key_id:08x} is not ours", source)
        if not hmac.compare_digest(hmac.digest(secret, raw[:end], "sha256"),
                                   bytes(raw[end:expected])):
            raise DatagramError("bad_auth", "HMAC does not match (altered, or another key)",
                                source)
    if kind not in _KINDS:
        raise DatagramError("unknown_kind", f"kind {kind}", source)
    if ptype != payload_type:
        raise DatagramError("unknown_type", f"payload type {ptype}, expected {payload_type}",
                            source)
    payload = raw[HEADER.size:end]
    if kind == Kind.DATA:
        if count == 0 or length < count * _RH_SIZE or (
                check_payload and not check_data_payload(payload, count)):
            raise DatagramError("bad_payload", f"{length} payload bytes are not {count} "
                                "whole readouts", source)
        return Datagram(Kind.DATA, flags, stream_id, seq, readout_seq, age_ms, ptype, count,
                        total, key_id, payload)
    if kind == Kind.FRAGMENT:
        if total < 2 or count >= total or length == 0:
            raise DatagramError("bad_fragment", f"fragment {count} of {total} with {length} "
                                "bytes", source)
        return Datagram(Kind.FRAGMENT, flags, stream_id, seq, readout_seq, age_ms, ptype,
                        count, total, key_id, payload)
    if length < HEARTBEAT.size:
        raise DatagramError("bad_heartbeat", f"{length} payload bytes", source)
    last_seq, interval_ms = HEARTBEAT.unpack_from(payload)
    if last_seq < seq:
        raise DatagramError("bad_heartbeat", f"last sequence number {last_seq} before its own "
                            f"{seq}", source)
    header = None
    if length > HEARTBEAT.size:
        try:
            header = loads_bounded(bytes(payload[HEARTBEAT.size:]),
                                   max_depth=MAX_HEADER_DEPTH, max_size=MAX_HEADER_SIZE,
                                   finite=False)
        except JsonLimitError as exc:
            raise DatagramError("bad_heartbeat", f"run header: {exc}", source) from None
        if not isinstance(header, dict):
            raise DatagramError("bad_heartbeat", "run header is not a JSON object", source)
    return Datagram(Kind.HEARTBEAT, flags, stream_id, seq, readout_seq, age_ms, ptype, count,
                    total, key_id, payload, last_seq, interval_ms / 1000, header)


_KINDS = frozenset(int(k) for k in Kind)


def split_readouts(buf: bytes | memoryview) -> list[tuple[int, int]]:
    """(start, end) of each serialized readout standing back to back in ``buf``.

    Raises a :class:`~astropix_hil.errors.FormatError` naming the byte offset where the bytes
    stop being whole readouts.
    """
    if len(buf) >= _BULK_CHECK_BYTES:
        frames = frame_readouts(np.frombuffer(buf, dtype=np.uint8))
        if frames.consumed != len(buf):
            raise TruncatedError(f"the bytes end inside a readout ({len(buf) - frames.consumed}"
                                 " bytes of it)", offset=frames.consumed)
        return list(zip((frames.starts - _RH_SIZE).tolist(), frames.ends.tolist(),
                        strict=True))
    spans, offset = [], 0
    while offset < len(buf):
        _, end = parse_readout(buf, offset)
        spans.append((offset, end))
        offset = end
    return spans
