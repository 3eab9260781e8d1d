"""How the suite starts a command on a host: a network namespace, SSH, or the apx-hil agent.

A runner is the driver of a host (in labgrid's words): the tests never know which one they
talk to. Each gives the same handful of operations: start a process (:class:`Proc`), run one
to completion, read and write files. Every process handle is bounded: :meth:`Proc.wait` takes
a timeout, and :meth:`Proc.kill` ends the process for good; the suite's registry kills every
process that is still alive at teardown.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from astropix_hil.agent import AgentClient

from .errors import HilError, HilTimeout

#: Longest any single helper command (nft, ip, cat, ...) may take.
COMMAND_TIMEOUT = 30.0


def command_text(argv: Sequence[str], limit: int = 200) -> str:
    """A command line for messages (long arguments, e.g. a script's source, shortened)."""
    return shlex.join(a if len(a) <= limit else a[:limit // 2] + "..." for a in argv)


@dataclass
class Completed:
    """A finished command: its exit status and its output."""

    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def check(self, host: str) -> Completed:
        """Raise :class:`HilError` naming the host and command when it failed."""
        if self.returncode != 0:
            raise HilError(f"{host}: {command_text(self.argv)} exited {self.returncode}: "
                           f"{self.stderr.decode('utf-8', 'replace').strip()[-2000:]}")
        return self


class Proc(Protocol):
    """A process started on a host."""

    name: str

    def poll(self) -> int | None:
        """Exit status, or None while it runs."""

    def wait(self, timeout: float) -> int:
        """Wait at most ``timeout`` seconds; raise :class:`HilTimeout` if it still runs."""

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the process (no-op when it has ended)."""

    def kill(self) -> None:
        """SIGKILL it and reap it (idempotent)."""

    def stdout(self) -> str:
        """Its standard output so far."""

    def stderr(self) -> str:
        """Its standard error so far."""


class Runner(Protocol):
    """The driver of one host."""

    def spawn(self, argv: Sequence[str], name: str) -> Proc: ...

    def run(self, argv: Sequence[str], timeout: float = COMMAND_TIMEOUT,
            input: bytes | None = None) -> Completed: ...

    def read_file(self, path: str) -> bytes: ...

    def write_file(self, path: str, data: bytes) -> None: ...

    def close(self) -> None: ...


def _wait_line(read, timeout: float, what: str) -> str:
    """Poll ``read()`` until it returns text holding a complete first line."""
    deadline = time.monotonic() + timeout
    while True:
        text = read()
        if "\n" in text:
            return text.split("\n", 1)[0]
        if time.monotonic() >= deadline:
            raise HilTimeout(f"{what}: no first output line within {timeout:.0f} s "
                             f"(output so far: {text!r})")
        time.sleep(0.02)


def first_line(proc: Proc, timeout: float) -> str:
    """The first line ``proc`` prints on stdout, waiting at most ``timeout`` seconds."""
    def read() -> str:
        text = proc.stdout()
        if "\n" not in text and proc.poll() is not None:
            raise HilError(f"{proc.name} exited {proc.poll()} before printing a line: "
                           f"{proc.stderr().strip()[-2000:]}")
        return text
    return _wait_line(read, timeout, proc.name)


# ------------------------------------------------------------------------------------------
# Local processes (namespaces, SSH, this machine)


class LocalProc:
    """A child of this process, its output in files under ``outdir``.

    ``remote_signal`` (for SSH) sends a signal to the far end instead of to the local child.
    """

    def __init__(self, argv: Sequence[str], name: str, outdir: str,
                 remote_signal=None) -> None:
        self.name = name
        self.argv = list(argv)
        fd, self._out = tempfile.mkstemp(prefix=f"{_safe(name)}.", suffix=".out", dir=outdir)
        os.close(fd)
        self._err = self._out[:-4] + ".err"
        self._remote_signal = remote_signal
        with open(self._out, "wb") as out, open(self._err, "wb") as err:
            # A new session: a signal to the group reaches whatever the command forked.
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=err, start_new_session=True)

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise HilTimeout(f"{self.name} still runs after {timeout:.1f} s") from None

    def signal(self, sig: int) -> None:
        if self.popen.poll() is not None:
            return
        if self._remote_signal is not None:
            self._remote_signal(sig)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        if self.popen.poll() is None:
            if self._remote_signal is not None:
                with contextlib.suppress(HilError, OSError):
                    self._remote_signal(signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def _read(self, path: str) -> str:
        with open(path, "rb") as stream:
            return stream.read().decode("utf-8", "replace")

    def stdout(self) -> str:
        return self._read(self._out)

    def stderr(self) -> str:
        return self._read(self._err)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40] or "proc"


def _run_local(argv: Sequence[str], timeout: float, input: bytes | None) -> Completed:
    try:
        done = subprocess.run(list(argv), input=input, capture_output=True, timeout=timeout,
                              stdin=None if input is not None else subprocess.DEVNULL,
                              start_new_session=True)
    except subprocess.TimeoutExpired:
        raise HilTimeout(f"{command_text(argv)} did not end within {timeout:.0f} s") from None
    return Completed(list(argv), done.returncode, done.stdout, done.stderr)


class LocalRunner:
    """Commands on this machine, with ``prefix`` put in front (``ip netns exec NAME``)."""

    def __init__(self, outdir: str, prefix: Sequence[str] = ()) -> None:
        self.outdir = outdir
        self.prefix = list(prefix)

    def spawn(self, argv: Sequence[str], name: str) -> LocalProc:
        return LocalProc([*self.prefix, *argv], name, self.outdir)

    def run(self, argv: Sequence[str], timeout: float = COMMAND_TIMEOUT,
            input: bytes | None = None) -> Completed:
        return _run_local([*self.prefix, *argv], timeout, input)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as stream:
            return stream.read()

    def write_file(self, path: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as stream:
            stream.write(data)

    def close(self) -> None:
        pass


def netns_runner(namespace: str, outdir: str) -> LocalRunner:
    """Commands inside the network namespace ``namespace`` (files are shared with us)."""
    return LocalRunner(outdir, ["ip", "netns", "exec", namespace])


#: Runs a command on an SSH host and records what became of it: its pid (to signal it) and its
#: exit status, negative for a signal as :mod:`subprocess` says it (ssh itself exits 255 when
#: the far command is killed by a signal, which would hide a SIGKILL behind "ssh failed").
_SSH_WRAPPER = """\
import subprocess, sys
pidfile, statusfile = sys.argv[1:3]
child = subprocess.Popen(sys.argv[3:])
with open(pidfile, "w") as stream:
    stream.write(str(child.pid))
while True:
    try:
        status = child.wait()
        break
    except KeyboardInterrupt:
        continue
with open(statusfile, "w") as stream:
    stream.write(str(status))
sys.exit(status if status >= 0 else 128 - status)
"""


class SshProc(LocalProc):
    """A process on an SSH host: the local ``ssh`` client is the handle, the far side's
    wrapper (:data:`_SSH_WRAPPER`) records the pid and the true exit status."""

    def __init__(self, runner: SshRunner, argv: Sequence[str], name: str, pidfile: str) -> None:
        self._runner = runner
        self._pidfile = pidfile
        self._status: int | None = None
        super().__init__(argv, name, runner.outdir, self._remote_kill)

    def _remote_kill(self, sig: int) -> None:
        # Waits (bounded) for the pid file: a signal sent right after the start still lands.
        script = ('i=0; while [ ! -s "$1" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); '
                  'done; kill -' + str(int(sig)) + ' "$(cat "$1")" 2>/dev/null || true')
        self._runner.run(["sh", "-c", script, "sh", self._pidfile]).check(
            shlex.join(self._runner.command))

    def _resolve(self, code: int | None) -> int | None:
        if code is None or self._status is not None:
            return self._status if code is not None else None
        self._status = code
        if code >= 128:
            # 128+N from the wrapper, or 255 from ssh: the status file tells which.
            with contextlib.suppress(HilError, ValueError):
                done = self._runner.run(["cat", f"{self._pidfile}.status"], timeout=15)
                if done.returncode == 0:
                    self._status = int(done.text.strip())
        return self._status

    def poll(self) -> int | None:
        return self._resolve(self.popen.poll())

    def wait(self, timeout: float) -> int:
        code = self._resolve(super().wait(timeout))
        assert code is not None
        return code


class SshRunner:
    """Commands on another machine through a command that runs a shell line there.

    ``command`` is e.g. ``["ssh", "-o", "BatchMode=yes", "astro@daq-pc"]``: the suite
    appends one shell command line, as ``ssh`` expects. A process is started through a small
    Python wrapper (``python``: the host's Python) that writes its pid and exit status to
    files under ``workdir`` on the far side, so that a signal reaches the far process, not
    only the local ``ssh`` client, and a process killed by a signal reports that signal.
    """

    def __init__(self, command: Sequence[str], workdir: str, outdir: str,
                 python: Sequence[str] = ("python3",)) -> None:
        self.command = list(command)
        self.workdir = workdir
        self.outdir = outdir
        self.python = list(python)
        self._count = 0
        self._lock = threading.Lock()

    def _line(self, argv: Sequence[str]) -> list[str]:
        return [*self.command, shlex.join(argv)]

    def spawn(self, argv: Sequence[str], name: str) -> SshProc:
        with self._lock:
            self._count += 1
            pidfile = f"{self.workdir}/.pid-{os.getpid()}-{self._count}"
        line = (f"mkdir -p {shlex.quote(self.workdir)} && exec "
                + shlex.join([*self.python, "-c", _SSH_WRAPPER, pidfile, f"{pidfile}.status",
                              *argv]))
        return SshProc(self, [*self.command, line], name, pidfile)

    def run(self, argv: Sequence[str], timeout: float = COMMAND_TIMEOUT,
            input: bytes | None = None) -> Completed:
        done = _run_local(self._line(argv), timeout, input)
        done.argv = list(argv)
        return done

    def read_file(self, path: str) -> bytes:
        return self.run(["cat", path]).check(shlex.join(self.command)).stdout

    def write_file(self, path: str, data: bytes) -> None:
        self.run(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh", path],
                 input=data).check(shlex.join(self.command))

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------
# The apx-hil agent


class AgentProc:
    """A process started by an ``apx-hil agent``."""

    def __init__(self, client: AgentClient, argv: Sequence[str], name: str) -> None:
        self.name = name
        self.client = client
        self.ident = client.spawn(list(argv))
        self._status: int | None = None

    def poll(self) -> int | None:
        if self._status is None:
            self._status = self.client.poll(self.ident)
        return self._status

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            status = self.client.wait(self.ident, max(0.0, min(left, 5.0)))
            if status is not None:
                self._status = status
                return status
            if left <= 0:
                raise HilTimeout(f"{self.name} still runs after {timeout:.1f} s")

    def signal(self, sig: int) -> None:
        if self.poll() is None:
            self.client.signal(self.ident, int(sig))

    def kill(self) -> None:
        if self.poll() is None:
            self.client.signal(self.ident, signal.SIGKILL)
            with contextlib.suppress(HilTimeout):
                self.wait(10)

    def stdout(self) -> str:
        return self.client.output(self.ident, "stdout").decode("utf-8", "replace")

    def stderr(self) -> str:
        return self.client.output(self.ident, "stderr").decode("utf-8", "replace")


class AgentRunner:
    """Commands through an ``apx-hil agent`` listening at ``address`` (``HOST:PORT``)."""

    def __init__(self, address: str, token: bytes, timeout: float = 20.0) -> None:
        self.client = AgentClient(address, token, timeout=timeout)

    def spawn(self, argv: Sequence[str], name: str) -> AgentProc:
        return AgentProc(self.client, argv, name)

    def run(self, argv: Sequence[str], timeout: float = COMMAND_TIMEOUT,
            input: bytes | None = None) -> Completed:
        result = self.client.run(list(argv), timeout=timeout, input=input)
        if result.returncode is None:
            raise HilTimeout(f"{command_text(argv)} did not end within {timeout:.0f} s")
        return Completed(list(argv), result.returncode, result.stdout, result.stderr)

    def read_file(self, path: str) -> bytes:
        return self.client.read_file(path)

    def write_file(self, path: str, data: bytes) -> None:
        self.client.write_file(path, data)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.cleanup()
        self.client.close()
