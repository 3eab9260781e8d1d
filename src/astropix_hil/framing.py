"""The multicast datagram format, as pure functions and small state objects (no sockets).

Every datagram starts with a fixed 52-byte header (:data:`HEADER`, byte table in
``docs/transport.rst``): magic ``APXM``, version, kind, flags, a random 64-bit stream id per
sender start, a datagram sequence number and a readout sequence number. Three kinds:

* ``DATA``: one or more whole serialized readouts (:data:`~astropix_hil.fmt.READOUT_HEADER`
  and data, exactly the bytes of an ``.apx`` file body), batched up to a payload limit;
* ``FRAGMENT``: a slice of one serialized readout larger than the payload limit;
* ``HEARTBEAT``: the sender's last sequence number, its heartbeat interval and the run header
  (the ``.apx`` JSON header), sent periodically, also when idle, and at the end of a stream.

With a shared key every datagram ends with an HMAC-SHA256 over header and payload.

:class:`FrameEncoder` is a sender's state: batching, flush deadline, fragmentation, heartbeats.
:class:`FrameDecoder` is a receiver's state: it validates datagrams (counting malformed ones by
reason, never raising), puts each stream back in order with a bounded hold-back window,
reassembles fragments, counts lost, duplicated and late datagrams and readouts exactly, and
hands out :class:`ReadoutBatch` objects. Both take the time as an argument, so tests drive them
with a fake clock. Bare serialized readouts (the AstroPix tools' legacy datagrams) are accepted
beside framed ones. :mod:`astropix_hil.sock` wraps both around sockets.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from enum import IntEnum, IntFlag
from typing import Any, NamedTuple

import numpy as np

from .bulk import Frames, frame_readouts
from .errors import DatagramError, FormatError, KeyFileError, TruncatedError
from .fmt import ASTROPIX4_UID, READOUT_HEADER, READOUT_MAGIC, AstroPix4Readout, parse_readout

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
MIN_KEY_SIZE = 16
#: A stream counts as started after the receiver only if its age says so by this margin (s).
JOIN_MARGIN = 0.002
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
    "bad_heartbeat",  # heartbeat fields or run header JSON unreadable
    "bad_legacy",  # ``fe dc ba`` datagram that is not exactly one readout
)


# --------------------------------------------------------------------------------------------
# Keys


@dataclass(frozen=True)
class TransportKey:
    """A shared HMAC-SHA256 key and its 32-bit id (carried in each datagram header)."""

    secret: bytes
    key_id: int

    @classmethod
    def from_secret(cls, secret: bytes) -> TransportKey:
        """A key whose id is derived from the secret, so both ends agree without configuring it."""
        if len(secret) < MIN_KEY_SIZE:
            raise KeyFileError(f"a key must be at least {MIN_KEY_SIZE} bytes, got {len(secret)}")
        digest = hashlib.sha256(b"astropix-hil key id\0" + secret).digest()
        # 0 means "no key" in the header.
        return cls(bytes(secret), int.from_bytes(digest[:4], "little") or 1)

    def __repr__(self) -> str:  # never print the secret
        return f"TransportKey(key_id=0x{self.key_id:08x})"


def load_key(path: str | os.PathLike) -> TransportKey:
    """Read a shared key from a file: its bytes, leading and trailing whitespace removed
    (so ``openssl rand -hex 32 > KEY`` makes a good key file)."""
    try:
        with open(path, "rb") as stream:
            secret = stream.read().strip()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {os.fspath(path)}: {exc.strerror}") from None
    try:
        return TransportKey.from_secret(secret)
    except KeyFileError as exc:
        raise KeyFileError(f"{os.fspath(path)}: {exc}") from None


def _keyring(keys: TransportKey | Iterable[TransportKey] | None) -> dict[int, bytes] | None:
    if keys is None:
        return None
    if isinstance(keys, TransportKey):
        keys = [keys]
    ring = {key.key_id: key.secret for key in keys}
    return ring or None


# --------------------------------------------------------------------------------------------
# Single datagrams


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
            header = json.loads(bytes(payload[HEARTBEAT.size:]).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatagramError("bad_heartbeat", f"run header is not UTF-8 JSON: {exc}",
                                source) from None
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


# --------------------------------------------------------------------------------------------
# Sender state

_NOTHING: list[bytes] = []


class FrameEncoder:
    """A sender's stream: batches serialized readouts into datagrams, fragments large ones,
    and makes heartbeats. Pure: every method takes the time ``now`` (seconds, monotonic) and
    returns the datagrams to send, in order.

    A batch is sent when the next readout does not fit in ``max_datagram``, or at the latest
    ``flush_delay`` seconds after its first readout (:meth:`poll`). A heartbeat is due every
    ``heartbeat_interval`` seconds whatever the traffic; it first flushes the open batch, so
    the readout count it carries is that of readouts already sent.
    """

    def __init__(self, *, now: float, stream_id: int | None = None,
                 readout_uid: int = ASTROPIX4_UID, max_datagram: int = DEFAULT_MAX_DATAGRAM,
                 flush_delay: float = DEFAULT_FLUSH_DELAY,
                 heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
                 header: Mapping[str, Any] | None = None,
                 key: TransportKey | None = None) -> None:
        overhead = HEADER.size + (MAC_SIZE if key is not None else 0)
        if not overhead + _RH_SIZE <= max_datagram <= MAX_UDP_PAYLOAD:
            raise ValueError(f"max_datagram {max_datagram} must be in "
                             f"{overhead + _RH_SIZE}..{MAX_UDP_PAYLOAD}")
        if flush_delay < 0 or heartbeat_interval <= 0:
            raise ValueError("flush_delay must be >= 0 and heartbeat_interval > 0")
        self.stream_id = stream_id if stream_id is not None else \
            int.from_bytes(os.urandom(8), "little") or 1
        self.readout_uid = readout_uid
        self.max_datagram = max_datagram
        #: Most payload bytes per datagram.
        self.payload_limit = max_datagram - overhead
        self.flush_delay = flush_delay
        self.heartbeat_interval = heartbeat_interval
        self.key = key
        self.started = now
        #: Sequence number of the next datagram.
        self.seq = 0
        #: Sequence number of the next readout (= readouts handed to datagrams so far).
        self.readout_seq = 0
        self.ended = False
        self._header_json = b""
        self._parts: list[bytes] = []
        self._size = 0
        self._first = 0
        self._deadline: float | None = None
        # The first poll sends a heartbeat at once: a monitor learns the run header early.
        self._next_heartbeat = now
        if header is not None:
            self.set_header(header)

    def set_header(self, header: Mapping[str, Any] | None) -> None:
        """The run header heartbeats carry from now on (None: none)."""
        text = b"" if header is None else json.dumps(dict(header)).encode("utf-8")
        room = MAX_UDP_PAYLOAD - HEADER.size - HEARTBEAT.size - MAC_SIZE
        if len(text) > room:
            raise ValueError(f"run header is {len(text)} bytes of JSON, at most {room} fit "
                             "in a heartbeat")
        self._header_json = text

    def _age(self, now: float) -> int:
        return max(0, int((now - self.started) * 1000))

    def _datagram(self, kind: Kind, readout_seq: int, payload: bytes, now: float, count: int = 0,
                  total: int = 0, flags: int = 0) -> bytes:
        seq = self.seq
        self.seq = seq + 1
        return encode_datagram(kind, self.stream_id, seq, readout_seq, payload,
                               age_ms=self._age(now), count=count, total=total, flags=flags,
                               key=self.key, payload_type=self.readout_uid)

    def add(self, serialized: bytes, now: float) -> list[bytes]:
        """Queue one serialized readout (``readout.to_bytes()``); return datagrams now complete."""
        self._check_open()
        size = len(serialized)
        if size > self.payload_limit:
            out = self._emit(now) if self._parts else []
            out.extend(self._fragments(serialized, now))
            return out
        out = _NOTHING
        if self._size + size > self.payload_limit:
            out = self._emit(now)
        if not self._parts:
            self._first = self.readout_seq
            self._deadline = now + self.flush_delay
        self._parts.append(serialized)
        self._size += size
        self.readout_seq += 1
        if self._size + _RH_SIZE > self.payload_limit:  # nothing else can fit
            out = [*out, *self._emit(now)]
        return out

    def add_many(self, buf: bytes, now: float,
                 spans: list[tuple[int, int]] | None = None) -> list[bytes]:
        """Queue serialized readouts standing back to back in ``buf`` (e.g. an ``.apx`` body);
        raise :class:`~astropix_hil.errors.FormatError` if they are not whole readouts.

        ``spans`` are their (start, end) offsets if already known (:func:`split_readouts`).
        """
        self._check_open()
        if spans is None:
            spans = split_readouts(buf)
        out: list[bytes] = []
        limit = self.payload_limit
        view = memoryview(buf)
        i, n = 0, len(spans)
        ends = [end for _, end in spans]
        while i < n:
            start, end = spans[i]
            if end - start > limit:
                if self._parts:
                    out.extend(self._emit(now))
                out.extend(self._fragments(bytes(view[start:end]), now))
                i += 1
                continue
            room = limit - self._size
            # Readouts i..j-1 fit in the open batch (an oversized one never does).
            j = _bisect_right(ends, start + room, i, n)
            if j == i:
                out.extend(self._emit(now))
                continue
            if not self._parts:
                self._first = self.readout_seq
                self._deadline = now + self.flush_delay
            self._parts.append(bytes(view[start:ends[j - 1]]))
            self._size += ends[j - 1] - start
            self.readout_seq += j - i
            i = j
            if self._size + _RH_SIZE > limit:
                out.extend(self._emit(now))
        return out

    def _emit(self, now: float) -> list[bytes]:
        """The open batch as one DATA datagram."""
        if not self._parts:
            return []
        payload = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        count = self.readout_seq - self._first
        self._parts = []
        self._size = 0
        self._deadline = None
        return [self._datagram(Kind.DATA, self._first, payload, now, count=count)]

    def _fragments(self, serialized: bytes, now: float) -> list[bytes]:
        limit = self.payload_limit
        total = -(-len(serialized) // limit)
        if total > 0xFFFF:
            raise ValueError(f"a readout of {len(serialized)} bytes needs {total} fragments, "
                             "more than 65535")
        readout = self.readout_seq
        self.readout_seq += 1
        return [self._datagram(Kind.FRAGMENT, readout, serialized[i * limit:(i + 1) * limit],
                               now, count=i, total=total) for i in range(total)]

    def flush(self, now: float) -> list[bytes]:
        """Send the open batch now."""
        return self._emit(now)

    def heartbeat(self, now: float) -> list[bytes]:
        """The open batch (if any) and a heartbeat, now; the next heartbeat is due one
        interval later."""
        self._check_open()
        out = self._emit(now)
        payload = heartbeat_payload(self.seq, self.heartbeat_interval, self._header_json)
        out.append(self._datagram(Kind.HEARTBEAT, self.readout_seq, payload, now))
        self._next_heartbeat = now + self.heartbeat_interval
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`poll` has something to do next (None once the stream has ended)."""
        if self.ended:
            return None
        if self._deadline is not None and self._deadline < self._next_heartbeat:
            return self._deadline
        return self._next_heartbeat

    def poll(self, now: float) -> list[bytes]:
        """Datagrams due at ``now``: an expired batch, a heartbeat."""
        if self.ended:
            return []
        if now >= self._next_heartbeat:
            return self.heartbeat(now)
        if self._deadline is not None and now >= self._deadline:
            return self._emit(now)
        return []

    def close(self, now: float) -> list[bytes]:
        """End the stream: the open batch, then :data:`END_HEARTBEATS` heartbeats flagged END,
        each carrying the sequence number of the last one (any one of them arriving tells a
        receiver exactly how many datagrams the stream had)."""
        if self.ended:
            return []
        out = self._emit(now)
        last = self.seq + END_HEARTBEATS - 1
        payload = heartbeat_payload(last, self.heartbeat_interval, self._header_json)
        out.extend(self._datagram(Kind.HEARTBEAT, self.readout_seq, payload, now,
                                  flags=Flag.END) for _ in range(END_HEARTBEATS))
        self.ended = True
        return out

    def _check_open(self) -> None:
        if self.ended:
            raise ValueError("the stream has ended (close() was called)")


