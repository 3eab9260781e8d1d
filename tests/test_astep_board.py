"""The virtual A-STEP board: register file, layers, readout FIFO, timestamps, truth."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from astropix_hil.astep_fmt import decode_readouts, walk
from astropix_hil.boards.astep.board import AstepBoard
from astropix_hil.boards.astep.protocol import (
    read_request,
    register_read,
    register_write,
    write_request,
)
from astropix_hil.boards.astep.registers import REGISTERS, Access, layer_reg, reg
from astropix_hil.emulator.astep import AstepChips, AstepChipsConfig
from astropix_hil.errors import EmulatorError

from .astep_reference import reference_hits

MS = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def make_board(layers=1, chips=1, rate=50_000.0, seed=1, **kw) -> tuple[AstepBoard, Clock]:
    clock = Clock()
    anomalies = kw.pop("anomalies", {})
    config = AstepChipsConfig(layers=layers, chips=chips, rate=rate, anomalies=anomalies)
    kw.setdefault("truth", True)  # the tests compare reads with it
    return AstepBoard(AstepChips(config, seed), clock=clock, **kw), clock


def write(board: AstepBoard, name: str, value: int) -> None:
    r = reg(name)
    assert board.process(register_write(r.address, value, r.width)) == b""


def read(board: AstepBoard, name: str) -> int:
    r = reg(name)
    return int.from_bytes(board.process(register_read(r.address, r.width)), "little")


def start(board: AstepBoard, layers: int = 1) -> None:
    """Timestamps on (1 MHz), readout on for ``layers`` (hold and reset off)."""
    write(board, "LAYERS_FPGA_TIMESTAMP_DIVIDER_MATCH", 80)
    write(board, "LAYERS_FPGA_TIMESTAMP_CTRL", 0x13)
    write(board, "CHIP_VERSION", 4)
    for n in range(layers):
        write(board, f"LAYER_{n}_CFG_CTRL", 0x08)


def drain(board: AstepBoard) -> list[bytes]:
    """Read the FIFO as the team's loop does until it is empty."""
    reads = []
    for _ in range(1000):
        size = read(board, "LAYERS_READOUT_READ_SIZE")
        if not size:
            return reads
        reads.append(board.process(read_request(0xA3, size)))
    raise AssertionError("the FIFO does not drain")


def assert_reads_equal_truth(board: AstepBoard, reads: list[bytes], first: int = 0) -> None:
    decoded = decode_readouts([(r, first + i, 0) for i, r in enumerate(reads)],
                              byteorder=board.byteorder).hits
    truth = board.truth()
    truth = truth[truth["readout_id"] >= first]
    names = [n for n in truth.dtype.names if n != "timestamp"]
    assert len(truth) == len(decoded)
    assert np.array_equal(decoded[names], truth[names])


def test_registers_read_their_reset_values_and_keep_what_is_written():
    board, _ = make_board()
    for r in REGISTERS:
        if r.access is Access.RW:
            assert read(board, r.name) == r.reset, r.name
    assert read(board, "HK_FIRMWARE_ID") == 0xAB04
    write(board, "LAYERS_FPGA_TIMESTAMP_FORCED", 0x1122334455667788)
    assert read(board, "LAYERS_FPGA_TIMESTAMP_FORCED") == 0x1122334455667788
    write(board, "HK_FIRMWARE_ID", 0)  # read-only: ignored
    assert read(board, "HK_FIRMWARE_ID") == 0xAB04


def test_reads_without_a_read_decoder_get_no_reply_and_the_next_request_is_answered():
    board, _ = make_board()
    reply = board.process(read_request(layer_reg("MOSI", 0).address, 1)
                          + read_request(0xB3, 2) + register_read(0x08, 1))
    assert reply == b"\x03" and board.stats.undecoded_reads == 2


def test_an_empty_fifo_reads_as_0xff():
    board, _ = make_board(rate=0)
    assert board.process(read_request(0xA3, 5)) == b"\xff" * 5
    assert board.stats.reads_served == 0 and board.stats.empty_reads == 1


