"""The virtual A-STEP board's pace: read-size polls (the team's loop polls 0xA4 about 3000
times a second) and long writes (a 34 kB shift-register configuration). Targets: >= 20 000
polls/s and the 34 kB write parsed in well under 100 ms, in process (the pty adds its own)."""

from __future__ import annotations

from astropix_hil.boards.astep.board import AstepBoard
from astropix_hil.boards.astep.protocol import register_read, write_request
from astropix_hil.emulator.astep import AstepChips, AstepChipsConfig

POLL = register_read(0xA4, 4)


def _board(rate: float) -> AstepBoard:
    board = AstepBoard(AstepChips(AstepChipsConfig(layers=3, chips=4, rate=rate), 1),
                       pull_interval=0.001)
    for n in range(3):
        board.process(write_request(0x1F + n, b"\x08"))
    return board


def bench_read_size_polls(benchmark):
    board = _board(rate=1000)

    def polls():
        for _ in range(1000):
            board.process(POLL)

    benchmark(polls)


def bench_34kB_shift_register_write(benchmark):
    board = _board(rate=0)
    stream = write_request(0x91, bytes([0x04, 0x05, 0x04, 0x06]) * 8600)
    benchmark(board.process, stream)
