"""The suite leaves nothing behind: a run interrupted by SIGTERM removes its namespaces,
processes and files; namespaces of a run that was SIGKILLed are removed by the next run; and
a second run on the same machine does not collide with this one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from . import netns
from .topology import Topology, wait_for

pytestmark = pytest.mark.case("0 cleanup")

HIL_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HIL_DIR)


def _ours(pid: int) -> list[str]:
    return [n for n in netns.list_namespaces() if n.startswith(f"{netns.PREFIX}-{pid}-")]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as stream:
                if text.encode() in stream.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def test_sigterm_mid_case_removes_everything(lab: Topology) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("APX_HIL_BENCH",)}
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", ROOT,
         "--hil-report", os.devnull, os.path.join(HIL_DIR, "test_join_leave.py")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        # A second run beside ours: its own namespaces, ours untouched.
        wait_for(lambda: any(n.endswith("-ctl") for n in _ours(child.pid)),
                 "the second run building its namespaces", 60)
        names = _ours(child.pid)
        tag = names[0].rsplit("-", 1)[0]
        daq_ns = f"{tag}-daq"
        # Mid-case: the virtual board and the DAQ run in the second run's DAQ namespace.
        wait_for(lambda: len(netns._cmd(["ip", "netns", "pids", daq_ns], check=False).split())
                 >= 2, "the second run's DAQ running", 60)
        child.send_signal(signal.SIGTERM)
        output = child.communicate(timeout=60)[0].decode("utf-8", "replace")
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait(10)
    assert child.returncode != 0, output[-3000:]
    assert _ours(child.pid) == [], output[-3000:]
    assert _processes_mentioning(tag) == []
    assert not [d for d in os.listdir("/tmp") if d.startswith(tag)]
    # Ours survived the other run and its cleanup.
    assert set(lab.namespaces.values()) <= set(netns.list_namespaces())


def test_namespaces_of_a_killed_run_are_reaped() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    name = f"{netns.PREFIX}-{dead.pid}-abcdef-m1"
    netns._cmd(["ip", "netns", "add", name])
    sleeper = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "60"])
    try:
        wait_for(lambda: netns._cmd(["ip", "netns", "pids", name], check=False).strip() != "",
                 "sleep in the stale namespace", 10)
        assert name in netns.reap_stale()
        assert name not in netns.list_namespaces()
        assert sleeper.wait(10) == -signal.SIGTERM
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait(10)
        netns.delete_namespace(name)


def test_live_runs_are_not_reaped(lab: Topology) -> None:
    assert not set(lab.namespaces.values()) & set(netns.reap_stale())
