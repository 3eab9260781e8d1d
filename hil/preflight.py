"""Before any case runs: is every host of the topology fit for the suite?

For each host (in parallel): reachable through its runner; ``apx-hil`` there and importable by
its Python, at the controller's version; its interfaces present, up and addressed as the
config says; a multicast route for the cases' groups out of its ``lan`` interface; no
nftables rule or policy dropping the groups; its clock within 1 s of the controller's. One
table, a verdict per host and a fix per problem, so that a misconfigured bench fails in
seconds instead of in the middle of a case.

:func:`gather` runs :mod:`hil.facts` on a host; everything else here is a pure function of
what it returned.
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .topology import Interface, Topology

#: Largest clock difference between a host and the controller.
CLOCK_TOLERANCE_S = 1.0
COLUMNS = ("reach", "apx-hil", "interfaces", "mcast route", "firewall", "clock")
_FACTS_SOURCE: str | None = None


def facts_source() -> str:
    global _FACTS_SOURCE
    if _FACTS_SOURCE is None:
        with open(os.path.join(os.path.dirname(__file__), "facts.py"), encoding="utf-8") as f:
            _FACTS_SOURCE = f.read()
    return _FACTS_SOURCE


@dataclass
class HostFacts:
    """What :mod:`hil.facts` said on one host, or why it could not be asked; and the
    controller's clock before and after asking."""

    name: str
    facts: dict[str, Any] | None
    error: str | None
    sent: float
    received: float

    @property
    def clock_offset_s(self) -> float | None:
        """Host clock minus controller clock: the host read its clock just before answering,
        so its reading is compared with the time the answer arrived (the transfer, ms, is the
        error)."""
        if self.facts is None:
            return None
        return float(self.facts["time"]) - self.received

    def clock_off(self, tolerance: float) -> bool:
        """Certainly more than ``tolerance`` apart: the host read its clock between
        ``sent`` and ``received``, whatever the round trip took."""
        if self.facts is None:
            return False
        host = float(self.facts["time"])
        return host - self.received > tolerance or host - self.sent < -tolerance


def gather(host, groups: Sequence[str], apx: bool = True, clock=time.time) -> HostFacts:
    """Run :mod:`hil.facts` on ``host`` (a :class:`~hil.topology.Host`)."""
    spec = json.dumps({"apx_hil": host.apx_hil if apx else None, "groups": list(groups)})
    sent = clock()
    try:
        done = host.run([*host.python, "-c", facts_source(), spec], timeout=30)
    except Exception as exc:  # unreachable is a verdict, not a crash
        return HostFacts(host.name, None, f"{type(exc).__name__}: {exc}", sent, clock())
    received = clock()
    if done.returncode != 0:
        return HostFacts(host.name, None, f"{' '.join(host.python)} exited {done.returncode}: "
                         f"{done.stderr.decode('utf-8', 'replace').strip()[-300:]}",
                         sent, received)
    try:
        facts = json.loads(done.text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return HostFacts(host.name, None, f"no facts in the output: {done.text[-300:]!r}",
                         sent, received)
    return HostFacts(host.name, facts, None, sent, received)


# ------------------------------------------------------------------------------------------
# Firewall: does an nftables rule or policy drop the groups?


def _overlaps(right: Any, net: ipaddress.IPv4Network) -> bool | None:
    try:
        if isinstance(right, str):
            return ipaddress.ip_network(right, strict=False).overlaps(net)
        if isinstance(right, dict) and "prefix" in right:
            p = right["prefix"]
            return ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False).overlaps(net)
        if isinstance(right, dict) and "range" in right:
            low, high = (int(ipaddress.ip_address(a)) for a in right["range"])
            return low <= int(net.broadcast_address) and high >= int(net.network_address)
        if isinstance(right, dict) and "set" in right:
            found = [_overlaps(item, net) for item in right["set"]]
            return True if any(found) else (None if None in found else False)
    except (ValueError, KeyError, TypeError):
        return None
    return None


def _in(right: Any, value: Any) -> bool | None:
    if isinstance(right, (int, str)):
        return str(right) == str(value)
    if isinstance(right, dict) and "range" in right:
        try:
            low, high = (int(v) for v in right["range"])
        except (TypeError, ValueError):
            return None
        return low <= int(value) <= high
    if isinstance(right, dict) and "set" in right:
        found = [_in(item, value) for item in right["set"]]
        return True if any(found) else (None if None in found else False)
    return None


