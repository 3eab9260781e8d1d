"""A sender's state: batching, flush deadline, fragmentation, heartbeats, legacy datagrams."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from ..fmt import ASTROPIX4_UID
from ..jsontext import nesting_depth
from .datagram import (
    _RH_SIZE,
    DEFAULT_FLUSH_DELAY,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_DATAGRAM,
    END_HEARTBEATS,
    HEADER,
    HEARTBEAT,
    MAC_SIZE,
    MAX_HEADER_DEPTH,
    MAX_UDP_PAYLOAD,
    Flag,
    Kind,
    encode_datagram,
    heartbeat_payload,
    split_readouts,
)
from .keys import TransportKey

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
        if nesting_depth(text, MAX_HEADER_DEPTH) > MAX_HEADER_DEPTH:
            raise ValueError(f"run header is nested more than {MAX_HEADER_DEPTH} deep: "
                             "receivers would refuse it")
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
