"""Driving the programs under test on the topology's hosts: the board, the DAQ, the monitors,
and the plain-socket probes. Each start function returns a handle whose ``result`` waits (bounded)
for the program's end and parses what it printed; a program that fails raises
:class:`~hil.errors.HilError` with its stderr.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import HilError, HilTimeout
from .runners import Proc, first_line
from .topology import Flow, Host, Topology, wait_for

#: Longest any program of a case may run: a bound, not an expectation.
PROGRAM_TIMEOUT = 120.0
#: The virtual board of the cases that compare DAQ rates (same seed, same hit rate in Hz).
BOARD_SEED = 7
BOARD_RATE = 3000.0
_PROBE_SOURCE: str | None = None
#: Called with each flow a program is started to send (program, host, group, port, ttl,
#: interface): the suite's report records them per case.
observers: list[Callable[[dict[str, Any]], None]] = []


def _sending(program: str, host: Host, flow: Flow, ttl: int, interface: str | None) -> None:
    info = {"program": program, "host": host.name, "group": flow.group, "port": flow.port,
            "ttl": ttl, "interface": interface or host.address()}
    for observer in list(observers):
        observer(info)


def probe_source() -> str:
    """The source of :mod:`hil.probe`, to run with ``python -c``."""
    global _PROBE_SOURCE
    if _PROBE_SOURCE is None:
        with open(os.path.join(os.path.dirname(__file__), "probe.py"), encoding="utf-8") as f:
            _PROBE_SOURCE = f.read()
    return _PROBE_SOURCE


def last_json(proc: Proc, what: str) -> dict[str, Any]:
    """The last line of ``proc``'s stdout, parsed as JSON."""
    lines = [line for line in proc.stdout().splitlines() if line.strip()]
    if not lines:
        raise HilError(f"{what}: no output; stderr: {proc.stderr().strip()[-2000:]}")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        raise HilError(f"{what}: last stdout line is not JSON: {lines[-1][:300]!r}; stderr: "
                       f"{proc.stderr().strip()[-1000:]}") from None


