"""The virtual board by example: the register protocol byte by byte, the read FIFO fed by the
chip at its rate, resets, bad requests, overflow, and the truth of the reads served."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from astropix_hil.boards.nexys.board import DEFAULT_FIFO_SIZE, VirtualBoard
from astropix_hil.boards.nexys.protocol import Register, SpiConfig, read_request, write_request
from astropix_hil.bulk import decode_readouts
from astropix_hil.cli import main
from astropix_hil.emulator import ChipStream, EmulatorConfig
from astropix_hil.errors import EmulatorConfigError, EmulatorError
from astropix_hil.fileio import write_apx
from astropix_hil.fmt import AstroPix4Readout

EMPTY = SpiConfig.READ_FIFO_EMPTY
MS = 1_000_000


class FakeClock:
    """A clock the test moves by hand (ns)."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def board(clock: FakeClock, seed: int = 1, **options) -> VirtualBoard:
    """A free-running board whose SPI master the DAQ released (bit 7 of 0x15 cleared)."""
    options.setdefault("mode", "poisson")
    options.setdefault("rate", 2000)
    b = VirtualBoard.from_options(seed=seed, clock=clock, truth=True, **options)
    b.release_spi_master()
    return b


def status(b: VirtualBoard) -> int:
    reply = b.process(read_request(Register.SPI_CONFIG, 1))
    assert len(reply) == 1
    return reply[0]


def daq_poll(b: VirtualBoard, size: int = 2048) -> bytes | None:
    """One turn of the DAQ loop: poll SPI_CONFIG; if bit 4 is clear, read ``size`` bytes."""
    if status(b) & EMPTY:
        return None
    data = b.process(read_request(Register.SPI_READ_FIFO, size))
    assert len(data) == size
    return data


def decode(reads: list[bytes]) -> np.ndarray:
    readouts = [AstroPix4Readout(data, i, 0) for i, data in enumerate(reads)]
    return decode_readouts(readouts).hits


def zeros(b: VirtualBoard) -> np.ndarray:
    return np.zeros(b.stats.readouts_served, dtype=np.uint64)