def _bisect_right(values: list[int], x: int, lo: int, hi: int) -> int:
    while lo < hi:
        mid = (lo + hi) // 2
        if x < values[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


def legacy_datagrams(buf: bytes, spans: list[tuple[int, int]] | None = None) -> list[bytes]:
    """Legacy mode: one bare serialized readout per datagram, as the AstroPix tools send."""
    if spans is None:
        spans = split_readouts(buf)
    view = memoryview(buf)
    return [bytes(view[start:end]) for start, end in spans]


# --------------------------------------------------------------------------------------------
# Receiver statistics


@dataclass
class StreamStats:
    """What a receiver knows about one stream (counters are since the stream was first seen).

    ``datagrams_lost`` counts sequence numbers that never arrived (including datagrams the
    sender failed to send); ``readouts_lost`` the readouts they held, counted exactly from the
    readout sequence numbers. A datagram is counted lost once the hold-back window gives up on
    it, or at :meth:`FrameDecoder.finish`.
    """

    stream: str
    source: str
    legacy: bool = False
    datagrams_received: int = 0
    datagrams_lost: int = 0
    readouts_received: int = 0
    readouts_lost: int = 0
    bytes_received: int = 0
    #: Datagrams dropped because one with the same sequence number was already received.
    duplicates: int = 0
    #: Datagrams that arrived before an earlier one and were held back and delivered in order.
    reordered: int = 0
    #: Datagrams that arrived after their place was given up (counted lost): dropped.
    late: int = 0
    #: Readouts whose fragments never all arrived (counted in readouts_lost too).
    fragments_incomplete: int = 0
    heartbeats: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    #: The receiver joined after the stream had started (earlier datagrams are not lost).
    joined_late: bool = False
    #: Stream id of the earlier stream from the same host this one replaced.
    restart_of: str | None = None
    #: An END heartbeat was received: the sender closed the stream.
    ended: bool = False
    run_header: dict | None = None


_COUNTERS = ("datagrams_received", "datagrams_lost", "readouts_received", "readouts_lost",
             "bytes_received", "duplicates", "reordered", "late", "fragments_incomplete",
             "heartbeats")


@dataclass
class ReceiverStats:
    """A receiver's counters: per stream, malformed datagrams by reason, and totals.

    :meth:`as_dict` gives plain JSON-serializable data.
    """

    #: Every datagram read from the socket, good or not.
    datagrams: int = 0
    malformed: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(MALFORMED_REASONS, 0))
    streams: dict[str, StreamStats] = field(default_factory=dict)
    #: Streams that appeared from a host that already had one (a sender restarted).
    restarts: int = 0
    #: Counters of streams dropped from :attr:`streams` to bound memory, summed.
    retired: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    #: The kernel's count of datagrams dropped at this socket (SO_RXQ_OVFL), if known.
    socket_drops: int | None = None
    #: The latest run header received in a heartbeat, and its stream.
    run_header: dict | None = None
    run_header_stream: str | None = None

    def totals(self) -> dict[str, int]:
        """Every per-stream counter summed over all streams."""
        total = dict(self.retired)
        for stream in self.streams.values():
            for name in _COUNTERS:
                total[name] += getattr(stream, name)
        total["malformed"] = sum(self.malformed.values())
        return total

    def as_dict(self) -> dict[str, Any]:
        """The statistics as plain dicts, lists and numbers."""
        return {
            "datagrams": self.datagrams,
            "totals": self.totals(),
            "malformed": dict(self.malformed),
            "restarts": self.restarts,
            "socket_drops": self.socket_drops,
            "run_header": self.run_header,
            "run_header_stream": self.run_header_stream,
            "streams": {key: {f.name: getattr(s, f.name) for f in fields(s)}
                        for key, s in self.streams.items()},
            "retired": dict(self.retired),
        }


