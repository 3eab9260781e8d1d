"""The A-STEP link and run sequence over astepemu://: the team's start-up, lost and stray
bytes, a silent board."""

from __future__ import annotations

import numpy as np
import pytest
import serial

import astropix_hil  # noqa: F401 - registers astepemu://
from astropix_hil.astep_fmt import decode_readouts, walk
from astropix_hil.boards.astep.link import AstepLink, open_link
from astropix_hil.boards.astep.registers import reg
from astropix_hil.boards.astep.sequence import start_run
from astropix_hil.errors import LinkError, LinkTimeoutError


def link_for(query: str, reply_timeout: float = 0.2) -> AstepLink:
    return open_link(f"astepemu://?keep_truth=1&{query}", reply_timeout=reply_timeout)


def poll(link: AstepLink, readouts: int, max_polls: int = 20000) -> list[bytes]:
    got: list[bytes] = []
    for _ in range(max_polls):
        data = link.poll_readout()
        if data is not None:
            got.append(data)
            if len(got) >= readouts:
                return got
    raise AssertionError(f"{len(got)} readouts in {max_polls} polls")


def test_the_run_sequence_leaves_the_board_as_the_team_software_does():
    link = link_for("layers=2&chips=3&seed=2&rate=5000")
    board = link.port.board
    config = bytes([0x04, 0x05]) * 17_000  # a 34 kB shift-register stream
    info = start_run(link, layers=2, chips=3, reset_delay=0.0, chip_config=config)
    values = board.values
    assert info.firmware_id == 0xAB04 and info.fpga_ts_byteorder == "big"
    assert values["CLOCK_CTRL"] == 0x1A and values["LAYERS_FPGA_TIMESTAMP_CTRL"] == 0x13
    assert values["LAYERS_FPGA_TIMESTAMP_DIVIDER_MATCH"] == 80
    assert values["SPI_LAYERS_CKDIVIDER"] == 19 and values["LAYERS_CFG_NODATA_CONTINUE"] == 7
    assert values["CHIP_VERSION"] == 4 and values["LAYERS_SR_OUT"] == 0x05
    assert [values[f"LAYER_{n}_CFG_CTRL"] for n in range(3)] == [0x08, 0x08, 0x14]
    assert [layer.ids for layer in board.layers[:2]] == [[0, 1, 2], [0, 1, 2]]
    assert info.config_bytes == len(config) and board.stats.bytes_in > len(config)
    reads = poll(link, 5)
    assert all(walk(r).consumed == len(r) for r in reads)
    link.close()
    assert [values[f"LAYER_{n}_CFG_CTRL"] for n in range(3)] == [0x15, 0x14, 0x14]


def test_the_chip_configuration_may_come_from_an_encoder():
    link = link_for("layers=3&chips=4&seed=2&rate=0")
    asked = []

    def encoder(layers: int, chips: int) -> bytes:
        asked.append((layers, chips))
        return b"\x04\x00\x2a"

    info = start_run(link, layers=3, chips=4, reset_delay=0.0, chip_config=encoder)
    assert asked == [(3, 4)] and info.config_bytes == 3
    assert link.port.board.values["LAYERS_SR_OUT"] == 0x2A


# The stray byte ends a readout only when it follows a data reply: at this rate the FIFO is
# never empty, so (nearly) every request is one, however fast the polls go.
@pytest.mark.parametrize("fault", ["short_every=5&rate=30000", "garbage_every=4&rate=300000"])
def test_lost_and_stray_reply_bytes_are_counted_and_never_shift_later_data(fault):
    link = link_for(f"layers=2&chips=2&seed=3&{fault}")
    board = link.port.board
    start_run(link, layers=2, chips=2, reset_delay=0.0)
    reads = poll(link, 40)
    lost = link.stats.readouts_lost
    assert lost > 0 and link.stats.resyncs > 0
    assert board.stats.reads_served == len(reads) + lost  # every read served is accounted
    # Each readout kept is exactly one read the board served, whole frames, true hits.
    truth = board.truth()
    names = [n for n in truth.dtype.names if n not in ("timestamp", "readout_id")]
    kept = []
    for data in reads:
        assert walk(data).consumed == len(data)
        hits = decode_readouts([(data, 0, 0)]).hits
        matches = [rid for rid in np.unique(truth["readout_id"])
                   if np.array_equal(truth[truth["readout_id"] == rid][names], hits[names])]
        assert matches, "a readout that is not one of the board's reads"
        kept.append(matches[0])
    assert kept == sorted(kept)


def test_a_board_that_stops_answering_ends_in_a_clear_error():
    link = link_for("seed=1&rate=1000&stall_after=40", reply_timeout=0.1)
    start_run(link, layers=1, chips=1, reset_delay=0.0)
    with pytest.raises(LinkTimeoutError, match=r"stopped answering|in a row lost"):
        for _ in range(100):
            link.poll_readout()


def test_a_port_that_disappears_ends_in_a_link_error():
    link = link_for("seed=1&rate=1000&disconnect_after=30")
    with pytest.raises(LinkError, match="disappeared"):
        start_run(link, layers=1, chips=1, reset_delay=0.0)


