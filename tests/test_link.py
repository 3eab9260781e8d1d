"""The DAQ link: register access and the readout poll, against the virtual board through the
same pyserial ports a real board is opened with, including the link faults."""

from __future__ import annotations

import time

import numpy as np
import pytest
import serial

import astropix_hil.urlhandler  # registers apxemu:// and ftdififo://
from astropix_hil.boards.link import open_port
from astropix_hil.boards.nexys.board import VirtualBoard
from astropix_hil.boards.nexys.link import NexysLink, open_link
from astropix_hil.boards.nexys.protocol import READOUT_SIZE, Register, SpiConfig
from astropix_hil.boards.nexys.replay import ReplayBoard
from astropix_hil.bulk import decode_readouts
from astropix_hil.errors import LinkError, LinkTimeoutError
from astropix_hil.fmt import AstroPix4Readout
from astropix_hil.urlhandler.protocol_ftdififo import Serial as FifoSerial
from astropix_hil.urlhandler.protocol_ftdififo import ftdi_url


class FakeClock:
    """A board clock the test moves by hand (ns)."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def emulated_port(url: str = "apxemu://?seed=7&mode=poisson&rate=20000", *,
                  clock: FakeClock | None = None, timeout: float = 0.05):
    """An apxemu:// port; with ``clock``, its board runs on the test's clock."""
    port = serial.serial_for_url(url, timeout=timeout)
    if clock is not None:
        options, _ = astropix_hil.urlhandler.protocol_apxemu.parse_url(url)
        port.board = VirtualBoard.from_options(clock=clock, pull_interval=0, truth=True,
                                               **options)
    with port.lock:  # the port's helper may be moving the board on
        port.board.release_spi_master()  # as the DAQ's start-up does
    return port


def poll_all(link: NexysLink, clock: FakeClock | None, polls: int, step_ns: int = 2_000_000):
    readouts = []
    for _ in range(polls):
        if clock is not None:
            clock.now += step_ns
        data = link.poll_readout()
        if data is not None:
            readouts.append(AstroPix4Readout(data, len(readouts), 0))
    return readouts


def same_hits_as_truth(readouts, board: VirtualBoard) -> None:
    hits = decode_readouts(readouts).hits
    truth = board.truth(timestamps=[0] * board.stats.readouts_served)
    assert board.truth_exact
    assert len(hits) > 0
    assert np.array_equal(hits, truth)


def test_polled_readouts_decode_to_the_board_truth():
    clock = FakeClock()
    port = emulated_port(clock=clock)
    link = NexysLink(port, reply_timeout=0.5)
    readouts = poll_all(link, clock, 300)
    assert len(readouts) == port.board.stats.readouts_served > 100
    assert all(len(r.data()) <= READOUT_SIZE for r in readouts)
    same_hits_as_truth(readouts, port.board)
    assert link.stats.timeouts == link.stats.resyncs == link.stats.readouts_lost == 0


def test_every_read_of_the_fifo_follows_a_status_showing_data():
    clock = FakeClock()
    port = emulated_port("apxemu://?seed=3&mode=poisson&rate=2000", clock=clock)
    sent: list[bytes] = []
    write = port.write
    port.write = lambda data: sent.append(bytes(data)) or write(data)
    link = NexysLink(port)
    poll_all(link, clock, 200, step_ns=300_000)
    assert link.stats.polls_empty > 0 and link.stats.polls_with_data > 0
    # Every write ends with a status request; a FIFO read only follows a status reply.
    assert all(w[-4:] == bytes([0, Register.SPI_CONFIG, 0, 1]) for w in sent)
    assert sent[0] == bytes([0, Register.SPI_CONFIG, 0, 1])


def test_a_full_fifo_is_read_in_bursts_without_losing_a_readout():
    recorded = [AstroPix4Readout(bytes([0xBC, 0xBC, 0xE0, 1, 2, 3, 4, 5, 6, i % 256, 0xBC]),
                                 i, i) for i in range(200)]
    board = ReplayBoard(recorded)
    board.release_spi_master()

    class Port:
        timeout = 0.05

        def __init__(self):
            self.rx = bytearray()
            self.writes = 0

        def write(self, data):
            self.writes += 1
            self.rx += board.process(data)

        def read(self, n):
            out = bytes(self.rx[:n])
            del self.rx[:n]
            return out

        @property
        def in_waiting(self):
            return len(self.rx)

        def reset_input_buffer(self):
            self.rx.clear()

        def close(self):
            pass

    port = Port()
    link = NexysLink(port, burst=4)
    got = []
    for _ in range(400):
        data = link.poll_readout()
        if data is not None:
            got.append(data.rstrip(b"\xff"))
        if len(got) == len(recorded):
            break
    assert got == [r.data() for r in recorded]
    # Four readouts per round trip while 16 or more are due, then one.
    # A first status poll, then four readouts per round trip while 16 or more are due
    # (the status after 188 says 12 remain), then one per round trip.
    assert port.writes == 1 + 188 // 4 + 12


def test_register_access_round_trips():
    link = NexysLink(emulated_port())
    link.write_register(Register.SPI_CLOCK_DIVIDER, 0x2A)
    assert link.read_register(Register.SPI_CLOCK_DIVIDER) == b"\x2a"
    link.write_registers(Register.SPI_CONFIG, bytes([SpiConfig.READBACK_ENABLE]))
    status = link.read_status()
    assert status & SpiConfig.READBACK_ENABLE
    assert status & SpiConfig.WRITE_FIFO_EMPTY
    # undecoded addresses repeat the last byte read (here the status)
    assert link.read_register(0x7E, 3) == bytes([int(status)]) * 3
    link.reset_fifos()
    assert link.port.board.stats.fifo_resets == 1