def test_long_writes_parse_in_pieces_and_the_read_after_them_is_answered():
    board, _ = make_board()
    config = bytes([0x04, 0x05, 0x04, 0x06]) * 8600  # 34 400 bytes on the shift register
    card = bytes([0x01, 0x03]) * 1717  # 3 434 bytes on the Gecco card
    stream = write_request(0x91, config[:-1] + b"\x2a") + write_request(0xAA, card) \
        + register_read(0x08, 1)
    replies = b"".join(board.process(stream[i:i + 997]) for i in range(0, len(stream), 997))
    assert replies == b"\x03"
    assert read(board, "LAYERS_SR_OUT") == 0x2A and read(board, "GECCO_SR_CTRL") == 0x03


def test_no_hits_flow_until_readout_is_on_and_hold_and_reset_are_released():
    board, clock = make_board(rate=100_000)
    clock.now += 5 * MS
    assert read(board, "LAYERS_READOUT_READ_SIZE") == 0
    assert board.stats.hits_lost_reset > 0  # layer 0's reset bit holds the chips at reset
    write(board, "LAYER_0_CFG_CTRL", 0x05)  # out of reset, hold on
    clock.now += 5 * MS
    assert read(board, "LAYERS_READOUT_READ_SIZE") == 0 and board.stats.hits_lost_hold > 0
    start(board)
    clock.now += 5 * MS
    assert read(board, "LAYERS_READOUT_READ_SIZE") > 0
    assert read(board, "LAYER_0_STAT_FRAME_COUNTER") > 0


def test_the_routing_frame_assigns_chip_ids_along_each_chain():
    board, clock = make_board(layers=2, chips=4, rate=100_000)
    start(board, 2)
    clock.now += 5 * MS
    before = decode_readouts([(b, 0, 0) for b in drain(board)]).hits
    assert set(before["chip_id"].tolist()) == {0}  # unrouted chips all answer as 0
    write(board, "LAYER_0_CFG_CTRL", 0x0C)  # chip select, autoread off
    board.process(write_request(layer_reg("MOSI", 1).address, bytes([0x40 | 4]) + bytes(8)))
    start(board, 2)
    clock.now += 5 * MS
    hits = decode_readouts([(b, 0, 0) for b in drain(board)]).hits
    assert set(hits["chip_id"][hits["layer"] == 2].tolist()) == {4, 5, 6, 7}
    assert set(hits["chip_id"][hits["layer"] == 1].tolist()) == {0}


def test_wrong_length_counter_compares_with_chip_version():
    board, clock = make_board(rate=20_000)
    start(board)
    write(board, "CHIP_VERSION", 3)  # the team's main.py never writes it (spec §7 #7)
    clock.now += 5 * MS
    drain(board)
    frames = read(board, "LAYER_0_STAT_FRAME_COUNTER")
    assert frames > 0 and read(board, "LAYER_0_STAT_WRONGLENGTH_COUNTER") == frames
    write(board, "CHIP_VERSION", 4)
    clock.now += 5 * MS
    drain(board)
    assert read(board, "LAYER_0_STAT_WRONGLENGTH_COUNTER") == frames
    assert read(board, "LAYER_0_STAT_FRAME_COUNTER") > frames
    write(board, "LAYER_0_STAT_WRONGLENGTH_COUNTER", 0)
    assert read(board, "LAYER_0_STAT_WRONGLENGTH_COUNTER") == 0


def test_fpga_timestamp_counts_core_cycles_over_the_divider():
    board, clock = make_board(rate=0)
    write(board, "LAYERS_FPGA_TIMESTAMP_DIVIDER_MATCH", 80)
    write(board, "LAYERS_FPGA_TIMESTAMP_CTRL", 0x13)
    clock.now += 3 * MS
    assert read(board, "LAYERS_FPGA_TIMESTAMP_COUNTER") == 3000  # 1 us ticks
    write(board, "LAYERS_FPGA_TIMESTAMP_DIVIDER_MATCH", 8)
    clock.now += 1 * MS
    assert read(board, "LAYERS_FPGA_TIMESTAMP_COUNTER") == 3000 + 10_000
    write(board, "LAYERS_FPGA_TIMESTAMP_CTRL", 0x11)  # no divider: every 80 MHz cycle
    clock.now += 1000
    assert read(board, "LAYERS_FPGA_TIMESTAMP_COUNTER") == 13_000 + 80
    write(board, "LAYERS_FPGA_TIMESTAMP_FORCED", 0x0123456789ABCDEF)
    write(board, "LAYERS_FPGA_TIMESTAMP_CTRL", 0xC1)  # forced value, LSB cleared (RTL, §7 #4)
    assert read(board, "LAYERS_FPGA_TIMESTAMP_COUNTER") == 0x0123456789ABCDEE
    write(board, "LAYERS_FPGA_TIMESTAMP_CTRL", 0x10)  # disabled: 0
    assert read(board, "LAYERS_FPGA_TIMESTAMP_COUNTER") == 0