def finish(proc: Proc, what: str, timeout: float = PROGRAM_TIMEOUT,
           ok: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """Wait for ``proc`` to end and return its JSON summary; raise if it failed."""
    try:
        status = proc.wait(timeout)
    except HilTimeout:
        proc.kill()
        raise HilTimeout(f"{what} still ran after {timeout:.0f} s (killed); stderr: "
                         f"{proc.stderr().strip()[-1500:]}") from None
    if status not in ok:
        raise HilError(f"{what} exited {status}: {proc.stderr().strip()[-2000:]}")
    return last_json(proc, what)


# ------------------------------------------------------------------------------------------
# Plain-socket probes


@dataclass
class ProbeReceiver:
    host: Host
    proc: Proc

    def result(self, timeout: float = 60.0) -> dict[str, Any]:
        return finish(self.proc, f"probe receiver on {self.host.name}", timeout)


def probe_receiver(host: Host, flow: Flow, count: int, duration: float,
                   interface: str | None = None) -> ProbeReceiver:
    """A plain socket joined to ``flow`` on ``host`` (returns once it has joined)."""
    argv = [*host.python, "-c", probe_source(), "recv", flow.group, str(flow.port),
            "--count", str(count), "--duration", str(duration)]
    if interface:
        argv += ["--interface", interface]
    proc = host.spawn(argv, "probe-recv")
    line = first_line(proc, 20.0)
    if line != "joined":
        raise HilError(f"probe receiver on {host.name}: expected 'joined', got {line!r}")
    return ProbeReceiver(host, proc)


def probe_send(host: Host, flow: Flow, count: int, ttl: int = 1, interface: str | None = None,
               interval: float = 0.002) -> dict[str, Any]:
    """Send ``count`` numbered datagrams from ``host`` to ``flow`` and wait for the end."""
    argv = [*host.python, "-c", probe_source(), "send", flow.group, str(flow.port),
            "--count", str(count), "--ttl", str(ttl), "--interval", str(interval)]
    if interface:
        argv += ["--interface", interface]
    _sending("probe", host, flow, ttl, interface)
    return finish(host.spawn(argv, "probe-send"), f"probe sender on {host.name}", 60.0)


# ------------------------------------------------------------------------------------------
# The board


@dataclass
class Board:
    """Where the DAQ reads from: a port URL, and (virtual board) its process and truth file."""

    url: str
    proc: Proc | None = None
    truth: str | None = None
    host: Host | None = None
    baudrate: int | None = None

    def stop(self, timeout: float = 30.0) -> dict[str, Any] | None:
        """Stop the virtual board (it writes its truth file on SIGTERM); return its
        statistics (None for a real board)."""
        if self.proc is None:
            return None
        self.proc.signal(signal.SIGTERM)
        return finish(self.proc, "apx-hil board", timeout)


def start_board(topology: Topology, host: Host, seed: int, rate: float) -> Board:
    """The board the topology gives the DAQ: the virtual board on a pty of ``host`` (with a
    truth file), or the bench's real port."""
    spec = topology.board
    if spec.kind == "port":
        assert spec.url is not None
        return Board(spec.url, host=host, baudrate=spec.baudrate)
    truth = host.unique("truth.csv")
    proc = host.spawn(host.apx("board", "--pty", "--seed", str(seed), "--rate", str(rate),
                               "--truth", truth, "--json"), "board")
    path = first_line(proc, 30.0).strip()
    if not path.startswith("/"):
        raise HilError(f"apx-hil board on {host.name}: first line {path!r} is not a pty path")
    return Board(path, proc, truth, host)


# ------------------------------------------------------------------------------------------
# The DAQ and the monitors


@dataclass
class Daq:
    host: Host
    proc: Proc
    out: str

    def result(self, timeout: float = PROGRAM_TIMEOUT) -> dict[str, Any]:
        return finish(self.proc, f"apx-hil daq on {self.host.name}", timeout)

    def wait_running(self, timeout: float = 30.0) -> None:
        """Return once the DAQ has printed a progress line (it reads and sends)."""
        def progressed() -> bool:
            if self.proc.poll() is not None:
                raise HilError(f"apx-hil daq on {self.host.name} exited {self.proc.poll()}: "
                               f"{self.proc.stderr().strip()[-2000:]}")
            return " readouts " in self.proc.stderr()
        wait_for(progressed, f"apx-hil daq on {self.host.name} printing progress", timeout)


def start_daq(host: Host, board: Board, flow: Flow, *, readouts: int | None = None,
              duration: float | None = None, ttl: int = 1, interface: str | None = None,
              key: str | None = None, extra: tuple[str, ...] = ()) -> Daq:
    """``apx-hil daq`` on ``host`` reading ``board``, multicasting to ``flow`` out of
    ``interface`` (default: the host's LAN address)."""
    out = host.unique("run.apx")
    argv = host.apx("daq", "--port", board.url, "--out", out, "--multicast", str(flow),
                    "--interface", interface or host.address(), "--ttl", str(ttl),
                    "--json", "--progress-interval", "0.5")
    if board.baudrate is not None:
        argv += ["--baudrate", str(board.baudrate)]
    if readouts is not None:
        argv += ["--readouts", str(readouts)]
    if duration is not None:
        argv += ["--duration", str(duration)]
    if key is not None:
        argv += ["--key", key]
    argv += list(extra)
    _sending("daq", host, flow, ttl, interface)
    return Daq(host, host.spawn(argv, "daq"), out)


@dataclass
class Monitor:
    host: Host
    proc: Proc
    csv: str | None

    def result(self, timeout: float = PROGRAM_TIMEOUT) -> dict[str, Any]:
        return finish(self.proc, f"apx-hil recv on {self.host.name}", timeout)

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """SIGTERM it (it prints its statistics) and return them."""
        self.proc.signal(signal.SIGTERM)
        return self.result(timeout)


def start_monitor(host: Host, flow: Flow, *, count: int | None = None,
                  duration: float | None = None, idle_exit: float | None = None,
                  csv: bool = False, key: str | None = None,
                  allow_sender: tuple[str, ...] = (), rcvbuf: int | None = None,
                  consume_delay: float | None = None, interface: str | None = None) -> Monitor:
    """``apx-hil recv --json`` on ``host``, joined on its LAN interface (or ``interface``)."""
    argv = host.apx("recv", "--group", flow.group, "--port", str(flow.port), "--interface",
                    interface or host.address(), "--json", "--quiet")
    if count is not None:
        argv += ["--count", str(count)]
    if duration is not None:
        argv += ["--duration", str(duration)]
    if idle_exit is not None:
        argv += ["--idle-exit", str(idle_exit)]
    path = None
    if csv:
        path = host.unique("monitor.csv")
        argv += ["--csv", path]
    if key is not None:
        argv += ["--key", key]
    for sender in allow_sender:
        argv += ["--allow-sender", sender]
    if rcvbuf is not None:
        argv += ["--rcvbuf", str(rcvbuf)]
    if consume_delay is not None:
        argv += ["--consume-delay", str(consume_delay)]
    return Monitor(host, host.spawn(argv, "recv"), path)


# ------------------------------------------------------------------------------------------
# Helpers of the cases


def sent_readouts(summary: dict[str, Any]) -> int:
    """Readouts the DAQ handed to the network (its readouts minus those in refused datagrams)."""
    sender = summary["sender"]
    return int(sender["readouts"]) - int(sender["readouts_failed"])


def fetch(host: Host, path: str, local_dir: str) -> str:
    """Copy ``path`` from ``host`` into ``local_dir``; return the local path."""
    local = os.path.join(local_dir, f"{host.name}-{os.path.basename(path)}")
    with open(local, "wb") as stream:
        stream.write(host.read_file(path))
    return local


def share_key(hosts: list[Host]) -> str:
    """Write one fresh transport key into every host's work directory; return its file name
    (``host.path(name)`` on each host)."""
    secret = os.urandom(32).hex().encode()
    name = f"transport-{os.urandom(4).hex()}.key"
    for host in hosts:
        host.write_file(host.path(name), secret + b"\n")
    return name


def steady_hit_rate(path: str, skip_s: float = 1.0) -> float:
    """Hits per second of the local ``.apx`` run at ``path``, after its first ``skip_s``
    seconds (by the readouts' host timestamps).

    The first readouts of a run drain what the board's FIFO gathered before the DAQ started;
    that burst says nothing about the DAQ keeping up and would inflate a short run's rate.
    """
    from astropix_hil.fileio import read_hits

    stamps = read_hits(path)["timestamp"].astype("i8")
    if len(stamps) == 0:
        raise HilError(f"{path}: no hits, no rate")
    start = int(stamps.min()) + int(skip_s * 1e9)
    span = (int(stamps.max()) - start) / 1e9
    if span < 1.0:
        raise HilError(f"{path}: the run is too short for a steady rate "
                       f"({span + skip_s:.2f} s; need more than {skip_s + 1:.0f} s)")
    return int((stamps >= start).sum()) / span


#: Largest relative difference of the DAQ's steady hit rate with and without monitors.
RATE_TOLERANCE = 0.05


def assert_same_rate(run, alone) -> None:
    """The DAQ kept the rate it has alone (:class:`~hil.report.DaqFigures`, steady rates).

    The steady hit rate is the board's as long as the DAQ keeps up; a DAQ slowed below the
    board's pace lets the board's FIFO overflow and its hit rate drop. (The board's own
    overflow counter cannot tell: its FIFO also fills before the DAQ has started.)"""
    assert run.steady_hits_per_s is not None and alone.steady_hits_per_s is not None
    difference = abs(run.steady_hits_per_s - alone.steady_hits_per_s)
    assert difference <= RATE_TOLERANCE * alone.steady_hits_per_s, (
        f"the DAQ's steady rate with monitors, {run.steady_hits_per_s:.0f} hits/s, differs by "
        f"more than {RATE_TOLERANCE:.0%} from its rate alone, "
        f"{alone.steady_hits_per_s:.0f} hits/s")


def run_metadata(path: str) -> dict[str, Any]:
    """The run header of a local ``.apx`` file, as the DAQ also sends it in heartbeats."""
    from astropix_hil.fileio import read_header

    return read_header(path)


def streams_from(stats: dict[str, Any], host: Host) -> list[dict[str, Any]]:
    """The receiver's streams whose source is ``host``, oldest first."""
    ips = {i.ip for i in host.interfaces.values()}
    found = [s for s in stats["streams"].values() if s["source"].rsplit(":", 1)[0] in ips]
    return sorted(found, key=lambda s: (s["restart_of"] is not None, s["stream"]))
