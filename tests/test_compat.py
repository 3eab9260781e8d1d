"""Their software, our board: the ftd2xx stand-in, the FTDI port listing, ``run-with-board``
and the pytest plugin's fixtures."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import serial

import astropix_hil.compat.ftd2xx as ftd2xx
from astropix_hil.bulk import decode_readouts
from astropix_hil.cli import main
from astropix_hil.cli.run_with_board import child_environment
from astropix_hil.fileio import apx_open
from astropix_hil.fmt import HIT_COLUMNS, AstroPix4Readout
from astropix_hil.hitcsv import read_hits_csv

PROGRAMS = Path(__file__).parent / "programs"
#: Columns the board's truth and a DAQ's decoding share (the timestamp is each side's clock).
COMPARED = [name for name in HIT_COLUMNS if name != "timestamp"]


def hits_of(lines_file: Path) -> np.ndarray:
    """Decode the ``INDEX<TAB>HEX`` readouts a test program stored."""
    readouts = []
    for line in lines_file.read_text().splitlines():
        index, data = line.split("\t")
        readouts.append(AstroPix4Readout(bytes.fromhex(data), int(index), 0))
    return decode_readouts(readouts).hits


def assert_same_hits(got: np.ndarray, truth: np.ndarray) -> None:
    assert len(truth) > 0, "the board served no hits: nothing was compared"
    assert len(got) == len(truth)
    for name in COMPARED:
        np.testing.assert_array_equal(got[name], truth[name], err_msg=name)


@pytest.fixture
def attached(apx_board, monkeypatch):
    """The stand-in's interface A forwarded to the test's board."""
    monkeypatch.setenv(ftd2xx.PORT_VARIABLE, apx_board.port)
    return apx_board


# -- the ftd2xx stand-in, driven as a D2XX program drives it ------------------------------------

def test_nothing_attached_lists_none(monkeypatch):
    monkeypatch.delenv(ftd2xx.PORT_VARIABLE, raising=False)
    assert ftd2xx.listDevices() is None
    assert ftd2xx.createDeviceInfoList() == 0
    with pytest.raises(ftd2xx.DeviceError, match="DEVICE_NOT_FOUND"):
        ftd2xx.open(0)


def test_device_list_is_a_digilent_ft2232h(attached):
    serials, descriptions = ftd2xx.listDevices(0), ftd2xx.listDevices(2)
    assert descriptions == [b"Digilent USB Device A", b"Digilent USB Device B"]
    assert all(s.startswith(b"210276") for s in serials)
    assert [s[-1:] for s in serials] == [b"A", b"B"]
    assert ftd2xx.createDeviceInfoList() == 2
    detail = ftd2xx.getDeviceInfoDetail(1)
    assert (detail["type"], detail["id"]) == (ftd2xx.defines.DEVICE_2232H, 0x04036010)
    assert detail["description"] == b"Digilent USB Device B"
    with pytest.raises(ftd2xx.DeviceError, match="DEVICE_NOT_OPENED"):
        ftd2xx.open(1)  # interface B: listed, not openable
    with pytest.raises(ftd2xx.DeviceError, match="DEVICE_NOT_FOUND"):
        ftd2xx.open(2)


def test_open_by_description_and_serial(attached):
    with ftd2xx.openEx(b"Digilent USB Device A", ftd2xx.OPEN_BY_DESCRIPTION) as handle:
        assert handle.description == b"Digilent USB Device A"
        assert handle.getDeviceInfo()["serial"].endswith(b"A")
    serial_a = ftd2xx.listDevices(0)[0]
    handle = ftd2xx.openEx(serial_a)
    handle.close()
    with pytest.raises(ftd2xx.DeviceError, match="INVALID_HANDLE"):
        handle.read(1)
    with pytest.raises(ftd2xx.DeviceError, match="DEVICE_NOT_FOUND"):
        ftd2xx.openEx(b"no such serial")


def test_settings_are_remembered_and_timeouts_checked(attached):
    with ftd2xx.open(0) as handle:
        handle.setBitMode(0xFF, 0x40)
        handle.setLatencyTimer(2)
        handle.setUSBParameters(64000, 64000)
        handle.setFlowControl(ftd2xx.defines.FLOW_RTS_CTS)
        assert handle.settings == {"bit_mode": (0xFF, 0x40), "latency_timer": 2,
                                   "usb_parameters": (64000, 64000),
                                   "flow_control": (0x0100, -1, -1)}
        assert handle.getLatencyTimer() == 2
        with pytest.raises(ftd2xx.DeviceError, match="INVALID_PARAMETER"):
            handle.setTimeouts(-1, 0)
        handle.resetDevice()
        assert handle.settings == {}


def wait_queue(handle, count: int) -> None:
    """Until ``count`` bytes are waiting (a bounded wait for the board thread)."""
    for _ in range(5000):
        if handle.getQueueStatus() >= count:
            return
        threading.Event().wait(0.002)
    pytest.fail(f"{count} bytes did not arrive")


def test_read_returns_what_arrived_when_the_timeout_expires(attached):
    with ftd2xx.open(0) as handle:
        handle.setTimeouts(50, 50)
        assert handle.read(4) == b""  # nothing requested: the timeout expires empty
        handle.write(bytes([0x00, 0x15, 0x00, 0x01]))  # one status byte comes back
        wait_queue(handle, 1)
        assert len(handle.read(8)) == 1  # asked for 8, the timeout hands out the one


def test_timeout_zero_waits_for_every_byte(attached):
    with ftd2xx.open(0) as handle:
        handle.setTimeouts(0, 0)  # D2XX: wait forever
        handle.write(bytes([0x00, 0x15, 0x03, 0x00]))  # 768 status bytes
        assert len(handle.read(768)) == 768


def test_queue_status_and_purge(attached):
    with ftd2xx.open(0) as handle:
        handle.setTimeouts(1000, 1000)
        handle.write(bytes([0x00, 0x15, 0x00, 0x10]))
        assert len(handle.read(1)) == 1
        wait_queue(handle, 15)  # the other 15 bytes; then purge drops them
        assert handle.getStatus() == (15, 0, 0)
        handle.purge(ftd2xx.defines.PURGE_RX)
        assert handle.getQueueStatus() == 0


@pytest.mark.apx_board(seed=5, rate=3000, mode="poisson")
def test_d2xx_program_reads_the_truth(attached, tmp_path, monkeypatch):
    # The program imports ftd2xx as the real package's name: this process gives it ours.
    monkeypatch.setitem(sys.modules, "ftd2xx", ftd2xx)
    monkeypatch.delitem(sys.modules, "tests.programs.d2xx_daq", raising=False)
    d2xx_daq = importlib.import_module("tests.programs.d2xx_daq")
    out = tmp_path / "readouts.txt"
    assert d2xx_daq.main(str(out), readouts=20) == 0
    assert_same_hits(hits_of(out), attached.truth())
    stats = attached.stats
    assert stats["readouts_served"] == 20
    assert stats["requests_per_register"]["0x18 read"] == 20


def test_url_port(monkeypatch, apx_board_url, tmp_path):
    monkeypatch.setenv(ftd2xx.PORT_VARIABLE, apx_board_url)
    with ftd2xx.open(0) as handle:
        handle.setTimeouts(500, 500)
        handle.write(bytes([0x00, 0x15, 0x00, 0x02]))
        assert len(handle.read(2)) == 2


# -- the port listing, as a child process sees it ----------------------------------------------

LIST_PORTS = ("import serial.tools.list_ports as l; p = l.comports(); "
              "print(p[0].device if p else '', hex(p[0].vid or 0) if p else '', "
              "p[0].manufacturer if p else '', l.comports()[0][0] if p else '')")


def test_port_listing_hook_in_a_child(apx_board):
    env = child_environment(apx_board.port)
    out = subprocess.run([sys.executable, "-c", LIST_PORTS], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    assert out == [apx_board.port, "0x403", "FTDI", apx_board.port]


def test_port_listing_untouched_without_the_variable(apx_board):
    env = child_environment(apx_board.port)
    del env["APX_HIL_SERIAL_PORTS"]
    out = subprocess.run([sys.executable, "-c", LIST_PORTS], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert apx_board.port not in out


def test_ftd2xx_importable_in_a_child(apx_board):
    env = child_environment(apx_board.port)
    code = "import ftd2xx; print(ftd2xx.listDevices(2)[0].decode(), ftd2xx.__name__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.split() == ["Digilent", "USB", "Device", "A", "ftd2xx"]


# -- apx-hil run-with-board ---------------------------------------------------------------------

def run_with_board(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["run-with-board", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("program", ["d2xx_daq.py", "serial_daq.py"])
def test_run_with_board_unmodified_programs(program, tmp_path, capsys):
    out, truth = tmp_path / "readouts.txt", tmp_path / "truth.csv"
    status, stdout, _ = run_with_board(
        capsys, "--seed", "2", "--rate", "2000", "--mode", "poisson", "--truth", str(truth),
        "--json", "--", sys.executable, str(PROGRAMS / program), str(out), "15")
    assert status == 0
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["exit_status"] == 0
    assert summary["board"]["readouts_served"] == 15
    assert summary["board"]["unknown_registers"] == []
    _, truth_hits = read_hits_csv(truth)
    assert_same_hits(hits_of(out), truth_hits)


def test_run_with_board_astep_profile_and_a_pyserial_program(tmp_path, capsys):
    from astropix_hil.astep_files import read_astep_csv
    from astropix_hil.astep_fmt import decode_readouts as decode_astep

    out, truth = tmp_path / "run.bin", tmp_path / "truth.csv"
    status, stdout, _ = run_with_board(
        capsys, "--profile", "astep", "--seed", "3", "--rate", "20000", "--truth", str(truth),
        "--json", "--", sys.executable, str(PROGRAMS / "astep_serial_daq.py"), str(out),
        "2000")
    assert status == 0
    board = json.loads(stdout.strip().splitlines()[-1])["board"]
    raw = out.read_bytes()
    assert len(raw) >= 2000
    hits = decode_astep([(raw, 0, 0)], byteorder="big").hits
    _, true_hits = read_astep_csv(truth)
    # The program read every byte the board served: the same hits, field for field.
    assert board["bytes_served"] == len(raw)
    assert len(hits) == len(true_hits) > 0
    for name in hits.dtype.names:
        if name not in ("readout_id", "timestamp", "decoding_order"):
            np.testing.assert_array_equal(hits[name], true_hits[name], err_msg=name)


def test_run_with_board_forwards_the_exit_status(capsys):
    status, _, err = run_with_board(capsys, "--", sys.executable, "-c", "raise SystemExit(3)")
    assert status == 3
    assert err.strip().splitlines()[-1].startswith(
        "apx-hil run-with-board: program exit status 3; board: 0 requests")


def test_run_with_board_reports_unknown_registers(capsys):
    code = ("import ftd2xx; h = ftd2xx.open(0); h.setTimeouts(1000, 1000); "
            "h.write(bytes([0, 0x99, 0, 1])); assert len(h.read(1)) == 1")
    status, stdout, _ = run_with_board(capsys, "--json", "--", sys.executable, "-c", code)
    assert status == 0
    board = json.loads(stdout)["board"]
    assert board["requests_per_register"] == {"0x99 read": 1}
    assert board["unknown_registers"] == ["0x99"]


def test_run_with_board_program_not_found(capsys):
    status, _, err = run_with_board(capsys, "--", "/nonexistent/program")
    assert status == 127
    assert "cannot run '/nonexistent/program'" in err
    assert "Traceback" not in err


def test_run_with_board_timeout(capsys):
    status, _, err = run_with_board(capsys, "--timeout", "0.5", "--", sys.executable, "-c",
                                    "import time; time.sleep(60)")
    assert status == 124
    assert "still running after 0.5 s" in err


def test_run_with_board_needs_a_program(capsys):
    status, _, err = run_with_board(capsys)
    assert status == 1
    assert "no program to run" in err


# -- the other fixtures of the plugin -----------------------------------------------------------

@pytest.mark.apx_emulated_run(readouts=30, seed=4, mode="poisson", rate=5000)
def test_emulated_run_fixture(apx_emulated_run):
    with apx_open(apx_emulated_run.path) as reader:
        readouts = list(reader)
    assert len(readouts) == 30
    hits = decode_readouts(readouts).hits
    assert len(hits) == len(apx_emulated_run.truth) > 0
    for name in HIT_COLUMNS:
        np.testing.assert_array_equal(hits[name], apx_emulated_run.truth[name], err_msg=name)
    assert apx_emulated_run.header["emulator"]["seed"] == 4


def test_board_url_fixture_opens(apx_board_url):
    import astropix_hil  # noqa: F401 - registers apxemu://

    with serial.serial_for_url(apx_board_url, timeout=0.5) as port:
        port.write(bytes([0x00, 0x15, 0x00, 0x01]))
        assert len(port.read(1)) == 1


@pytest.mark.parametrize("namespaces", [False, True])
def test_multicast_fixture_carries_datagrams(request, namespaces):
    import socket

    request.node.add_marker(pytest.mark.apx_multicast(namespaces=namespaces))
    channel = request.getfixturevalue("apx_multicast")
    assert channel.group.startswith("239.")
    with channel.receiver.entered():
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind(("", channel.port))
        membership = socket.inet_aton(channel.group) + socket.inet_aton(channel.receiver.address)
        rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        rx.settimeout(5)
    with channel.sender.entered():
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                      socket.inet_aton(channel.sender.address))
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    with rx, tx:
        tx.sendto(b"hello", (channel.group, channel.port))
        data, (source, _) = rx.recvfrom(64)
    assert data == b"hello"
    assert source == channel.sender.address
    if namespaces:
        assert channel.sender.namespace != channel.receiver.namespace


@pytest.mark.apx_board(profile="astep", seed=1, rate=5000)
def test_astep_board_fixture(apx_board):
    with serial.Serial(apx_board.port, 921600, timeout=3) as port:
        port.write(bytes.fromhex("06000400"))
        assert int.from_bytes(port.read(4), "little") == 0xAB04
    assert apx_board.profile == "astep"
    assert apx_board.stats["requests"] >= 1


def test_strategies_fixture(apx_strategies):
    from astropix_hil import strategies

    assert apx_strategies is strategies
