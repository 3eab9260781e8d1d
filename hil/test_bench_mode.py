"""Bench mode: the same cases, driven through a bench config file.

In CI this describes part of the namespace topology as a bench would be described: the DAQ
host and one monitor reached through ``apx-hil agent`` (started here, listening on their LAN
address only), one monitor through an SSH-like command, the switch through another, and the
controller itself as a ``local`` monitor. It then runs case 1 with ``pytest --bench`` from the
controller host, on the LAN like a bench's control machine, and checks that case's report. At
a bench, it runs case 1 again through the bench's own config file.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from .runners import first_line
from .topology import Host, Topology

pytestmark = pytest.mark.case("bench mode")

HIL_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HIL_DIR)


def _agent(host: Host, token_file: str) -> str:
    """Start an agent on ``host`` listening on its LAN address; return ADDR:PORT."""
    # The agent's work directory is the host's: it refuses files outside it.
    workdir = host.workdir
    host.run(["mkdir", "-p", workdir]).check(host.name)
    proc = host.spawn(host.apx("agent", "--listen", f"{host.address()}:0", "--token-file",
                               token_file, "--workdir", workdir), "agent")
    line = first_line(proc, 30.0)
    assert line.startswith(f"listening on {host.address()}:"), line
    return line.split()[-1]


def _iface(host: Host) -> dict:
    i = host.iface()
    return {"lan": {"device": i.name, "address": str(i.address)}}


def _netns_bench(lab: Topology, workdir: str) -> tuple[Host, str]:
    """A bench config describing namespaces of ``lab``; return the controller and its path."""
    token = os.path.join(workdir, "agent-token")
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(os.urandom(32).hex() + "\n")
    daq, m1, m2 = lab.daq, lab.monitors[0], lab.monitors[1]
    ctl = lab.hosts["ctl"]

    def ssh_like(namespace: str) -> list[str]:
        # What ssh does: run one shell command line on the other side.
        return ["ip", "netns", "exec", namespace, "sh", "-c"]

    python = [sys.executable]
    config = {
        "topology": "CI namespaces described as a bench (agents, ssh-like, local)",
        "groups": "239.19.0.0/16",
        "workdir": os.path.join(workdir, "hosts"),
        "apx_hil": [sys.executable, "-m", "astropix_hil"],
        "python": python,
        "board": {"kind": "emulator"},
        "switch": {"kind": "linux-bridge", "host": "switch", "bridge": "br0",
                   "ports": {f"p-{h}": h for h in ("daq", "m1", "m2", "ctl")}},
        "hosts": {
            "daq": {"access": {"agent": _agent(daq, token), "token_file": token},
                    "interfaces": _iface(daq), "capabilities": ["nft", "quiet"]},
            "m1": {"access": {"agent": _agent(m1, token), "token_file": token},
                   "interfaces": _iface(m1), "capabilities": ["nft", "quiet"]},
            "m2": {"access": {"ssh": ssh_like(lab.namespaces["m2"])},
                   "interfaces": _iface(m2), "capabilities": ["nft", "quiet"]},
            "ctl": {"access": {"local": True}, "interfaces": _iface(ctl)},
            "switch": {"access": {"ssh": ssh_like(lab.namespaces["sw"])}},
        },
        "roles": {"daq": "daq", "monitors": ["m1", "m2", "ctl"]},
    }
    path = os.path.join(workdir, "bench.yml")
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(config, stream, indent=2)  # JSON is YAML
    return ctl, path


def test_case_1_runs_from_a_bench_config(lab: Topology, case, tmp_path) -> None:
    workdir = lab.hosts["ctl"].path("nested") if lab.kind == "netns" else str(tmp_path)
    os.makedirs(workdir, exist_ok=True)
    if lab.kind == "netns":
        controller, config = _netns_bench(lab, workdir)
        run = controller.run
    else:
        assert lab.source is not None
        config = lab.source
        from .runners import LocalRunner

        run = LocalRunner(str(tmp_path)).run
    report = os.path.join(workdir, "report.json")
    env_free = ["env", "-u", "APX_HIL_BENCH", "-u", "APX_HIL_REPORT"]
    done = run([*env_free, sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                "--rootdir", ROOT, os.path.join(HIL_DIR, "test_fanout.py"),
                "--bench", config, "--hil-report", report], timeout=300)
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    assert done.returncode == 0, output[-4000:]
    with open(report, encoding="utf-8") as stream:
        nested = json.load(stream)
    (fanout,) = nested["cases"]
    assert nested["topology"].startswith("bench: ")
    assert (fanout["case"], fanout["outcome"]) == ("1 fan-out", "passed")
    assert len(fanout["monitors"]) == 3
    for monitor in fanout["monitors"]:
        assert monitor["received"] == monitor["sent"] > 0
        assert monitor["lost"] == 0
    case.notes.append(f"nested bench run: {fanout['monitors'][0]['received']} readouts to "
                      f"each of {[m['host'] for m in fanout['monitors']]} "
                      f"({fanout['duration_s']:.1f} s)")
