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
