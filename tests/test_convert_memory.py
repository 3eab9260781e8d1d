"""Converting reads the file a chunk at a time: the result is the one-shot result, and memory
stays bounded by the chunk, not by the file."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from astropix_hil import fileio
from astropix_hil.astep_files import import_bin, read_astep_csv
from astropix_hil.astep_files import read_hits as read_astep_hits
from astropix_hil.astep_fmt import encode_layer_frame, encode_v4
from astropix_hil.cli import convert as convert_cli
from astropix_hil.cli import main
from astropix_hil.fileio import read_hits, write_apx
from astropix_hil.fmt import HIT_DTYPE, AstroPix4Readout

W0 = bytes.fromhex("e0401eac0dccc200")
W1 = bytes.fromhex("e040b6a80fba1c02")


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    """1000 readouts of ~2 kB, 120 hits each, one split across each pair of readouts."""
    body = (W0 + b"\xbc" * 8 + W1 + b"\xbc" * 8) * 60
    readouts = [AstroPix4Readout(b"\xbc" * 3 + body + W0[:3], i, 10**18 + i * 1000)
                if i % 2 == 0 else AstroPix4Readout(W0[3:] + b"\xbc" + body, i, 10**18 + i)
                for i in range(1000)]
    path = tmp_path_factory.mktemp("dense") / "dense.apx"
    write_apx(path, readouts)
    return path


@pytest.mark.parametrize("fmt", ["csv", "npy"])
def test_converting_in_small_chunks_gives_the_one_shot_result(dense_run, tmp_path, monkeypatch,
                                                               fmt):
    whole = tmp_path / f"whole.{fmt}"
    assert main(["convert", str(dense_run), "--format", fmt, "-o", str(whole)]) == 0
    monkeypatch.setattr(convert_cli, "CHUNK_BYTES", 300)
    chunked = tmp_path / f"chunked.{fmt}"
    assert main(["convert", str(dense_run), "--format", fmt, "-o", str(chunked)]) == 0
    assert chunked.read_bytes() == whole.read_bytes()
    if fmt == "npy":
        assert np.array_equal(np.load(chunked), read_hits(dense_run))
        assert np.array_equal(np.load(chunked), read_hits(dense_run, chunk_bytes=300))


@pytest.mark.parametrize("fmt", ["csv", "npy"])
def test_converting_a_large_file_needs_memory_for_a_chunk_only(dense_run, tmp_path,
                                                               monkeypatch, fmt):
    hits = len(read_hits(dense_run))
    whole_array = hits * HIT_DTYPE.itemsize  # what holding every hit at once would take
    assert whole_array > 5_000_000
    monkeypatch.setattr(convert_cli, "CHUNK_BYTES", 64 << 10)
    tracemalloc.start()
    try:
        assert main(["convert", str(dense_run), "--format", fmt,
                     "-o", str(tmp_path / f"out.{fmt}")]) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < whole_array / 3


def test_read_hits_joins_its_chunks_once(dense_run, monkeypatch):
    joins = []
    concatenate = np.concatenate

    def counted(arrays, *args, **kwargs):
        arrays = list(arrays)
        if arrays and all(getattr(a, "dtype", None) == HIT_DTYPE for a in arrays):
            joins.append(len(arrays))  # a join of hit arrays
        return concatenate(arrays, *args, **kwargs)

    expected = read_hits(dense_run)
    monkeypatch.setattr(np, "concatenate", counted)
    hits = read_hits(dense_run, chunk_bytes=4096)
    assert np.array_equal(hits, expected)
    assert len(joins) == 1 and joins[0] > 100  # every chunk at once, not one by one


def astep_run(folder, repeats: int):
    """An A-STEP v4 run of ``repeats`` x 100 hits, imported from a raw .bin."""
    folder.mkdir()
    frames = b"".join(
        encode_layer_frame(1 + i % 3, encode_v4(i % 4, i % 32, (i * 7) % 32, 0, i, i % 8, 2, 1,
                                                i + 9, 3, 4), i * 1000)
        for i in range(100))
    (folder / "run.bin").write_bytes(frames * repeats)
    import_bin(folder / "run.bin", folder / "run.apx")
    return folder / "run.apx"


def _convert_peak(path, out) -> int:
    tracemalloc.start()
    try:
        assert main(["convert", str(path), "--format", out.suffix[1:], "-o", str(out)]) == 0
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("fmt", ["csv", "npy"])
def test_converting_an_astep_run_needs_the_same_memory_whatever_its_length(tmp_path,
                                                                           monkeypatch, fmt):
    monkeypatch.setattr(fileio, "_CHUNK", 64 << 10)  # the reader's window (files are small)
    short = astep_run(tmp_path / "short", 500)
    long = astep_run(tmp_path / "long", 2000)
    hits = read_astep_hits(long)
    assert len(hits) == 200_000
    peak_short = _convert_peak(short, tmp_path / "short" / f"out.{fmt}")
    out = tmp_path / "long" / f"out.{fmt}"
    peak_long = _convert_peak(long, out)
    assert peak_long < 1.3 * peak_short  # four times the hits; not four times the memory
    assert peak_long < hits.nbytes / 3
    if fmt == "npy":  # streamed, yet what numpy.save writes for the whole array
        whole = tmp_path / "whole.npy"
        np.save(whole, hits)
        assert out.read_bytes() == whole.read_bytes()
    else:
        _, rows = read_astep_csv(out)
        assert np.array_equal(rows, hits)