@dataclass
class ReadoutBatch:
    """Consecutive readouts of one stream, as delivered by a receiver."""

    #: Stream key: the stream id in hex, or ``legacy/ADDRESS:PORT`` for legacy datagrams.
    stream: str
    source: tuple
    #: The serialized readouts back to back (as in an ``.apx`` body).
    data: bytes
    count: int
    #: Readout sequence number of the first readout (legacy: its readout_id).
    first_readout: int
    #: The first readout directly follows the last one delivered from this stream (so the
    #: previous readout's extra bytes may be joined with it).
    contiguous: bool

    def frames(self) -> Frames:
        """Where each readout is in :attr:`data` (numpy arrays, see
        :func:`astropix_hil.bulk.frame_readouts`)."""
        return frame_readouts(np.frombuffer(self.data, dtype=np.uint8))

    def readouts(self, readout_class: type[AstroPix4Readout] = AstroPix4Readout) -> list:
        """The readouts as objects."""
        out, offset = [], 0
        while offset < len(self.data):
            readout, offset = parse_readout(self.data, offset)
            if readout_class is not AstroPix4Readout:
                readout = readout_class._parsed(readout.data(), readout.readout_id,
                                                readout.timestamp)
            out.append(readout)
        return out


# --------------------------------------------------------------------------------------------
# Receiver state