def _match(match: dict[str, Any], groups: ipaddress.IPv4Network, port: int,
           device: str | None) -> bool | None:
    """Whether the group's datagrams satisfy one match expression (None: cannot tell)."""
    left, right, op = match.get("left"), match.get("right"), match.get("op", "==")
    result: bool | None = None
    if isinstance(left, dict) and "payload" in left:
        payload = left["payload"]
        what = (payload.get("protocol"), payload.get("field"))
        if what == ("ip", "daddr"):
            result = _overlaps(right, groups)
        elif what in (("udp", "dport"), ("th", "dport")):
            result = _in(right, port)
        elif what == ("ip", "protocol"):
            result = _in(right, "udp") or _in(right, 17)
    elif isinstance(left, dict) and "meta" in left:
        key = left["meta"].get("key")
        if key == "l4proto":
            result = _in(right, "udp") or _in(right, 17)
        elif key in ("nfproto", "protocol"):
            result = _in(right, "ipv4") or _in(right, "ip")
        elif key in ("iifname", "iif") and device is not None:
            result = isinstance(right, str) and (right == device or (
                right.endswith("*") and device.startswith(right[:-1])))
    if result is None:
        return None
    return (not result) if op == "!=" else result


def _certain(expr: Iterable[dict[str, Any]], groups, port, device) -> bool:
    """Every match of the rule certainly holds for the group's datagrams."""
    return all(_match(e["match"], groups, port, device) is True for e in expr if "match" in e)


def firewall_drops(ruleset: Any, groups: ipaddress.IPv4Network, port: int,
                   device: str | None) -> list[str]:
    """The rules and chain policies of ``nft -j list ruleset`` that drop datagrams to
    ``groups``:``port`` (arriving on ``device``), each with the command that removes it."""
    items = (ruleset or {}).get("nftables", []) if isinstance(ruleset, dict) else []
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    accepted: set[tuple[str, str, str]] = set()
    found = []
    for item in items:
        chain = item.get("chain")
        if chain is not None:
            chains[(chain["family"], chain["table"], chain["name"])] = chain
        rule = item.get("rule")
        if rule is None or rule.get("family") not in ("ip", "inet", "netdev"):
            continue
        key = (rule["family"], rule["table"], rule["chain"])
        base = chains.get(key, {})
        if base.get("hook") == "ingress" and base.get("dev") not in (None, device):
            continue
        if key in accepted:
            continue  # an earlier rule of the chain accepted them: later drops never see them
        expr = rule.get("expr", [])
        verdicts = {k for e in expr for k in e} & {"drop", "reject", "accept"}
        if not verdicts or not _certain(expr, groups, port, device):
            continue
        if "accept" in verdicts:
            accepted.add(key)
        else:
            found.append(f"rule {' '.join(key)} handle {rule.get('handle')} drops them "
                         f"(remove it: nft delete rule {' '.join(key)} handle "
                         f"{rule.get('handle')})")
    for key, chain in chains.items():
        if chain.get("policy") == "drop" and chain.get("hook") in ("input", "prerouting",
                                                                   "ingress", "output") \
                and key not in accepted and key[0] in ("ip", "inet", "netdev"):
            found.append(f"chain {' '.join(key)} has policy drop and accepts no rule for them "
                         f"(add one: nft insert rule {' '.join(key)} ip daddr {groups} udp "
                         f"dport {port} accept)")
    return found


# ------------------------------------------------------------------------------------------
# Verdicts


@dataclass
class Verdict:
    """One host's row of the preflight table."""

    host: str
    cells: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, column: str, cell: str, problem: str) -> None:
        self.cells[column] = cell
        self.problems.append(problem)


