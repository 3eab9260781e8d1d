"""Bench mode: every case, driven through a bench config file, over real SSH and the agent.

In CI the namespaces of the run become a "lab": each host runs a real OpenSSH server (keys
made for this run), the controller host ``ctl`` reaches every host by unicast (through the
router and the dual host, as a lab's control network would), and a bench config in the
format a user writes (``hil/bench.example.yml``) describes them. The suite then runs again,
from ``ctl``, with ``--bench``: the network checks and the seven cases, once with every host
reached over SSH and once through ``apx-hil agent``. The nested runs see only a bench: their
topology is read from the file, and no case knows that the machines are namespaces.

At a bench (``--bench FILE``), case 1 runs again through the bench's own file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import yaml

from astropix_hil import __version__

from . import netns
from .lease import Lease, LeaseHeld, lease_path
from .runners import Completed, LocalRunner, SshRunner, first_line
from .sshd import SshServers
from .topology import Cleanups, Host, Topology, wait_for

pytestmark = pytest.mark.case("bench mode")

HIL_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HIL_DIR)
#: The network checks and the seven cases: what a bench user runs.
CASE_FILES = ("test_topology.py", "test_fanout.py", "test_join_leave.py", "test_loss.py",
              "test_overload.py", "test_scope.py", "test_restart.py", "test_bad_traffic.py")
CASES = ("0 network", "1 fan-out", "2 join and leave", "3 loss", "4 overload", "5 scope",
         "6 restart", "7 bad traffic")
#: Hosts of the lab (namespaces of the CI topology), and the switch's namespace.
LAB_HOSTS = ("daq", "m1", "m2", "m3", "far", "dual", "peer", "rogue")
SWITCH = "sw"
#: Unicast routes that let the controller (``ctl``) reach the hosts on the other subnets.
CONTROL_ROUTES = (("ctl", f"{netns.FAR_NET}", "198.18.0.1"),
                  ("ctl", f"{netns.ALT_NET}", "198.18.0.20"),
                  ("far", f"{netns.LAN}", "198.18.1.1"),
                  ("peer", f"{netns.LAN}", "198.18.2.20"))
FORWARDERS = ("router", "dual")
NESTED_TIMEOUT = 600.0


def _sysctl(namespace: str, value: int) -> None:
    netns._cmd(["ip", "netns", "exec", namespace, "sysctl", "-q", "-w",
                f"net.ipv4.ip_forward={value}"])


@pytest.fixture(scope="module")
def control_network(topology: Topology) -> Iterator[None]:
    """Unicast between ``ctl`` and every host of the lab (removed after this module)."""
    names = topology.namespaces
    done: list[tuple[str, str, str]] = []
    try:
        for ns in FORWARDERS:
            _sysctl(names[ns], 1)
        for host, net, via in CONTROL_ROUTES:
            netns._cmd(["ip", "-n", names[host], "route", "add", net, "via", via])
            done.append((host, net, via))
        yield
    finally:
        for host, net, via in reversed(done):
            netns._cmd(["ip", "-n", names[host], "route", "del", net, "via", via], check=False)
        for ns in FORWARDERS:
            _sysctl(names[ns], 0)


@pytest.fixture(scope="module")
def ssh_lab(topology: Topology, control_network: None) -> Iterator[SshServers]:
    """An OpenSSH server on every host of the lab and on the switch, keys of this run."""
    servers = SshServers()
    try:
        for name in LAB_HOSTS:
            servers.start(name, topology.namespaces[name], topology.hosts[name].address())
        servers.start(SWITCH, topology.namespaces[SWITCH], netns.BRIDGE_ADDR)
        yield servers
    finally:
        servers.stop_masters()
        servers.close()


def _iface(host: Host) -> dict:
    return {i.label: {"device": i.name, "address": str(i.address)}
            for i in host.interfaces.values()}


def lab_config(lab: Topology, access: dict[str, dict], groups: str, workdir: str,
               description: str, host_workdirs: dict[str, str] | None = None) -> dict:
    """A bench config (the user's format) describing the lab, each host reached by
    ``access[host]`` (and working in ``host_workdirs[host]`` when given)."""
    hosts = {name: {"access": access[name], "interfaces": _iface(lab.hosts[name]),
                    "capabilities": ["nft", "quiet"]} for name in LAB_HOSTS}
    hosts[SWITCH] = {"access": access[SWITCH]}
    for name, host_workdir in (host_workdirs or {}).items():
        hosts[name]["workdir"] = host_workdir
    bridge = lab.switch.ports  # type: ignore[attr-defined]
    return {
        "topology": description,
        "groups": groups,
        "port": 5007,
        "workdir": os.path.join(workdir, "hosts"),
        "apx_hil": [sys.executable, "-m", "astropix_hil"],
        "python": [sys.executable],
        "board": {"kind": "emulator"},
        "switch": {"kind": "linux-bridge", "host": SWITCH, "bridge": "br0",
                   "ports": {port: host for port, host in bridge.items() if host in hosts}},
        "hosts": hosts,
        "roles": {"daq": "daq", "monitors": ["m1", "m2", "m3"], "far": "far", "dual": "dual",
                  "dual_peer": "peer", "rogue": "rogue"},
    }


def write_config(config: dict, workdir: str, name: str) -> str:
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, name)
    with open(path, "w", encoding="utf-8") as stream:
        stream.write("# Written by hil/test_bench_mode.py: the CI lab as a bench.\n")
        yaml.safe_dump(config, stream, sort_keys=False)
    return path


def nested_run(controller: Host, config: str, workdir: str, files=CASE_FILES,
               extra: tuple[str, ...] = (), timeout: float = NESTED_TIMEOUT
               ) -> tuple[Completed, str, str]:
    """``pytest --bench config`` on the controller host; return its result and the paths of
    its JSON report and JUnit XML."""
    report = os.path.join(workdir, "report.json")
    junit = os.path.join(workdir, "junit.xml")
    env_free = ["env", "-u", "APX_HIL_BENCH", "-u", "APX_HIL_REPORT", "-u", "PYTEST_ADDOPTS"]
    done = controller.run([*env_free, sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-q", "--rootdir", ROOT, *(os.path.join(HIL_DIR, f) for f in files),
                           "--bench", config, "--hil-report", report, "--junitxml", junit,
                           *extra], timeout=timeout)
    return done, report, junit


def _output(done: Completed) -> str:
    return (done.stdout + done.stderr).decode("utf-8", "replace")


def check_full_run(done: Completed, report_path: str, junit: str, config: dict, case) -> dict:
    """Every case of the nested run passed, as its report and JUnit file say; the report
    has the provenance a bench user needs; the run left no lease behind. Return the report."""
    if not os.path.exists(report_path):
        pytest.fail(f"the nested run wrote no report (exit {done.returncode}):\n"
                    f"{_output(done)[-4000:]}")
    with open(report_path, encoding="utf-8") as stream:
        nested = json.load(stream)
    # What the run gives back holds whatever the cases' outcomes; then the outcomes.
    _check_provenance(nested, config)
    _check_junit(junit, nested)
    assert _lease_files(config) == []
    assert done.returncode == 0, _output(done)[-6000:]
    assert nested["topology"].startswith("bench: ")
    outcomes = {}
    for entry in nested["cases"]:
        outcomes.setdefault(entry["case"], set()).add(entry["outcome"])
    assert set(outcomes) == set(CASES), outcomes
    assert all(o == {"passed"} for o in outcomes.values()), outcomes
    fanout = next(c for c in nested["cases"] if c["case"] == "1 fan-out")
    assert [m["host"] for m in fanout["monitors"]] == ["m1", "m2", "m3"]
    for monitor in fanout["monitors"]:
        assert monitor["received"] == monitor["sent"] > 0 and monitor["lost"] == 0
    durations: dict[str, float] = {}
    for entry in nested["cases"]:
        durations[entry["case"]] = durations.get(entry["case"], 0.0) + entry["duration_s"]
    case.notes.append(f"nested bench run ({nested['topology']}): {len(nested['cases'])} tests "
                      f"passed in " + ", ".join(f"{k} {v:.0f} s" for k, v in durations.items()))
    return nested


def _check_provenance(nested: dict, config: dict) -> None:
    project = nested["provenance"]["project"]
    assert project["version"] == __version__
    assert project["commit"] is None or len(project["commit"]) == 40
    hosts = nested["provenance"]["hosts"]
    assert set(hosts) == set(config["hosts"])
    for name in LAB_HOSTS:
        host = hosts[name]
        assert host["kernel"] == os.uname().release and host["python"]
        assert host["packages"]["astropix-hil"] == host["astropix_hil"] == __version__
        configured = config["hosts"][name]["interfaces"]
        assert {i["label"]: (i["device"], i["address"]) for i in host["interfaces"]} == \
            {label: (i["device"], i["address"]) for label, i in configured.items()}
        for iface in host["interfaces"]:
            assert iface["mtu"] == 1500 and iface["address"] in iface["addresses"]
    assert {lease["host"] for lease in nested["provenance"]["leases"]} == set(config["hosts"])
    assert [row["verdict"] for row in nested["preflight"]] == ["OK"] * len(config["hosts"])
    for entry in nested["cases"]:
        # Every role host's kernel counters, before and after.
        assert set(entry["counters"]) == set(LAB_HOSTS), entry["case"]
        for reading in entry["counters"].values():
            assert {"udp", "ip", "lan"} <= set(reading["after"]), entry["case"]
        assert entry["flows"], entry["case"]
        for flow in entry["flows"]:
            assert flow["group"].startswith(config["groups"].split(".0.0/")[0]), flow
            assert (flow["port"], flow["ttl"] in (1, 2)) == (config["port"], True), flow
    scope = [f for c in nested["cases"] if c["case"] == "5 scope" for f in c["flows"]]
    assert {(f["host"], f["ttl"]) for f in scope} == {("daq", 1), ("daq", 2), ("dual", 1)}


def _check_junit(path: str, nested: dict) -> None:
    import xml.etree.ElementTree as ET

    import xmlschema

    xmlschema.XMLSchema(os.path.join(HIL_DIR, "junit-xunit2.xsd")).validate(path)
    suite = ET.parse(path).getroot().find("testsuite")
    names = {(c.get("classname"), c.get("name")) for c in suite.findall("testcase")}
    fanout = next(c for c in nested["cases"] if c["case"] == "1 fan-out")
    test = fanout["test"].split("::")[-1]
    # The case's own test case, and one per host role that took part in it.
    roles = {name for cls, name in names if cls.endswith(f".{test}")}
    assert roles == {"daq", "monitors"}, names
    for entry in nested["cases"]:
        test = entry["test"].split("[")[0].split("::")[-1]
        assert any(cls.endswith(f".{test}") for cls, _ in names), (test, names)


def _agent(host: Host, token_file: str) -> str:
    """Start an agent on ``host`` listening on its first address; return ADDR:PORT."""
    workdir = _agent_workdir(host)
    host.run(["mkdir", "-p", workdir]).check(host.name)
    address = next(iter(host.interfaces.values())).ip if host.interfaces else \
        netns.BRIDGE_ADDR
    # The switch's namespace host has no apx_hil of its own: this Python's.
    proc = host.spawn([sys.executable, "-m", "astropix_hil", "agent", "--listen",
                       f"{address}:0", "--token-file", token_file, "--workdir", workdir],
                      "agent")
    line = first_line(proc, 30.0)
    assert line.startswith(f"listening on {address}:"), line
    return line.split()[-1]


def _agent_workdir(host: Host) -> str:
    """Each agent's own work directory; it refuses paths outside it, so the bench config
    gives its host this directory to work in."""
    return host.path("agent")


def _token(workdir: str) -> str:
    os.makedirs(workdir, exist_ok=True)
    token = os.path.join(workdir, "agent-token")
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(os.urandom(32).hex() + "\n")
    return token


@pytest.mark.netns_only
def test_every_case_runs_over_real_ssh(lab: Topology, case, ssh_lab: SshServers) -> None:
    controller = lab.hosts["ctl"]
    workdir = controller.path("bench-ssh")
    access = {name: {"ssh": ssh_lab.command(name)} for name in (*LAB_HOSTS, SWITCH)}
    config = lab_config(lab, access, "239.19.0.0/16", workdir,
                        "CI lab over SSH: namespaces, each an OpenSSH server")
    path = write_config(config, workdir, "bench.yml")
    done, report, junit = nested_run(controller, path, workdir)
    check_full_run(done, report, junit, config, case)


@pytest.mark.netns_only
def test_every_case_runs_through_the_agent(lab: Topology, case, control_network: None) -> None:
    controller = lab.hosts["ctl"]
    workdir = controller.path("bench-agent")
    token = _token(workdir)
    hosts = {name: lab.hosts[name] for name in LAB_HOSTS}
    hosts[SWITCH] = lab.switch.host  # type: ignore[attr-defined]
    access = {name: {"agent": _agent(host, token), "token_file": token}
              for name, host in hosts.items()}
    config = lab_config(lab, access, "239.20.0.0/16", workdir, "CI lab through apx-hil agent",
                        {name: _agent_workdir(host) for name, host in hosts.items()})
    path = write_config(config, workdir, "bench.yml")
    done, report, junit = nested_run(controller, path, workdir)
    check_full_run(done, report, junit, config, case)


def test_case_1_runs_from_the_bench_config(lab: Topology, case, tmp_path) -> None:
    """At a bench: case 1 again, through the bench's own file, from this machine."""
    if lab.kind == "netns":
        # In CI the lab runs above; here: the controller as a local monitor beside agents
        # and an ssh-like command (`ip netns exec NS sh -c LINE`, what ssh does).
        workdir = lab.hosts["ctl"].path("bench-mixed")
        token = _token(workdir)

        def ssh_like(namespace: str) -> list[str]:
            return ["ip", "netns", "exec", namespace, "sh", "-c"]

        hosts = {
            "daq": {"access": {"agent": _agent(lab.daq, token), "token_file": token},
                    "interfaces": _iface(lab.daq), "capabilities": ["nft", "quiet"],
                    "workdir": _agent_workdir(lab.daq)},
            "m1": {"access": {"ssh": ssh_like(lab.namespaces["m1"])},
                   "interfaces": _iface(lab.monitors[0])},
            "m2": {"access": {"ssh": ssh_like(lab.namespaces["m2"])},
                   "interfaces": _iface(lab.monitors[1])},
            "ctl": {"access": {"local": True}, "interfaces": _iface(lab.hosts["ctl"])},
            SWITCH: {"access": {"ssh": ssh_like(lab.namespaces[SWITCH])}},
        }
        config = write_config({
            "topology": "CI namespaces described as a bench (agent, ssh-like, local)",
            "groups": "239.21.0.0/16", "workdir": os.path.join(workdir, "hosts"),
            "apx_hil": [sys.executable, "-m", "astropix_hil"], "python": [sys.executable],
            "switch": {"kind": "linux-bridge", "host": SWITCH, "bridge": "br0",
                       "ports": {f"p-{h}": h for h in ("daq", "m1", "m2", "ctl")}},
            "hosts": hosts, "roles": {"daq": "daq", "monitors": ["m1", "m2", "ctl"]}},
            workdir, "bench.yml")
        done, report, _ = nested_run(lab.hosts["ctl"], config, workdir, ("test_fanout.py",))
    else:
        assert lab.source is not None
        workdir = str(tmp_path)
        runner = LocalRunner(workdir)
        env_free = ["env", "-u", "APX_HIL_BENCH", "-u", "APX_HIL_REPORT"]
        report = os.path.join(workdir, "report.json")
        done = runner.run([*env_free, sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-q", "--rootdir", ROOT, os.path.join(HIL_DIR, "test_fanout.py"),
                           "--bench", lab.source, "--hil-report", report], timeout=300)
    assert done.returncode == 0, _output(done)[-4000:]
    with open(report, encoding="utf-8") as stream:
        nested = json.load(stream)
    (fanout,) = nested["cases"]
    assert (fanout["case"], fanout["outcome"]) == ("1 fan-out", "passed")
    for monitor in fanout["monitors"]:
        assert monitor["received"] == monitor["sent"] > 0 and monitor["lost"] == 0



# ------------------------------------------------------------------------------------------
# Preflight and leases, against the SSH lab


def _ssh_config(lab: Topology, ssh_lab: SshServers, workdir: str, groups: str) -> dict:
    access = {name: {"ssh": ssh_lab.command(name)} for name in (*LAB_HOSTS, SWITCH)}
    return lab_config(lab, access, groups, workdir, "CI lab over SSH")


def _lease_files(config: dict) -> list[str]:
    # The lab's hosts share this machine's file system: their lease files are right here.
    base = config["workdir"]
    return sorted(n for n in os.listdir(base) if n.endswith(".lease")) \
        if os.path.isdir(base) else []


def _ssh_host(lab: Topology, ssh_lab: SshServers, name: str, workdir: str) -> Host:
    """Host ``name`` reached over the lab's SSH from the controller's namespace."""
    command = ["ip", "netns", "exec", lab.namespaces["ctl"], *ssh_lab.command(name)]
    return Host(name, SshRunner(command, workdir, workdir, [sys.executable]),
                list(lab.hosts[name].interfaces.values()), workdir=workdir,
                cleanups=Cleanups(), python=[sys.executable])


@pytest.mark.netns_only
def test_preflight_names_each_misconfigured_host(lab: Topology, ssh_lab: SshServers) -> None:
    """A wrong apx-hil version on m1, no multicast route on m2, an nftables rule dropping
    the groups on m3: the run stops before any case, with a FAIL and a fix for each."""
    controller = lab.hosts["ctl"]
    workdir = controller.path("bench-preflight")
    config = _ssh_config(lab, ssh_lab, workdir, "239.22.0.0/16")
    # What an old install answers to `apx-hil --version`.
    config["hosts"]["m1"]["apx_hil"] = [sys.executable, "-c", "print('apx-hil 0.0.9')"]
    path = write_config(config, workdir, "bench.yml")
    m2, m3 = lab.namespaces["m2"], lab.namespaces["m3"]
    drop = ("table inet apxhil_pfdrop {\n  chain input {\n    type filter hook input priority "
            "0; policy accept;\n    ip daddr 239.22.0.0/16 udp dport 5007 drop\n  }\n}\n")
    netns._cmd(["ip", "-n", m2, "route", "del", "224.0.0.0/4", "dev", "eth0"])
    try:
        subprocess.run(["ip", "netns", "exec", m3, "nft", "-f", "-"], input=drop.encode(),
                       check=True, capture_output=True, timeout=30)
        try:
            done, report, _ = nested_run(controller, path, workdir, ("test_fanout.py",))
        finally:
            netns._cmd(["ip", "netns", "exec", m3, "nft", "delete", "table", "inet",
                        "apxhil_pfdrop"], check=False)
    finally:
        netns._cmd(["ip", "-n", m2, "route", "add", "224.0.0.0/4", "dev", "eth0"])
    out = _output(done)
    assert done.returncode == 1, out[-4000:]
    rows = {line.split()[0]: line for line in out.splitlines()
            if line.split() and line.split()[0] in (*LAB_HOSTS, SWITCH)
            and line.rstrip().endswith(("OK", "FAIL"))}
    assert set(rows) == {*LAB_HOSTS, SWITCH}, out[-4000:]
    assert {h for h, row in rows.items() if row.rstrip().endswith("FAIL")} == \
        {"m1", "m2", "m3"}, out[-4000:]
    assert f"0.0.9 != {__version__}" in rows["m1"]
    assert f"fix: m1: apx-hil is 0.0.9 there and {__version__} here" in out
    assert "fix: m2: no multicast route to 239.22.1.1 out of eth0" in out
    assert "ip route add 224.0.0.0/4 dev eth0" in out
    assert "fix: m3: nftables drops 239.22.0.0/16 port 5007: rule inet apxhil_pfdrop input " \
           "handle" in out
    assert "preflight: 6 of 9 hosts ready; FAILED: m1, m2, m3" in out
    # Stopped before any case: nothing ran, and nothing is left on the hosts.
    assert " passed" not in out and not os.path.exists(report)
    assert _lease_files(config) == []
    assert not [d for d in os.listdir(config["workdir"]) if d.startswith("apx-hil-")
                and not d.endswith(".lease")]


@pytest.mark.netns_only
def test_a_held_lease_stops_a_second_run(lab: Topology, ssh_lab: SshServers) -> None:
    controller = lab.hosts["ctl"]
    workdir = controller.path("bench-held")
    config = _ssh_config(lab, ssh_lab, workdir, "239.23.0.0/16")
    path = write_config(config, workdir, "bench.yml")
    m2 = _ssh_host(lab, ssh_lab, "m2", config["workdir"])
    other = Lease.take(m2, lease_path(config["workdir"], m2), ttl=600,
                       owner="alice@other-pc pid 4242")
    try:
        done, _, _ = nested_run(controller, path, workdir, ("test_fanout.py",))
        out = _output(done)
        assert done.returncode == 1, out[-4000:]
        assert "host m2 is leased by alice@other-pc pid 4242 until" in out, out[-4000:]
        assert " passed" not in out
        # The leases the failed run had taken on the other hosts are released; alice's stays.
        assert _lease_files(config) == [os.path.basename(other.path)]
    finally:
        assert other.release()
    assert _lease_files(config) == []


@pytest.mark.netns_only
def test_an_expired_lease_is_taken_over_and_released(lab: Topology,
                                                     ssh_lab: SshServers) -> None:
    workdir = lab.hosts["ctl"].path("bench-expired")
    os.makedirs(workdir, exist_ok=True)
    m1 = _ssh_host(lab, ssh_lab, "m1", workdir)
    path = lease_path(workdir, m1)
    # A run that died an hour ago without releasing its lease.
    dead = Lease.take(m1, path, ttl=600, owner="bob@gone pid 1", now=time.time() - 3600)
    mine = Lease.take(m1, path, ttl=600, owner="me")
    assert mine.took_over == "bob@gone pid 1"
    # Ours now: the dead run's token no longer releases it, a third run cannot take it.
    assert not dead.release()
    with pytest.raises(LeaseHeld, match="host m1 is leased by me until"):
        Lease.take(m1, path, ttl=600, owner="carol")
    mine.renew(ttl=900)
    assert mine.release()
    assert not os.path.exists(path)


@pytest.mark.netns_only
def test_ctrl_c_mid_case_releases_the_leases(lab: Topology, ssh_lab: SshServers) -> None:
    controller = lab.hosts["ctl"]
    workdir = controller.path("bench-interrupt")
    config = _ssh_config(lab, ssh_lab, workdir, "239.24.0.0/16")
    path = write_config(config, workdir, "bench.yml")
    env_free = ["env", "-u", "APX_HIL_BENCH", "-u", "APX_HIL_REPORT", "-u", "PYTEST_ADDOPTS"]
    run = controller.runner.spawn(
        [*env_free, sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
         "--rootdir", ROOT, os.path.join(HIL_DIR, "test_join_leave.py"), "--bench", path,
         "--hil-report", os.devnull], "nested-pytest")
    try:
        hosts_dir = config["workdir"]
        wait_for(lambda: len(_lease_files(config)) == len(LAB_HOSTS) + 1,
                 "the nested run taking its leases", 60)
        # Mid-case: the DAQ's run file exists in its work directory.
        wait_for(lambda: sum(f.startswith("run-") for _, _, files in os.walk(hosts_dir)
                             for f in files) >= 2, "the nested run's DAQ running", 90)
        run.signal(signal.SIGINT)  # Ctrl-C
        status = run.wait(60)
    finally:
        run.kill()
    out = run.stdout() + run.stderr()
    assert status == 2, out[-4000:]  # pytest: interrupted
    assert "KeyboardInterrupt" in out
    assert _lease_files(config) == [], out[-3000:]
    assert not [d for d in os.listdir(hosts_dir) if d.startswith("apx-hil-")]