def session() -> list[tuple[int, bytes, int]]:
    """A DAQ session: (clock advance in ns, request, reply length)."""
    steps = [(0, write_request(Register.SPI_CONFIG, bytes([0x89, 0x00])), 0),
             (0, write_request(Register.SPI_CLOCK_DIVIDER, b"\x10"), 0),
             (0, read_request(Register.SPI_CLOCK_DIVIDER, 1), 1)]
    for _ in range(60):
        steps.append((MS // 2, read_request(Register.SPI_CONFIG, 1), 1))
        steps.append((0, read_request(Register.SPI_READ_FIFO, 2048), 2048))
    return steps


def test_driven_byte_by_byte_the_board_answers_as_to_whole_requests():
    whole_clock, byte_clock = FakeClock(), FakeClock()
    whole = board(whole_clock, anomalies="all=0.1", rate=20_000)
    bytewise = board(byte_clock, anomalies="all=0.1", rate=20_000)
    replies_whole, replies_bytes = [], []
    for advance, request, length in session():
        whole_clock.now += advance
        byte_clock.now += advance
        reply = whole.process(request)
        assert len(reply) == length
        replies_whole.append(reply)
        got = b""
        for i in range(len(request)):
            out = bytewise.process(request[i:i + 1])
            # Nothing comes back before the request's last byte.
            assert out == b"" or i == len(request) - 1
            got += out
        replies_bytes.append(got)
    assert replies_bytes == replies_whole
    reads = [r for (_, req, _), r in zip(session(), replies_bytes, strict=True)
             if req[1] == Register.SPI_READ_FIFO and r.rstrip(b"\xff")]
    assert len(reads) == bytewise.stats.readouts_served > 20
    assert np.array_equal(decode(reads), bytewise.truth(zeros(bytewise)))
    assert np.array_equal(bytewise.truth(), whole.truth())
    assert bytewise.stats.requests == whole.stats.requests == len(session())


def test_read_fifo_empty_bit_follows_the_chip_and_reads_pad_with_ff():
    clock = FakeClock()
    b = board(clock, mode="injection", rate=None)  # a pulse at time 0, then every 77.36 ms
    assert status(b) & EMPTY == 0
    data = b.process(read_request(Register.SPI_READ_FIFO, 2048))
    assert data[:2] == b"\xbc\xbc" and data[10:16] == b"\xbc" * 6
    assert data[16:] == b"\xff" * 2032
    assert status(b) & EMPTY
    clock.now = 77 * MS
    assert status(b) & EMPTY  # the next pulse is due at 77.36 ms
    clock.now = 78 * MS
    assert status(b) & EMPTY == 0
    assert b.fifo_level == 16
    assert daq_poll(b)[:2] == b"\xbc\xbc"
    assert b.stats.readouts_served == 2 and b.stats.bytes_served == 32
    assert b.stats.hits_served == 2 and len(b.truth()) == 2
    assert b.truth()["readout_id"].tolist() == [0, 1]


def test_reads_answer_length_bytes_writes_answer_nothing():
    b = board(FakeClock())
    assert b.process(write_request(Register.SPI_WRITE_FIFO, b"\x01\x02\x03")) == b""
    assert b.stats.spi_bytes_written == 3
    assert b.process(read_request(Register.SPI_WRITE_FIFO, 5)) == bytes(5)
    assert b.process(read_request(Register.SPI_CONFIG, 3)) == bytes([EMPTY | 2]) * 3
    assert b.process(read_request(Register.SPI_READ_FIFO, 0)) == b""
    both = read_request(Register.SPI_CONFIG, 1) + read_request(Register.SPI_READ_FIFO, 7)
    assert b.process(both) == bytes([EMPTY | 2]) + b"\xff" * 7
    assert b.stats.empty_reads == 1 and b.stats.readouts_served == 0


def test_clock_divider_is_stored_and_read_only_bits_ignore_writes():
    clock = FakeClock()
    b = board(clock)
    b.process(write_request(Register.SPI_CLOCK_DIVIDER, b"\x01\x2a"))
    assert b.process(read_request(Register.SPI_CLOCK_DIVIDER, 2)) == b"\x2a\x2a"
    read_only = (SpiConfig.WRITE_FIFO_EMPTY | SpiConfig.WRITE_FIFO_FULL
                 | SpiConfig.READ_FIFO_EMPTY | SpiConfig.READ_FIFO_FULL)
    b.process(write_request(Register.SPI_CONFIG, bytes([read_only | SpiConfig.READBACK_ENABLE])))
    value = status(b)
    assert value & SpiConfig.READBACK_ENABLE
    assert value & SpiConfig.WRITE_FIFO_FULL == 0 and value & SpiConfig.READ_FIFO_FULL == 0
    assert value & SpiConfig.WRITE_FIFO_EMPTY and value & EMPTY  # real state: both empty
    clock.now = 20 * MS
    b.process(write_request(Register.SPI_CONFIG, bytes([EMPTY])))  # cannot "set" empty
    assert status(b) & EMPTY == 0


def test_read_fifo_reset_clears_the_fifo_and_discards_data_while_held():
    clock = FakeClock()
    b = board(clock)
    clock.now = 10 * MS
    assert status(b) & EMPTY == 0
    level = b.fifo_level
    b.process(write_request(Register.SPI_CONFIG, bytes([SpiConfig.READ_FIFO_RESET])))  # held
    assert status(b) & EMPTY
    clock.now = 20 * MS
    assert status(b) & EMPTY and b.stats.discarded_hits > 0
    b.process(write_request(Register.SPI_CONFIG, b"\x00"))  # released
    assert b.stats.fifo_cleared_bytes == level
    assert (b.stats.fifo_resets, b.stats.spi_resets) == (1, 0)
    reads = []
    for _ in range(10):
        clock.now += MS
        data = daq_poll(b)
        if data:
            reads.append(data)
    assert reads and np.array_equal(decode(reads), b.truth(zeros(b)))
    # Clean frames are 16 bytes a hit: every hit is served, cleared, discarded or waiting.
    stats = b.stats
    assert stats.hits_generated == stats.hits_queued + stats.discarded_hits
    assert stats.hits_queued == stats.hits_served + level // 16 + b.fifo_level // 16


def test_spi_master_reset_stops_transfers_but_keeps_what_the_fifo_holds():
    clock = FakeClock()
    b = board(clock)
    clock.now = 10 * MS
    assert status(b) & EMPTY == 0
    level = b.fifo_level
    b.process(write_request(Register.SPI_CONFIG, bytes([SpiConfig.SPI_MODULE_RESET])))
    clock.now = 20 * MS
    assert status(b) & SpiConfig.SPI_MODULE_RESET
    assert b.fifo_level == level and b.stats.discarded_hits > 0 and b.stats.spi_resets == 1


def test_write_fifo_reset_is_counted_and_a_pulse_in_one_request_works():
    clock = FakeClock()
    b = board(clock)
    clock.now = 5 * MS
    pulse = SpiConfig.WRITE_FIFO_RESET | SpiConfig.READ_FIFO_RESET
    b.process(write_request(Register.SPI_CONFIG, bytes([pulse, 0])))
    assert b.stats.write_fifo_resets == 1 and b.stats.fifo_resets == 1
    assert status(b) & EMPTY
    assert status(b) & pulse == 0  # released by the second byte


def test_undecoded_registers_read_the_last_byte_read_are_logged_and_counted(caplog):
    b = board(FakeClock())
    with caplog.at_level(logging.DEBUG, logger="astropix_hil.boards.nexys.registers"):
        assert b.process(read_request(0x42, 3)) == b"\x00\x00\x00"
        b.process(write_request(Register.SPI_CLOCK_DIVIDER, b"\x2a"))
        assert b.process(read_request(Register.SPI_CLOCK_DIVIDER, 1)) == b"\x2a"
        assert b.process(read_request(0x42, 2)) == b"\x2a\x2a"
        assert b.process(write_request(0x08, b"\x01\x02")) == b""
    assert b.stats.unknown_register_accesses == 3
    messages = [r.getMessage() for r in caplog.records]
    assert any("0x42" in m and "last byte read" in m for m in messages)
    assert any("0x08" in m and "ignored" in m for m in messages)
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.DEBUG,
                                                   logging.WARNING]


def test_the_team_test_io_register_is_counted_without_a_warning(caplog):
    b = board(FakeClock())
    with caplog.at_level(logging.DEBUG, logger="astropix_hil.boards.nexys.registers"):
        assert b.process(write_request(0x09, b"\x55")) == b""  # the team's _test_io
        assert b.process(read_request(0x09, 1)) == b"\x00"  # stale: nothing read before
    assert b.stats.unknown_register_accesses == 2 and b.stats.unknown_registers == ["0x09"]
    assert [r.levelno for r in caplog.records] == [logging.DEBUG, logging.DEBUG]


def test_writes_to_the_read_fifo_are_ignored():
    clock = FakeClock()
    b = board(clock)
    clock.now = 5 * MS
    status(b)
    level = b.fifo_level
    assert b.process(write_request(Register.SPI_READ_FIFO, b"\x00" * 4)) == b""
    assert b.fifo_level == level and b.stats.ignored_writes == 1


def test_malformed_requests_are_dropped_counted_and_lose_no_good_request():
    clock = FakeClock()
    b = board(clock)
    clock.now = 5 * MS
    garbage = bytes([0x07, 0x15, 0x00, 0x01])
    stream = (read_request(Register.SPI_CONFIG, 1) + garbage
              + read_request(Register.SPI_READ_FIFO, 2048) + garbage + garbage
              + read_request(Register.SPI_CLOCK_DIVIDER, 2))
    reply = b.process(stream)
    assert len(reply) == 1 + 2048 + 2
    assert reply[0] & EMPTY == 0 and reply[1:3] == b"\xbc\xbc"
    assert b.stats.malformed == 3 and b.stats.requests == 3
    assert np.array_equal(decode([reply[1:2049]]), b.truth(zeros(b)))


def test_a_slow_reader_overflows_the_fifo_and_the_truth_stays_exact():
    clock = FakeClock()
    b = board(clock, rate=200_000, anomalies="all=0.05", fifo_size=4096)
    reads = []
    for _ in range(40):
        clock.now += 5 * MS  # 1000 hits per poll, 16 kB, into a 4 kB FIFO
        assert b.process(read_request(Register.SPI_CONFIG, 1))[0] & SpiConfig.READ_FIFO_FULL
        assert b.fifo_level <= 4096
        reads.append(b.process(read_request(Register.SPI_READ_FIFO, 2048)))
    stats = b.stats
    assert stats.fifo_overflow_frames > 1000 and stats.fifo_overflow_hits > 1000
    assert stats.fifo_overflow_bytes >= 16 * stats.fifo_overflow_frames
    assert np.array_equal(decode(reads), b.truth(zeros(b)))
    assert stats.hits_generated == stats.hits_queued + stats.fifo_overflow_hits
    assert stats.hits_served < stats.hits_queued  # the rest: dropped by the decoder, or waiting


def test_reads_shorter_than_a_frame_cut_it_and_say_so(caplog):
    clock = FakeClock()
    b = board(clock, mode="injection", rate=None)
    assert b.truth_exact
    with caplog.at_level(logging.WARNING, logger="astropix_hil.boards.nexys.board"):
        first = b.process(read_request(Register.SPI_READ_FIFO, 10))
    assert first == b"\xbc\xbc" + first[2:] and len(first) == 10
    assert b.stats.cut_frames == 1 and not b.truth_exact
    assert "no longer exact" in caplog.text
    assert b.process(read_request(Register.SPI_READ_FIFO, 10)) == b"\xbc" * 6 + b"\xff" * 4


def test_same_seed_and_clock_schedule_same_bytes():
    outputs = []
    for _ in range(2):
        clock = FakeClock()
        b = board(clock, seed=7, anomalies="all=0.2", rate=50_000)
        out = b""
        for _ in range(30):
            clock.now += MS
            out += b.process(read_request(Register.SPI_CONFIG, 1)
                             + read_request(Register.SPI_READ_FIFO, 2048))
        outputs.append(out)
    assert outputs[0] == outputs[1] and len(outputs[0]) == 30 * 2049


def test_from_options_takes_url_strings_and_names_bad_ones():
    b = VirtualBoard.from_options(seed="3", rate="1000", mode="poisson", anomalies="split=0.5",
                                  chips="2", fifo_size="8192")
    assert b.chip.seed == 3 and b.chip.config.mean_rate() == 2000
    assert b.chip.config.anomalies.split == 0.5 and b._fifo.size == 8192
    for options, message in (({"seed": "x"}, "seed='x'"), ({"rate": "fast"}, "rate='fast'"),
                             ({"fifo_size": "1000"}, "fifo_size=1000"),
                             ({"colour": "red"}, "colour")):
        with pytest.raises(ValueError, match=message):
            VirtualBoard.from_options(**options)
    assert VirtualBoard.from_options()._fifo.size == DEFAULT_FIFO_SIZE


def test_board_made_from_a_chip_stream_object():
    clock = FakeClock()
    chip = ChipStream(EmulatorConfig.build(mode="poisson", rate=5000, chip_ids=[4, 9]), seed=2)
    b = VirtualBoard(chip, fifo_size=8192, clock=clock, truth=True)
    b.release_spi_master()
    reads = []
    for _ in range(20):
        clock.now += MS
        data = daq_poll(b)
        if data:
            reads.append(data)
    truth = b.truth(zeros(b))
    assert set(truth["chip_id"].tolist()) == {4, 9}
    assert np.array_equal(decode(reads), truth)


def test_truth_timestamps_and_csv_match_the_decoded_file(tmp_path):
    clock = FakeClock()
    b = board(clock, anomalies="all=0.1", rate=10_000)
    readouts = []
    for i in range(40):
        clock.now += MS
        data = daq_poll(b)
        if data:
            readouts.append(AstroPix4Readout(data, len(readouts), 1_700_000_000_000 + i))
    apx = tmp_path / "daq.apx"
    write_apx(apx, readouts, {"run": "board test"})
    stamps = [r.timestamp for r in readouts]
    assert main(["convert", str(apx), "-o", str(tmp_path / "decoded.csv")]) == 0
    from astropix_hil.fileio import read_header

    count = b.write_truth_csv(tmp_path / "truth.csv", read_header(apx), timestamps=stamps)
    assert count == len(b.truth()) > 100
    assert (tmp_path / "truth.csv").read_text() == (tmp_path / "decoded.csv").read_text()
    with pytest.raises(EmulatorError, match="timestamps"):
        b.truth(stamps[:-1])
    with pytest.raises(EmulatorConfigError, match="fifo_size"):
        VirtualBoard(ChipStream(), fifo_size=100)