def _interfaces(facts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {i.get("ifname"): i for i in facts.get("interfaces") or [] if isinstance(i, dict)}


def evaluate(hf: HostFacts, interfaces: Sequence[Interface], *, version: str,
             groups: ipaddress.IPv4Network, group: str, port: int, role: bool,
             nft: bool) -> Verdict:
    """The verdict on one host. ``role``: the host plays a role in the cases (it needs
    apx-hil, interfaces, a multicast route); ``nft``: the suite may install nftables rules
    there (so the ruleset must be readable)."""
    v = Verdict(hf.name)
    if hf.facts is None:
        v.fail("reach", "NO", f"{hf.name}: cannot run a command there ({hf.error}); check its "
                              "access in the bench config (ssh key, agent running, token)")
        return v
    facts = hf.facts
    v.cells["reach"] = "ok"
    if role:
        module = facts.get("astropix_hil") or {}
        apx = facts.get("apx_hil") or {}
        said = str(apx.get("output", ""))
        there = said.split()[-1] if apx.get("returncode") == 0 and said else None
        if there is None:
            v.fail("apx-hil", "missing", f"{hf.name}: apx-hil does not run ({said}): install "
                                         f"astropix-hil=={version} there, or set apx_hil")
        elif there != version:
            v.fail("apx-hil", f"{there} != {version}",
                   f"{hf.name}: apx-hil is {there} there and {version} here: install the same "
                   f"version on both (pip install astropix-hil=={version})")
        elif module.get("version") != version:
            v.fail("apx-hil", f"python: {module.get('version') or 'none'}",
                   f"{hf.name}: its Python ({facts.get('python_executable')}) imports "
                   f"astropix_hil {module.get('version') or 'not at all'} "
                   f"({module.get('error', module.get('path'))}); the probes and the rogue "
                   f"need {version}: install it for that Python, or set python")
        else:
            v.cells["apx-hil"] = there
    present = _interfaces(facts)
    cells = []
    for iface in interfaces:
        dev = present.get(iface.name)
        if dev is None:
            v.fail("interfaces", f"{iface.label}: no {iface.name}",
                   f"{hf.name}: no device {iface.name} (interface {iface.label}); it has "
                   f"{', '.join(sorted(present)) or 'none'}: fix interfaces.{iface.label}"
                   f".device")
            continue
        addresses = [f"{a.get('local')}/{a.get('prefixlen')}" for a in dev.get("addr_info", [])]
        up = "UP" in dev.get("flags", []) and dev.get("operstate") != "DOWN"
        if str(iface.address) not in addresses:
            v.fail("interfaces", f"{iface.name} no {iface.ip}",
                   f"{hf.name}: {iface.name} has not {iface.address} (it has "
                   f"{', '.join(addresses) or 'no address'}): ip addr add {iface.address} dev "
                   f"{iface.name}, or fix interfaces.{iface.label}.address")
        elif not up:
            v.fail("interfaces", f"{iface.name} down",
                   f"{hf.name}: {iface.name} is down: ip link set {iface.name} up")
        else:
            cells.append(f"{iface.name} up")
    if "interfaces" not in v.cells:
        v.cells["interfaces"] = ", ".join(cells) or "-"
    lan = next((i for i in interfaces if i.label == "lan"), None)
    if role and lan is not None:
        got = (facts.get("routes") or {}).get(group) or {}
        route = got.get("route") or []
        dev = route[0].get("dev") if route and isinstance(route[0], dict) else None
        if dev != lan.name:
            why = f"it goes out of {dev}" if dev else (got.get("error") or "no route")
            v.fail("mcast route", "NO" if not dev else f"via {dev}",
                   f"{hf.name}: no multicast route to {group} out of {lan.name} ({why}): ip "
                   f"route add 224.0.0.0/4 dev {lan.name}")
        else:
            v.cells["mcast route"] = dev
    if facts.get("firewall") is not None:
        drops = firewall_drops(facts["firewall"], groups, port, lan.name if lan else None)
        if drops:
            v.fail("firewall", "DROPS", f"{hf.name}: nftables drops {groups} port {port}: "
                                        + "; ".join(drops))
        else:
            v.cells["firewall"] = "ok"
    elif nft:
        v.fail("firewall", "unreadable", f"{hf.name}: cannot read the nftables ruleset "
                                         f"({facts.get('firewall_error')}), though the config "
                                         "gives it capability nft (the suite needs root there)")
    else:
        v.cells["firewall"] = "not read"
    offset = hf.clock_offset_s
    assert offset is not None
    if hf.clock_off(CLOCK_TOLERANCE_S):
        v.fail("clock", f"{offset:+.1f} s", f"{hf.name}: its clock is {offset:+.1f} s off the "
                                            "controller's: synchronise both (NTP, chrony)")
    else:
        v.cells["clock"] = f"{offset:+.2f} s"
    return v


def table(verdicts: Sequence[Verdict], title: str) -> list[str]:
    """The preflight table: one row per host, a verdict, then the fix for every problem."""
    header = ["host", *COLUMNS, "verdict"]
    rows = [[v.host, *(v.cells.get(c, "-") for c in COLUMNS), "OK" if v.ok else "FAIL"]
            for v in verdicts]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    failed = [v for v in verdicts if not v.ok]
    out.append(f"preflight: {len(verdicts) - len(failed)} of {len(verdicts)} hosts ready"
               + ("" if not failed else f"; FAILED: {', '.join(v.host for v in failed)}"))
    for v in failed:
        out += [f"  fix: {p}" for p in v.problems]
    return out


def run(topology: Topology, version: str) -> tuple[list[Verdict], dict[str, HostFacts]]:
    """Gather every host's facts (in parallel) and judge them."""
    role_hosts = set()
    for value in topology.roles.values():
        role_hosts.update([value] if isinstance(value, str) else value)
    group = topology.flow(1).group
    hosts = dict(topology.hosts)
    switch_host = getattr(topology.switch, "host", None)
    if switch_host is not None and switch_host.name not in hosts:
        hosts[switch_host.name] = switch_host
    with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
        futures = {name: pool.submit(gather, host, [group], name in role_hosts)
                   for name, host in hosts.items()}
        facts = {name: f.result() for name, f in futures.items()}
    verdicts = [evaluate(facts[name], list(host.interfaces.values()), version=version,
                         groups=topology.groups, group=group, port=topology.port,
                         role=name in role_hosts, nft="nft" in host.capabilities)
                for name, host in hosts.items()]
    return verdicts, facts