def test_frames_carry_the_timestamp_size_and_byte_order_asked_for():
    for size_field, order in ((0, "big"), (3, "big"), (1, "little")):
        board, clock = make_board(rate=20_000, byteorder=order)
        start(board)
        write(board, "LAYERS_FPGA_TIMESTAMP_CTRL", 0x03 | size_field << 4)
        clock.now += 5 * MS
        reads = drain(board)
        data = b"".join(reads)
        assert data[0] == 1 + 8 + 2 * size_field + 2
        assert_reads_equal_truth(board, reads)
        stamps = decode_readouts([(data, 0, 0)], byteorder=order).hits["fpga_ts"]
        assert stamps.max() > 0 and (np.diff(stamps.astype(np.int64)) >= 0).all()
        version = read(board, "HK_FIRMWARE_VERSION")
        assert (version >= 25112401) == (order == "big")


def test_a_full_fifo_holds_frames_back_and_loses_nothing_it_reports():
    board, clock = make_board(layers=3, chips=4, rate=400_000, anomalies={"burst": 0.01})
    start(board, 3)
    for _ in range(10):
        clock.now += 5 * MS
        assert read(board, "LAYERS_READOUT_READ_SIZE") <= 16384
    assert board.stats.fifo_full > 0 and board.stats.fifo_max_level > 16384 - 20
    assert board.stats.hits_lost_chip_buffer > 0
    # The chips hold what their buffers take, no more; the rest was counted lost.
    assert all(len(layer.waiting) <= board.chip_buffer * layer.chips for layer in board.layers)
    reads = []
    for _ in range(40):
        reads += drain(board)
        clock.now += 1 * MS
    assert all(walk(r).consumed == len(r) for r in reads)  # whole frames only (packet mode)
    assert_reads_equal_truth(board, reads)
    assert board.stats.hits_served == len(board.truth()) > 1000


def test_stray_bytes_and_wrong_length_frames_are_counted_and_not_hits():
    board, clock = make_board(layers=2, chips=2, rate=50_000,
                              anomalies={"stray_byte": 0.05, "wrong_length": 0.05})
    start(board, 2)
    reads = []
    for _ in range(10):
        clock.now += 2 * MS
        reads += drain(board)
    assert board.stats.stray_bytes > 10 and board.stats.wrong_length_hits > 10
    decoded = decode_readouts([(r, i, 0) for i, r in enumerate(reads)])
    assert decoded.wrong_length >= board.stats.stray_bytes
    assert_reads_equal_truth(board, reads)
    wrong = read(board, "LAYER_0_STAT_WRONGLENGTH_COUNTER") + read(
        board, "LAYER_1_STAT_WRONGLENGTH_COUNTER")
    assert wrong == decoded.wrong_length
    assert len(reference_hits(b"".join(reads))) == len(decoded.hits)


def test_the_team_flush_discards_what_the_chips_hold():
    board, clock = make_board(rate=50_000)
    start(board)
    write(board, "LAYER_0_CFG_CTRL", 0x15)  # readout off, hold
    write(board, "LAYER_0_CFG_CTRL", 0x14)  # hold released: hits wait in the chip
    clock.now += 1 * MS
    assert read(board, "LAYER_0_STATUS") & 1 == 0  # interrupt: the chip has data
    write(board, "LAYER_0_CFG_CTRL", 0x1C)  # cs, MISO disabled
    for _ in range(20):
        if read(board, "LAYER_0_STATUS") & 1:
            break
        board.process(write_request(layer_reg("MOSI", 0).address, bytes(128)))
    assert read(board, "LAYER_0_STATUS") & 1 == 1
    assert board.stats.hits_discarded_miso > 0
    assert read(board, "LAYERS_READOUT_READ_SIZE") == 0


