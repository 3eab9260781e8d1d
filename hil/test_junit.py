"""What a bench user gets back: ``--junitxml`` with one test case per HIL case and host role,
valid against the JUnit schema pytest writes (xunit2, ``hil/junit-xunit2.xsd``), and a report
whose failed case says which host, which counter and what was expected.

The suite's plugin (``hil/conftest.py``) runs here on two small cases in a subprocess, with a
topology of local hosts in place of namespaces, so the check takes a second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import xmlschema

HIL_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HIL_DIR)
XSD = os.path.join(HIL_DIR, "junit-xunit2.xsd")

CASES = '''
import ipaddress

import pytest

from hil.expect import expect
from hil.report import DaqFigures, MonitorFigures
from hil.runners import LocalRunner
from hil.topology import BoardSpec, Cleanups, Host, Interface, OpaqueSwitch, Topology

LO = [Interface("lan", "lo", ipaddress.IPv4Interface("127.0.0.1/8"))]
DAQ = {"readouts": 100, "hits": 300, "data_bytes": 4000, "elapsed_s": 1.0,
       "sender": {"datagrams_sent": 10, "datagrams_failed": 0}}
STATS = {"totals": {"readouts_received": 100, "readouts_lost": 0, "datagrams_lost": 0,
                    "bytes_received": 4000, "malformed": 0}, "consumed": {"receiving_s": 1.0}}


@pytest.fixture(scope="session")
def topology(tmp_path_factory):
    cleanups = Cleanups()
    work = str(tmp_path_factory.mktemp("hosts"))
    hosts = {n: Host(n, LocalRunner(work), LO, workdir=work, cleanups=cleanups)
             for n in ("daq", "m1", "m2", "m3")}
    return Topology(kind="local", hosts=hosts, cleanups=cleanups, board=BoardSpec(),
                    roles={"daq": "daq", "monitors": ["m1", "m2", "m3"]},
                    switch=OpaqueSwitch(0.0))


def _figures(case, lab):
    case.daq.append(DaqFigures.from_summary("3 monitors", "daq", DAQ))
    for m in lab.monitors:
        case.monitors.append(MonitorFigures.from_stats(m.name, STATS, 100))


@pytest.mark.case("1 fan-out")
def test_good(lab, case):
    _figures(case, lab)


@pytest.mark.case("3 loss")
def test_m2_lost_one_more(lab, case):
    _figures(case, lab)
    expect("m2", "datagrams_lost", 68, 69, "the nft rule's drop counter")
'''


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("junit")
    (work / "test_cases.py").write_text(CASES)
    junit, report = work / "junit.xml", work / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "hil.conftest", "-q",
         "--rootdir", str(work), "-c", os.devnull, str(work / "test_cases.py"),
         "--junitxml", str(junit), "--hil-report", str(report)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("APX_HIL_")})
    assert done.returncode == 1, done.stdout + done.stderr  # one case fails
    with open(report, encoding="utf-8") as stream:
        return {"junit": str(junit), "report": json.load(stream), "out": done.stdout}


def test_junit_is_valid_against_pytests_schema(run) -> None:
    schema = xmlschema.XMLSchema(XSD)
    schema.validate(run["junit"])
    # The schema has teeth: a test case without its name is refused.
    tree = ET.parse(run["junit"])
    del tree.getroot().find("testsuite/testcase").attrib["name"]
    assert not schema.is_valid(tree)


def test_one_test_case_per_case_and_host_role(run) -> None:
    suite = ET.parse(run["junit"]).getroot().find("testsuite")
    cases = {(c.get("classname").rsplit(".", 1)[-1], c.get("name")):
             [r.tag for r in c if r.tag in ("failure", "error", "skipped")]
             for c in suite.findall("testcase")}
    assert cases == {
        ("test_cases", "test_good"): [],
        ("test_good", "daq"): [], ("test_good", "monitors"): [],
        ("test_cases", "test_m2_lost_one_more"): ["failure"],
        ("test_m2_lost_one_more", "daq"): [],
        ("test_m2_lost_one_more", "monitors"): ["failure"],
    }
    (failure,) = [c.find("failure") for c in suite.findall("testcase")
                  if c.get("name") == "monitors" and c.find("failure") is not None]
    assert failure.text == ("3 loss failed on m2 (monitors): datagrams_lost is 68, expected 69 "
                            "(the nft rule's drop counter)")
    assert (suite.get("tests"), suite.get("failures")) == ("6", "2")


def test_a_failed_case_names_host_counter_and_expectation(run) -> None:
    loss = next(c for c in run["report"]["cases"] if c["case"] == "3 loss")
    assert loss["outcome"] == "failed"
    assert {k: loss["failure"][k] for k in ("host", "role", "counter", "actual", "expected")} \
        == {"host": "m2", "role": "monitors", "counter": "datagrams_lost", "actual": "68",
            "expected": "69"}
    assert "FAILED: on m2 (monitors): datagrams_lost is 68, expected 69" in run["out"]
    good = next(c for c in run["report"]["cases"] if c["case"] == "1 fan-out")
    assert good["outcome"] == "passed" and good["failure"] is None


def test_each_case_records_kernel_counters_before_and_after(run) -> None:
    for case in run["report"]["cases"]:
        assert set(case["counters"]) == {"daq", "m1", "m2", "m3"}
        for reading in case["counters"].values():
            udp = reading["delta"]["udp"]
            assert reading["after"]["udp"]["InDatagrams"] - \
                reading["before"]["udp"]["InDatagrams"] == udp["InDatagrams"]
            assert set(reading["after"]) >= {"udp", "ip", "lan"}
