"""The virtual board after idle time: the chip is advanced while idle (``advance``, the pty
server's idle hook), and whole windows that a full FIFO would drop are counted without being
generated. Both change nothing a DAQ can see: with a fake clock, the counters, the FIFO's
bytes and the truth are those of generating every hit and dropping it (today's path)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astropix_hil.boards.nexys.board import VirtualBoard
from astropix_hil.boards.nexys.protocol import Register, SpiConfig, write_request
from astropix_hil.boards.ptyserve import PtyServer
from astropix_hil.emulator import ChipStream, EmulatorConfig

from .test_board import MS, FakeClock, daq_poll, status

S = 1_000_000_000


def make(clock: FakeClock, seed: int, anomalies: str = "none", rate: int = 100_000,
         reference: bool = False) -> VirtualBoard:
    b = VirtualBoard.from_options(seed=seed, mode="poisson", rate=rate, anomalies=anomalies,
                                  clock=clock, pull_interval=0, fifo_size=4096,
                                  chunk_hits=4096, truth=True)
    b.release_spi_master()  # as the DAQ's start-up does
    if reference:  # every hit generated, laid out and dropped, as before the fast path
        b.chip.skip_until = lambda t_ns: (0, 0, 0)
    return b


def drain(b: VirtualBoard, clock: FakeClock, reads: int) -> list[bytes | None]:
    out = []
    for _ in range(reads):
        clock.now += MS // 4
        out.append(daq_poll(b))
    return out


def same_boards(fast: VirtualBoard, slow: VirtualBoard, clocks) -> None:
    assert clocks[0].now == clocks[1].now
    assert status(fast) == status(slow)
    assert fast.stats == slow.stats
    assert drain(fast, clocks[0], 200) == drain(slow, clocks[1], 200)
    assert fast.stats == slow.stats
    assert np.array_equal(fast.truth(), slow.truth())


@pytest.mark.parametrize("anomalies", ["none", "all=0.05"])
def test_after_a_long_idle_dropped_hits_are_counted_exactly(anomalies):
    clocks = FakeClock(), FakeClock()
    fast, slow = make(clocks[0], 3, anomalies), make(clocks[1], 3, anomalies, reference=True)
    drawn = {"fields": 0}
    real_hits = fast.chip._hits

    def counting(t0, t1):
        drawn["fields"] += 1
        return real_hits(t0, t1)

    fast.chip._hits = counting
    for b, clock in zip((fast, slow), clocks, strict=True):
        drain(b, clock, 20)  # a run, then the DAQ stops polling with data left in the FIFO
        clock.now += 20 * S
        status(b)  # the first request after the idle time
    assert fast.stats.fifo_overflow_hits > 1_500_000
    assert fast.stats.hits_generated == (fast.stats.hits_queued
                                         + fast.stats.fifo_overflow_hits)
    if anomalies == "none":  # the dropped windows' fields and bytes were never made
        assert drawn["fields"] < 5 < fast.stats.fifo_overflow_hits // 4096
    same_boards(fast, slow, clocks)


def test_frames_dropped_while_the_fifo_is_held_in_reset_are_counted_exactly():
    clocks = FakeClock(), FakeClock()
    fast, slow = make(clocks[0], 5), make(clocks[1], 5, reference=True)
    for b, clock in zip((fast, slow), clocks, strict=True):
        drain(b, clock, 5)
        b.process(write_request(Register.SPI_CONFIG, bytes([SpiConfig.READ_FIFO_RESET])))
        clock.now += 5 * S
        status(b)
        b.process(write_request(Register.SPI_CONFIG, bytes([0])))
    assert fast.stats.discarded_hits > 400_000
    same_boards(fast, slow, clocks)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), idles=st.lists(st.integers(0, 3 * S), min_size=1,
                                                  max_size=6),
       anomalies=st.sampled_from(["none", "all=0.1"]), advance=st.booleans())
def test_idle_time_and_advancing_while_idle_change_nothing_a_daq_sees(seed, idles, anomalies,
                                                                       advance):
    clocks = FakeClock(), FakeClock()
    fast = make(clocks[0], seed, anomalies, rate=20_000)
    slow = make(clocks[1], seed, anomalies, rate=20_000, reference=True)
    for idle in idles:
        for b, clock in zip((fast, slow), clocks, strict=True):
            drain(b, clock, 3)
            if b is fast and advance:  # the idle hook, called now and then
                for _ in range(3):
                    clock.now += idle // 3
                    b.advance()
                clock.now += idle - idle // 3 * 3
            else:
                clock.now += idle
        same_boards(fast, slow, clocks)


def test_chip_prefetch_and_skip_leave_later_windows_unchanged():
    config = EmulatorConfig.build(mode="poisson", rate=50_000, chunk_hits=1000)
    plain, other = ChipStream(config, 9), ChipStream(config, 9)
    skipped = [plain.next_layout()[0] for _ in range(7)]
    other.prefetch()
    other.prefetch()  # idempotent: still the first window
    hits, frames, nbytes = other.skip_until(other.window(7)[0])
    assert hits == sum(len(layout.hits) for layout in skipped) == plain.hits_generated
    assert frames == sum(layout.n_frames for layout in skipped)
    assert nbytes == sum(layout.nbytes for layout in skipped)
    other.prefetch()
    a, b = plain.next_layout()[0], other.next_layout()[0]
    assert bytes(a.buf) == bytes(b.buf) and np.array_equal(a.hits, b.hits)


def test_the_pty_server_calls_the_idle_hook_while_nobody_asks():
    class Board:
        def __init__(self) -> None:
            self.idle = 0

        def process(self, data: bytes) -> bytes:
            return b""

        def advance(self) -> None:
            self.idle += 1
            if self.idle >= 3:
                stop.set()

    import threading

    stop = threading.Event()
    board = Board()
    with PtyServer(board) as server:
        server.serve(stop, duration=30, on_idle=board.advance)
    assert board.idle == 3


def test_board_command_advances_the_chip_while_idle(monkeypatch):
    from astropix_hil.cli import main

    calls = []
    monkeypatch.setattr(VirtualBoard, "advance", lambda self: calls.append(self))
    assert main(["board", "--pty", "--duration", "0.3"]) == 0
    assert calls and all(isinstance(board, VirtualBoard) for board in calls)
