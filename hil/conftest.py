"""The HIL suite's fixtures and report.

``pytest hil`` builds the CI topology (network namespaces; needs root). ``pytest hil --bench
FILE`` (or ``APX_HIL_BENCH=FILE``) runs the same cases on the machines the file describes.
The report goes to the terminal at the end and to ``--hil-report PATH`` (``APX_HIL_REPORT``;
default ``apx-hil-report.json`` in the temporary directory).
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from astropix_hil import __version__

from .errors import HilError
from .expect import Mismatch
from .report import (
    NO_MONITORS,
    CaseReport,
    DaqFigures,
    HilReport,
    counter_record,
    failure_line,
    host_provenance,
)
from .topology import Cleanups, Topology

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_REPORT = pytest.StashKey[HilReport]()
_CASES = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "astropix-hil HIL suite")
    group.addoption("--bench", metavar="FILE", default=os.environ.get("APX_HIL_BENCH"),
                    help="run on the bench described by FILE instead of network namespaces "
                         "(env APX_HIL_BENCH)")
    group.addoption("--hil-report", metavar="PATH",
                    default=os.environ.get("APX_HIL_REPORT") or os.path.join(
                        tempfile.gettempdir(), "apx-hil-report.json"),
                    help="where to write the JSON report (env APX_HIL_REPORT)")


def pytest_configure(config: pytest.Config) -> None:
    _CONFIG["config"] = config
    config.stash[_REPORT] = HilReport()
    config.stash[_CASES] = {}
    config.addinivalue_line("markers", "case(name): the HIL case a test implements (report)")
    config.addinivalue_line("markers", "netns_only: a self-test of the suite that needs the CI "
                                       "namespaces (deselected with --bench)")


def _case_order(item: pytest.Item) -> int:
    marker = item.get_closest_marker("case")
    if marker is None:
        return -1  # the suite's own unit tests first
    number = marker.args[0].split()[0]
    return int(number) if number.isdigit() else 99


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The network checks, then the cases in their numbers' order, then bench mode.
    items.sort(key=_case_order)
    if config.getoption("--bench"):
        lab_only = [item for item in items if item.get_closest_marker("netns_only")]
        if lab_only:
            config.hook.pytest_deselected(items=lab_only)
            items[:] = [item for item in items if item not in lab_only]


@pytest.fixture(scope="session")
def topology(request: pytest.FixtureRequest) -> Iterator[Topology]:
    """The hosts, switch and board of this run; everything it made is removed at the end."""
    bench_file = request.config.getoption("--bench")
    cleanups = Cleanups()
    try:
        if bench_file:
            from . import bench

            topo = bench.build(bench.read(bench_file), cleanups)
            topo.source = bench_file
        else:
            from . import netns

            topo = netns.build(cleanups)
    except HilError as exc:
        # Never skip: a run that cannot build its topology fails, saying why.
        pytest.exit(f"HIL suite: {exc}", returncode=pytest.ExitCode.TESTS_FAILED)
    report = request.config.stash[_REPORT]
    report.topology = f"{topo.kind}: {topo.description}"
    try:
        _preflight(request.config, topo, report)
    except BaseException as exc:
        topo.close()
        if isinstance(exc, HilError):
            pytest.exit(f"HIL suite: {exc}", returncode=pytest.ExitCode.TESTS_FAILED)
        raise
    try:
        yield topo
    finally:
        problems = topo.close()
        if problems:
            print(f"\nHIL suite: cleanup problems: {'; '.join(problems)}")


def _project() -> dict:
    """The project's version and git commit (None outside a git checkout)."""
    commit, dirty = None, None
    try:
        done = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, stdin=subprocess.DEVNULL)
        if done.returncode == 0:
            commit = done.stdout.strip()
            status = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--",
                                     "src", "hil"], capture_output=True, text=True,
                                    timeout=10, stdin=subprocess.DEVNULL)
            dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"name": "astropix-hil", "version": __version__, "commit": commit, "dirty": dirty,
            "controller": socket.gethostname(), "python": platform.python_version(),
            "pytest": pytest.__version__}


