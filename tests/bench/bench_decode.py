"""Decode and convert speed (issue 10). Absolute rates, and in the same run the per-object path
as a baseline:

* bulk decode (``read_hits``) of 1-hit readouts (the real run repeated to 100k readouts):
  goal 4 M hits/s; of dense 2 kB readouts (emulated, ~124 hits each): goal 100 MB/s;
* per-object decode (``AstroPix4Readout.decode`` over ``apx_open``): goal 10x the AstroPix
  team's (~38 k hits/s here), i.e. 380 k hits/s;
* ``apx-hil convert --format csv`` as a whole process (start-up, decode, CSV, writing):
  goal 550 k hits/s; and the CSV formatting alone.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from astropix_hil.cli import main
from astropix_hil.fileio import apx_open, read_hits
from astropix_hil.hitcsv import format_rows


def _report(benchmark, hits: int, readouts: int, nbytes: int) -> None:
    seconds = benchmark.stats.stats.min
    benchmark.extra_info.update({
        "hits_per_s": hits / seconds,
        "readouts_per_s": readouts / seconds,
        "MB_per_s": nbytes / seconds / 1e6,
    })
    print(f"\n{benchmark.name}: {hits / seconds / 1e6:.2f} M hits/s, "
          f"{readouts / seconds / 1e3:.0f} k readouts/s, {nbytes / seconds / 1e6:.1f} MB/s")


@pytest.fixture(scope="session")
def dense_file(tmp_path_factory):
    """4000 emulated readouts of 2 kB, ~124 hits each (8 MB)."""
    path = tmp_path_factory.mktemp("bench") / "dense.apx"
    assert main(["emulate", "--mode", "poisson", "--rate", "2000000", "--readouts", "4000",
                 "--seed", "1", "--out", str(path), "-q"]) == 0
    return path


def bench_bulk_read_hits(benchmark, big_real_file):
    hits = benchmark.pedantic(read_hits, args=(big_real_file,), rounds=10, iterations=1,
                              warmup_rounds=1)
    readouts = len(set(hits["readout_id"].tolist()))
    assert len(hits) > 100_000
    _report(benchmark, len(hits), readouts, os.path.getsize(big_real_file))


def bench_bulk_read_hits_dense(benchmark, dense_file):
    hits = benchmark.pedantic(read_hits, args=(dense_file,), rounds=10, iterations=1,
                              warmup_rounds=1)
    readouts = len(set(hits["readout_id"].tolist()))
    assert readouts == 4000 and len(hits) > 400_000
    _report(benchmark, len(hits), readouts, os.path.getsize(dense_file))


def _decode_objects(path) -> tuple[int, int]:
    count = readouts = 0
    extra = None
    with apx_open(path) as reader:
        for readout in reader:
            count += len(readout.decode(extra))
            extra = readout.extra_bytes()
            readouts += 1
    return count, readouts


def bench_per_object_decode(benchmark, big_real_file):
    count, readouts = benchmark.pedantic(_decode_objects, args=(big_real_file,), rounds=5,
                                         iterations=1, warmup_rounds=1)
    assert readouts >= 100_000
    _report(benchmark, count, readouts, os.path.getsize(big_real_file))


def bench_csv_formatting(benchmark, big_real_file):
    hits = read_hits(big_real_file)
    text = benchmark.pedantic(format_rows, args=(hits,), rounds=10, iterations=1,
                              warmup_rounds=1)
    _report(benchmark, len(hits), len(set(hits["readout_id"].tolist())), len(text))


def _convert(benchmark, path, tmp_path, readouts: int) -> None:
    """Time the whole ``apx-hil convert`` process: start-up, decoding, CSV text, writing.
    Also reports the processor time it took (user + system), which a busy machine inflates
    less than the elapsed time."""
    output = tmp_path / "hits.csv"
    command = [sys.executable, "-m", "astropix_hil", "convert", str(path),
               "-o", str(output), "-q"]
    cpu = []

    def convert() -> None:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(command, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)

    # Each round writes a new file, as a user's conversion does (no --force).
    benchmark.pedantic(convert, setup=lambda: output.unlink(missing_ok=True), rounds=5,
                       iterations=1, warmup_rounds=1)
    hits = len(read_hits(path))
    _report(benchmark, hits, readouts, os.path.getsize(path))
    print(f"{benchmark.name}: processor time {min(cpu):.3f} s, "
          f"{hits / min(cpu) / 1e6:.2f} M hits/s of processor time")


def bench_convert_process(benchmark, big_real_file, tmp_path):
    _convert(benchmark, big_real_file, tmp_path, 100_750)


def bench_convert_process_dense(benchmark, dense_file, tmp_path):
    _convert(benchmark, dense_file, tmp_path, 4000)
