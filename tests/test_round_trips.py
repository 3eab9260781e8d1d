"""Round-trip properties of every format the project writes and reads: ``.apx`` files, board
requests, legacy ``.log`` files and hit CSV tables."""

from __future__ import annotations

import io
import itertools
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from astropix_hil import fileio
from astropix_hil import strategies as apx
from astropix_hil.boards.nexys.protocol import (
    MAX_LENGTH,
    OP_READ,
    OP_WRITE,
    RequestParser,
    read_request,
    write_request,
)
from astropix_hil.fileio import ApxReader, ApxWriter, iter_frame_chunks, iter_hit_chunks
from astropix_hil.fmt import HIT_COLUMNS, HIT_DTYPE, READOUT_HEADER, AstroPix4Readout
from astropix_hil.hitcsv import read_hits_csv, write_hits_csv
from astropix_hil.legacy import import_log

from . import reference_decoder as ref

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
              st.floats(allow_nan=False, allow_infinity=False), TEXT),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(TEXT, children, max_size=4)),
    max_leaves=12)
HEADERS = st.dictionaries(TEXT.filter(lambda k: k != "readout_uid"), JSON, max_size=4)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` in pieces, cut at the given offsets (any order, any repeats)."""
    bounds = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# -- .apx files ----------------------------------------------------------------------------

@given(HEADERS, st.lists(apx.readouts(), max_size=12), st.integers(1, 400))
def test_apx_files_read_back_what_was_written_in_chunks_of_any_size(header, readouts, chunk):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.apx"
        with ApxWriter(path, header) as writer:
            for readout in readouts:
                writer.write(readout)
        # The per-object reader, reading the file `chunk` bytes at a time.
        with mock.patch.object(fileio, "_CHUNK", chunk), ApxReader(path) as reader:
            assert reader.header == {"readout_uid": 4000, **header}
            assert list(reader) == readouts
        # The memory-mapped frames, `chunk` bytes at a time (a readout larger grows the window).
        back = [AstroPix4Readout.from_bytes(bytes(window[start - READOUT_HEADER.size:end]))
                for window, frames, _ in iter_frame_chunks(path, chunk)
                for start, end in zip(frames.starts.tolist(), frames.ends.tolist(),
                                      strict=True)]
        assert back == readouts
        # The bulk hits, chunk after chunk, extra bytes carried across: as the reference
        # decoder finds them in the readouts written.
        hits = [row for c in iter_hit_chunks(path, chunk) for row in c.hits]
        expected, _, _ = ref.decode_stream(
            [(r.data(), r.readout_id, r.timestamp) for r in readouts])
        assert [{c: h[c].item() for c in HIT_COLUMNS} for h in hits] == \
            [{c: h[c] for c in HIT_COLUMNS} for h in expected]


# -- board requests --------------------------------------------------------------------------

REQUESTS = st.lists(st.one_of(
    st.tuples(st.just(OP_READ), st.integers(0, 0xFF), st.integers(0, MAX_LENGTH)),
    st.tuples(st.just(OP_WRITE), st.integers(0, 0xFF), st.binary(max_size=300)),
    # Long writes: the 16-bit length field, well past one datagram or one pty read.
    st.tuples(st.just(OP_WRITE), st.integers(0, 0xFF),
              st.integers(0, MAX_LENGTH).map(lambda n: bytes(range(256)) * (n // 256)
                                             + bytes(n % 256))),
), max_size=8)


@given(REQUESTS, st.lists(st.integers(0, 1 << 17), max_size=10))
def test_board_requests_parse_back_whatever_the_split(requests, cuts):
    wire = b"".join(read_request(r, n) if op == OP_READ else write_request(r, n)
                    for op, r, n in requests)
    parser = RequestParser()
    parsed = [request for piece in split(wire, cuts) for request in parser.feed(piece)]
    assert [(p.op, p.register, p.length if p.is_read else p.data) for p in parsed] == requests
    assert all(p.length == len(p.data) for p in parsed if not p.is_read)
    assert parser.pending == 0 and parser.malformed == 0
    assert parser.requests == len(requests)


@given(REQUESTS, st.integers(1, 200))
def test_a_request_cut_short_waits_for_the_rest(requests, keep):
    wire = b"".join(read_request(r, n) if op == OP_READ else write_request(r, n)
                    for op, r, n in requests)
    parser = RequestParser()
    head = wire[:max(len(wire) - keep, 0)]
    first = parser.feed(head)
    assert parser.pending == len(head) - sum(4 + (0 if p.is_read else p.length) for p in first)
    rest = parser.feed(wire[len(head):])
    assert len(first) + len(rest) == len(requests) and parser.pending == 0


# -- legacy logs -----------------------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,11}", fullmatch=True).filter(
    lambda name: name != "readout_uid")
IDENTIFIERS = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda name: name not in ("if", "in", "is", "or", "as", "def", "del", "for", "and", "not",
                              "try", "with", "else", "elif", "from", "pass", "while", "class",
                              "break", "raise", "yield", "async", "await", "global", "import",
                              "lambda", "return", "assert", "except", "finally", "continue",
                              "nonlocal"))


@given(st.dictionaries(NAMES, JSON, max_size=4),
       st.dictionaries(IDENTIFIERS, JSON, max_size=4),
       st.lists(st.tuples(st.integers(0, 2**32 - 1), apx.readout_bytes(64)), max_size=10))
def test_legacy_logs_import_their_header_and_readouts(header, options, readouts):
    lines = [f"{name}: {value!r}\n" for name, value in header.items()]
    lines.append(" Namespace(" + ", ".join(f"{k}={v!r}" for k, v in options.items()) + ")\n")
    # Both quotes of a bytes literal occur in the logs of the older scripts.
    lines += [f'{index}\tb"{data.hex()}"\n' if index % 2 else f"{index}\tb'{data.hex()}'\n"
              for index, data in readouts]
    with tempfile.TemporaryDirectory() as folder:
        log, out = Path(folder) / "run.log", Path(folder) / "run.apx"
        log.write_text("".join(lines), encoding="utf-8")
        result = import_log(log, out)
        with ApxReader(out) as reader:
            assert reader.header == {"readout_uid": 4000, **header, "options": options}
            back = list(reader)
    assert result.readouts == len(readouts) and result.skipped == 0
    assert [(r.readout_id, r.data(), r.timestamp) for r in back] == \
        [(index, AstroPix4Readout(data, 0, 0).data(), 0) for index, data in readouts]


# -- hit CSV -----------------------------------------------------------------------------------

def _column(name: str) -> st.SearchStrategy:
    kind = HIT_DTYPE[name]
    if kind.kind == "f":
        return st.floats(allow_nan=False, width=64)
    return st.integers(0, int(np.iinfo(kind).max))


HIT_ROWS = st.lists(st.tuples(*[_column(name) for name in HIT_COLUMNS]), max_size=20)


@given(st.one_of(st.none(), HEADERS), HIT_ROWS, st.integers(1, 5))
def test_hit_tables_read_back_what_was_written(header, rows, chunks):
    hits = np.array(rows, dtype=HIT_DTYPE)
    text = io.StringIO()
    parts = np.array_split(hits, chunks)
    assert write_hits_csv(text, parts, header) == len(hits)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "hits.csv"
        path.write_text(text.getvalue(), encoding="utf-8")
        back_header, back = read_hits_csv(path)
    assert back_header == header
    assert back.dtype == HIT_DTYPE
    assert back.tolist() == hits.tolist()
