"""A receiver's state: validate datagrams, put streams back in order, reassemble fragments,
count what was lost, duplicated or late, hand out readout batches."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from ..errors import DatagramError
from ..fmt import ASTROPIX4_UID
from .datagram import (
    _RH_SIZE,
    _RH_UNPACK,
    JOIN_MARGIN,
    Datagram,
    Flag,
    Kind,
    _parse,
    check_data_payload,
    check_data_payloads,
)
from .keys import TransportKey, _keyring
from .stats import _COUNTERS, ReadoutBatch, ReceiverStats, StreamStats

_LOST_RANGES = 64


class _Stream:
    """Ordering and reassembly state of one framed stream."""

    __slots__ = ("broken", "contiguous", "end_seq", "end_since", "gap_since", "held", "key",
                 "last_heard", "lost_ranges", "next_readout", "next_seq", "partial",
                 "partial_since", "partial_size", "partial_total", "pending", "source",
                 "stats")

    def __init__(self, key: str, source: tuple, stats: StreamStats, next_seq: int,
                 next_readout: int, now: float) -> None:
        self.key = key
        self.source = source
        self.stats = stats
        self.next_seq = next_seq
        self.next_readout = next_readout
        self.pending: dict[int, tuple] = {}
        #: Payload bytes of the datagrams in ``pending``.
        self.held = 0
        self.gap_since = 0.0
        # Sequence ranges given up on, to tell a late datagram from a duplicate.
        self.lost_ranges: deque[tuple[int, int]] = deque(maxlen=_LOST_RANGES)
        if next_seq:
            self.lost_ranges.append((0, next_seq))
        self.partial: list[bytes] | None = None
        self.partial_total = 0
        self.partial_size = 0
        self.partial_since = 0.0
        self.broken = False
        self.end_seq: int | None = None
        self.end_since = 0.0
        self.last_heard = now
        self.contiguous = False

    def was_lost(self, seq: int) -> bool:
        return any(lo <= seq < hi for lo, hi in self.lost_ranges)


class _LegacyStream:
    """Accounting of one legacy sender: no sequence numbers, so readout ids stand in.

    Only the last :attr:`_MEMORY` ids are remembered, as one bit each, whatever the ids do.
    """

    __slots__ = ("first_id", "last_id", "missing", "stats")
    _MEMORY = 4096
    _MASK = (1 << _MEMORY) - 1

    def __init__(self, stats: StreamStats) -> None:
        self.stats = stats
        self.first_id = 0
        self.last_id: int | None = None
        #: Bit k set: readout id ``last_id - k`` has not come (k < _MEMORY; bit 0 never).
        self.missing = 0


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
                 max_stream_stats: int = 1024, max_held_bytes: int = 16 << 20) -> None:
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
        self.max_held_bytes = max_held_bytes
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
            if keys is None and d.flags & Flag.AUTH:
                stats.unverified += 1
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

    def awaiting_end(self) -> bool:
        """True while a stream has announced its end and not all of its datagrams are in (its
        last heartbeats travel right behind its last readouts)."""
        return any(st.end_seq is not None and st.next_seq <= st.end_seq
                   for st in self._streams.values())

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
            previous = self._hosts.pop(host, None)
            self._hosts[host] = key
            if len(self._hosts) > self.max_stream_stats:  # forget the longest-quiet host
                del self._hosts[next(iter(self._hosts))]
            st_stats = StreamStats(key, f"{source[0]}:{source[1]}", first_seq=d.seq,
                                   joined_late=late, restart_of=previous)
            if previous is not None:
                stats.restarts += 1
            stats.streams[key] = st_stats
        st = _Stream(key, source, st_stats, next_seq, next_readout, now)
        self._streams[d.stream_id] = st
        # Only now: the new stream is active, so its own statistics are never the ones retired.
        self._retire_stats()
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
            st.held += len(d.payload)
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
            st.held -= len(d.payload)
            st.next_seq += 1
            self._process(st, d, now)
        if pending:
            st.gap_since = min(t for _, t in pending.values())

    def _release(self, st: _Stream, now: float, force: bool) -> None:
        """Give up on gaps that are too old or hold too much behind them, and on readouts
        whose fragments stopped coming."""
        s = st.stats
        while st.pending and (force or len(st.pending) > self.reorder_window
                              or st.held > self.max_held_bytes
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
                self._too_large(st)
                return
            st.partial = [bytes(d.payload)]
            st.partial_total = d.total
            st.partial_size = len(d.payload)
            st.broken = False
        elif (st.partial is not None and len(st.partial) == d.count
              and st.partial_total == d.total):
            # Fragment 0 may announce a small readout and the others bring more: every one
            # counts against the limit.
            st.partial_size += len(d.payload)
            if st.partial_size > self.max_readout_size:
                self._too_large(st)
                if d.count == d.total - 1:
                    self._lose_partial(st)
                return
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

    def _too_large(self, st: _Stream) -> None:
        """The readout being reassembled exceeds ``max_readout_size``: drop what is held."""
        self.stats.malformed["too_large"] += 1
        st.partial = None
        st.partial_size = 0
        st.broken = True

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
        memory = _LegacyStream._MEMORY
        if last is None:
            lg.first_id = lg.last_id = s.last_seq = rid
        elif rid > last:
            shift = rid - last
            if shift > 1:
                gap = shift - 1
                s.readouts_lost += gap
                s.datagrams_lost += gap
            if shift >= memory:
                lg.missing = _LegacyStream._MASK ^ 1
            else:
                # Shift the window; the ids of the gap (bits 1 .. shift-1) have not come.
                lg.missing = ((lg.missing << shift) | ((1 << shift) - 2)) & _LegacyStream._MASK
            lg.last_id = s.last_seq = rid
        elif last - rid < memory and rid >= lg.first_id:
            bit = 1 << (last - rid)
            if not lg.missing & bit:
                s.duplicates += 1
                return
            lg.missing ^= bit
            s.readouts_lost -= 1
            s.datagrams_lost -= 1
            s.reordered += 1
        else:
            # Ids went back beyond what we remember: a new run from the same socket.
            lg.first_id = lg.last_id = rid
            lg.missing = 0
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