def test_stray_bytes_waiting_on_the_line_are_drained_before_a_request():
    link = link_for("seed=1&rate=0")
    link.port._rx += b"\x13\x37"
    assert link.read_value(reg("CHIP_VERSION")) == 3
    assert link.stats.resyncs == 1 and link.stats.garbage_bytes == 2


def test_a_board_that_is_not_a_step_firmware_is_refused():
    link = link_for("seed=1&rate=0")
    link.port.board.values["HK_FIRMWARE_ID"] = 0x00001234
    with pytest.raises(LinkError, match="not an A-STEP firmware"):
        start_run(link, reset_delay=0.0)


def test_old_firmware_means_little_endian_timestamps():
    link = link_for("seed=1&rate=0&byteorder=little")
    assert start_run(link, reset_delay=0.0).fpga_ts_byteorder == "little"


def test_the_team_pyserial_call_opens_the_emulated_board():
    # The team's software: serial.Serial(port=<path>, baudrate=921600, timeout=3); here the
    # in-process URL stands in for the path (the pty case is in test_astep_processes).
    port = serial.serial_for_url("astepemu://?seed=1&rate=0", baudrate=921600, timeout=3)
    port.write(bytes.fromhex("06000400"))
    assert int.from_bytes(port.read(4), "little") == 0xAB04


def test_ports_lists_ftdi_uarts_as_astep_candidates(monkeypatch, capsys):
    from types import SimpleNamespace

    from astropix_hil.cli import main
    from astropix_hil.cli import ports as ports_cli

    def port(device, vid, pid):
        return SimpleNamespace(device=device, description="dev", serial_number="S", vid=vid,
                               pid=pid, location=None)

    monkeypatch.setattr(ports_cli.list_ports, "comports",
                        lambda: [port("/dev/ttyUSB0", 0x0403, 0x6010),
                                 port("/dev/ttyACM0", 0x2341, 0x0043)])
    assert main(["ports", "--json", "--all"]) == 0
    import json

    listed = {p["device"]: p["profiles"] for p in json.loads(capsys.readouterr().out)}
    assert listed == {"/dev/ttyUSB0": ["nexys", "astep"], "/dev/ttyACM0": []}


@pytest.mark.parametrize("args", [["--layers", "5"], ["--anomalies", "foo=0.1"],
                                  ["--mode", "poisson"], ["--chips", "0"]])
def test_bad_astep_board_options_end_in_one_line(args, capsys):
    from astropix_hil.cli import main

    assert main(["board", "--profile", "astep", "--pty", *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("apx-hil board: error:")


def test_hits_the_start_up_flush_discards_are_told_apart_in_the_truth():
    import time

    link = link_for("layers=1&chips=2&seed=5&rate=50000")
    board = link.port.board
    start_run(link, layers=1, chips=2, reset_delay=0.0)
    first = poll(link, 5)
    # The first DAQ dies with readout on: data piles up in the FIFO for the next one.
    deadline = time.monotonic() + 10
    while link.read_size() < 1000:
        assert time.monotonic() < deadline, "the board's FIFO did not fill"
    second = AstepLink(link.port, reply_timeout=0.5)
    info = start_run(second, layers=1, chips=2, reset_delay=0.0)
    assert info.flush_reads == 1 and info.flushed_bytes >= 1000
    reads = poll(second, 5)
    truth = board.truth()
    flushed = truth[truth["readout_id"] == len(first)]
    assert len(flushed) > 0  # served by the board, discarded by the client: in the truth
    kept = truth[truth["readout_id"] > len(first)]
    decoded = decode_readouts([(r, len(first) + 1 + i, 0) for i, r in enumerate(reads)]).hits
    names = [n for n in truth.dtype.names if n != "timestamp"]
    assert len(decoded) > 0 and np.array_equal(decoded[names], kept[names])


class LatePort:
    """A port whose replies to the writes numbered in ``late`` arrive only when the next
    request is written (a reply later than the link's deadline)."""

    def __init__(self, late: set[int]) -> None:
        from astropix_hil.boards.astep.board import AstepBoard

        self.board = AstepBoard.from_options(seed=1, rate=0)
        self.late, self.timeout, self.writes = late, 0.02, 0
        self._rx, self._held = bytearray(), b""

    @property
    def in_waiting(self) -> int:
        return len(self._rx)

    def write(self, data: bytes) -> int:
        self.writes += 1
        reply = self.board.process(bytes(data))
        self._rx += self._held
        self._held = b""
        if self.writes in self.late:
            self._held = reply
        else:
            self._rx += reply
        return len(data)

    def read(self, size: int = 1) -> bytes:
        out = bytes(self._rx[:size])
        del self._rx[:size]
        return out

    def reset_input_buffer(self) -> None:
        self._rx.clear()

    def close(self) -> None:
        pass


def test_a_late_reply_never_shifts_later_replies():
    # The firmware id read times out; its reply and the retry's come one request late, so
    # without the alignment probe the version read would get the firmware id (0xAB04) and
    # the run would decode big-endian timestamps as little-endian.
    port = LatePort(late={1, 2, 3})
    link = AstepLink(port, reply_timeout=0.1)
    info = start_run(link, reset_delay=0.0)
    assert (info.firmware_id, info.firmware_version) == (0xAB04, 26040901)
    assert info.fpga_ts_byteorder == "big"
    assert link.stats.timeouts >= 1 and link.realignments >= 1
