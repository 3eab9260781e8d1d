"""The virtual board as a state machine: any sequence of clock steps, polls, reads (of any
size that holds a frame, requests split anywhere), resets and bad requests keeps the truth
exact: decoding the non-empty reads gives exactly :meth:`VirtualBoard.truth`."""

from __future__ import annotations

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from astropix_hil import strategies as apx
from astropix_hil.boards.nexys.board import VirtualBoard
from astropix_hil.boards.nexys.protocol import Register, SpiConfig, read_request, write_request
from astropix_hil.bulk import decode_readouts
from astropix_hil.emulator import ChipStream
from astropix_hil.fmt import AstroPix4Readout

#: Addresses the firmware decodes (spec §1.1); any other reads the last byte read.
DECODED = {0x00, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0C, 0x10, 0x11, 0x12, 0x13, 0x15, 0x16,
           0x17, 0x18, 0x1C, 0x3C, 0x3D, 0x46, 0x50}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class BoardMachine(RuleBasedStateMachine):
    @initialize(config=apx.emulator_configs(read_sizes=(32, 100, 2048)),
                seed=st.integers(0, 2**32), fifo_reads=st.integers(1, 8))
    def make_board(self, config, seed, fifo_reads):
        self.clock = FakeClock()
        self.fifo_size = config.read_size * fifo_reads
        self.board = VirtualBoard(ChipStream(config, seed), fifo_size=self.fifo_size,
                                  clock=self.clock, truth=True)
        self.board.release_spi_master()  # as the DAQ does first
        self.read_size = config.read_size
        self.last_read = 0x00
        self.reads: list[bytes] = []
        self.sent_requests = 0

    def send(self, request: bytes, reply_length: int, cuts: list[int]) -> bytes:
        """Send one request in pieces cut at ``cuts``; check the reply's length."""
        reply = b""
        last = 0
        for cut in sorted({c % (len(request) + 1) for c in cuts} | {len(request)}):
            reply += self.board.process(request[last:cut])
            last = cut
        assert len(reply) == reply_length
        if reply:
            self.last_read = reply[-1]
        self.sent_requests += 1
        return reply

    @rule(ns=st.integers(0, 5_000_000))
    def advance_clock(self, ns):
        self.clock.now += ns

    @rule(extra=st.integers(0, 4096), cuts=st.lists(st.integers(0, 8), max_size=3),
          poll=st.booleans())
    def read_fifo(self, extra, cuts, poll):
        if poll:
            status = self.send(read_request(Register.SPI_CONFIG, 1), 1, cuts)[0]
            if status & SpiConfig.READ_FIFO_EMPTY:
                return
        size = min(self.read_size + extra, 0xFFFF)
        data = self.send(read_request(Register.SPI_READ_FIFO, size), size, cuts)
        if data.rstrip(b"\xff"):
            self.reads.append(data)
        else:
            assert not poll  # a poll said there was data: the read must bring some

    @rule(bits=st.sampled_from([SpiConfig.READ_FIFO_RESET, SpiConfig.SPI_MODULE_RESET,
                                SpiConfig.WRITE_FIFO_RESET]),
          release=st.booleans(), cuts=st.lists(st.integers(0, 8), max_size=3))
    def reset(self, bits, release, cuts):
        values = bytes([bits, 0]) if release else bytes([bits])
        self.send(write_request(Register.SPI_CONFIG, values), 0, cuts)

    @rule(cuts=st.lists(st.integers(0, 8), max_size=3))
    def release_resets(self, cuts):
        self.send(write_request(Register.SPI_CONFIG, b"\x00"), 0, cuts)

    @rule(register=st.integers(0, 255).filter(lambda r: r not in DECODED),
          length=st.integers(0, 16))
    def unknown_register(self, register, length):
        last = self.last_read
        assert self.send(read_request(register, length), length, []) == bytes([last]) * length

    @rule(op=st.integers(2, 255), tail=st.binary(min_size=3, max_size=3))
    def malformed(self, op, tail):
        before = self.board.stats.malformed
        assert self.board.process(bytes([op]) + tail) == b""
        assert self.board.stats.malformed == before + 1

    @invariant()
    def truth_is_what_the_decoder_reports(self):
        if not hasattr(self, "board"):
            return
        board = self.board
        assert board.fifo_level <= self.fifo_size
        assert board.truth_exact
        assert board.stats.readouts_served == len(self.reads)
        assert board.stats.requests == self.sent_requests
        readouts = [AstroPix4Readout(data, i, 0) for i, data in enumerate(self.reads)]
        truth = board.truth(np.zeros(len(self.reads), dtype=np.uint64))
        assert np.array_equal(decode_readouts(readouts).hits, truth)


BoardMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40,
                                          deadline=None)
test_board_state_machine = BoardMachine.TestCase
