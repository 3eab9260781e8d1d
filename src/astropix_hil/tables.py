"""Hit tables in the formats physicists use: ECSV, FITS, HDF5 (as the AstroPix team's converter
writes them) and Parquet (for large runs).

Columns, names and integer/float types are those of :data:`~astropix_hil.fmt.HIT_DTYPE` (the
reference CSV header). The file's JSON header is kept as table metadata: for ECSV, FITS and
HDF5 as the reference does, one JSON string in the astropy table's ``meta["comments"]`` (ECSV
``#`` comments, FITS ``COMMENT`` cards, an HDF5 attribute), HDF5 under the path ``HITS``; for
Parquet as the schema metadata key ``apx_header``, written one row group per decoded chunk so
memory stays bounded. The writers are optional extras: astropy and h5py, pyarrow
(``pip install 'astropix-hil[tables]'``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from .errors import MissingExtraError
from .fmt import HIT_DTYPE

#: Path of the hit table inside an HDF5 file (the reference converter's).
HDF5_PATH = "HITS"
#: Parquet schema metadata key holding the run's JSON header.
PARQUET_HEADER_KEY = b"apx_header"


def _need(module: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{module} is not installed: pip install "
                                "'astropix-hil[tables]'") from None


def _astropy_table(chunks: Iterable[np.ndarray], header: Mapping[str, Any] | None):
    _need("astropy")
    from astropy.table import Table

    hits = np.concatenate([*chunks, np.empty(0, dtype=HIT_DTYPE)])
    table = Table(hits)
    if header is not None:
        table.meta["comments"] = [json.dumps(dict(header))]
    return table


def write_ecsv(path: str, chunks: Iterable[np.ndarray], header: Mapping | None) -> int:
    """ECSV (astropy): typed columns, the header as a comment line."""
    table = _astropy_table(chunks, header)
    table.write(path, format="ascii.ecsv", overwrite=True)
    return len(table)


def write_fits(path: str, chunks: Iterable[np.ndarray], header: Mapping | None) -> int:
    """FITS binary table (astropy); unsigned columns use the standard TZERO offsets."""
    table = _astropy_table(chunks, header)
    table.write(path, format="fits", overwrite=True)
    return len(table)


def write_hdf5(path: str, chunks: Iterable[np.ndarray], header: Mapping | None) -> int:
    """HDF5 (astropy over h5py): one compound dataset at :data:`HDF5_PATH`."""
    _need("h5py")
    table = _astropy_table(chunks, header)
    table.write(path, format="hdf5", path=HDF5_PATH, overwrite=True)
    return len(table)


def write_parquet(path: str, chunks: Iterable[np.ndarray], header: Mapping | None) -> int:
    """Parquet (pyarrow), one row group per chunk: for runs larger than memory."""
    _need("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, pa.from_numpy_dtype(HIT_DTYPE[name])) for name in HIT_DTYPE.names],
                       metadata=None if header is None else
                       {PARQUET_HEADER_KEY: json.dumps(dict(header)).encode()})
    count = 0
    with pq.ParquetWriter(path, schema) as writer:
        for hits in chunks:
            if len(hits):
                writer.write_table(pa.table({name: hits[name] for name in HIT_DTYPE.names},
                                            schema=schema))
                count += len(hits)
        if count == 0:
            writer.write_table(schema.empty_table())
    return count


#: Writers by format name: ``writer(path, hit chunks, header) -> hits written``.
WRITERS: dict[str, Callable[[str, Iterable[np.ndarray], Mapping | None], int]] = {
    "ecsv": write_ecsv,
    "fits": write_fits,
    "hdf5": write_hdf5,
    "parquet": write_parquet,
}


def write_table(fmt: str, path: str | os.PathLike, chunks: Iterable[np.ndarray],
                header: Mapping[str, Any] | None) -> int:
    """Write hit chunks (dtype ``HIT_DTYPE``) in format ``fmt``; return the hit count."""
    return WRITERS[fmt](os.fspath(path), chunks, header)
