"""Throwaway network namespaces for socket tests: loopback up, multicast on, 224.0.0.0/4 via lo.

A test gets a :class:`Netns`; it can create sockets inside it from this process
(:meth:`Netns.entered`: the calling thread switches namespace while the sockets are made, and a
socket stays in the namespace it was made in) and run commands inside it
(:meth:`Netns.popen`, ``ip netns exec``). The namespace and every process started through it
are removed when the fixture ends, also on failure.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Netns:
    """One network namespace made for a test."""

    def __init__(self) -> None:
        self.name = f"apxt-{uuid.uuid4().hex[:10]}"
        self.procs: list[subprocess.Popen] = []
        _ip("netns", "add", self.name)
        try:
            _ip("-n", self.name, "link", "set", "lo", "up")
            _ip("-n", self.name, "link", "set", "lo", "multicast", "on")
            _ip("-n", self.name, "route", "add", "224.0.0.0/4", "dev", "lo")
        except BaseException:
            self.delete()
            raise

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the body (in this thread) inside the namespace."""
        with open("/proc/thread-self/ns/net", "rb") as home, \
                open(f"/run/netns/{self.name}", "rb") as target:
            _setns(target.fileno())
            try:
                yield
            finally:
                _setns(home.fileno())

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        """Start a command inside the namespace (killed at cleanup if still running)."""
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *args], **kwargs)
        self.procs.append(proc)
        return proc

    def python(self, *args: str, **kwargs) -> subprocess.Popen:
        """Start ``python3 ARGS`` (this interpreter) inside the namespace."""
        return self.popen([sys.executable, *args], **kwargs)

    def wait_udp_bound(self, proc: subprocess.Popen, port: int = 5007, count: int = 1,
                       timeout: float = 20) -> None:
        """Until ``count`` UDP sockets are bound to ``port`` here (``proc`` must keep running);
        fails the test after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the process ended before listening"
            with self.entered(), open("/proc/thread-self/net/udp") as table:
                bound = sum(line.split()[1].endswith(f":{port:04X}") for line in table)
            if bound >= count:
                return
            time.sleep(0.05)
        pytest.fail(f"nothing listens on UDP port {port} after {timeout} s")

    def wait_udp_drained(self, proc: subprocess.Popen, port: int = 5007,
                         timeout: float = 20) -> None:
        """Until every UDP socket bound to ``port`` here has read all its queued datagrams
        (``proc`` must keep running); fails the test after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the process ended before reading everything"
            with self.entered(), open("/proc/thread-self/net/udp") as table:
                queued = sum(int(line.split()[4].split(":")[1], 16) for line in table
                             if line.split()[1].endswith(f":{port:04X}"))
            if queued == 0:
                return
            time.sleep(0.02)
        pytest.fail(f"datagrams still queued on UDP port {port} after {timeout} s")

    def apx_hil(self, *args: str, **kwargs) -> subprocess.Popen:
        """Start ``apx-hil ARGS`` inside the namespace."""
        return self.python("-m", "astropix_hil", *args, **kwargs)

    def delete(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, timeout=10)


def netns_available() -> str | None:
    """Why network namespaces cannot be made here, or None if they can."""
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    if os.geteuid() != 0:
        return "making a network namespace needs root"
    return None


def made_netns() -> Iterator[Netns]:
    """A fresh namespace, removed with its processes afterwards: ``yield from`` it in a
    fixture."""
    reason = netns_available()
    if reason:
        pytest.fail(f"socket tests run in a network namespace: {reason}")
    ns = Netns()
    try:
        yield ns
    finally:
        ns.delete()
