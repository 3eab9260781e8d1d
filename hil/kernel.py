"""What the kernel saw: counters read on a host, and the nftables rules that make them.

The cases check programs against the kernel: a monitor's lost count against an nftables drop
counter, its overload against the UDP receive-buffer errors of ``/proc/net/snmp``, a bridge's
forwarding against an ingress counter on the host behind it. The parsers and rule builders
are pure functions of text; :class:`NftTable` and the ``read_*`` functions run the commands on
a host through its runner.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from collections.abc import Iterable
from typing import Any

from astropix_hil.framing import HEADER, Kind

from .errors import HilError
from .topology import Host

#: Bit offset, from the start of the UDP header, of the datagram kind byte (UDP header 8
#: bytes, then magic 4, version 1, kind 1): nftables' ``@th,OFFSET,8``.
KIND_BIT_OFFSET = (8 + 5) * 8
#: Datagram kinds that carry readouts (heartbeats are left alone, so that a receiver's lost
#: datagrams are exactly the rule's drops).
DATA_KINDS = (int(Kind.DATA), int(Kind.FRAGMENT))

assert HEADER.format.startswith("<4sBB"), "the kind byte moved: update KIND_BIT_OFFSET"

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,30}$")


# ------------------------------------------------------------------------------------------
# Parsers


def parse_snmp(text: str) -> dict[str, dict[str, int]]:
    """``/proc/net/snmp`` as {protocol: {counter: value}} (pairs of name and value lines)."""
    out: dict[str, dict[str, int]] = {}
    lines = [line.split() for line in text.splitlines() if line.strip()]
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if not names or names[0] != values[0] or not names[0].endswith(":"):
            raise HilError(f"/proc/net/snmp: unexpected lines {names[:2]} / {values[:2]}")
        proto = names[0][:-1]
        out[proto] = {name: int(value) for name, value in zip(names[1:], values[1:],
                                                               strict=True)}
    return out


NETDEV_FIELDS = ("rx_bytes", "rx_packets", "rx_errs", "rx_drop", "rx_fifo", "rx_frame",
                 "rx_compressed", "rx_multicast", "tx_bytes", "tx_packets", "tx_errs",
                 "tx_drop", "tx_fifo", "tx_colls", "tx_carrier", "tx_compressed")


def parse_netdev(text: str) -> dict[str, dict[str, int]]:
    """``/proc/net/dev`` as {device: {rx_packets: n, ...}} (two header lines, then one line
    per device)."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        name, colon, rest = line.partition(":")
        values = rest.split()
        if not colon or len(values) != len(NETDEV_FIELDS) or not all(v.isdigit()
                                                                      for v in values):
            continue
        out[name.strip()] = dict(zip(NETDEV_FIELDS, map(int, values), strict=True))
    return out


def parse_mdb(text: str, bridge: str) -> dict[str, set[str]]:
    """``bridge -j mdb show`` as {group: {port, ...}} for ``bridge``."""
    out: dict[str, set[str]] = {}
    data = json.loads(text or "[]")
    for table in data:
        for entry in table.get("mdb", []):
            if entry.get("dev") != bridge:
                continue
            group = entry.get("grp")
            port = entry.get("port")
            if group and port:
                out.setdefault(group, set()).add(port)
    return out


def parse_nft_counters(text: str) -> dict[str, dict[str, int]]:
    """Named counters of ``nft -j list table ...`` as {name: {"packets", "bytes"}}."""
    out: dict[str, dict[str, int]] = {}
    for item in json.loads(text).get("nftables", []):
        counter = item.get("counter")
        if counter is not None:
            out[counter["name"]] = {"packets": int(counter["packets"]),
                                    "bytes": int(counter["bytes"])}
    return out


# ------------------------------------------------------------------------------------------
# Rule builders


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"bad nftables name {name!r}")
    return name


def _flow(group: str, port: int) -> str:
    return f"ip daddr {group} udp dport {int(port)}"


def ingress_counter_rules(table: str, device: str, group: str, port: int) -> str:
    """A netdev table counting the group's datagrams as they arrive on ``device`` (before
    any socket or routing decision: what the switch forwarded to this host)."""
    _check_name(table)
    return (f"table netdev {table} {{\n"
            f"  counter arrived {{ }}\n"
            f"  chain ingress {{\n"
            f"    type filter hook ingress device {json.dumps(device)} priority 0; "
            f"policy accept;\n"
            f"    meta protocol ip {_flow(group, port)} counter name \"arrived\"\n"
            f"  }}\n"
            f"}}\n")


