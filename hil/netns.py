"""The CI topology: network namespaces on this machine, built with iproute2.

::

                        switch namespace: bridge br0 (IGMP snooping, querier 198.18.0.2)
      daq .10   m1 .11   m2 .12   m3 .13   rogue .66   dual .20 (eth0)    router .1 (eth0)
                                                        | eth1 .2.20        | eth1 198.18.1.1
                                                      peer 198.18.2.11    far 198.18.1.11

LAN 198.18.0.0/24 behind the bridge; the router namespace forwards 239.0.0.0/8 from its LAN
side to 198.18.1.0/24 with smcroute (its own config, pid and socket files), honouring TTL;
``dual`` is a DAQ host with a second interface on 198.18.2.0/24. Every host has loopback up
and a route for 224.0.0.0/4 on its LAN interface. Monitor ports do not flood unregistered
multicast (as a managed switch with snooping does) and leave at once (fast leave); the router
port is a permanent multicast router port.

Names carry this process's pid and a random suffix, so runs never collide; namespaces of runs
whose process is gone are removed on the next start. :func:`build` registers the teardown
(kill every process in the namespaces, delete them, remove the run directory) before creating
anything, and an ``atexit`` hook and a SIGTERM handler make sure it runs.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from .errors import HilTimeout, TopologyError
from .runners import netns_runner
from .topology import BoardSpec, BridgeSwitch, Cleanups, Host, Interface, Topology

log = logging.getLogger(__name__)

PREFIX = "apxhil"
_STALE = re.compile(rf"^{PREFIX}-(\d+)-[0-9a-f]+-")
#: host -> (LAN address, ports options): hosts on the bridge.
LAN = ipaddress.IPv4Network("198.18.0.0/24")
FAR_NET = ipaddress.IPv4Network("198.18.1.0/24")
ALT_NET = ipaddress.IPv4Network("198.18.2.0/24")
BRIDGE_ADDR = "198.18.0.2"
#: Hosts on the bridge and the last byte of their address. ``ctl`` is no role of the cases: it
#: is where the suite itself can run on the LAN, as a controller machine does at a bench.
LAN_HOSTS = {"daq": 10, "m1": 11, "m2": 12, "m3": 13, "rogue": 66, "dual": 20, "router": 1,
             "ctl": 250}
MONITORS = ("m1", "m2", "m3")
TOOLS = {"ip": "iproute2", "bridge": "iproute2", "nft": "nftables", "smcrouted": "smcroute"}


def preflight(euid: int | None = None, which=shutil.which) -> list[str]:
    """Why this machine cannot build the topology (empty when it can)."""
    problems = []
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        problems.append(f"not root (euid {euid}): network namespaces, bridges and nftables "
                        "need root; run the suite as root (sudo -E tox -e hil)")
    missing = sorted({pkg for tool, pkg in TOOLS.items() if which(tool) is None})
    if missing:
        tools = [t for t, p in TOOLS.items() if p in missing]
        problems.append(f"missing {', '.join(tools)}: install {' '.join(missing)} (Debian: "
                        f"apt-get install {' '.join(missing)}; .ci/run does this)")
    return problems


def _cmd(argv: list[str], timeout: float = 15.0, check: bool = True) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise HilTimeout(f"{' '.join(argv)} did not end within {timeout:.0f} s") from None
    if check and done.returncode != 0:
        raise TopologyError(f"{' '.join(argv)} failed ({done.returncode}): "
                            f"{done.stderr.strip()}")
    return done.stdout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_namespaces() -> list[str]:
    out = _cmd(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def delete_namespace(name: str) -> None:
    """Kill every process inside ``name`` (ours: the namespace is ours), then delete it."""
    for attempt in range(50):
        pids = [int(p) for p in _cmd(["ip", "netns", "pids", name], check=False).split()]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL if attempt else signal.SIGTERM)
        time.sleep(0.1)
    _cmd(["ip", "netns", "delete", name], check=False)


def reap_stale() -> list[str]:
    """Delete namespaces left by suite runs whose process no longer exists."""
    removed = []
    for name in list_namespaces():
        match = _STALE.match(name)
        if match and not _pid_alive(int(match.group(1))):
            delete_namespace(name)
            removed.append(name)
    return removed


class NetnsLab:
    """The namespaces of one run and how to remove them."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}-{os.getpid()}-{secrets.token_hex(3)}"
        self.namespaces: list[str] = []
        self.rundir = tempfile.mkdtemp(prefix=f"{self.tag}.")
        self._closed = False

    def ns(self, role: str) -> str:
        return f"{self.tag}-{role}"

    def add(self, role: str) -> str:
        name = self.ns(role)
        # Recorded before it exists: a failure half-way is cleaned up as well.
        self.namespaces.append(name)
        _cmd(["ip", "netns", "add", name])
        _cmd(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def destroy(self) -> None:
        if self._closed:
            return
        self._closed = True
        for name in reversed(self.namespaces):
            delete_namespace(name)
        shutil.rmtree(self.rundir, ignore_errors=True)


def _veth(outer_ns: str, outer: str, inner_ns: str, inner: str) -> None:
    _cmd(["ip", "-n", outer_ns, "link", "add", outer, "type", "veth", "peer", "name", inner,
          "netns", inner_ns])


def _address(ns: str, dev: str, address: str, mcast_route: bool) -> None:
    _cmd(["ip", "-n", ns, "addr", "add", address, "dev", dev])
    _cmd(["ip", "-n", ns, "link", "set", dev, "up"])
    if mcast_route:
        _cmd(["ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", dev])


SMCROUTE_CONF = """\
# apx-hil HIL suite: forward every 239/8 group from the LAN to the far subnet.
phyint eth0 enable ttl-threshold 1
phyint eth1 enable ttl-threshold 1
mroute from eth0 group 239.0.0.0/8 to eth1
"""


def _start_router(lab: NetnsLab, ns: str) -> None:
    conf = os.path.join(lab.rundir, "smcroute.conf")
    with open(conf, "w", encoding="utf-8") as stream:
        stream.write(SMCROUTE_CONF)
    pidfile = os.path.join(lab.rundir, "smcroute.pid")
    sockfile = os.path.join(lab.rundir, "smcroute.sock")
    log_path = os.path.join(lab.rundir, "smcroute.log")
    with open(log_path, "wb") as out:
        # Started in the namespace: delete_namespace kills it at teardown.
        subprocess.Popen(["ip", "netns", "exec", ns, "smcrouted", "-n", "-N", "-f", conf,
                          "-P", pidfile, "-u", sockfile, "-i", lab.tag, "-l", "info"],
                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True)
    deadline = time.monotonic() + 10
    while True:
        vifs = _cmd(["ip", "netns", "exec", ns, "cat", "/proc/net/ip_mr_vif"], check=False)
        if sum(1 for line in vifs.splitlines()[1:] if line.split()[1:2] in (["eth0"],
                                                                             ["eth1"])) == 2:
            return
        if time.monotonic() >= deadline:
            with open(log_path, encoding="utf-8", errors="replace") as stream:
                text = stream.read()[-2000:]
            raise TopologyError(f"smcrouted in {ns} did not set up its interfaces within "
                                f"10 s: {text}")
        time.sleep(0.05)


def build(cleanups: Cleanups) -> Topology:
    """Build the CI topology; on any failure remove what was built and raise
    :class:`TopologyError` saying why."""
    problems = preflight()
    if problems:
        raise TopologyError("cannot build the HIL network namespaces: " + "; ".join(problems))
    stale = reap_stale()
    if stale:
        log.warning("removed namespaces of dead runs: %s", ", ".join(stale))
    lab = NetnsLab()
    _guard(lab)
    try:
        return _build(lab, cleanups)
    except BaseException:
        lab.destroy()
        raise


def _build(lab: NetnsLab, cleanups: Cleanups) -> Topology:
    sw = lab.add("sw")
    # The querier is switched on last: the bridge trusts its snooping (and stops flooding)
    # one response interval after that, an interval set to 1 s here instead of 10 s.
    _cmd(["ip", "-n", sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "1",
          "mcast_query_use_ifaddr", "1", "mcast_igmp_version", "3",
          "mcast_query_response_interval", "100"])
    _cmd(["ip", "-n", sw, "addr", "add", f"{BRIDGE_ADDR}/24", "dev", "br0"])
    _cmd(["ip", "-n", sw, "link", "set", "br0", "up"])
    _cmd(["ip", "-n", sw, "link", "set", "br0", "type", "bridge", "mcast_querier", "1"])
    ports: dict[str, str] = {}
    names: dict[str, str] = {}
    for role, last in LAN_HOSTS.items():
        ns = names[role] = lab.add(role)
        port = f"p-{role}"
        _veth(sw, port, ns, "eth0")
        _cmd(["ip", "-n", sw, "link", "set", port, "master", "br0"])
        _cmd(["ip", "-n", sw, "link", "set", port, "up"])
        if role == "router":
            _cmd(["bridge", "-n", sw, "link", "set", "dev", port, "mcast_router", "2"])
        else:
            _cmd(["bridge", "-n", sw, "link", "set", "dev", port, "mcast_flood", "off",
                  "fastleave", "on"])
        ports[port] = role
        _address(ns, "eth0", f"{LAN.network_address + last}/24", mcast_route=role != "router")
    # The far subnet, behind the router.
    far = names["far"] = lab.add("far")
    _veth(names["router"], "eth1", far, "eth0")
    _address(names["router"], "eth1", f"{FAR_NET.network_address + 1}/24", mcast_route=False)
    _address(far, "eth0", f"{FAR_NET.network_address + 11}/24", mcast_route=True)
    # The dual host's second network, with one monitor on it.
    peer = names["peer"] = lab.add("peer")
    _veth(names["dual"], "eth1", peer, "eth0")
    _address(names["dual"], "eth1", f"{ALT_NET.network_address + 20}/24", mcast_route=False)
    _address(peer, "eth0", f"{ALT_NET.network_address + 11}/24", mcast_route=True)
    _start_router(lab, names["router"])

    def host(role: str, interfaces: list[Interface]) -> Host:
        workdir = os.path.join(lab.rundir, role)
        os.makedirs(workdir, exist_ok=True)
        return Host(role, netns_runner(names[role], workdir), interfaces, workdir=workdir,
                    cleanups=cleanups, capabilities=("nft", "quiet"),
                    apx_hil=(sys.executable, "-m", "astropix_hil"),
                    python=(sys.executable,))

    def lan(role: str, label: str = "lan", dev: str = "eth0") -> Interface:
        return Interface(label, dev, ipaddress.IPv4Interface(
            f"{LAN.network_address + LAN_HOSTS[role]}/24"))

    hosts = {role: host(role, [lan(role)]) for role in ("daq", *MONITORS, "rogue", "ctl")}
    hosts["far"] = host("far", [Interface("lan", "eth0", ipaddress.IPv4Interface(
        f"{FAR_NET.network_address + 11}/24"))])
    hosts["dual"] = host("dual", [lan("dual"), Interface("alt", "eth1", ipaddress.IPv4Interface(
        f"{ALT_NET.network_address + 20}/24"))])
    hosts["peer"] = host("peer", [Interface("lan", "eth0", ipaddress.IPv4Interface(
        f"{ALT_NET.network_address + 11}/24"))])
    hosts["router"] = host("router", [lan("router"), Interface(
        "far", "eth1", ipaddress.IPv4Interface(f"{FAR_NET.network_address + 1}/24"))])
    switch_dir = os.path.join(lab.rundir, "sw")
    os.makedirs(switch_dir, exist_ok=True)
    switch_host = Host("sw", netns_runner(sw, switch_dir), [], workdir=switch_dir,
                       cleanups=cleanups)
    topology = Topology(
        kind="netns", hosts=hosts,
        roles={"daq": "daq", "monitors": list(MONITORS), "far": "far", "dual": "dual",
               "dual_peer": "peer", "rogue": "rogue"},
        switch=BridgeSwitch(switch_host, "br0", ports), board=BoardSpec("emulator"),
        namespaces={**names, "sw": sw},
        cleanups=cleanups,
        description=f"network namespaces {lab.tag}-* (run directory {lab.rundir})")
    topology.teardown.append(lab.destroy)
    _wait_snooping(topology)
    return topology


def _wait_snooping(topology: Topology, timeout: float = 15.0) -> None:
    """Return once the bridge forwards a group to a member port (its querier is up)."""
    from . import programs

    flow = topology.flow(0, 200)
    monitor = topology.monitors[0]
    receiver = programs.probe_receiver(monitor, flow, 1, timeout)
    sender = topology.daq.spawn([*topology.daq.python, "-c", programs.probe_source(), "send",
                                 flow.group, str(flow.port), "--count",
                                 str(int(timeout / 0.05)), "--interval", "0.05"],
                                "probe-send")
    try:
        got = receiver.result(timeout + 10)
    finally:
        sender.kill()
        receiver.proc.kill()
    if got["received"] < 1:
        raise TopologyError(f"the bridge did not forward multicast to a member port within "
                            f"{timeout:.0f} s (IGMP snooping or querier not working)")


_LABS: list[NetnsLab] = []


def _guard(lab: NetnsLab) -> None:
    """Make sure ``lab`` is destroyed even when the run ends abnormally."""
    if not _LABS:
        atexit.register(_destroy_all)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _on_sigterm)
    _LABS.append(lab)


def _destroy_all() -> None:
    while _LABS:
        _LABS.pop().destroy()


def _on_sigterm(signum: int, frame: object) -> None:
    # Through KeyboardInterrupt, pytest runs the fixtures' teardown; atexit catches the rest.
    raise KeyboardInterrupt(f"signal {signum}")