def _roles_of(topology: Topology) -> dict[str, list[str]]:
    """host name -> roles it plays."""
    out: dict[str, list[str]] = {}
    for role, value in topology.roles.items():
        for name in [value] if isinstance(value, str) else value:
            out.setdefault(name, []).append(role)
    return out


def _preflight(config: pytest.Config, topo: Topology, report: HilReport) -> None:
    """Check every host before any case runs; print the table; stop the run if a host is
    not fit. The facts gathered are the report's provenance."""
    from . import preflight

    verdicts, facts = preflight.run(topo, __version__)
    where = topo.source or topo.description
    lines = preflight.table(verdicts, f"HIL preflight ({topo.kind}: {where}; astropix-hil "
                                      f"{__version__}; groups {topo.groups} port {topo.port})")
    roles = _roles_of(topo)
    hosts = dict(topo.hosts)
    switch_host = getattr(topo.switch, "host", None)
    if switch_host is not None:
        hosts.setdefault(switch_host.name, switch_host)
    report.provenance = {
        "project": _project(), "bench": topo.source, "groups": str(topo.groups),
        "port": topo.port,
        "leases": [] if topo.leases is None else
        [{"host": lease.host.name, "path": lease.path, "owner": lease.owner,
          "took_over": lease.took_over} for lease in topo.leases.held],
        "hosts": {name: host_provenance(
            name, roles.get(name, []), facts[name].facts,
            [(i.label, i.name, str(i.address)) for i in host.interfaces.values()],
            facts[name].clock_offset_s, facts[name].error) for name, host in hosts.items()}}
    report.preflight = [{"host": v.host, "cells": v.cells, "problems": v.problems,
                         "verdict": "OK" if v.ok else "FAIL"} for v in verdicts]
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        terminal.write_line("")
        for line in lines:
            terminal.write_line(line)
    if not all(v.ok for v in verdicts):
        raise HilError("\n".join(["preflight failed: the bench is not ready", *lines]))


def _case_hosts(topology: Topology) -> dict[str, object]:
    roles = _roles_of(topology)
    return {name: host for name, host in topology.hosts.items() if name in roles}


def _read_counters(topology: Topology) -> dict[str, dict]:
    """Kernel counters of every host of a role (in parallel); a host that cannot be read
    has an ``error`` entry instead."""
    from .kernel import read_counters

    hosts = _case_hosts(topology)

    def read(host) -> dict:
        try:
            return read_counters(host)
        except Exception as exc:  # the report says so; the case decides its own fate
            return {"error": str(exc)}
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(hosts)))) as pool:
        return dict(zip(hosts, pool.map(read, hosts.values()), strict=True))


@pytest.fixture
def lab(topology: Topology, request: pytest.FixtureRequest) -> Iterator[Topology]:
    """The topology for one test: processes and rules the test starts are removed after it,
    also when it fails. For a case (a test with the ``case`` fixture) the report gets the
    flows sent and every role host's kernel counters before and after."""
    from . import programs

    if topology.leases is not None:
        topology.leases.renew_if_due()
    recording = "case" in request.fixturenames
    flows: list[dict] = []
    before = _read_counters(topology) if recording else {}
    if recording:
        programs.observers.append(flows.append)
    mark = topology.cleanups.mark()
    try:
        yield topology
    finally:
        problems = topology.cleanups.unwind(mark)
        if recording:
            programs.observers.remove(flows.append)
            entry = request.config.stash[_CASES].get(request.node.nodeid)
            if entry is not None:
                entry.flows = flows
                entry.counters = counter_record(before, _read_counters(topology))
        if problems:
            raise HilError(f"cleanup after the test failed: {'; '.join(problems)}")


BASELINE_S = 4.0


@pytest.fixture(scope="session")
def daq_baseline(topology: Topology, tmp_path_factory: pytest.TempPathFactory) -> DaqFigures:
    """The DAQ alone: no monitor on the network (its rate is what monitors must not change)."""
    from . import programs

    mark = topology.cleanups.mark()
    try:
        board = programs.start_board(topology, topology.daq, programs.BOARD_SEED,
                                     programs.BOARD_RATE)
        daq = programs.start_daq(topology.daq, board, topology.flow(8), duration=BASELINE_S)
        summary = daq.result()
        board.stop()
        local = programs.fetch(topology.daq, daq.out, str(tmp_path_factory.mktemp("baseline")))
    finally:
        topology.cleanups.unwind(mark)
    if summary["sender"]["datagrams_failed"]:
        raise HilError(f"the DAQ failed to send with no monitor at all: {summary['sender']}")
    return DaqFigures.from_summary(NO_MONITORS, topology.daq.name, summary,
                                   programs.steady_hit_rate(local))