class BoardMachine(RuleBasedStateMachine):
    """Random register traffic, clock steps and FIFO reads: the register file keeps what was
    written, the FIFO never exceeds its depth, reads return data then 0xff, and everything
    read decodes to exactly the board's truth."""

    RW = tuple(r for r in REGISTERS if r.access is Access.RW and not r.name.startswith(
        ("LAYER_0_CFG", "LAYERS_FPGA_TIMESTAMP", "CHIP_VERSION", "LAYERS_READOUT_CTRL")))

    @initialize(seed=st.integers(0, 1000))
    def setup(self, seed):
        self.board, self.clock = make_board(layers=2, chips=2, rate=300_000, seed=seed)
        start(self.board, 2)
        self.model = {r.name: r.reset for r in self.RW}
        self.model.update({"LAYER_1_CFG_CTRL": 0x08})
        self.reads: list[bytes] = []

    @rule(register=st.sampled_from(RW), value=st.integers(0, 2**64 - 1))
    def write_register(self, register, value):
        value &= (1 << (8 * register.width)) - 1
        if register.name == "LAYER_1_CFG_CTRL":
            value = value & 0x1C | 0x08 if value & 1 else 0x08  # no reset: frames stay exact
        write(self.board, register.name, value)
        self.model[register.name] = value & ~register.ro_bits

    @rule(register=st.sampled_from(RW))
    def read_register(self, register):
        assert read(self.board, register.name) == self.model[register.name]

    @rule(us=st.integers(0, 3000))
    def advance(self, us):
        self.clock.now += us * 1000

    @rule(n=st.integers(1, 20000))
    def read_fifo(self, n):
        reply = self.board.process(register_read(0xA4, 4) + read_request(0xA3, n))
        size = int.from_bytes(reply[:4], "little")
        take = min(n, size)
        assert len(reply) == 4 + n and reply[4 + take:] == b"\xff" * (n - take)
        if take:
            self.reads.append(reply[4:4 + take])

    @precondition(lambda self: hasattr(self, "board"))
    @invariant()
    def fifo_bounded_and_reads_equal_truth(self):
        assert self.board.fifo_level <= 16384
        decoded = decode_readouts([(r, i, 0) for i, r in enumerate(self.reads)])
        truth = self.board.truth()
        names = [n for n in truth.dtype.names if n != "timestamp"]
        assert np.array_equal(decoded.hits[names], truth[names])


TestBoardMachine = BoardMachine.TestCase
TestBoardMachine.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)


def test_a_stalled_layer_delivers_its_hits_late_and_exactly():
    board, clock = make_board(rate=20_000, anomalies={"stall": 1.0})  # every hit stalls 20 ms
    start(board)
    clock.now += 5 * MS
    assert read(board, "LAYERS_READOUT_READ_SIZE") == 0  # generated, held back by the stall
    assert board.stats.hits_generated > 0
    reads = []
    for _ in range(30):
        clock.now += 5 * MS
        reads += drain(board)
    assert reads
    assert_reads_equal_truth(board, reads)


def serve_ms(board: AstepBoard, clock: Clock, ms: int) -> int:
    """Read the FIFO empty every millisecond of board time for ``ms`` ms; the reads made."""
    reads = 0
    for _ in range(ms):
        clock.now += MS
        reads += len(drain(board))
    return reads


def test_the_truth_is_kept_only_when_asked_and_a_streamed_one_costs_no_memory(tmp_path):
    boards = {target: make_board(layers=2, chips=2, rate=50_000, seed=3, truth=target)
              for target in (None, True, tmp_path / "t.csv")}
    for board, clock in boards.values():
        start(board, 2)
        serve_ms(board, clock, 100)  # warm-up
    grown = {}
    for target, (board, clock) in boards.items():
        if target is True:
            serve_ms(board, clock, 1000)
            continue
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            serve_ms(board, clock, 1000)
            grown[target] = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    kept, _ = boards[True]
    streamed, _ = boards[tmp_path / "t.csv"]
    # 1.1 s at 50k hits/s: ~55k hits, megabytes of truth if it were kept.
    assert kept.stats.hits_served == len(kept.truth()) > 40_000
    assert all(b.stats.hits_served == kept.stats.hits_served for b, _ in boards.values())
    assert max(grown.values()) < 300_000, grown
    with pytest.raises(EmulatorError, match="truth=True"):
        boards[None][0].truth()
    assert streamed.close_truth() == kept.stats.hits_served
    expected = io.StringIO()
    kept.write_truth_csv(expected)
    assert (tmp_path / "t.csv").read_text() == expected.getvalue()