_LOST_RANGES = 64


class _Stream:
    """Ordering and reassembly state of one framed stream."""

    __slots__ = ("broken", "contiguous", "end_seq", "end_since", "gap_since", "key",
                 "last_heard", "lost_ranges", "next_readout", "next_seq", "partial",
                 "partial_since", "partial_total", "pending", "source", "stats")

    def __init__(self, key: str, source: tuple, stats: StreamStats, next_seq: int,
                 next_readout: int, now: float) -> None:
        self.key = key
        self.source = source
        self.stats = stats
        self.next_seq = next_seq
        self.next_readout = next_readout
        self.pending: dict[int, tuple] = {}
        self.gap_since = 0.0
        # Sequence ranges given up on, to tell a late datagram from a duplicate.
        self.lost_ranges: deque[tuple[int, int]] = deque(maxlen=_LOST_RANGES)
        if next_seq:
            self.lost_ranges.append((0, next_seq))
        self.partial: list[bytes] | None = None
        self.partial_total = 0
        self.partial_since = 0.0
        self.broken = False
        self.end_seq: int | None = None
        self.end_since = 0.0
        self.last_heard = now
        self.contiguous = False

    def was_lost(self, seq: int) -> bool:
        return any(lo <= seq < hi for lo, hi in self.lost_ranges)