@pytest.fixture
def case(request: pytest.FixtureRequest) -> CaseReport:
    """The report entry of this test (its ``case`` marker names it)."""
    marker = request.node.get_closest_marker("case")
    name = marker.args[0] if marker else request.node.name
    entry = CaseReport(case=name, test=request.node.nodeid)
    if "lab" in request.fixturenames:
        entry.roles = _roles_of(request.getfixturevalue("topology"))
    request.config.stash[_REPORT].cases.append(entry)
    request.config.stash[_CASES][request.node.nodeid] = entry
    return entry


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    entry = item.config.stash[_CASES].get(item.nodeid)
    if entry is None:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        entry.outcome = report.outcome
        entry.duration_s = report.duration
        if report.failed:
            entry.failure = _failure(call, report, entry.roles)
    elif report.when == "teardown" and report.outcome != "passed":
        entry.outcome = f"{entry.outcome}, teardown {report.outcome}"


def _failure(call: pytest.CallInfo, report: pytest.TestReport,
             roles: dict[str, list[str]]) -> dict:
    exc = call.excinfo.value if call.excinfo is not None else None
    crash = getattr(report.longrepr, "reprcrash", None)
    message = crash.message if crash is not None else str(report.longrepr)[-2000:]
    if isinstance(exc, Mismatch):
        return {"host": exc.host, "role": "/".join(roles.get(exc.host, [])) or None,
                "counter": exc.counter, "actual": repr(exc.actual),
                "expected": repr(exc.expected), "why": exc.why, "message": str(exc)}
    return {"message": message}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """With ``--junitxml``: after a case's own test case, one test case per host role that
    took part (``TEST::ROLE[PARAMS]``), failed when the case failed on a host of that role (or
    failed without naming a host)."""
    if report.when != "teardown":
        return
    config = _CONFIG.get("config")
    if config is None:
        return
    from _pytest.junitxml import xml_key

    xml = config.stash.get(xml_key, None)
    entry = config.stash[_CASES].get(report.nodeid)
    if xml is None or entry is None or entry.outcome == "not run":
        return
    roles = entry.roles
    by_role: dict[str, list[str]] = {}
    for host in entry.hosts():
        for role in roles.get(host, []):
            by_role.setdefault(role, []).append(host)
    failure = entry.failure
    # TEST[PARAMS] -> TEST::ROLE[PARAMS]: JUnit's class is the test, its name the role.
    base, bracket, params = report.nodeid.partition("[")
    for role, hosts in by_role.items():
        failed = failure is not None and (failure.get("host") in hosts
                                          or not failure.get("host"))
        longrepr = None
        if failed:
            assert failure is not None
            longrepr = f"{entry.case} failed {failure_line(failure)}"
        for when, outcome in (("call", "failed" if failed else "passed"),
                              ("teardown", "passed")):
            xml.pytest_runtest_logreport(pytest.TestReport(
                nodeid=f"{base}::{role}{bracket}{params}", location=report.location,
                keywords={},
                outcome=outcome, longrepr=longrepr if when == "call" else None, when=when,
                duration=entry.duration_s if when == "call" else 0.0))


_CONFIG: dict[str, pytest.Config] = {}


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    report = config.stash.get(_REPORT, None)
    if report is None or not report.cases:
        return
    terminalreporter.section("astropix-hil HIL report")
    for line in report.lines():
        terminalreporter.write_line(line)
    path = config.getoption("--hil-report")
    try:
        report.write(path)
    except OSError as exc:
        terminalreporter.write_line(f"cannot write the JSON report to {path}: {exc}")
    else:
        terminalreporter.write_line(f"JSON report: {path} ({time.strftime('%H:%M:%S')})")
