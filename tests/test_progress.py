"""Progress on a terminal: bars appear on a pseudo-terminal and are gone at the end, nothing
when stderr is not a terminal or with -q, the DAQ's status line fits the window, and messages
printed meanwhile stand on their own lines."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
import warnings
from pathlib import Path

import pytest

from astropix_hil.astep_files import import_bin
from astropix_hil.astep_fmt import encode_layer_frame, encode_v4
from astropix_hil.cli.progress import StatusLine, fit
from astropix_hil.fileio import write_apx
from astropix_hil.fmt import AstroPix4Readout

W0 = bytes.fromhex("e0401eac0dccc200")
APX_HIL = [sys.executable, "-m", "astropix_hil"]
_ESCAPE = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


class Screen:
    """Just enough of a terminal to replay what a command wrote: printable characters that
    wrap at the right edge, CR, LF, erase to end of line (ESC [K) and cursor up (ESC [A).
    A line rewritten in place (CR) after it wrapped leaves its first part behind: the cut-off
    lines a too-wide progress line leaves on a real terminal."""

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.rows = [""]
        self.wrapped = [False]  # row i continues on row i + 1
        self.row = self.col = 0

    def feed(self, text: str) -> Screen:
        at = 0
        for match in _ESCAPE.finditer(text):
            self._plain(text[at:match.start()])
            count, code = match.group(1), match.group(2)
            if code == "K":
                self.rows[self.row] = self.rows[self.row][:self.col]
                self.wrapped[self.row] = False
            elif code == "A":
                self.row = max(self.row - int(count or 1), 0)
            at = match.end()
        self._plain(text[at:])
        return self

    def _down(self) -> None:
        self.row += 1
        self.col = 0
        if self.row == len(self.rows):
            self.rows.append("")
            self.wrapped.append(False)

    def _plain(self, text: str) -> None:
        for char in text:
            if char == "\r":
                self.col = 0
            elif char == "\n":
                self._down()
            elif char >= " ":
                if self.col >= self.columns:  # deferred wrap, as xterm does
                    self.wrapped[self.row] = True
                    self._down()
                row = self.rows[self.row].ljust(self.col)
                self.rows[self.row] = row[:self.col] + char + row[self.col + 1:]
                self.col += 1

    def text(self) -> list[str]:
        """The screen's lines, wrapped rows joined, empty ones left out."""
        lines, current = [], ""
        for row, wrapped in zip(self.rows, self.wrapped, strict=True):
            current += row.ljust(self.columns) if wrapped else row.rstrip()
            if not wrapped:
                if current.strip():
                    lines.append(current)
                current = ""
        return lines


def run_on_pty(args: list[str], columns: int, timeout: float = 60.0) -> tuple[int, str]:
    """Run ``apx-hil ARGS`` with stderr on a pseudo-terminal ``columns`` wide; return its
    status and everything it wrote there."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = dict(os.environ, COLUMNS=str(columns), LINES="24")
    proc = subprocess.Popen([*APX_HIL, *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer of the terminal is gone
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        status = proc.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return status, b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture(scope="module")
def run_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("progress") / "run.apx"
    write_apx(path, [AstroPix4Readout(b"\xbc\xbc" + W0 + b"\xbc" * 6, i, 10**18 + i)
                     for i in range(20000)])
    return path


BAR = re.compile(r"\d+%\|")


def test_convert_shows_a_bar_on_a_terminal_and_clears_it(run_file, tmp_path):
    status, output = run_on_pty(["convert", str(run_file), "-o", str(tmp_path / "x.csv")], 80)
    assert status == 0
    assert BAR.search(output) and "convert" in output  # done/total and a rate were drawn
    assert Screen(80).feed(output).text() == [f"20000 hits written to {tmp_path / 'x.csv'}"]


def test_converting_an_astep_run_moves_its_bar(tmp_path):
    frame = encode_layer_frame(1, encode_v4(0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0), 5)
    (tmp_path / "run.bin").write_bytes(frame * 400_000)  # over a second of work
    import_bin(tmp_path / "run.bin", tmp_path / "run.apx", read_bytes=1024)
    status, output = run_on_pty(["convert", str(tmp_path / "run.apx"),
                                 "-o", str(tmp_path / "x.csv")], 100)
    assert status == 0, output
    drawn = [int(percent) for percent in re.findall(r"(\d+)%\|", output)]
    assert drawn and max(drawn) > 0, output  # the bar moved as the run was decoded
    assert Screen(100).feed(output).text() == [f"400000 rows written to {tmp_path / 'x.csv'}"]


LONG_COMMANDS = ["convert", "info", "emulate", "import-log", "send"]


def command_args(command: str, run_file: Path, tmp_path: Path) -> list[str]:
    if command == "convert":
        return ["convert", str(run_file), "-o", str(tmp_path / "x.csv")]
    if command == "info":
        return ["info", str(run_file)]
    if command == "emulate":
        return ["emulate", "--readouts", "3000", "--seed", "1", "--force",
                "--out", str(tmp_path / "e.apx")]
    if command == "import-log":
        log = tmp_path / "run.log"
        log.write_text("".join(f"{i}\tb'bcbce050fecd067cc500bcbc'\n" for i in range(20000)))
        return ["import-log", str(log), "-o", str(tmp_path / "run.apx")]
    return ["send", str(run_file), "--as-fast-as-possible", "--group", "239.255.0.1",
            "--interface", "127.0.0.1", "--port", "45999"]


@pytest.mark.parametrize("command", LONG_COMMANDS)
def test_every_long_command_shows_a_bar_and_clears_it(run_file, tmp_path, command):
    status, output = run_on_pty(command_args(command, run_file, tmp_path), 100)
    assert status == 0, output
    assert BAR.search(output), output
    lines = Screen(100).feed(output).text()
    assert not any(BAR.search(line) for line in lines)  # gone at the end


@pytest.mark.parametrize("command", LONG_COMMANDS)
def test_no_bar_with_quiet(run_file, tmp_path, command):
    status, output = run_on_pty([*command_args(command, run_file, tmp_path), "-q"], 100)
    assert status == 0, output
    assert not BAR.search(output)


def test_no_bar_when_stderr_is_not_a_terminal(run_file, tmp_path):
    done = subprocess.run([*APX_HIL, "convert", str(run_file), "-o", str(tmp_path / "x.csv")],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stderr == f"20000 hits written to {tmp_path / 'x.csv'}\n"


def test_a_warning_during_convert_stands_above_the_bar(tmp_path):
    readouts = [AstroPix4Readout(b"\xbc\xbc" + W0 + b"\xbc" * 6, i, i) for i in range(5000)]
    path = tmp_path / "damaged.apx"
    write_apx(path, readouts)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2:len(raw) // 2 + 40] = bytes(40)
    path.write_bytes(bytes(raw))
    status, output = run_on_pty(["convert", str(path), "-o", str(tmp_path / "x.csv")], 200)
    assert status == 0
    lines = Screen(200).feed(output).text()
    assert lines[0].startswith("warning: ") and "damaged bytes skipped" in lines[0]
    assert not any(BAR.search(line) for line in lines)


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_the_daq_status_line_fits_the_terminal(tmp_path, columns):
    out = tmp_path / "run.apx"
    status, output = run_on_pty(["daq", "--duration", "1.5", "--no-multicast", "--out",
                                 str(out), "--progress-interval", "0.1"], columns)
    assert status == 0, output
    assert output.count("readouts") >= 3  # the line was redrawn
    lines = Screen(columns).feed(output).text()
    assert lines[-1].startswith("apx-hil daq: ") and f"in {out}" in lines[-1]
    # One status line is left, whole and within the width: no pieces of earlier ones.
    progress = [line for line in lines if " s  readouts " in line]
    assert len(progress) == 1 and len(progress[0]) < columns
    assert lines.index(progress[0]) == len(lines) - 2


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_messages_print_above_the_status_line(monkeypatch):
    monkeypatch.setattr("shutil.get_terminal_size", lambda fallback=None: os.terminal_size(
        (50, 24)))
    stream = FakeTerminal()
    status = StatusLine(stream)
    status.show("apx-hil daq:    1.0 s  readouts 10 (10/s)  hits 10 (10/s)  data 1 MB")
    with status.messages_above():
        logging.getLogger("astropix_hil.test").warning("link resync")
        warnings.warn("file nearly full", stacklevel=1)
    status.show("apx-hil daq:    2.0 s  readouts 20 (10/s)")
    status.close()
    text = Screen(50).feed(stream.getvalue()).text()
    assert text[0].endswith("link resync")
    assert text[1] == "warning: file nearly full"
    assert text[2] == "apx-hil daq:    2.0 s  readouts 20 (10/s)"


def test_fit_drops_whole_fields_first():
    line = "   1.0 s  readouts 10 (10/s)  hits 10 (10/s)"
    assert fit(line, 30) == "   1.0 s  readouts 10 (10/s)"
    assert fit(line, 100) == line
    assert fit("x" * 50, 20) == "x" * 20