def test_the_emulator_url_is_a_pyserial_port_for_any_program():
    port = serial.serial_for_url("apxemu://?seed=1&rate=1000", timeout=0.01)
    port.write(bytes([0, 0x15, 0, 1]))
    assert len(port.read(1)) == 1
    port.close()
    with pytest.raises(serial.SerialException, match="bad board option"):
        serial.serial_for_url("apxemu://?seed=1&bogus=2")
    with pytest.raises(serial.SerialException, match="stall_after='x' is not an integer"):
        serial.serial_for_url("apxemu://?stall_after=x")


def test_a_board_that_stops_answering_ends_in_a_clear_error_not_a_hang():
    link = open_link("apxemu://?seed=1&mode=poisson&rate=20000&stall_after=20",
                     reply_timeout=0.2)
    start = time.monotonic()
    with pytest.raises(LinkTimeoutError, match="stopped answering"):
        for _ in range(100):
            link.poll_readout()
    assert time.monotonic() - start < 5
    assert link.stats.timeouts >= 1


def test_a_port_that_disappears_ends_in_a_clear_error():
    link = open_link("apxemu://?seed=1&mode=poisson&rate=20000&disconnect_after=10")
    with pytest.raises(LinkError, match="port failed or disappeared"):
        for _ in range(100):
            link.poll_readout()


def test_stray_bytes_are_drained_and_no_wrong_readout_is_returned():
    clock = FakeClock()
    port = emulated_port("apxemu://?seed=5&mode=poisson&rate=20000&garbage_every=4",
                         clock=clock)
    link = NexysLink(port, reply_timeout=0.2)
    readouts = poll_all(link, clock, 300)
    assert link.stats.resyncs > 0 and link.stats.garbage_bytes > 0
    assert link.stats.readouts_lost > 0
    # What came through is exactly what the board served, minus the discarded replies.
    served = decode_readouts(readouts).hits
    truth = port.board.truth(timestamps=[0] * port.board.stats.readouts_served)
    assert len(served) < len(truth)
    kept = {tuple(row) for row in truth[["ts_dec1", "ts_dec2", "row", "column"]].tolist()}
    assert {tuple(row) for row in served[["ts_dec1", "ts_dec2", "row", "column"]].tolist()} \
        <= kept


def test_short_replies_time_out_and_are_counted_as_lost():
    link = open_link("apxemu://?seed=2&mode=poisson&rate=20000&short_every=5",
                     reply_timeout=0.1)
    with link.port.lock:
        link.port.board.release_spi_master()
    failures = 0
    for _ in range(60):
        try:
            link.poll_readout()
        except LinkTimeoutError as exc:
            failures += 1
            assert "expected" in str(exc) and "reply bytes" in str(exc)
    assert failures > 0
    assert link.stats.timeouts >= failures  # status reads that timed out are retried
    assert link.stats.readouts_lost > 0


def test_opening_a_missing_port_names_it():
    with pytest.raises(LinkError, match="cannot open board port '/dev/nonexistent-apx'"):
        open_port("/dev/nonexistent-apx")


class FakeFifoDevice:
    """pyftdi's Ftdi as the FIFO backend uses it, in front of a virtual board: replies come
    back in USB-sized pieces, as a real FT2232H delivers them."""

    def __init__(self, board) -> None:
        self.board = board
        self.rx = bytearray()
        self.closed = False

    def write_data(self, data) -> int:
        self.rx += self.board.process(bytes(data))
        return len(data)

    def read_data_bytes(self, size: int, attempt: int = 1) -> bytes:
        out = bytes(self.rx[:min(size, 510)])
        del self.rx[:len(out)]
        return out

    def purge_rx_buffer(self) -> None:
        self.rx.clear()

    def close(self) -> None:
        self.closed = True


def test_ftdi_fifo_backend_above_the_usb_calls_reads_the_board_truth():
    clock = FakeClock()
    board = VirtualBoard.from_options(seed=9, mode="poisson", rate="20000", clock=clock,
                                      pull_interval=0, truth=True)
    device = FakeFifoDevice(board)
    port = FifoSerial("ftdififo://ftdi:2232h/1", timeout=0.05, device=device)
    link = NexysLink(port)
    assert link.enable_readout()  # the board powers up with the SPI master in reset
    assert not link.enable_readout()
    readouts = poll_all(link, clock, 200)
    same_hits_as_truth(readouts, board)
    link.close()
    assert device.closed


def test_ftdi_fifo_url_and_a_missing_device():
    assert ftdi_url("ftdififo://ftdi:2232h/1") == "ftdi://ftdi:2232h/1"
    with pytest.raises(serial.SerialException, match="expected ftdififo://"):
        ftdi_url("ftdififo://")
    # The real pyftdi code path, up to the USB lookup: no FT2232H is attached here.
    with pytest.raises(LinkError, match="ftdififo: cannot open ftdi://ftdi:2232h/1"):
        open_link("ftdififo://ftdi:2232h/1")


def test_importing_the_package_registers_the_url_schemes():
    import subprocess
    import sys

    code = ("import serial, astropix_hil; "
            "p = serial.serial_for_url('apxemu://?seed=1&rate=1000', timeout=0.01); "
            "p.write(bytes([0, 0x15, 0, 1])); print(len(p.read(1)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "1"
