"""Where a test's multicast goes: loopback, or a pair of network namespaces made for it.

:func:`loopback_channel` needs nothing; :func:`namespace_channel` (root and iproute2) makes two
namespaces joined by a veth pair (198.18.0.1 and 198.18.0.2, multicast routed on the link),
so a sender and a receiver really cross an interface, and removes them with every process
started in them. Both give a :class:`MulticastChannel` with a group and port no other test uses.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

CLONE_NEWNET = 0x40000000


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def free_udp_port() -> int:
    """A UDP port nobody on this host listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def random_group() -> str:
    """A group in the administratively scoped 239.255.0.0/16, unlikely to be in use."""
    return f"239.255.{random.randrange(1, 255)}.{random.randrange(1, 255)}"


@dataclass
class Host:
    """One end of the channel: where to run a program and which interface it uses."""

    interface: str
    address: str
    #: The network namespace, or None for this host's own network (loopback).
    namespace: str | None = None
    procs: list[subprocess.Popen] = field(default_factory=list)

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        """Start a program on this end (stopped at cleanup if still running)."""
        prefix = ["ip", "netns", "exec", self.namespace] if self.namespace else []
        proc = subprocess.Popen([*prefix, *args], **kwargs)
        self.procs.append(proc)
        return proc

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the body (this thread) in this end's network: sockets made there stay there."""
        if self.namespace is None:
            yield
            return
        libc = ctypes.CDLL(None, use_errno=True)
        with open("/proc/thread-self/ns/net", "rb") as home, \
                open(f"/run/netns/{self.namespace}", "rb") as target:
            if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns failed")
            try:
                yield
            finally:
                libc.setns(home.fileno(), CLONE_NEWNET)

    def stop_processes(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@dataclass
class MulticastChannel:
    """A multicast group and port, a sending end and a receiving end."""

    group: str
    port: int
    sender: Host
    receiver: Host
    ttl: int = 1

    @property
    def address(self) -> str:
        """``GROUP:PORT``, as ``apx-hil daq --multicast`` and ``recv`` take it."""
        return f"{self.group}:{self.port}"


def loopback_channel() -> MulticastChannel:
    """Both ends on this host's loopback."""
    return MulticastChannel(random_group(), free_udp_port(),
                            Host("lo", "127.0.0.1"), Host("lo", "127.0.0.1"))


def namespaces_available() -> str | None:
    """Why a namespace pair cannot be made here, or None if it can."""
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    return None


@contextlib.contextmanager
def namespace_channel() -> Iterator[MulticastChannel]:
    """Two namespaces joined by a veth pair; removed, with their processes, afterwards."""
    tag = uuid.uuid4().hex[:8]
    names = [f"apxp-{tag}-tx", f"apxp-{tag}-rx"]
    ends = []
    made: list[str] = []
    try:
        for name in names:
            _ip("netns", "add", name)
            made.append(name)
            _ip("-n", name, "link", "set", "lo", "up")
        devices = [f"apxp{tag}a", f"apxp{tag}b"]
        _ip("link", "add", devices[0], "netns", names[0], "type", "veth",
            "peer", "name", devices[1], "netns", names[1])
        for index, (name, dev) in enumerate(zip(names, devices, strict=True)):
            address = f"198.18.0.{index + 1}"
            _ip("-n", name, "addr", "add", f"{address}/30", "dev", dev)
            _ip("-n", name, "link", "set", dev, "up", "multicast", "on")
            _ip("-n", name, "route", "add", "224.0.0.0/4", "dev", dev)
            ends.append(Host(dev, address, name))
        yield MulticastChannel(random_group(), free_udp_port(), ends[0], ends[1])
    finally:
        for end in ends:
            end.stop_processes()
        for name in made:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10)
