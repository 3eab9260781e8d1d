"""The kernel-side helpers: parsers of kernel output and the nftables rules of the cases."""

from __future__ import annotations

import json

import pytest

from astropix_hil.framing import Kind, encode_datagram

from . import kernel
from .errors import HilError

SNMP = """\
Ip: Forwarding DefaultTTL InReceives
Ip: 2 64 17
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors
Udp: 1200 3 172 40 172 0
"""


def test_parse_snmp() -> None:
    parsed = kernel.parse_snmp(SNMP)
    assert parsed["Udp"]["RcvbufErrors"] == 172
    assert parsed["Ip"] == {"Forwarding": 2, "DefaultTTL": 64, "InReceives": 17}


def test_parse_snmp_refuses_unpaired_lines() -> None:
    with pytest.raises(HilError, match="unexpected lines"):
        kernel.parse_snmp("Ip: Forwarding\nUdp: 1\n")


def test_parse_mdb_keeps_the_bridge_asked_for() -> None:
    text = json.dumps([{"mdb": [
        {"index": 5, "dev": "br0", "port": "p-m1", "grp": "239.18.2.1", "state": "temp"},
        {"index": 5, "dev": "br0", "port": "p-m2", "grp": "239.18.2.1", "state": "temp"},
        {"index": 6, "dev": "br1", "port": "p-x", "grp": "239.18.2.1", "state": "temp"},
        {"index": 5, "dev": "br0", "port": "p-m3", "grp": "ff02::1:ff00:1", "state": "temp"},
    ], "router": {}}])
    assert kernel.parse_mdb(text, "br0") == {"239.18.2.1": {"p-m1", "p-m2"},
                                              "ff02::1:ff00:1": {"p-m3"}}
    assert kernel.parse_mdb("", "br0") == {}


def test_parse_nft_counters_reads_named_counters_only() -> None:
    text = json.dumps({"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"table": {"family": "inet", "name": "t", "handle": 1}},
        {"counter": {"family": "inet", "name": "seen", "table": "t", "packets": 389,
                     "bytes": 351000}},
        {"counter": {"family": "inet", "name": "dropped", "table": "t", "packets": 81,
                     "bytes": 73000}},
        {"rule": {"expr": [{"counter": "seen"}]}},
    ]})
    assert kernel.parse_nft_counters(text) == {"seen": {"packets": 389, "bytes": 351000},
                                               "dropped": {"packets": 81, "bytes": 73000}}


def test_kind_offset_points_at_the_datagram_kind() -> None:
    for kind in Kind:
        datagram = encode_datagram(kind, 1, 2, 3, b"x" * 20)
        udp_packet = bytes(8) + datagram  # what nftables' @th counts from
        assert udp_packet[kernel.KIND_BIT_OFFSET // 8] == kind


def test_loss_rules_match_data_kinds_and_count_drops() -> None:
    rules = kernel.loss_rules("apxhil_t", "239.18.3.1", 5007, 20)
    assert '@th,104,8 { 1, 2 } counter name "seen"' in rules
    assert 'numgen random mod 100 < 20 counter name "dropped" drop' in rules
    with pytest.raises(ValueError, match="percent"):
        kernel.loss_rules("apxhil_t", "239.18.3.1", 5007, 101)
    with pytest.raises(ValueError, match="bad nftables name"):
        kernel.loss_rules("t; flush ruleset", "239.18.3.1", 5007, 1)


def test_rules_are_accepted_by_nft(lab) -> None:
    host = lab.monitors[0]
    for rules in (kernel.loss_rules("apxhil_check", "239.18.3.1", 5007, 20),
                  kernel.ingress_counter_rules("apxhil_check", host.iface().name,
                                               "239.18.3.1", 5007)):
        # -c: check only, nothing is installed.
        host.run(["nft", "-c", "-f", "-"], input=rules.encode()).check(host.name)


def test_nft_table_counts_and_is_removed(lab) -> None:
    host = lab.monitors[0]
    table = kernel.ingress_counter(host, "239.18.15.1", 5007)
    assert table.counters() == {"arrived": {"packets": 0, "bytes": 0}}
    table.remove()
    listed = host.run(["nft", "list", "tables"]).check(host.name).text
    assert table.name not in listed


def test_delta() -> None:
    assert kernel.delta({"a": 5, "b": 7}, {"a": 2}) == {"a": 3, "b": 7}


# /proc/net/dev, columns squeezed (the parser splits on whitespace).
NETDEV = (
    "Inter-|   Receive                                   |  Transmit\n"
    " face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop "
    "fifo colls carrier compressed\n"
    "    lo: 5800 58 0 0 0 0 0 0 5800 58 0 0 0 0 0 0\n"
    "  eth0: 1200000 1500 0 3 0 0 0 40 90000 700 0 0 0 0 0 0\n")


def test_counters_of_keep_udp_ip_and_the_labelled_devices() -> None:
    got = kernel.counters_of(SNMP + NETDEV, {"lan": "eth0", "alt": "eth9"})
    assert got["udp"]["RcvbufErrors"] == 172 and got["udp"]["InDatagrams"] == 1200
    assert got["ip"]["InReceives"] == 17
    assert (got["lan"]["rx_packets"], got["lan"]["rx_drop"], got["lan"]["tx_packets"]) == \
        (1500, 3, 700)
    assert "alt" not in got  # no such device: not invented
    assert kernel.parse_netdev(NETDEV)["lo"]["rx_bytes"] == 5800