def loss_rules(table: str, group: str, port: int, percent: int,
               kinds: Iterable[int] = DATA_KINDS) -> str:
    """An inet table dropping ``percent``% of the group's datagrams of ``kinds`` at random on
    input, counting what it drops (``dropped``) and every datagram of those kinds it saw
    (``seen``)."""
    _check_name(table)
    if not 0 <= percent <= 100:
        raise ValueError(f"percent {percent} not in 0..100")
    kind_set = ", ".join(str(int(k)) for k in kinds)
    match = f"{_flow(group, port)} @th,{KIND_BIT_OFFSET},8 {{ {kind_set} }}"
    return (f"table inet {table} {{\n"
            f"  counter seen {{ }}\n"
            f"  counter dropped {{ }}\n"
            f"  chain input {{\n"
            f"    type filter hook input priority -10; policy accept;\n"
            f"    {match} counter name \"seen\"\n"
            f"    {match} numgen random mod 100 < {int(percent)} counter name \"dropped\" drop\n"
            f"  }}\n"
            f"}}\n")


# ------------------------------------------------------------------------------------------
# On a host


class NftTable:
    """An nftables table installed on a host for one case; removed by :meth:`remove`."""

    def __init__(self, host: Host, family: str, rules_for_name) -> None:
        host.require("nft", "install nftables rules")
        self.host = host
        self.family = family
        self.name = f"apxhil_{secrets.token_hex(4)}"
        self.rules = rules_for_name(self.name)
        host.run(["nft", "-f", "-"], input=self.rules.encode()).check(host.name)
        host.track_cleanup(self.remove)

    def counters(self) -> dict[str, dict[str, int]]:
        done = self.host.run(["nft", "-j", "list", "table", self.family, self.name])
        return parse_nft_counters(done.check(self.host.name).text)

    def packets(self, counter: str) -> int:
        return self.counters()[counter]["packets"]

    def remove(self) -> None:
        with contextlib.suppress(HilError):
            self.host.run(["nft", "delete", "table", self.family, self.name])


def ingress_counter(host: Host, group: str, port: int, label: str = "lan") -> NftTable:
    """Count the group's datagrams arriving on the host's ``label`` interface."""
    device = host.iface(label).name
    return NftTable(host, "netdev",
                    lambda name: ingress_counter_rules(name, device, group, port))


def loss_rule(host: Host, group: str, port: int, percent: int) -> NftTable:
    """Drop ``percent``% of the group's data datagrams on the host's input, counted."""
    return NftTable(host, "inet", lambda name: loss_rules(name, group, port, percent))


def read_udp_counters(host: Host) -> dict[str, int]:
    """The host's (namespace's) UDP counters from ``/proc/net/snmp``."""
    done = host.run(["cat", "/proc/net/snmp"]).check(host.name)
    return parse_snmp(done.text)["Udp"]


#: Counters of ``/proc/net/snmp`` the report keeps (UDP, and IGMP-relevant IP counters).
SNMP_KEPT = {"Udp": ("InDatagrams", "NoPorts", "InErrors", "OutDatagrams", "RcvbufErrors",
                     "SndbufErrors", "InCsumErrors"),
             "Ip": ("InReceives", "InDiscards", "InDelivers", "OutRequests", "OutDiscards",
                    "OutNoRoutes")}


def counters_of(snmp_and_netdev: str, devices: dict[str, str]) -> dict[str, dict[str, int]]:
    """The counters the report keeps, from ``cat /proc/net/snmp /proc/net/dev``: {"udp":
    ..., "ip": ..., LABEL: netdev counters of the device labelled LABEL}."""
    head, sep, tail = snmp_and_netdev.partition("Inter-|")
    snmp = parse_snmp(head)
    out = {proto.lower(): {k: snmp.get(proto, {}).get(k, 0) for k in keys}
           for proto, keys in SNMP_KEPT.items()}
    netdev = parse_netdev(tail if sep else "")
    for label, device in devices.items():
        if device in netdev:
            out[label] = netdev[device]
    return out


def read_counters(host: Host) -> dict[str, dict[str, int]]:
    """The host's kernel counters for the report (:func:`counters_of`)."""
    done = host.run(["cat", "/proc/net/snmp", "/proc/net/dev"]).check(host.name)
    return counters_of(done.text, {i.label: i.name for i in host.interfaces.values()})


def delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, int]:
    """Counter differences (for the keys of ``after``)."""
    return {k: int(after[k]) - int(before.get(k, 0)) for k in after}
