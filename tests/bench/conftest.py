"""Benchmark fixtures: the real run, repeated to benchmark size."""

from __future__ import annotations

import pytest

from astropix_hil.fileio import apx_open, write_apx

from ..conftest import find_realdata

BENCH_READOUTS = 100_000


@pytest.fixture(scope="session")
def real_readouts():
    path = find_realdata() / "astropix4-threshold-scan-20250723" / "20250723_092534_data.apx"
    with apx_open(path) as reader:
        return reader.header, list(reader)


@pytest.fixture(scope="session")
def big_real_file(tmp_path_factory, real_readouts):
    """The real run repeated to at least 100k readouts (ids renumbered, consecutive)."""
    header, readouts = real_readouts
    repeats = -(-BENCH_READOUTS // len(readouts))
    path = tmp_path_factory.mktemp("bench") / "real_x100k.apx"

    def renumbered():
        for i in range(repeats):
            for r in readouts:
                raw = bytearray(r.to_bytes())
                raw[3:7] = (i * len(readouts) + r.readout_id).to_bytes(4, "little")
                yield bytes(raw)

    write_apx(path, renumbered(), {k: v for k, v in header.items() if k != "readout_uid"})
    return path
