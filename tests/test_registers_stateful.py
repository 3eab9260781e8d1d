"""The board's register file against the firmware's table (spec §1.1), as a state machine:
any sequence of reads and writes of any address gives what the table says."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from astropix_hil.boards.nexys.board import VirtualBoard
from astropix_hil.boards.nexys.protocol import read_request, write_request
from astropix_hil.boards.nexys.replay import ReplayBoard

#: The spec's table: reset values of the stored registers.
RESET = {0x00: 0x00, 0x02: 0x01, 0x03: 0x00, 0x04: 0x00, 0x05: 0x00, 0x06: 0x00, 0x07: 0x00,
         0x0C: 0x00, 0x10: 0x00, 0x11: 0x00, 0x12: 0x24, 0x13: 0x00, 0x15: 0x80, 0x16: 0x00,
         0x1C: 0x00, 0x3D: 0x00}
READ_ONLY = {0x18, 0x3C, 0x46, 0x50}
WRITE_FIFO = 0x17


class RegisterFile(RuleBasedStateMachine):
    """A board whose read FIFO stays empty (a replay of nothing), so the model is the table."""

    @initialize()
    def power_up(self):
        self.board = ReplayBoard([])
        self.stored = dict(RESET)
        self.last = 0x00
        self.write_fifo = 0

    def expected(self, register: int) -> int:
        s = self.stored
        if register == 0x15:
            value = s[0x15] & 0xC9 | 0x10  # stored b7 b6 b3 b0; read FIFO empty
            if self.write_fifo == 0:
                value |= 0x02
            if self.write_fifo >= 1019:
                value |= 0x04
            return value
        if register == 0x12:
            return s[0x12] & ~0x52  # unconnected inputs read 0
        if register == 0x3D:
            return s[0x3D] & 0xC9 | 0x12  # SR-readback FIFO empty
        if register in (0x18, 0x3C):
            return 0xFF  # empty FIFO: padding
        if register == 0x46:
            return 0x01  # interrupt high: no hits
        if register == 0x50:
            return 0xAB
        if register in s:
            return s[register]
        return self.last  # the write FIFO port and undecoded addresses: stale

    @rule(register=st.integers(0, 255), length=st.integers(1, 12))
    def read(self, register, length):
        reply = self.board.process(read_request(register, length))
        assert reply == bytes([self.expected(register)]) * length, hex(register)
        self.last = reply[-1]

    @rule(register=st.integers(0, 255), data=st.binary(min_size=1, max_size=6))
    def write(self, register, data):
        assert self.board.process(write_request(register, data)) == b""
        if register == 0x15:
            for value in data:
                self.stored[0x15] = value
                if value & 0x01:
                    self.write_fifo = 0
                if not value & 0x80:
                    self.write_fifo = 0  # the running master sends what waits
        elif register == WRITE_FIFO:
            if not self.stored[0x15] & 0x01:
                self.write_fifo = min(1024, self.write_fifo + len(data))
            if not self.stored[0x15] & 0x80:
                self.write_fifo = 0
        elif register in self.stored:
            self.stored[register] = data[-1]

    @rule(count=st.integers(1000, 1100))
    def fill_write_fifo(self, count):
        self.write(WRITE_FIFO, bytes(count))

    @invariant()
    def spi_master_state_is_bit_7(self):
        assert self.board.spi_enabled == (not self.stored[0x15] & 0x80)


RegisterFile.TestCase.settings = settings(max_examples=80, stateful_step_count=40,
                                          deadline=None)
test_register_file = RegisterFile.TestCase


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def test_fifo_reads_come_in_groups_of_8_padded_when_empty_at_the_group_start():
    clock = Clock()
    board = VirtualBoard.from_options(seed=2, mode="injection", clock=clock, pull_interval=0)
    board.release_spi_master()
    assert board.process(read_request(0x46, 1)) == b"\x00"  # a pulse at t=0: hits pending
    data = board.process(read_request(0x18, 2048))
    assert data[:16].startswith(b"\xbc\xbc") and data[16:] == b"\xff" * 2032
    assert board.process(read_request(0x46, 1)) == b"\x01"
    # A 3-byte read of the empty FIFO starts a group that stays padding ...
    assert board.process(read_request(0x18, 3)) == b"\xff" * 3
    clock.now = 80_000_000  # the next pulse is in the FIFO now
    data = board.process(read_request(0x18, 2048))
    assert data[:5] == b"\xff" * 5  # ... for its remaining 5 bytes
    assert data[5:7] == b"\xbc\xbc"  # then the next groups take the FIFO's words


def test_the_spi_block_powers_up_in_reset_and_sends_nothing_until_released():
    clock = Clock()
    board = VirtualBoard.from_options(seed=2, mode="poisson", rate=10_000, clock=clock,
                                      pull_interval=0)
    assert board.process(read_request(0x15, 1)) == b"\x92"
    clock.now = 10_000_000
    assert board.process(read_request(0x15, 1)) == b"\x92"  # held: nothing reached the FIFO
    assert board.stats.discarded_hits > 0
    board.process(write_request(0x15, b"\x12"))
    clock.now = 20_000_000
    assert board.process(read_request(0x15, 1)) == b"\x02"  # data
    # bit 3 held: the read FIFO is cleared and stays empty
    board.process(write_request(0x15, b"\x08"))
    assert board.process(read_request(0x15, 1)) == b"\x1a"


def test_the_configured_chip_is_silent_until_configured():
    clock = Clock()
    board = VirtualBoard.from_options(seed=2, clock=clock, pull_interval=0)
    board.release_spi_master()
    clock.now = 10**9
    assert board.process(read_request(0x15, 1))[0] & 0x10
    assert board.chip.active_config is None and board.stats.hits_generated == 0
