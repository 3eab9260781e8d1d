"""Preflight. A run that cannot build the CI topology fails, saying why (never skips); and
at a bench, :mod:`hil.preflight` judges every host from its facts (the lab tests of
``test_bench_mode.py`` run it against misconfigured hosts).

The suite is run again in a subprocess that lacks root (a user namespace: same files, euid not
0) or lacks iproute2 (an empty PATH); it must end with status 1 and a message naming the
cause and the remedy.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys

import pytest

from astropix_hil import __version__

from . import preflight as pf
from .netns import preflight
from .topology import Interface

pytestmark = pytest.mark.case("0 preflight")

HIL_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HIL_DIR)


def _suite(prefix: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    # Bench mode off: these runs must try to build the namespaces.
    env = {k: v for k, v in env.items() if k not in ("APX_HIL_BENCH", "PYTEST_ADDOPTS")}
    return subprocess.run([*prefix, sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-q", "--rootdir", ROOT, "--hil-report", os.devnull,
                           os.path.join(HIL_DIR, "test_topology.py")],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def test_without_root_the_run_fails_saying_so() -> None:
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed to run the suite without root"
    done = _suite([unshare, "--user", "--"], dict(os.environ))
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert "cannot build the HIL network namespaces: not root (euid 65534)" in out
    assert "run the suite as root" in out
    assert " passed" not in out and "skipped" not in out


def test_without_iproute2_the_run_fails_saying_so() -> None:
    done = _suite([], {**os.environ, "PATH": "/nonexistent"})
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert "missing ip, bridge, nft, smcrouted: install iproute2 nftables smcroute" in out


def test_preflight_names_every_problem() -> None:
    problems = preflight(euid=1000, which=lambda tool: None if tool == "nft" else f"/x/{tool}")
    assert problems == [
        "not root (euid 1000): network namespaces, bridges and nftables need root; run the "
        "suite as root (sudo -E tox -e hil)",
        "missing nft: install nftables (Debian: apt-get install nftables; .ci/run does this)",
    ]
    assert preflight(euid=0, which=lambda tool: f"/x/{tool}") == []


# ------------------------------------------------------------------------------------------
# The bench preflight's judgement (hil.preflight), on facts as hil.facts reports them


def _rule(handle: int, *expr: dict, chain: str = "input") -> dict:
    return {"rule": {"family": "inet", "table": "f", "chain": chain, "handle": handle,
                     "expr": list(expr)}}


def _m(protocol: str, fld: str, right, op: str = "==") -> dict:
    return {"match": {"op": op, "left": {"payload": {"protocol": protocol, "field": fld}},
                      "right": right}}


def _chain(policy: str = "accept", name: str = "input") -> dict:
    return {"chain": {"family": "inet", "table": "f", "name": name, "handle": 1,
                      "type": "filter", "hook": "input", "prio": 0, "policy": policy}}


NET = ipaddress.IPv4Network("239.18.0.0/16")


def _drops(*items: dict) -> list[str]:
    return pf.firewall_drops({"nftables": list(items)}, NET, 5007, "eth0")


def test_rules_that_drop_the_groups_are_found() -> None:
    # As `nft -j list ruleset` prints them.
    assert _drops(_chain(), _rule(2, _m("ip", "daddr", {"prefix": {"addr": "239.18.0.0",
                                                                   "len": 16}}),
                                  _m("udp", "dport", 5007), {"drop": None})) == [
        "rule inet f input handle 2 drops them (remove it: nft delete rule inet f input "
        "handle 2)"]
    assert len(_drops(_chain(), _rule(6, _m("ip", "daddr", {"set": ["239.18.3.1",
                                                                     "239.30.0.1"]}),
                                      _m("udp", "dport", {"range": [5000, 5010]}),
                                      {"reject": {"type": "icmp"}}))) == 1


def test_rules_that_spare_the_groups_are_not() -> None:
    other_group = _rule(2, _m("ip", "daddr", "239.30.0.1"), {"drop": None})
    other_port = _rule(3, _m("udp", "dport", 6000), {"drop": None})
    tcp = _rule(4, _m("tcp", "dport", 22), {"drop": None})
    unsure = _rule(5, _m("ip", "saddr", "10.0.0.1"), {"drop": None})  # not certain: not ours
    negated = _rule(7, _m("ip", "daddr", NET.with_prefixlen, op="!="), {"drop": None})
    assert _drops(_chain(), other_group, other_port, tcp, unsure, negated) == []
    # An earlier accept of the groups: a later drop in the chain never sees them.
    accept = _rule(8, _m("ip", "daddr", "239.18.0.0/16"), {"accept": None})
    drop_all = _rule(9, _m("udp", "dport", 5007), {"drop": None})
    assert _drops(_chain(), accept, drop_all) == []
    assert len(_drops(_chain(), drop_all, accept)) == 1


def test_a_drop_policy_without_an_accept_for_the_groups_is_found() -> None:
    (found,) = _drops(_chain("drop"))
    assert found.startswith("chain inet f input has policy drop")
    assert "nft insert rule inet f input ip daddr 239.18.0.0/16 udp dport 5007 accept" in found
    assert _drops(_chain("drop"), _rule(2, _m("ip", "daddr", {"prefix": {
        "addr": "239.0.0.0", "len": 8}}), {"accept": None})) == []


def _facts(**changes) -> dict:
    facts = {
        "hostname": "mon-1", "kernel": "6.1.0", "python": "3.11.2",
        "python_executable": "/usr/bin/python3",
        "astropix_hil": {"version": __version__, "path": "/x"},
        "apx_hil": {"returncode": 0, "output": f"apx-hil {__version__}"},
        "interfaces": [{"ifname": "eno1", "flags": ["BROADCAST", "MULTICAST", "UP",
                                                    "LOWER_UP"], "mtu": 1500,
                        "operstate": "UP", "addr_info": [{"family": "inet",
                                                          "local": "10.214.0.11",
                                                          "prefixlen": 24}]}],
        "routes": {"239.18.1.1": {"route": [{"type": "multicast", "dst": "239.18.1.1",
                                             "dev": "eno1"}], "error": None}},
        "firewall": {"nftables": []}, "firewall_error": None, "time": 1000.0}
    facts.update(changes)
    return facts


def _verdict(facts: dict | None, error: str | None = None, sent: float = 999.9,
             received: float = 1000.1) -> pf.Verdict:
    iface = Interface("lan", "eno1", ipaddress.IPv4Interface("10.214.0.11/24"))
    return pf.evaluate(pf.HostFacts("mon-1", facts, error, sent, received), [iface],
                       version=__version__, groups=NET, group="239.18.1.1", port=5007,
                       role=True, nft=True)


def test_a_fit_host_is_ok() -> None:
    verdict = _verdict(_facts())
    assert verdict.ok, verdict.problems
    assert verdict.cells == {"reach": "ok", "apx-hil": __version__, "interfaces": "eno1 up",
                             "mcast route": "eno1", "firewall": "ok", "clock": "-0.10 s"}


def test_each_problem_fails_the_host_with_its_fix() -> None:
    cases = {
        "cannot run a command there (ConnectionRefused)": _verdict(None, "ConnectionRefused"),
        "apx-hil is 0.0.9 there": _verdict(_facts(apx_hil={"returncode": 0,
                                                            "output": "apx-hil 0.0.9"})),
        "apx-hil does not run": _verdict(_facts(apx_hil={"returncode": 127,
                                                         "output": "not found"})),
        "imports astropix_hil not at all": _verdict(_facts(astropix_hil={
            "version": None, "error": "ModuleNotFoundError"})),
        "eno1 is down: ip link set eno1 up": _verdict(_facts(interfaces=[{
            **_facts()["interfaces"][0], "flags": ["BROADCAST"], "operstate": "DOWN"}])),
        "no device eno1": _verdict(_facts(interfaces=[])),
        "ip route add 224.0.0.0/4 dev eno1": _verdict(_facts(routes={"239.18.1.1": {
            "route": None, "error": "RTNETLINK answers: Network is unreachable"}})),
        "nftables drops 239.18.0.0/16 port 5007": _verdict(_facts(firewall={
            "nftables": [_chain("drop")]})),
        "cannot read the nftables ruleset": _verdict(_facts(firewall=None,
                                                            firewall_error="Operation not "
                                                            "permitted")),
        "its clock is +2.5 s off": _verdict(_facts(time=1002.6)),
        "its clock is -2.6 s off": _verdict(_facts(time=997.5)),
    }
    for fix, verdict in cases.items():
        assert not verdict.ok
        assert any(fix in problem for problem in verdict.problems), (fix, verdict.problems)
    # A slow round trip is no clock error: the host read its clock somewhere in it.
    assert _verdict(_facts(time=1001.5), sent=999.0, received=1003.0).ok


def test_the_table_has_a_verdict_per_host_and_the_fixes() -> None:
    lines = pf.table([_verdict(_facts()), _verdict(None, "timeout")], "HIL preflight (x)")
    assert lines[0] == "HIL preflight (x)"
    assert lines[1].split() == ["host", "reach", "apx-hil", "interfaces", "mcast", "route",
                                "firewall", "clock", "verdict"]
    assert lines[2].split()[-1] == "OK" and lines[3].split()[-1] == "FAIL"
    assert lines[4] == "preflight: 1 of 2 hosts ready; FAILED: mon-1"
    assert lines[5].startswith("  fix: mon-1: cannot run a command there (timeout)")
