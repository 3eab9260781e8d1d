"""A run that cannot build the CI topology fails, saying why (never skips).

The suite is run again in a subprocess that lacks root (a user namespace: same files, euid not
0) or lacks iproute2 (an empty PATH); it must end with status 1 and a message naming the
cause and the remedy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from .netns import preflight

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
