"""What a host is: read on the host itself for the suite's preflight and report.

Run on a host as ``python3 -c "$(cat facts.py)" SPEC`` (the suite passes this file's source,
so a host needs nothing but Python, iproute2 and, where the suite may look at it, nftables).
SPEC is a JSON object: ``apx_hil`` (the argv that starts apx-hil there) and ``groups`` (groups
whose multicast route to look up). Prints one JSON object: host name, kernel, Python and
package versions, what ``apx-hil --version`` says, the interfaces (``ip -j addr``), the
route of each group (``ip -j route get``), the nftables ruleset (``nft -j list ruleset``) and
the host's clock. Every command is bounded; a command that fails is reported, not raised.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time

PACKAGES = ("astropix-hil", "numpy", "pyserial", "PyYAML")


def _run(argv: list[str], timeout: float = 10.0) -> dict:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"returncode": None, "stdout": "", "stderr": str(exc)}
    return {"returncode": done.returncode, "stdout": done.stdout,
            "stderr": done.stderr.strip()[-500:]}


def _json_of(done: dict) -> object:
    if done["returncode"] == 0:
        try:
            return json.loads(done["stdout"] or "null")
        except ValueError:
            return None
    return None


def _packages() -> dict:
    from importlib import metadata

    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _module() -> dict:
    try:
        import astropix_hil
    except Exception as exc:  # what is wrong is the fact we report
        return {"version": None, "error": f"{type(exc).__name__}: {exc}"}
    return {"version": astropix_hil.__version__,
            "path": os.path.dirname(os.path.abspath(astropix_hil.__file__))}


def collect(spec: dict) -> dict:
    apx = _run([*spec["apx_hil"], "--version"]) if spec.get("apx_hil") else None
    addr = _run(["ip", "-j", "addr", "show"])
    routes = {}
    for group in spec.get("groups", []):
        done = _run(["ip", "-j", "route", "get", group])
        routes[group] = {"route": _json_of(done), "error": done["stderr"] or None}
    nft = _run(["nft", "-j", "list", "ruleset"])
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "packages": _packages(),
        "astropix_hil": _module(),
        "apx_hil": None if apx is None else {
            "returncode": apx["returncode"],
            "output": ((apx["stdout"].strip() or apx["stderr"]).splitlines() or [""])[-1]},
        "interfaces": _json_of(addr),
        "interfaces_error": None if addr["returncode"] == 0 else addr["stderr"],
        "routes": routes,
        "firewall": _json_of(nft),
        "firewall_error": None if nft["returncode"] == 0 else (nft["stderr"] or "nft failed"),
        "time": time.time(),
    }


if __name__ == "__main__":
    print(json.dumps(collect(json.loads(sys.argv[1]))), flush=True)