class _LegacyStream:
    """Accounting of one legacy sender: no sequence numbers, so readout ids stand in."""

    __slots__ = ("last_id", "missing", "seen", "stats")
    _MEMORY = 4096

    def __init__(self, stats: StreamStats) -> None:
        self.stats = stats
        self.last_id: int | None = None
        self.missing: set[int] = set()
        self.seen: deque[int] = deque(maxlen=self._MEMORY)


class FrameDecoder:
    """A receiver's state: feed it datagrams, take :class:`ReadoutBatch` objects out.

    Policy for each stream: datagrams are delivered in sequence order. One that arrives after
    a gap is held back until the gap fills (counted ``reordered``), or until
    ``reorder_window`` datagrams are held or the gap is ``reorder_timeout`` seconds old: then
    the missing ones are counted lost, and one arriving later still is dropped as ``late``.
    A readout whose fragments are not all there when its successor arrives, or
    ``fragment_timeout`` seconds after its first fragment, is lost (``fragments_incomplete``).

    A stream first seen while its age (carried in each header) shows that it started after the
    decoder did is accounted from sequence number 0; otherwise the decoder joined late and
    counts from the first datagram it sees. Malformed datagrams are counted by reason
    (:data:`MALFORMED_REASONS`) and skipped; nothing here raises on any bytes.
    """

    def __init__(self, *, now: float, readout_uid: int = ASTROPIX4_UID,
                 keys: TransportKey | Iterable[TransportKey] | None = None,
                 allow: Iterable[str] | None = None, reorder_window: int = 1024,
                 reorder_timeout: float = 0.05, fragment_timeout: float = 1.0,
                 max_readout_size: int = 16 << 20, max_streams: int = 16,
                 max_stream_stats: int = 1024) -> None:
        if reorder_window < 1 or max_streams < 1:
            raise ValueError("reorder_window and max_streams must be at least 1")
        self.readout_uid = readout_uid
        self.keys = _keyring(keys)
        self.allow = frozenset(allow) if allow is not None else None
        self.reorder_window = reorder_window
        self.reorder_timeout = reorder_timeout
        self.fragment_timeout = fragment_timeout
        self.max_readout_size = max_readout_size
        self.max_streams = max_streams
        self.max_stream_stats = max_stream_stats
        self.started = now
        self.stats = ReceiverStats()
        self._streams: dict[int, _Stream] = {}
        self._legacy: dict[tuple, _LegacyStream] = {}
        self._hosts: dict[str, str] = {}  # host -> key of its latest framed stream
        self._out: list[list] = []  # deliveries not yet sealed into batches
        #: Batches ready to be taken, oldest first.
        self.batches: deque[ReadoutBatch] = deque()

    # -- input ---------------------------------------------------------------------------

    def feed(self, datagram: bytes | memoryview, source: tuple, now: float) -> None:
        """Take one datagram that came from ``source`` (address, port)."""
        self.feed_many([(datagram, source)], now)

    def feed_many(self, datagrams: Iterable[tuple[bytes | memoryview, tuple]],
                  now: float) -> None:
        """Take datagrams in arrival order. They may be views into a buffer the caller reuses
        afterwards: whatever is kept is copied."""
        stats = self.stats
        malformed = stats.malformed
        keys, uid, allow = self.keys, self.readout_uid, self.allow
        items: list = []
        data_items: list[int] = []
        for raw, source in datagrams:
            stats.datagrams += 1
            if allow is not None and source[0] not in allow:
                malformed["unexpected_source"] += 1
                continue
            if len(raw) >= 3 and raw[0] == 0xFE and raw[1] == 0xDC and raw[2] == 0xBA:
                if keys is not None:
                    malformed["unauthenticated"] += 1
                elif self._legacy_ok(raw):
                    items.append((None, bytes(raw), source))
                continue
            try:
                d = _parse(raw, keys, uid, source, False)
            except DatagramError as exc:
                malformed[exc.reason] += 1
                continue
            if d.kind == Kind.DATA:
                data_items.append(len(items))
            items.append((d, None, source))
        if data_items:
            self._check_payloads(items, data_items)
        for d, raw, source in items:
            if d is None:
                if raw is not None:
                    self._legacy_datagram(raw, source)
            else:
                self._datagram(d, source, now)
        self._seal()

    def _check_payloads(self, items: list, data_items: list[int]) -> None:
        payloads = [items[i][0].payload for i in data_items]
        buf = b"".join(payloads)
        offsets, offset = [], 0
        for p in payloads:
            offsets.append(offset)
            offset += len(p)
        good = check_data_payloads(buf, offsets, [items[i][0].count for i in data_items])
        view = memoryview(buf)
        for i, ok, lo, p in zip(data_items, good, offsets, payloads, strict=True):
            if ok:
                # Keep a slice of the joined copy: the caller's buffer is reused.
                items[i] = (items[i][0]._replace(payload=view[lo:lo + len(p)]), None,
                            items[i][2])
            else:
                self.stats.malformed["bad_payload"] += 1
                items[i] = (None, None, items[i][2])

    def poll(self, now: float) -> None:
        """Apply the timeouts due at ``now`` (gaps given up, incomplete fragments expired)."""
        for st in list(self._streams.values()):
            self._release(st, now, False)
        self._seal()

    def finish(self, now: float) -> None:
        """The end of reception: every gap still open is lost, and so is every readout still
        being reassembled."""
        for st in list(self._streams.values()):
            self._finish_stream(st, now)
        self._seal()

    def next_deadline(self) -> float | None:
        """When :meth:`poll` has something to do next, if ever."""
        deadline = None
        for st in self._streams.values():
            for when in (st.gap_since + self.reorder_timeout if st.pending else None,
                         st.end_since + self.reorder_timeout
                         if st.end_seq is not None and st.next_seq <= st.end_seq else None,
                         st.partial_since + self.fragment_timeout
                         if st.partial is not None or st.broken else None):
                if when is not None and (deadline is None or when < deadline):
                    deadline = when
        return deadline

    def take(self) -> list[ReadoutBatch]:
        """All batches ready, oldest first."""
        out = list(self.batches)
        self.batches.clear()
        return out

    # -- framed streams ------------------------------------------------------------------

    def _stream(self, d: Datagram, source: tuple, now: float) -> _Stream:
        key = f"{d.stream_id:016x}"
        stats = self.stats
        started_at = now - d.age_ms / 1000
        # The age is truncated to ms and transit time unknown: a stream must have started
        # clearly after us to be accounted from its first datagram.
        if started_at >= self.started + JOIN_MARGIN:
            next_seq, next_readout, late = 0, 0, False
        else:
            # Joined late: account from here. A fragment's readout is already incomplete.
            next_seq = d.seq
            late = True
            next_readout = d.readout_seq + (1 if d.kind == Kind.FRAGMENT and d.count else 0)
        if len(self._streams) >= self.max_streams:
            oldest = min(self._streams.values(), key=lambda s: s.last_heard)
            self._finish_stream(oldest, now)
            del self._streams[int(oldest.key, 16)]
        st_stats = stats.streams.get(key)
        if st_stats is not None:
            # Evicted for lack of room and heard again: carry on, as a late joiner.
            next_seq = d.seq
            next_readout = d.readout_seq + (1 if d.kind == Kind.FRAGMENT and d.count else 0)
        else:
            host = source[0]
            previous = self._hosts.get(host)
            self._hosts[host] = key
            st_stats = StreamStats(key, f"{source[0]}:{source[1]}", first_seq=d.seq,
                                   joined_late=late, restart_of=previous)
            if previous is not None:
                stats.restarts += 1
            stats.streams[key] = st_stats
            self._retire_stats()
        st = _Stream(key, source, st_stats, next_seq, next_readout, now)
        self._streams[d.stream_id] = st
        return st

    def _retire_stats(self) -> None:
        streams = self.stats.streams
        while len(streams) > self.max_stream_stats:
            for key in streams:
                if key.startswith("legacy/") or int(key, 16) not in self._streams:
                    old = streams.pop(key)
                    for name in _COUNTERS:
                        self.stats.retired[name] += getattr(old, name)
                    self._legacy.pop(_legacy_source(key), None)
                    break
            else:
                return

    def _datagram(self, d: Datagram, source: tuple, now: float) -> None:
        st = self._streams.get(d.stream_id)
        if st is None:
            st = self._stream(d, source, now)
        s = st.stats
        s.datagrams_received += 1
        s.bytes_received += len(d.payload)
        st.last_heard = now
        seq = d.seq
        # Arrived after a datagram that comes later in the stream.
        out_of_order = s.last_seq is not None and seq < s.last_seq
        if s.last_seq is None or seq > s.last_seq:
            s.last_seq = seq
        if seq == st.next_seq and not st.pending:
            st.next_seq = seq + 1
            self._process(st, d, now)
        elif seq >= st.next_seq:
            if seq in st.pending:
                s.duplicates += 1
                return
            if out_of_order:
                s.reordered += 1
            if d.kind == Kind.HEARTBEAT and d.header is not None:
                self._header(st, d.header)  # a late joiner wants it at once
            st.pending[seq] = (_own(d), now)
            if len(st.pending) == 1:
                st.gap_since = now
            self._drain(st, now)
            self._release(st, now, False)
        elif st.was_lost(seq):
            s.late += 1
        else:
            s.duplicates += 1

    def _drain(self, st: _Stream, now: float) -> None:
        """Process held datagrams that are next in sequence."""
        pending = st.pending
        while st.next_seq in pending:
            d, _ = pending.pop(st.next_seq)
            st.next_seq += 1
            self._process(st, d, now)
        if pending:
            st.gap_since = min(t for _, t in pending.values())

    def _release(self, st: _Stream, now: float, force: bool) -> None:
        """Give up on gaps that are too old or hold too much behind them, and on readouts
        whose fragments stopped coming."""
        s = st.stats
        while st.pending and (force or len(st.pending) > self.reorder_window
                              or now - st.gap_since >= self.reorder_timeout):
            first = min(st.pending)
            s.datagrams_lost += first - st.next_seq
            st.lost_ranges.append((st.next_seq, first))
            st.next_seq = first
            self._drain(st, now)
        if st.end_seq is not None and st.next_seq <= st.end_seq and not st.pending and (
                force or now - st.end_since >= self.reorder_timeout):
            s.datagrams_lost += st.end_seq + 1 - st.next_seq
            st.lost_ranges.append((st.next_seq, st.end_seq + 1))
            st.next_seq = st.end_seq + 1
        if (st.partial is not None or st.broken) and (
                force or now - st.partial_since >= self.fragment_timeout):
            self._lose_partial(st)

    def _finish_stream(self, st: _Stream, now: float) -> None:
        self._release(st, now, True)

    def _process(self, st: _Stream, d: Datagram, now: float) -> None:
        """One datagram of the stream, in sequence order."""
        s = st.stats
        kind = d.kind
        if kind == Kind.DATA:
            first = d.readout_seq
            if first > st.next_readout:
                self._skip_to(st, first)
            self._deliver(st, d.payload, d.count, first)
            # A sender whose readout numbers go backwards is inconsistent: deliver what it
            # sends and follow its numbering.
            st.next_readout = first + d.count
        elif kind == Kind.FRAGMENT:
            self._fragment(st, d, now)
        else:
            s.heartbeats += 1
            if d.header is not None:
                self._header(st, d.header)
            if d.readout_seq > st.next_readout:
                self._skip_to(st, d.readout_seq)
            if d.flags & Flag.END:
                s.ended = True
                if st.end_seq is None:
                    st.end_seq = d.last_seq
                    st.end_since = now

    def _skip_to(self, st: _Stream, readout_seq: int) -> None:
        """Readouts from the next expected one up to ``readout_seq`` never came: lost."""
        if st.partial is not None or st.broken:
            # The readout being reassembled is the first of the lost ones.
            st.stats.fragments_incomplete += 1
            st.partial = None
            st.broken = False
        st.stats.readouts_lost += readout_seq - st.next_readout
        st.next_readout = readout_seq
        st.contiguous = False

    def _lose_partial(self, st: _Stream) -> None:
        """The readout being reassembled will never be complete."""
        st.stats.fragments_incomplete += 1
        st.stats.readouts_lost += 1
        st.next_readout += 1
        st.partial = None
        st.broken = False
        st.contiguous = False

    def _fragment(self, st: _Stream, d: Datagram, now: float) -> None:
        readout = d.readout_seq
        if readout < st.next_readout:
            return  # the rest of a readout already given up on
        if readout > st.next_readout:
            self._skip_to(st, readout)
        if d.count == 0:
            st.partial_since = now
            if (d.total - 1) * len(d.payload) > self.max_readout_size:
                self.stats.malformed["too_large"] += 1
                st.partial = None
                st.broken = True
                return
            st.partial = [bytes(d.payload)]
            st.partial_total = d.total
            st.broken = False
        elif (st.partial is not None and len(st.partial) == d.count
              and st.partial_total == d.total):
            st.partial.append(bytes(d.payload))
        else:
            # A fragment before this one is missing.
            if st.partial is None and not st.broken:
                st.partial_since = now
            st.partial = None
            st.broken = True
        if st.partial is not None and len(st.partial) == st.partial_total:
            data = b"".join(st.partial)
            st.partial = None
            if check_data_payload(data, 1):
                self._deliver(st, data, 1, readout)
            else:
                self.stats.malformed["bad_fragment"] += 1
                st.stats.readouts_lost += 1
                st.contiguous = False
            st.next_readout = readout + 1
        elif st.broken and d.count == d.total - 1:
            self._lose_partial(st)

    def _header(self, st: _Stream, header: dict) -> None:
        st.stats.run_header = header
        self.stats.run_header = header
        self.stats.run_header_stream = st.key

    def _deliver(self, st: _Stream, payload: bytes | memoryview, count: int,
                 first: int) -> None:
        st.stats.readouts_received += count
        out = self._out
        if out and out[-1][0] is st and st.contiguous:
            entry = out[-1]
            entry[2].append(payload)
            entry[3] += count
        else:
            out.append([st, st.source, [payload], count, first, st.contiguous])
        st.contiguous = True

    def _seal(self) -> None:
        for st, source, parts, count, first, contiguous in self._out:
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            self.batches.append(ReadoutBatch(st.key if isinstance(st, _Stream) else st,
                                             source, bytes(data), count, first, contiguous))
        self._out = []

    # -- legacy datagrams ----------------------------------------------------------------

    def _legacy_ok(self, raw: bytes | memoryview) -> bool:
        if len(raw) < _RH_SIZE or _RH_SIZE + _RH_UNPACK(raw, 0)[3] != len(raw):
            self.stats.malformed["bad_legacy"] += 1
            return False
        return True

    def _legacy_datagram(self, raw: bytes, source: tuple) -> None:
        lg = self._legacy.get(source)
        if lg is None:
            key = f"legacy/{source[0]}:{source[1]}"
            stats = StreamStats(key, f"{source[0]}:{source[1]}", legacy=True)
            self.stats.streams[key] = stats
            lg = self._legacy[source] = _LegacyStream(stats)
            self._retire_stats()
        s = lg.stats
        s.datagrams_received += 1
        s.bytes_received += len(raw)
        rid = _RH_UNPACK(raw, 0)[1]
        if s.first_seq is None:
            s.first_seq = rid
        last = lg.last_id
        contiguous = last is not None and rid == last + 1
        if last is None or rid > last:
            if last is not None and rid > last + 1:
                gap = rid - last - 1
                s.readouts_lost += gap
                s.datagrams_lost += gap
                if gap <= _LegacyStream._MEMORY:
                    lg.missing.update(range(last + 1, rid))
            lg.last_id = rid
            s.last_seq = rid
        elif rid in lg.missing:
            lg.missing.discard(rid)
            s.readouts_lost -= 1
            s.datagrams_lost -= 1
            s.reordered += 1
        elif rid == last or rid in lg.seen:
            s.duplicates += 1
            return
        else:
            # Ids went back beyond what we remember: a new run from the same socket.
            lg.last_id = rid
            lg.missing.clear()
        lg.seen.append(rid)
        s.readouts_received += 1
        key = s.stream
        out = self._out
        if out and out[-1][0] == key and contiguous:
            out[-1][2].append(raw)
            out[-1][3] += 1
        else:
            out.append([key, source, [raw], 1, rid, contiguous])


def _own(d: Datagram) -> Datagram:
    """A copy of ``d`` whose payload no longer refers to a reused buffer."""
    return d if isinstance(d.payload, bytes) else d._replace(payload=bytes(d.payload))


def _legacy_source(key: str) -> tuple:
    host, _, port = key[len("legacy/"):].rpartition(":")
    return (host, int(port)) if port.isdigit() else (host, 0)


__all__ = [
    "DEFAULT_FLUSH_DELAY",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_MAX_DATAGRAM",
    "END_HEARTBEATS",
    "HEADER",
    "HEARTBEAT",
    "JOIN_MARGIN",
    "MAC_SIZE",
    "MAGIC",
    "MALFORMED_REASONS",
    "VERSION",
    "Datagram",
    "Flag",
    "FrameDecoder",
    "FrameEncoder",
    "Kind",
    "ReadoutBatch",
    "ReceiverStats",
    "StreamStats",
    "TransportKey",
    "check_data_payload",
    "check_data_payloads",
    "encode_datagram",
    "heartbeat_payload",
    "is_legacy",
    "legacy_datagrams",
    "load_key",
    "parse_datagram",
    "split_readouts",
]
