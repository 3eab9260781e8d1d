"""``apx-hil convert --format ecsv|fits|hdf5|parquet``: each read back with its own library
equals the CSV columns, names and integer/float types, and keeps the file's JSON header."""

from __future__ import annotations

import json

import numpy as np
import pytest

from astropix_hil.cli import main
from astropix_hil.fileio import read_header
from astropix_hil.fmt import HIT_COLUMNS, HIT_DTYPE
from astropix_hil.hitcsv import read_hits_csv


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The real run's readouts (header with the chip configuration) and its converted CSV."""
    folder = tmp_path_factory.mktemp("tables")
    apx = folder / "run.apx"
    assert main(["emulate", "--out", str(apx), "--seed", "2", "--mode", "poisson", "--rate",
                 "5000", "--chips", "2", "--anomalies", "all=0.05", "--readouts", "500"]) == 0
    csv = folder / "run.csv"
    assert main(["convert", str(apx), "--format", "csv", "-o", str(csv)]) == 0
    header, hits = read_hits_csv(csv)
    assert len(hits) > 500
    return apx, header, hits


def convert(apx, fmt: str, tmp_path):
    out = tmp_path / f"run.{fmt}"
    assert main(["convert", str(apx), "--format", fmt, "-o", str(out)]) == 0
    return out


def assert_columns(columns: dict, hits: np.ndarray) -> None:
    assert list(columns) == list(HIT_COLUMNS)
    for name in HIT_COLUMNS:
        values = np.asarray(columns[name])
        want = HIT_DTYPE[name]  # same kind and width (FITS stores big-endian)
        assert (values.dtype.kind, values.dtype.itemsize) == (want.kind, want.itemsize), name
        assert np.array_equal(values, hits[name]), name


def test_ecsv_round_trip(run, tmp_path):
    from astropy.table import Table

    apx, header, hits = run
    table = Table.read(convert(apx, "ecsv", tmp_path), format="ascii.ecsv")
    assert_columns({n: table[n] for n in table.colnames}, hits)
    assert json.loads("".join(table.meta["comments"])) == header == read_header(apx)


def test_fits_round_trip(run, tmp_path):
    from astropy.io import fits

    apx, header, hits = run
    with fits.open(convert(apx, "fits", tmp_path)) as hdus:
        data = hdus[1].data
        assert_columns({n: data[n] for n in data.names}, hits)
        comments = "".join(str(c) for c in hdus[1].header["COMMENT"])
    assert json.loads(comments) == header


def test_hdf5_round_trip(run, tmp_path):
    import h5py

    apx, header, hits = run
    with h5py.File(convert(apx, "hdf5", tmp_path), "r") as f:
        data = f["HITS"][()]
        meta = {k: f["HITS"].attrs[k] for k in f["HITS"].attrs}
    assert_columns({n: data[n] for n in data.dtype.names}, hits)
    comments = meta["comments"]
    text = comments if isinstance(comments, str) else "".join(
        c.decode() if isinstance(c, bytes) else str(c) for c in np.atleast_1d(comments))
    assert json.loads(text) == header


def test_parquet_round_trip(run, tmp_path):
    import pyarrow.parquet as pq

    apx, header, hits = run
    table = pq.read_table(convert(apx, "parquet", tmp_path))
    assert_columns({n: table.column(n).to_numpy() for n in table.column_names}, hits)
    assert json.loads(table.schema.metadata[b"apx_header"]) == header


def test_convert_refuses_to_overwrite_and_to_write_tables_to_stdout(run, tmp_path, capsys):
    apx, _, _ = run
    out = convert(apx, "parquet", tmp_path)
    before = out.read_bytes()
    assert main(["convert", str(apx), "--format", "parquet", "-o", str(out)]) == 1
    assert "exists; use --force" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["convert", str(apx), "--format", "parquet", "-o", str(out), "--force"]) == 0
    assert main(["convert", str(apx), "--format", "fits", "-o", "-"]) == 1
    assert "not stdout" in capsys.readouterr().err


def test_a_missing_writer_names_the_extra(run, tmp_path, capsys, monkeypatch):
    import sys

    apx, _, _ = run
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert main(["convert", str(apx), "--format", "parquet", "-o", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'astropix-hil[tables]'" in err
