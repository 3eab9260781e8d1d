"""``.apx`` files: round trips, the real run, and every kind of bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from astropix_hil.errors import (
    BadHeaderError,
    BadMagicError,
    DamagedFileWarning,
    LengthMismatchError,
    TruncatedError,
    TruncatedFileWarning,
)
from astropix_hil.fileio import (
    ApxWriter,
    apx_open,
    encode_header,
    iter_hit_chunks,
    read_header,
    read_hits,
    write_apx,
)
from astropix_hil.fmt import AstroPix4Readout, decode_stream
from astropix_hil.hitcsv import read_hits_csv

W0 = bytes.fromhex("e0401eac0dccc200")


def make_readouts(n: int) -> list[AstroPix4Readout]:
    return [AstroPix4Readout(b"\xbc\xbc" + W0 + b"\xbc" * (1 + i % 7), i, 1000 + i)
            for i in range(n)]


def test_header_layout_is_magic_length_json():
    raw = encode_header({"run": "x"})
    assert raw[:6] == b"%APXDF"
    length = int.from_bytes(raw[6:10], "little")
    assert json.loads(raw[10:10 + length]) == {"readout_uid": 4000, "run": "x"}
    assert len(raw) == 10 + length


def test_real_file_reads_and_rewrites_bit_exact(real_apx, tmp_path):
    with apx_open(real_apx) as reader:
        header = reader.header
        readouts = list(reader)
    assert header["readout_uid"] == 4000
    assert len(readouts) == 775
    copy = tmp_path / "copy.apx"
    with apx_open(copy, "wb", header) as writer:
        for readout in readouts:
            writer.write(readout)
    assert copy.read_bytes() == real_apx.read_bytes()


def test_bulk_and_per_object_paths_agree_on_the_real_file(real_apx, real_csv):
    with apx_open(real_apx) as reader:
        per_object = [h.values() for h in decode_stream(reader)]
    bulk = read_hits(real_apx)
    assert [tuple(v.item() for v in row) for row in bulk] == per_object
    header, reference = read_hits_csv(real_csv)
    assert header == read_header(real_apx)
    for name in reference.dtype.names:
        if name == "tot_us":
            assert np.allclose(bulk[name], reference[name], rtol=0, atol=1e-9)
        else:
            assert np.array_equal(bulk[name], reference[name]), name


def test_bulk_reads_across_chunk_boundaries_like_the_per_object_path(tmp_path):
    readouts = []
    for i in range(300):  # hits split across every readout boundary
        readouts.append(AstroPix4Readout(W0[5:] + b"\xbc" + W0 + b"\xbc" + W0[:5], i, i))
    path = tmp_path / "split.apx"
    write_apx(path, readouts)
    expected = [h.values() for h in decode_stream(readouts)]
    chunks = list(iter_hit_chunks(path, chunk_bytes=1000))
    assert len(chunks) > 5
    got = [tuple(v.item() for v in row) for c in chunks for row in c.hits]
    assert got == expected
    assert len(expected) == 300 + 299


def test_a_readout_larger_than_the_chunk_is_read(tmp_path):
    big = AstroPix4Readout(b"\xbc" + (W0 + b"\xbc") * 500, 0, 0)
    path = tmp_path / "big.apx"
    write_apx(path, [big, *make_readouts(3)])
    chunks = list(iter_hit_chunks(path, chunk_bytes=64))
    assert sum(len(c.hits) for c in chunks) == 503


def test_empty_file_has_a_header_and_no_readouts(tmp_path):
    path = tmp_path / "empty.apx"
    write_apx(path, [], {"note": "nothing"})
    with apx_open(path) as reader:
        assert list(reader) == []
        assert reader.header == {"readout_uid": 4000, "note": "nothing"}
    assert len(read_hits(path)) == 0


def test_writer_counts_and_syncs(tmp_path):
    path = tmp_path / "w.apx"
    with ApxWriter(path, {"a": 1}) as writer:
        for readout in make_readouts(10):
            writer.write(readout)
        writer.sync()
        assert writer.readouts_written == 10
        assert path.stat().st_size == writer.bytes_written
    assert writer.closed


def test_wrong_magic_names_the_file_and_offset_zero(tmp_path):
    path = tmp_path / "bad.apx"
    path.write_bytes(b"%APXDX" + encode_header(None)[6:])
    with pytest.raises(BadMagicError) as info:
        apx_open(path)
    assert info.value.offset == 0
    assert str(path) in str(info.value)


def test_bad_header_json_names_offset_ten(tmp_path):
    path = tmp_path / "bad.apx"
    path.write_bytes(b"%APXDF" + (5).to_bytes(4, "little") + b"{oops")
    with pytest.raises(BadHeaderError, match="byte offset 10: header is not UTF-8 JSON"):
        apx_open(path)


def test_header_without_astropix4_uid_is_refused(tmp_path):
    text = json.dumps({"readout_uid": 3000}).encode()
    path = tmp_path / "bad.apx"
    path.write_bytes(b"%APXDF" + len(text).to_bytes(4, "little") + text)
    with pytest.raises(BadHeaderError, match="readout_uid 3000"):
        read_header(path)


def test_header_length_past_the_end_is_a_length_mismatch(tmp_path):
    path = tmp_path / "bad.apx"
    path.write_bytes(b"%APXDF" + (500).to_bytes(4, "little") + b"{}")
    with pytest.raises(LengthMismatchError, match="says 500 bytes, only 2 follow"):
        apx_open(path)


def test_file_cut_inside_the_header_length(tmp_path):
    path = tmp_path / "bad.apx"
    path.write_bytes(b"%APXDF\x01")
    with pytest.raises(TruncatedError, match="byte offset 6"):
        apx_open(path)


def test_garbage_after_good_readouts_is_skipped_and_named_by_its_offset(tmp_path):
    path = tmp_path / "bad.apx"
    write_apx(path, make_readouts(3))
    good = path.stat().st_size
    with open(path, "ab") as stream:
        stream.write(b"\x00" * 30)
    with pytest.warns(DamagedFileWarning, match=f"30 damaged bytes skipped at byte offset "
                                                 f"{good}"), apx_open(path) as reader:
        assert [r.readout_id for r in reader] == [0, 1, 2]
    assert reader.skipped_bytes == 30
    with pytest.warns(DamagedFileWarning, match=f"byte offset {good}"):
        assert read_hits(path)["readout_id"].tolist() == [0, 1, 2]


def test_truncated_last_readout_delivers_the_others_with_a_warning(tmp_path):
    path = tmp_path / "cut.apx"
    write_apx(path, make_readouts(5))
    raw = path.read_bytes()
    path.write_bytes(raw[:-4])
    with pytest.warns(TruncatedFileWarning, match="ends inside a readout"), \
            apx_open(path) as reader:
        assert [r.readout_id for r in reader] == [0, 1, 2, 3]
    with pytest.warns(TruncatedFileWarning):
        assert read_hits(path)["readout_id"].tolist() == [0, 1, 2, 3]


def test_file_cut_at_every_offset_never_loses_a_complete_readout(tmp_path):
    readouts = make_readouts(4)
    full = tmp_path / "full.apx"
    write_apx(full, readouts)
    raw = full.read_bytes()
    boundaries = []
    offset = len(encode_header(None))
    for readout in readouts:
        offset += len(readout.to_bytes())
        boundaries.append(offset)
    cut = tmp_path / "cut.apx"
    for size in range(len(encode_header(None)), len(raw) + 1):
        cut.write_bytes(raw[:size])
        complete = sum(1 for b in boundaries if b <= size)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with apx_open(cut) as reader:
                got = [r.readout_id for r in reader]
            bulk = read_hits(cut)["readout_id"].tolist()
        assert got == list(range(complete))
        assert bulk == list(range(complete))
        assert bool(caught) == (size not in boundaries and size != boundaries[0] - len(
            readouts[0].to_bytes()))


def test_open_modes_are_checked(tmp_path):
    with pytest.raises(ValueError, match="mode must be"):
        apx_open(tmp_path / "x.apx", "ab")
    with pytest.raises(ValueError, match="only given when writing"):
        apx_open(tmp_path / "x.apx", "rb", {"a": 1})


def test_writer_keeps_what_the_disk_refused_and_retries_without_loss(tmp_path, monkeypatch):
    import errno
    import os

    path = tmp_path / "retry.apx"
    readouts = make_readouts(20)
    real_write = os.write
    refusals = {"left": 2}

    def flaky_write(fd, data):
        if refusals["left"]:
            refusals["left"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data[:7])  # short writes too

    writer = ApxWriter(path, {"run": 1})
    for readout in readouts[:10]:
        writer.write(readout)
    monkeypatch.setattr(os, "write", flaky_write)
    for _ in range(2):
        with pytest.raises(OSError, match="No space"):
            writer.flush()
        assert writer.readouts_flushed == 0
    for readout in readouts[10:]:
        writer.write(readout)
    writer.flush()
    monkeypatch.setattr(os, "write", real_write)
    assert writer.readouts_flushed == 20 and writer.pending_bytes == 0
    writer.close()
    with apx_open(path) as reader:
        assert list(reader) == readouts


def test_writer_counts_only_whole_readouts_as_flushed(tmp_path):
    writer = ApxWriter(tmp_path / "c.apx")
    writer.write(make_readouts(1)[0])
    assert (writer.readouts_written, writer.readouts_flushed) == (1, 0)
    writer.flush()
    assert writer.readouts_flushed == 1
    writer.close()


def test_writer_takes_serialized_readouts_and_counts_each(tmp_path):
    readouts = make_readouts(4)
    with ApxWriter(tmp_path / "b.apx") as writer:
        writer.write(b"".join(r.to_bytes() for r in readouts[:3]))
        writer.write(readouts[3])
        assert writer.readouts_written == 4
        with pytest.raises(TruncatedError):
            writer.write(readouts[0].to_bytes()[:-1])
        assert writer.readouts_written == 4
        writer.flush()
        assert writer.readouts_flushed == 4
    with apx_open(tmp_path / "b.apx") as reader:
        assert list(reader) == readouts
