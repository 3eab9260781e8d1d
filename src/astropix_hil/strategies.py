"""Hypothesis strategies for AstroPix4 data, for our tests and for users testing their own code.

Like ``hypothesis.extra.numpy``, this is a public module: build readouts, hit fields and
well-formed readout streams with known contents, and feed them to a decoder or monitor under
test. Needs ``hypothesis`` (the ``test`` extra).

Example::

    from hypothesis import given
    from astropix_hil import strategies as apx

    @given(apx.well_formed_streams())
    def test_my_decoder(stream):
        assert my_decode(stream.readouts) == stream.words
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

from hypothesis import strategies as st

from .fmt import (
    HIT_FIELDS,
    HIT_SIZE,
    IDLE_BYTE,
    PADDING_BYTE,
    AstroPix4Readout,
    encode_hit,
)

#: Bytes that matter to the decoder, to bias arbitrary buffers toward interesting cases.
FORMAT_BYTES = (IDLE_BYTE, PADDING_BYTE, 0xE0, 0xE7, 0xFE, 0xBD, 0x00, 0x7F)


def hit_fields(real: bool = True) -> st.SearchStrategy[dict[str, int]]:
    """Raw hit fields (:data:`~astropix_hil.fmt.HIT_FIELDS`, timestamps Gray-coded).

    With ``real`` the hit is one a chip sends: payload 7 and chip_id below 31, so its first
    wire byte is a start byte. Otherwise every field takes any value of its width.
    """
    fields = {name: st.integers(0, (1 << width) - 1) for name, width in HIT_FIELDS}
    if real:
        fields["payload"] = st.just(7)
        fields["chip_id"] = st.integers(0, 30)
    return st.fixed_dictionaries(fields)


def hit_words(real: bool = True) -> st.SearchStrategy[bytes]:
    """8-byte wire words of hits (see :func:`hit_fields`)."""
    return hit_fields(real).map(lambda fields: encode_hit(**fields))


def readout_bytes(max_size: int = 256) -> st.SearchStrategy[bytes]:
    """Arbitrary readout data, biased toward idle, padding and start bytes."""
    byte = st.one_of(st.sampled_from(FORMAT_BYTES), st.integers(0, 255))
    return st.lists(byte, max_size=max_size).map(bytes)


def readouts(data: st.SearchStrategy[bytes] | None = None) -> st.SearchStrategy[AstroPix4Readout]:
    """Readout objects with arbitrary ids, timestamps and (by default) :func:`readout_bytes`."""
    return st.builds(AstroPix4Readout, data if data is not None else readout_bytes(),
                     st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))


def idle_runs(min_size: int = 0, max_size: int = 8,
              padding: bool = True) -> st.SearchStrategy[bytes]:
    """A run of idle bytes, with ``0xff`` padding bytes interleaved when ``padding``.

    A run never starts with ``0xff``: right after a hit, a padding byte would be read as the end
    of the data if the readout stopped there.
    """
    byte = st.sampled_from((IDLE_BYTE, PADDING_BYTE)) if padding else st.just(IDLE_BYTE)
    return st.lists(byte, min_size=min_size, max_size=max_size).map(bytes).map(
        lambda run: run if not run or run[0] == IDLE_BYTE else bytes([IDLE_BYTE]) + run)


@dataclass(frozen=True)
class Stream:
    """Readouts with the hit words placed in them, in order."""

    readouts: list[AstroPix4Readout]
    #: Hit words per readout, in the order they were placed.
    words: list[list[bytes]]


@st.composite
def well_formed_readout_data(draw: st.DrawFn, max_hits: int = 6,
                             padding: bool = True) -> tuple[bytes, list[bytes]]:
    """Data of one well-formed readout and the hit words in it.

    Idle bytes before the first hit (possibly none), any number of idle bytes between hits
    (none: back to back), at least one after the last, ``0xff`` runs interleaved with the idle
    bytes when ``padding``, and trailing padding.
    """
    words = draw(st.lists(hit_words(), max_size=max_hits))
    parts = [draw(idle_runs(0, 4, padding=False))]
    for i, word in enumerate(words):
        parts.append(word)
        last = i == len(words) - 1
        parts.append(draw(idle_runs(1 if last else 0, 8, padding)))
    parts.append(bytes([PADDING_BYTE]) * draw(st.integers(0, 16)))
    return b"".join(parts), words


@st.composite
def well_formed_streams(draw: st.DrawFn, max_readouts: int = 6, max_hits: int = 6,
                        padding: bool = True) -> Stream:
    """Consecutive well-formed readouts (ids from 0) and the hit words placed in each."""
    readouts, words = [], []
    for readout_id in range(draw(st.integers(0, max_readouts))):
        data, placed = draw(well_formed_readout_data(max_hits=max_hits, padding=padding))
        readouts.append(AstroPix4Readout(data, readout_id, 1_700_000_000_000_000_000 + readout_id))
        words.append(placed)
    return Stream(readouts, words)


__all__ = [
    "FORMAT_BYTES",
    "HIT_SIZE",
    "Stream",
    "hit_fields",
    "hit_words",
    "idle_runs",
    "readout_bytes",
    "readouts",
    "well_formed_readout_data",
    "well_formed_streams",
]


@dataclass(frozen=True)
class Schedule:
    """What a lossy network does to ``n`` datagrams sent in order: the order in which copies
    arrive (indices into the sent list; a repeated index is a duplicate), and those that never
    arrive."""

    n: int
    #: Indices of the datagrams in arrival order.
    arrivals: list[int]
    #: Indices that never arrive.
    dropped: frozenset[int]

    def apply(self, datagrams: list) -> list:
        """The datagrams as they arrive."""
        return [datagrams[i] for i in self.arrivals]


@st.composite
def datagram_schedules(draw: st.DrawFn, n: int, max_displacement: int = 8,
                       drop: bool = True, duplicate: bool = True,
                       keep: tuple[int, ...] = ()) -> Schedule:
    """A :class:`Schedule` for ``n`` datagrams: each is delivered, dropped or duplicated, and
    every copy arrives at most ``max_displacement`` places away from where it was sent (0: no
    reordering). Datagrams in ``keep`` (negative indices count from the end) are delivered
    once, in place relative to each other.
    """
    kept = {i % n for i in keep} if n else set()
    fates = ["deliver"] + (["drop"] if drop else []) + (["duplicate"] if duplicate else [])
    slots: list[tuple[float, int]] = []
    dropped = set()
    for i in range(n):
        fate = "deliver" if i in kept else draw(st.sampled_from(fates))
        if fate == "drop":
            dropped.add(i)
            continue
        copies = 2 if fate == "duplicate" else 1
        for copy in range(copies):
            shift = 0 if i in kept else draw(st.integers(0, max_displacement))
            slots.append((i + shift + copy * 0.5, i))
    slots.sort(key=lambda slot: slot[0])
    return Schedule(n, [i for _, i in slots], frozenset(dropped))


__all__ += ["Schedule", "datagram_schedules"]


# -- emulator configurations (the chip emulator's inputs) -------------------------------------

def anomaly_mixes(forced: bool = True) -> st.SearchStrategy:
    """:class:`~astropix_hil.emulator.Anomalies`: each kind off, at a random probability, or
    (with ``forced``) on for every hit that can carry it."""
    from .emulator import ANOMALY_KINDS, Anomalies

    choices = [st.just(0.0), st.floats(0.0, 1.0)] + ([st.just(1.0)] if forced else [])
    p = st.one_of(*choices)
    return st.fixed_dictionaries(dict.fromkeys(ANOMALY_KINDS, p)).map(
        lambda values: Anomalies(**values))


#: TDC values that make wire byte 4 (ts_tdc1) or byte 7 (ts_tdc2) an idle (0xbc) or padding
#: (0xff) byte for some timestamps: the layouts where the decoder's skipping rules matter.
_TDC1_EDGES = (0, 26, 27, 30, 31)
_TDC2_EDGES = (0, 29, 31)


@st.composite
def emulator_configs(draw: st.DrawFn, max_chips: int = 3,
                     read_sizes: tuple[int, ...] = (32, 48, 100, 256, 2048)) -> object:
    """:class:`~astropix_hil.emulator.EmulatorConfig` of any mode, rate, chain, read size and
    anomaly mix, with small batches so that a few readouts cross several of them."""
    from .emulator import EmulatorConfig

    mode = draw(st.sampled_from(("poisson", "injection")))
    rate = draw(st.sampled_from((50.0, 1e3, 1e5, 2e6)))
    ids = draw(st.lists(st.integers(0, 30), min_size=1, max_size=max_chips, unique=True))
    return EmulatorConfig.build(
        mode=mode, rate=rate, chip_ids=ids, anomalies=draw(anomaly_mixes()),
        read_size=draw(st.sampled_from(read_sizes)),
        poll_interval_ns=draw(st.sampled_from((10_000, 1_000_000, 50_000_000))),
        chunk_hits=draw(st.integers(1, 400)),
        ts_tdc1=draw(st.one_of(st.sampled_from(_TDC1_EDGES), st.integers(0, 31))),
        ts_tdc2=draw(st.one_of(st.sampled_from(_TDC2_EDGES), st.integers(0, 31))),
        ts_neg1=draw(st.sampled_from((None, 0, 1))), ts_neg2=draw(st.sampled_from((None, 0, 1))),
        rows=draw(st.integers(1, 32)), cols=draw(st.integers(1, 32)),
        pixel=(0, 0) if mode == "injection" else None)


__all__ += ["anomaly_mixes", "emulator_configs"]


# -- datagrams: structurally valid, then mutated ----------------------------------------------

#: (offset, struct format) of each header field a mutation may rewrite (see
#: :data:`astropix_hil.framing.HEADER`).
HEADER_FIELDS: dict[str, tuple[int, str]] = {
    "version": (4, "<B"), "kind": (5, "<B"), "flags": (6, "<B"), "stream_id": (8, "<Q"),
    "seq": (16, "<Q"), "readout_seq": (24, "<Q"), "age_ms": (32, "<I"),
    "payload_type": (36, "<H"), "count": (38, "<H"), "total": (40, "<H"),
    "key_id": (44, "<I"), "length": (48, "<I"),
}

#: Run headers no receiver should parse: nested too deep, NaN, not an object, not UTF-8.
HOSTILE_HEADERS = (b"[" * 2000 + b"]" * 2000, b'{"a":' * 5000, b'{"t": NaN}', b"[1, 2]",
                   b"\xff\xfe{}", b'{"a": 1', b"null", b'"' + b"\\" * 1001)


@dataclass(frozen=True)
class DatagramCase:
    """Datagrams as a receiver might get them from senders that are buggy or hostile.

    They were built structurally valid (right magic, version, lengths and kinds: streams of
    ``DATA``, ``FRAGMENT`` and ``HEARTBEAT`` datagrams with consecutive sequence numbers, and
    legacy datagrams), then some were mutated, duplicated, dropped or reordered.
    """

    datagrams: list[bytes]
    #: Every serialized readout the datagrams were built to carry.
    readouts: frozenset[bytes]
    #: What was done to each datagram, in order ("" for nothing): for events and debugging.
    mutations: list[str]
    #: Mutated datagrams were signed again (a hostile sender holding the key).
    resigned: bool = False


def _set_field(raw: bytearray, name: str, value: int) -> None:
    offset, fmt = HEADER_FIELDS[name]
    size = struct.calcsize(fmt)
    struct.pack_into(fmt, raw, offset, value & ((1 << (8 * size)) - 1))


def _field(raw: bytes, name: str) -> int:
    offset, fmt = HEADER_FIELDS[name]
    return struct.unpack_from(fmt, raw, offset)[0]


@st.composite
def _mutation(draw: st.DrawFn, raw: bytes) -> tuple[bytes, str]:
    """One structural mutation of a framed datagram ``raw``."""
    from .framing import HEADER, HEARTBEAT, Kind

    out = bytearray(raw)
    what = draw(st.sampled_from(("field", "field", "field", "truncate", "extend", "payload",
                                 "header_json", "fragment", "kind")))
    if what == "kind":
        # The fields that say what a datagram is: kind, payload type, version.
        name, value = draw(st.sampled_from(
            [("kind", k) for k in (0, 4, 255, Kind.DATA, Kind.FRAGMENT, Kind.HEARTBEAT)]
            + [("payload_type", t) for t in (0, 4001, 0xFFFF)] + [("version", 2)]))
        _set_field(out, name, value)
        return bytes(out), f"{name}={value}"
    if what == "fragment" and raw[5] == Kind.FRAGMENT:
        # An index at or past the count, too few fragments, or a count that grows.
        name, value = draw(st.sampled_from((
            ("count", _field(raw, "total")), ("total", 1), ("total", 0),
            ("total", _field(raw, "total") + 1), ("total", 0xFFFF))))
        _set_field(out, name, value)
        return bytes(out), f"{name}={value}"
    if what == "field":
        name = draw(st.sampled_from(sorted(HEADER_FIELDS)))
        current = _field(raw, name)
        width = 8 * struct.calcsize(HEADER_FIELDS[name][1])
        value = draw(st.one_of(
            st.sampled_from((0, 1, 2, 3, 4, (1 << width) - 1, (1 << (width - 1)))),
            st.integers(current - 3, current + 3), st.integers(0, (1 << width) - 1)))
        _set_field(out, name, value)
        return bytes(out), f"{name}={value & ((1 << width) - 1)}"
    if what == "truncate":
        cut = draw(st.integers(0, len(raw) - 1))
        return bytes(out[:cut]), f"truncate@{cut}"
    if what == "extend":
        return bytes(out) + draw(st.binary(min_size=1, max_size=8)), "extend"
    if what == "payload" and len(raw) > HEADER.size:
        at = draw(st.integers(HEADER.size, len(raw) - 1))
        out[at] ^= draw(st.integers(1, 255))
        return bytes(out), f"payload@{at}"
    if raw[5] == Kind.HEARTBEAT:
        body = draw(st.sampled_from(HOSTILE_HEADERS))
        head = bytes(out[:HEADER.size + HEARTBEAT.size])
        out = bytearray(head + body)
        _set_field(out, "length", HEARTBEAT.size + len(body))
        _set_field(out, "flags", raw[6] & ~1)  # the HMAC trailer went with the old header
        return bytes(out), "hostile_header"
    return bytes(out), ""


def _sign(raw: bytes, key: object) -> bytes:
    """``raw`` (its trailer, if any, dropped) signed again with ``key``."""
    import hmac as _hmac

    from .framing import HEADER, MAC_SIZE

    if len(raw) < HEADER.size:
        return raw
    end = HEADER.size + _field(raw, "length")
    body = bytearray(raw[:end] if end <= len(raw) else raw)
    body[6] |= 1
    _set_field(body, "key_id", key.key_id)  # type: ignore[attr-defined]
    digest = _hmac.digest(key.secret, bytes(body), "sha256")  # type: ignore[attr-defined]
    return bytes(body) + digest[:MAC_SIZE]


@st.composite
def _stream_datagrams(draw: st.DrawFn, stream_id: int, key: object, age_ms: int,
                      max_items: int) -> tuple[list[bytes], list[bytes]]:
    """A valid framed stream: its datagrams in order and the readouts they carry."""
    from .framing import Flag, Kind, encode_datagram, heartbeat_payload

    datagrams: list[bytes] = []
    carried: list[bytes] = []
    seq = readout_seq = 0
    small = readouts(readout_bytes(max_size=24)).map(lambda r: r.to_bytes())

    def emit(kind: Kind, first: int, payload: bytes, **fields: int) -> None:
        nonlocal seq
        datagrams.append(encode_datagram(kind, stream_id, seq, first, payload, age_ms=age_ms,
                                         key=key, **fields))  # type: ignore[arg-type]
        seq += 1

    for _ in range(draw(st.integers(1, max_items))):
        kind = draw(st.sampled_from(("data", "data", "fragments", "heartbeat")))
        if kind == "data":
            batch = draw(st.lists(small, min_size=1, max_size=4))
            emit(Kind.DATA, readout_seq, b"".join(batch), count=len(batch))
            carried += batch
            readout_seq += len(batch)
        elif kind == "fragments":
            # Larger than the small readouts of DATA datagrams, as fragmented ones are.
            serialized = draw(readouts(st.binary(min_size=16, max_size=64))).to_bytes()
            total = draw(st.integers(2, 4))
            step = -(-len(serialized) // total)
            pieces = [serialized[i:i + step] for i in range(0, len(serialized), step)]
            for index, piece in enumerate(pieces):
                emit(Kind.FRAGMENT, readout_seq, piece, count=index, total=len(pieces))
            carried.append(serialized)
            readout_seq += 1
        else:
            header = draw(st.one_of(st.none(), st.fixed_dictionaries(
                {"run": st.integers(0, 9)}, optional={"chip": st.text(max_size=4)})))
            text = b"" if header is None else json.dumps(header).encode()
            emit(Kind.HEARTBEAT, readout_seq, heartbeat_payload(seq, 1.0, text))
    if draw(st.booleans()):
        last = seq + 2
        for _ in range(3):
            emit(Kind.HEARTBEAT, readout_seq, heartbeat_payload(last, 1.0), flags=Flag.END)
    return datagrams, carried


@st.composite
def datagram_cases(draw: st.DrawFn, key: object = None, max_streams: int = 2,
                   max_items: int = 6, mutate: bool = True,
                   legacy: bool = True) -> DatagramCase:
    """A :class:`DatagramCase`: up to ``max_streams`` framed streams (signed with ``key``, a
    :class:`~astropix_hil.framing.TransportKey`, if given) and legacy datagrams, interleaved;
    then, with ``mutate``, some datagrams get a header field rewritten (to edge values, near
    values or anything), are truncated or extended, get a payload byte flipped or a hostile run
    header; finally some are dropped, duplicated or moved a few places.

    Unlike arbitrary bytes, nearly all of these pass the magic check, so properties reach the
    checks behind it (versions, lengths, kinds, payloads, fragments, heartbeats, ordering).
    With a key, mutated datagrams are sometimes signed again: a sender that holds the key and
    misbehaves.
    """
    streams = []
    carried: set[bytes] = set()
    for n in range(draw(st.integers(1, max_streams))):
        age = draw(st.sampled_from((0, 60_000)))  # started after the receiver, or long before
        datagrams, readouts_ = draw(_stream_datagrams(n + 1, key, age, max_items))
        streams.append(datagrams)
        carried.update(readouts_)
    if legacy and draw(st.booleans()):
        # A run of ids from some start, with gaps, repeats and steps back.
        base = draw(st.one_of(st.integers(0, 8), st.integers(0, 2**32 - 64)))
        ids = [base + d for d in draw(st.lists(st.integers(0, 12), min_size=1, max_size=6))]
        serialized = [AstroPix4Readout(draw(readout_bytes(max_size=16)), i, i).to_bytes()
                      for i in ids]
        if serialized and draw(st.booleans()):
            serialized[-1] = serialized[-1][:-1]  # its length field now lies: bad_legacy
        streams.append(serialized)
        carried.update(serialized)
    # Interleave the streams, each kept in its own order.
    merged: list[bytes] = []
    cursors = [0] * len(streams)
    while any(c < len(s) for c, s in zip(cursors, streams, strict=True)):
        live = [i for i, (c, s) in enumerate(zip(cursors, streams, strict=True)) if c < len(s)]
        i = draw(st.sampled_from(live))
        merged.append(streams[i][cursors[i]])
        cursors[i] += 1
    mutations = [""] * len(merged)
    resigned = False
    if mutate:
        for i, raw in enumerate(merged):
            if raw[:4] != b"APXM" or draw(st.integers(0, 3)) != 0:
                continue
            merged[i], mutations[i] = draw(_mutation(raw))
            if key is not None and draw(st.booleans()):
                merged[i] = _sign(merged[i], key)
                resigned = True
    schedule = draw(datagram_schedules(len(merged), draw(st.sampled_from((0, 0, 2, 6)))))
    return DatagramCase([merged[i] for i in schedule.arrivals], frozenset(carried),
                        [mutations[i] for i in schedule.arrivals], resigned)


__all__ += ["HEADER_FIELDS", "HOSTILE_HEADERS", "DatagramCase", "datagram_cases"]
