"""The HIL suite's fixtures and report.

``pytest hil`` builds the CI topology (network namespaces; needs root). ``pytest hil --bench
FILE`` (or ``APX_HIL_BENCH=FILE``) runs the same cases on the machines the file describes.
The report goes to the terminal at the end and to ``--hil-report PATH`` (``APX_HIL_REPORT``;
default ``apx-hil-report.json`` in the temporary directory).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator

import pytest

from .errors import HilError
from .report import NO_MONITORS, CaseReport, DaqFigures, HilReport
from .topology import Cleanups, Topology

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
    request.config.stash[_REPORT].topology = f"{topo.kind}: {topo.description}"
    try:
        yield topo
    finally:
        problems = topo.close()
        if problems:
            print(f"\nHIL suite: cleanup problems: {'; '.join(problems)}")


@pytest.fixture
def lab(topology: Topology) -> Iterator[Topology]:
    """The topology for one test: processes and rules the test starts are removed after it,
    also when it fails."""
    mark = topology.cleanups.mark()
    try:
        yield topology
    finally:
        problems = topology.cleanups.unwind(mark)
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
    elif report.when == "teardown" and report.outcome != "passed":
        entry.outcome = f"{entry.outcome}, teardown {report.outcome}"


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
