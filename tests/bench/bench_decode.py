"""Decode speed on the real run repeated to 100k+ readouts (targets on one core: bulk path
>= 2 million hits/s, per-object path >= 150k readouts/s)."""

from __future__ import annotations

import os

from astropix_hil.fileio import apx_open, read_hits


def _report(benchmark, hits: int, readouts: int, nbytes: int) -> None:
    seconds = benchmark.stats.stats.min
    benchmark.extra_info.update({
        "hits_per_s": hits / seconds,
        "readouts_per_s": readouts / seconds,
        "MB_per_s": nbytes / seconds / 1e6,
    })
    print(f"\n{benchmark.name}: {hits / seconds / 1e6:.2f} M hits/s, "
          f"{readouts / seconds / 1e3:.0f} k readouts/s, {nbytes / seconds / 1e6:.1f} MB/s")


def bench_bulk_read_hits(benchmark, big_real_file):
    hits = benchmark.pedantic(read_hits, args=(big_real_file,), rounds=10, iterations=1,
                              warmup_rounds=1)
    readouts = len(set(hits["readout_id"].tolist()))
    assert len(hits) > 100_000
    _report(benchmark, len(hits), readouts, os.path.getsize(big_real_file))


def bench_per_object_decode(benchmark, big_real_file):
    def decode_all():
        count = readouts = 0
        extra = None
        with apx_open(big_real_file) as reader:
            for readout in reader:
                count += len(readout.decode(extra))
                extra = readout.extra_bytes()
                readouts += 1
        return count, readouts

    count, readouts = benchmark.pedantic(decode_all, rounds=3, iterations=1, warmup_rounds=1)
    assert readouts >= 100_000
    _report(benchmark, count, readouts, os.path.getsize(big_real_file))
