"""What a HIL topology is made of, whoever built it: hosts with interfaces and roles, a switch,
a board. The cases only see this; :mod:`hil.netns` builds one from network namespaces (CI),
:mod:`hil.bench` from a bench config file (real machines).

Roles: ``daq`` (runs the board and the DAQ), ``monitors`` (at least three, on the DAQ's
subnet), ``far`` (a monitor behind a multicast router, on another subnet), ``dual`` (a DAQ host
with two interfaces, labelled ``lan`` and ``alt``) and ``dual_peer`` (a monitor reachable only
through the ``alt`` interface), ``rogue`` (sends bad traffic). A role the topology does not
have raises :class:`~hil.errors.CapabilityError` naming it, so the case that needs it fails
saying why.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import CapabilityError, HilError, HilTimeout
from .runners import COMMAND_TIMEOUT, Completed, Proc, Runner

log = logging.getLogger(__name__)

DEFAULT_GROUPS = ipaddress.IPv4Network("239.18.0.0/16")
ROLES = ("daq", "monitors", "far", "dual", "dual_peer", "rogue")
#: Capabilities a host may have: ``nft`` (the suite may install nftables rules there),
#: ``quiet`` (no UDP traffic but the suite's, so /proc/net/snmp deltas are the suite's own).
CAPABILITIES = ("nft", "quiet")


@dataclass(frozen=True)
class Interface:
    """A network interface of a host: its label in the topology, device name, address."""

    label: str
    name: str
    address: ipaddress.IPv4Interface

    @property
    def ip(self) -> str:
        return str(self.address.ip)


class Cleanups:
    """Processes and undo actions of the suite, unwound newest first (per test, and at the
    end of the session)."""

    def __init__(self) -> None:
        self._stack: list[tuple[str, Proc | Callable[[], None]]] = []

    def mark(self) -> int:
        return len(self._stack)

    def add_proc(self, proc: Proc) -> None:
        self._stack.append(("proc", proc))

    def add(self, undo: Callable[[], None]) -> None:
        self._stack.append(("call", undo))

    def unwind(self, mark: int = 0) -> list[str]:
        """Kill processes and run undo actions registered after ``mark``; return what went
        wrong (cleanup goes on after an error)."""
        problems = []
        while len(self._stack) > mark:
            kind, item = self._stack.pop()
            try:
                if kind == "proc":
                    item.kill()  # type: ignore[union-attr]
                else:
                    item()  # type: ignore[operator]
            except Exception as exc:  # cleanup must go on
                problems.append(f"{getattr(item, 'name', item)}: {exc}")
        return problems


class Host:
    """One machine (or namespace) of the topology, reached through its runner."""

    def __init__(self, name: str, runner: Runner, interfaces: Sequence[Interface], *,
                 workdir: str, cleanups: Cleanups, capabilities: Sequence[str] = (),
                 apx_hil: Sequence[str] = ("apx-hil",),
                 python: Sequence[str] = ("python3",)) -> None:
        self.name = name
        self.runner = runner
        self.interfaces = {i.label: i for i in interfaces}
        self.workdir = workdir
        self.cleanups = cleanups
        unknown = set(capabilities) - set(CAPABILITIES)
        if unknown:
            raise HilError(f"host {name}: unknown capabilities {sorted(unknown)} (known: "
                           f"{', '.join(CAPABILITIES)})")
        self.capabilities = frozenset(capabilities)
        self.apx_hil = list(apx_hil)
        self.python = list(python)
        self._count = 0

    def __repr__(self) -> str:
        return f"Host({self.name!r})"

    def iface(self, label: str = "lan") -> Interface:
        try:
            return self.interfaces[label]
        except KeyError:
            raise CapabilityError(f"host {self.name} has no interface labelled {label!r} "
                                  f"(it has {', '.join(self.interfaces) or 'none'})") from None

    def address(self, label: str = "lan") -> str:
        return self.iface(label).ip

    def require(self, capability: str, why: str) -> None:
        if capability not in self.capabilities:
            raise CapabilityError(f"host {self.name} lacks capability {capability!r}, needed "
                                  f"to {why}; give it in the bench config (capabilities: "
                                  f"[{capability}]) if the host has it")

    def path(self, name: str) -> str:
        """A path in this host's work directory (unique names are the caller's job)."""
        return f"{self.workdir}/{name}"

    def unique(self, stem: str) -> str:
        """A fresh path in the work directory, ``stem`` with a counter."""
        self._count += 1
        base, dot, ext = stem.rpartition(".")
        return self.path(f"{base}-{self._count}.{ext}" if dot else f"{stem}-{self._count}")

    def apx(self, *args: str) -> list[str]:
        """The argv of ``apx-hil ARGS`` on this host."""
        return [*self.apx_hil, *args]

    def spawn(self, argv: Sequence[str], name: str) -> Proc:
        """Start ``argv`` here; it is killed at the end of the test if still running."""
        proc = self.runner.spawn(argv, f"{self.name}:{name}")
        self.cleanups.add_proc(proc)
        return proc

    def run(self, argv: Sequence[str], timeout: float = COMMAND_TIMEOUT,
            input: bytes | None = None) -> Completed:
        return self.runner.run(argv, timeout, input)

    def read_file(self, path: str) -> bytes:
        return self.runner.read_file(path)

    def write_file(self, path: str, data: bytes) -> None:
        self.runner.write_file(path, data)

    def track_cleanup(self, undo: Callable[[], None]) -> None:
        self.cleanups.add(undo)


class Switch(Protocol):
    """The layer-2 switch between the DAQ and its monitors."""

    #: True when the switch's group membership can be read (a Linux bridge we can reach).
    inspectable: bool

    def members(self, group: str) -> set[str]:
        """Names of the hosts the switch forwards ``group`` to (by IGMP snooping)."""

    def wait_joined(self, group: str, hosts: Sequence[Host], timeout: float = 10.0) -> None:
        """Return once the switch forwards ``group`` to every host of ``hosts``."""

    def wait_left(self, group: str, host: Host, timeout: float = 10.0) -> None:
        """Return once the switch no longer forwards ``group`` to ``host``."""


class BridgeSwitch:
    """A Linux bridge with IGMP snooping, read with ``bridge mdb`` on the host that has it."""

    inspectable = True

    def __init__(self, host: Host, bridge: str, ports: dict[str, str]) -> None:
        self.host = host
        self.bridge = bridge
        #: bridge port device -> name of the host behind it
        self.ports = dict(ports)

    def members(self, group: str) -> set[str]:
        from .kernel import parse_mdb

        done = self.host.run(["bridge", "-j", "mdb", "show", "dev", self.bridge])
        mdb = parse_mdb(done.check(self.host.name).text, self.bridge)
        return {self.ports.get(port, port) for port in mdb.get(group, ())}

    def _wait(self, ok: Callable[[set[str]], bool], what: str, group: str,
              timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            members = self.members(group)
            if ok(members):
                return
            if time.monotonic() >= deadline:
                raise HilTimeout(f"bridge {self.bridge}: {what} within {timeout:.0f} s "
                                 f"(members of {group}: {sorted(members) or 'none'})")
            time.sleep(0.05)

    def wait_joined(self, group: str, hosts: Sequence[Host], timeout: float = 10.0) -> None:
        names = {h.name for h in hosts}
        self._wait(lambda m: names <= m, f"{sorted(names)} did not join {group}", group,
                   timeout)

    def wait_left(self, group: str, host: Host, timeout: float = 10.0) -> None:
        self._wait(lambda m: host.name not in m, f"{host.name} did not leave {group}", group,
                   timeout)


class OpaqueSwitch:
    """A switch whose membership cannot be read: joins and leaves are given ``settle``
    seconds (the bench config says how long its IGMP snooping takes)."""

    inspectable = False

    def __init__(self, settle: float) -> None:
        self.settle = settle

    def members(self, group: str) -> set[str]:
        raise CapabilityError("the bench switch cannot be inspected (switch.kind: opaque); "
                              "describe a Linux bridge host in the config to read its mdb")

    def wait_joined(self, group: str, hosts: Sequence[Host], timeout: float = 10.0) -> None:
        time.sleep(self.settle)

    def wait_left(self, group: str, host: Host, timeout: float = 10.0) -> None:
        time.sleep(self.settle)


@dataclass(frozen=True)
class BoardSpec:
    """Where the DAQ's readouts come from.

    ``emulator``: the virtual board served on a pseudo-terminal of the DAQ host (``apx-hil
    board --pty``), the DAQ opening it as a serial port; it has a truth file. ``port``: a
    real board at ``url`` (``/dev/ttyUSB0``, ``ftdififo://...``); no truth.
    """

    kind: str = "emulator"
    url: str | None = None
    baudrate: int | None = None

    @property
    def has_truth(self) -> bool:
        return self.kind == "emulator"


@dataclass(frozen=True)
class Flow:
    """A multicast group and port."""

    group: str
    port: int

    def __str__(self) -> str:
        return f"{self.group}:{self.port}"


@dataclass
class Topology:
    """Hosts by role, the switch, the board; and where the run's temporary things live."""

    kind: str
    hosts: dict[str, Host]
    roles: dict[str, str | list[str]]
    switch: Switch
    board: BoardSpec
    cleanups: Cleanups
    #: Network the cases' groups are taken from, and the UDP port.
    groups: ipaddress.IPv4Network = DEFAULT_GROUPS
    port: int = 5007
    description: str = ""
    #: CI topology: namespace of each host (``sw``: the switch's). Bench: empty.
    namespaces: dict[str, str] = field(default_factory=dict)
    #: Bench topology: the config file it was read from.
    source: str | None = None
    #: Undo actions for the whole topology (namespaces, daemons, directories), run by close().
    teardown: list[Callable[[], None]] = field(default_factory=list)
    #: Bench topology: our leases on its hosts (:class:`hil.lease.Leases`).
    leases: Any = None

    def _role(self, role: str) -> Host:
        name = self.roles.get(role)
        if not name or not isinstance(name, str):
            raise CapabilityError(f"the {self.kind} topology has no {role!r} host (roles."
                                  f"{role} in the bench config): {_ROLE_NEEDS[role]}")
        return self.hosts[name]

    @property
    def daq(self) -> Host:
        return self._role("daq")

    @property
    def monitors(self) -> list[Host]:
        names = self.roles.get("monitors") or []
        if isinstance(names, str) or len(names) < 3:
            raise CapabilityError(f"the {self.kind} topology has {len(names)} monitors "
                                  "(roles.monitors); the cases need at least three")
        return [self.hosts[n] for n in names]

    @property
    def far(self) -> Host:
        return self._role("far")

    @property
    def dual(self) -> Host:
        return self._role("dual")

    @property
    def dual_peer(self) -> Host:
        return self._role("dual_peer")

    @property
    def rogue(self) -> Host:
        return self._role("rogue")

    def flow(self, number: int, index: int = 0) -> Flow:
        """Group ``index`` of case ``number`` (0..15; each case its own groups)."""
        if not 0 <= number <= 15 or not 0 <= index <= 254:
            raise ValueError(f"flow({number}, {index}): case 0..15, index 0..254")
        return Flow(str(self.groups.network_address + 256 * number + 1 + index), self.port)

    def close(self) -> list[str]:
        """Remove everything the topology made; return what could not be undone."""
        problems = self.cleanups.unwind()
        for hook in reversed(self.teardown):
            try:
                hook()
            except Exception as exc:  # go on: the rest must be removed too
                problems.append(str(exc))
        self.teardown.clear()
        for host in self.hosts.values():
            with contextlib.suppress(Exception):
                host.runner.close()
        return problems


_ROLE_NEEDS = {
    "daq": "every case runs the DAQ there",
    "far": "case 5 needs a monitor behind a multicast router on another subnet",
    "dual": "case 5 needs a DAQ host with two interfaces (labels lan and alt)",
    "dual_peer": "case 5 needs a monitor reachable only through the dual host's alt interface",
    "rogue": "case 7 needs a host that sends bad traffic to the group",
}


def wait_for(check: Callable[[], bool], what: str, timeout: float,
             interval: float = 0.05) -> None:
    """Poll ``check`` until it is true; raise :class:`HilTimeout` naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            raise HilTimeout(f"{what}: not within {timeout:.1f} s")
        time.sleep(interval)


