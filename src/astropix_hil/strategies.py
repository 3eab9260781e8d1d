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
