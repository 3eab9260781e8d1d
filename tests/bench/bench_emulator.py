"""Emulator speed (targets on one core: bulk generation >= 40 MB/s of readout bytes, the
fastest FTDI link, and >= 1 million hits/s).

"Readout bytes" are the bytes of the reads the board sends (``read_size`` each, padding
included); at a high hit rate the reads are full and data bytes are nearly all of them.
"""

from __future__ import annotations

import numpy as np

from astropix_hil.boards.nexys.board import VirtualBoard
from astropix_hil.boards.nexys.protocol import Register, read_request
from astropix_hil.emulator import Emulator, EmulatorConfig, write_run

READOUTS = 40_000
TARGET_MB_S = 40.0
TARGET_HITS_S = 1e6


def _generate(config: EmulatorConfig, readouts: int = READOUTS) -> tuple[int, int, int]:
    """Generate readouts batch by batch (as ``apx-hil emulate`` does): hits, readouts, data
    bytes."""
    hits = count = data = 0
    for run in Emulator(config, seed=1).runs(readouts=readouts):
        hits += len(run.generated)
        count += len(run)
        data += int(np.sum(run.ends - run.starts))
    return hits, count, data


def _report(benchmark, hits: int, readouts: int, data: int, read_size: int) -> dict:
    seconds = benchmark.stats.stats.min
    figures = {
        "hits_per_s": hits / seconds,
        "readout_MB_per_s": readouts * read_size / seconds / 1e6,
        "data_MB_per_s": data / seconds / 1e6,
        "readouts_per_s": readouts / seconds,
    }
    benchmark.extra_info.update(figures)
    print(f"\n{benchmark.name}: {figures['hits_per_s'] / 1e6:.2f} M hits/s, "
          f"{figures['readout_MB_per_s']:.1f} MB/s of readouts "
          f"({figures['data_MB_per_s']:.1f} MB/s of data), "
          f"{figures['readouts_per_s'] / 1e3:.1f} k readouts/s")
    return figures


def bench_bulk_generation_clean(benchmark):
    config = EmulatorConfig.build(mode="poisson", rate=4e6, chunk_hits=1 << 18)
    hits, readouts, data = benchmark.pedantic(_generate, args=(config,), rounds=5,
                                              iterations=1, warmup_rounds=1)
    assert readouts == READOUTS
    figures = _report(benchmark, hits, readouts, data, config.read_size)
    assert figures["readout_MB_per_s"] >= TARGET_MB_S
    assert figures["hits_per_s"] >= TARGET_HITS_S


def bench_bulk_generation_all_anomalies(benchmark):
    config = EmulatorConfig.build(mode="poisson", rate=4e6, anomalies="all=0.05",
                                  chunk_hits=1 << 18)
    hits, readouts, data = benchmark.pedantic(_generate, args=(config, READOUTS // 2),
                                              rounds=5, iterations=1, warmup_rounds=1)
    figures = _report(benchmark, hits, readouts, data, config.read_size)
    assert figures["readout_MB_per_s"] >= TARGET_MB_S
    assert figures["hits_per_s"] >= TARGET_HITS_S


def bench_emulate_to_apx(benchmark, tmp_path):
    """``apx-hil emulate`` without --truth: generation and .apx writing."""
    config = EmulatorConfig.build(mode="poisson", rate=4e6, chunk_hits=1 << 18)

    def emulate():
        return write_run(tmp_path / "sim.apx", Emulator(config, 1).runs(readouts=READOUTS), {})

    summary = benchmark.pedantic(emulate, rounds=3, iterations=1, warmup_rounds=1)
    assert summary.readouts == READOUTS
    _report(benchmark, summary.generated, summary.readouts,
            (tmp_path / "sim.apx").stat().st_size, config.read_size)


def bench_emulate_to_apx_and_truth_csv(benchmark, tmp_path):
    """With --truth: the CSV rows (astropix_hil.hitcsv.format_rows) dominate."""
    config = EmulatorConfig.build(mode="poisson", rate=4e6, chunk_hits=1 << 18)

    def emulate():
        with open(tmp_path / "truth.csv", "w", encoding="utf-8") as truth:
            return write_run(tmp_path / "sim.apx", Emulator(config, 1).runs(readouts=4000),
                             {}, truth)

    summary = benchmark.pedantic(emulate, rounds=3, iterations=1, warmup_rounds=1)
    _report(benchmark, summary.generated, summary.readouts,
            (tmp_path / "sim.apx").stat().st_size, config.read_size)


def bench_board_serving_reads(benchmark):
    """The virtual board answering a DAQ loop (status poll + 2048-byte read) at a high rate."""
    def serve():
        now = [0]
        board = VirtualBoard.from_options(seed=1, mode="poisson", rate=2e6,
                                          clock=lambda: now[0], pull_interval=0)
        board.release_spi_master()
        poll = read_request(Register.SPI_CONFIG, 1) + read_request(Register.SPI_READ_FIFO, 2048)
        for _ in range(5000):
            now[0] += 20_000
            board.process(poll)
        return board.stats

    stats = benchmark.pedantic(serve, rounds=3, iterations=1, warmup_rounds=1)
    assert stats.readouts_served > 4000
    _report(benchmark, stats.hits_served, stats.readouts_served, stats.bytes_served, 2048)
