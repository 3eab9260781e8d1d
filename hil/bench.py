"""The bench topology: real machines described by a config file (see ``hil/bench.example.yml``
and ``docs/hil.rst``).

The file names each host, how to start a command there (``ssh``: a command that runs one shell
line on it; ``agent``: an ``apx-hil agent`` address and token file; ``local``: this machine),
its interfaces and addresses, its capabilities, and binds hosts to the roles of
:mod:`hil.topology`; plus the board (virtual board on a pty of the DAQ host, or a real port),
the switch and the groups to use. :func:`load` checks all of it and names what is wrong.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import secrets
import shlex
import signal
import tempfile
from collections.abc import Mapping
from typing import Any

from astropix_hil.agent import load_token
from astropix_hil.errors import AgentError
from astropix_hil.yamlfile import YamlFileError, read_yaml

from .errors import HilError, TopologyError
from .lease import DEFAULT_TTL_S, Leases
from .runners import AgentRunner, LocalRunner, Runner, SshRunner
from .topology import (
    CAPABILITIES,
    ROLES,
    BoardSpec,
    BridgeSwitch,
    Cleanups,
    Host,
    Interface,
    OpaqueSwitch,
    Topology,
)

_TOP = {"topology", "groups", "port", "workdir", "apx_hil", "python", "board", "switch",
        "hosts", "roles", "lease_ttl"}
_HOST = {"access", "interfaces", "capabilities", "workdir", "apx_hil", "python"}


class _Path:
    """Where in the config a value sits, for error messages."""

    def __init__(self, source: str, parts: tuple[str, ...] = ()) -> None:
        self.source = source
        self.parts = parts

    def __truediv__(self, part: str) -> _Path:
        return _Path(self.source, (*self.parts, part))

    def error(self, message: str) -> TopologyError:
        where = ".".join(self.parts) or "(top)"
        return TopologyError(f"{self.source}: {where}: {message}")


def _mapping(value: Any, at: _Path, allowed: set[str] | None = None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise at.error(f"expected a mapping, got {type(value).__name__}")
    if allowed is not None:
        unknown = set(value) - allowed
        if unknown:
            raise at.error(f"unknown keys {sorted(unknown)} (known: {sorted(allowed)})")
    return value


def _argv(value: Any, at: _Path) -> list[str]:
    if isinstance(value, str):
        value = shlex.split(value)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise at.error("expected a command: a string or a non-empty list of strings")
    return list(value)


def parse(config: Any, source: str = "bench config") -> dict[str, Any]:
    """Check a bench config (already read from YAML) and normalize it; raise
    :class:`TopologyError` naming the first problem and where it is."""
    top = _Path(source)
    config = _mapping(config, top, _TOP)
    out: dict[str, Any] = {"topology": str(config.get("topology", source))}
    try:
        out["groups"] = ipaddress.IPv4Network(config.get("groups", "239.18.0.0/16"))
    except ValueError as exc:
        raise (top / "groups").error(str(exc)) from None
    if not out["groups"].is_multicast or out["groups"].prefixlen > 20:
        raise (top / "groups").error("need a multicast network of at least /20 (one group "
                                     "per case, 256 apart), e.g. 239.18.0.0/16")
    port = config.get("port", 5007)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise (top / "port").error(f"{port!r} is not a UDP port")
    out["port"] = port
    ttl = config.get("lease_ttl", DEFAULT_TTL_S)
    if not isinstance(ttl, (int, float)) or not 60 <= ttl <= 7 * 86400:
        raise (top / "lease_ttl").error(f"{ttl!r}: seconds a host's lease holds without "
                                        "renewal (60 .. 604800)")
    out["lease_ttl"] = float(ttl)
    defaults = {"workdir": config.get("workdir", "/tmp"),
                "apx_hil": _argv(config.get("apx_hil", ["apx-hil"]), top / "apx_hil"),
                "python": _argv(config.get("python", ["python3"]), top / "python")}
    hosts_cfg = _mapping(config.get("hosts"), top / "hosts")
    hosts: dict[str, dict[str, Any]] = {}
    for name, host_cfg in hosts_cfg.items():
        hosts[name] = _host(str(name), host_cfg, top / "hosts" / str(name), defaults)
    out["hosts"] = hosts
    out["roles"] = _roles(config.get("roles"), top / "roles", hosts)
    out["board"] = _board(config.get("board", {"kind": "emulator"}), top / "board")
    out["switch"] = _switch(config.get("switch", {"kind": "opaque"}), top / "switch", hosts)
    return out


def _host(name: str, cfg: Any, at: _Path, defaults: dict[str, Any]) -> dict[str, Any]:
    cfg = _mapping(cfg, at, _HOST)
    access = _mapping(cfg.get("access"), at / "access", {"ssh", "agent", "token_file",
                                                         "local"})
    kinds = [k for k in ("ssh", "agent", "local") if access.get(k)]
    if len(kinds) != 1:
        raise (at / "access").error("give exactly one of ssh: COMMAND, agent: ADDR:PORT (with "
                                    "token_file), local: true")
    if kinds == ["agent"] and not access.get("token_file"):
        raise (at / "access").error("agent access needs token_file")
    interfaces = []
    for label, icfg in _mapping(cfg.get("interfaces", {}), at / "interfaces").items():
        iat = at / "interfaces" / str(label)
        icfg = _mapping(icfg, iat, {"device", "address"})
        try:
            address = ipaddress.IPv4Interface(str(icfg.get("address")))
        except ValueError:
            raise (iat / "address").error(f"{icfg.get('address')!r} is not ADDRESS/PREFIX"
                                          ) from None
        if not isinstance(icfg.get("device"), str):
            raise (iat / "device").error("the interface's device name is required")
        interfaces.append(Interface(str(label), icfg["device"], address))
    caps = cfg.get("capabilities", [])
    if not isinstance(caps, list) or not set(caps) <= set(CAPABILITIES):
        raise (at / "capabilities").error(f"{caps!r}: a list of {', '.join(CAPABILITIES)}")
    return {"access": dict(access), "kind": kinds[0], "interfaces": interfaces,
            "capabilities": list(caps),
            "workdir": str(cfg.get("workdir", defaults["workdir"])),
            "apx_hil": _argv(cfg.get("apx_hil", defaults["apx_hil"]), at / "apx_hil"),
            "python": _argv(cfg.get("python", defaults["python"]), at / "python")}


def _roles(cfg: Any, at: _Path, hosts: dict[str, Any]) -> dict[str, Any]:
    cfg = _mapping(cfg, at, set(ROLES))
    roles: dict[str, Any] = {}
    for role, value in cfg.items():
        names = value if role == "monitors" else [value]
        if role == "monitors" and not isinstance(value, list):
            raise (at / role).error("monitors is a list of host names")
        for name in names:
            if name not in hosts:
                raise (at / role).error(f"no host {name!r} under hosts")
            if not hosts[name]["interfaces"]:
                raise (at / role).error(f"host {name!r} has no interfaces")
        roles[role] = list(value) if role == "monitors" else value
    if "daq" not in roles:
        raise (at / "daq").error("the DAQ host is required")
    return roles


def _board(cfg: Any, at: _Path) -> BoardSpec:
    cfg = _mapping(cfg, at, {"kind", "url", "baudrate"})
    kind = cfg.get("kind", "emulator")
    if kind == "emulator":
        return BoardSpec("emulator")
    if kind == "port":
        if not isinstance(cfg.get("url"), str):
            raise (at / "url").error("a real board needs its port: /dev/ttyUSB0, "
                                     "ftdififo://..., any pyserial URL")
        return BoardSpec("port", cfg["url"], cfg.get("baudrate"))
    raise (at / "kind").error(f"{kind!r}: emulator or port")


def _switch(cfg: Any, at: _Path, hosts: dict[str, Any]) -> dict[str, Any]:
    cfg = _mapping(cfg, at, {"kind", "settle", "host", "bridge", "ports"})
    kind = cfg.get("kind", "opaque")
    if kind == "opaque":
        settle = cfg.get("settle", 3.0)
        if not isinstance(settle, (int, float)) or not 0 <= settle <= 60:
            raise (at / "settle").error("seconds IGMP joins and leaves take (0..60)")
        return {"kind": kind, "settle": float(settle)}
    if kind == "linux-bridge":
        if cfg.get("host") not in hosts:
            raise (at / "host").error(f"no host {cfg.get('host')!r} under hosts")
        ports = _mapping(cfg.get("ports"), at / "ports")
        return {"kind": kind, "host": cfg["host"], "bridge": str(cfg.get("bridge", "br0")),
                "ports": {str(k): str(v) for k, v in ports.items()}}
    raise (at / "kind").error(f"{kind!r}: opaque or linux-bridge")


def read(path: str) -> dict[str, Any]:
    """Read and check the bench config at ``path``."""
    try:
        content = read_yaml(path, "bench config")
    except YamlFileError as exc:
        raise TopologyError(str(exc)) from None
    return parse(content, path)


def _runner(name: str, spec: dict[str, Any], workdir: str, outdir: str) -> Runner:
    access = spec["access"]
    if spec["kind"] == "local":
        return LocalRunner(outdir)
    if spec["kind"] == "ssh":
        return SshRunner(_argv(access["ssh"], _Path(name)), workdir, outdir, spec["python"])
    try:
        token = load_token(os.path.expanduser(str(access["token_file"])))
    except Exception as exc:
        raise TopologyError(f"host {name}: {exc}") from None
    return AgentRunner(str(access["agent"]), token)


def build(config: dict[str, Any], cleanups: Cleanups) -> Topology:
    """Connect to the bench's hosts, take a lease on each (:mod:`hil.lease`) and make a work
    directory on each; :meth:`Topology.close` removes them and releases the leases."""
    tag = f"apx-hil-{os.getpid()}-{secrets.token_hex(3)}"
    outdir = tempfile.mkdtemp(prefix=f"{tag}.")
    hosts: dict[str, Host] = {}
    leases = Leases(config.get("lease_ttl", DEFAULT_TTL_S))
    # Released last: the work directories go first.
    teardown = [leases.release]
    try:
        for name, spec in config["hosts"].items():
            workdir = f"{spec['workdir'].rstrip('/')}/{tag}/{name}"
            runner = _runner(name, spec, workdir, outdir)
            host = Host(name, runner, spec["interfaces"], workdir=workdir, cleanups=cleanups,
                        capabilities=spec["capabilities"], apx_hil=spec["apx_hil"],
                        python=spec["python"])
            try:
                host.run(["mkdir", "-p", workdir]).check(name)
            except (HilError, AgentError, OSError) as exc:
                runner.close()
                raise TopologyError(f"host {name} ({spec['kind']}) cannot be used: {exc}"
                                    ) from None
            hosts[name] = host
            if not leases.held:
                _guard(teardown)
            leases.take({name: host}, {name: spec["workdir"]})
            teardown.append(lambda h=host: _remove_workdir(h))
        switch_cfg = config["switch"]
        if switch_cfg["kind"] == "linux-bridge":
            switch = BridgeSwitch(hosts[switch_cfg["host"]], switch_cfg["bridge"],
                                  switch_cfg["ports"])
        else:
            switch = OpaqueSwitch(switch_cfg["settle"])
    except BaseException:
        for hook in reversed(teardown):
            with contextlib.suppress(Exception):
                hook()
        teardown.clear()
        for host in hosts.values():
            host.runner.close()
        raise
    topology = Topology(kind="bench", hosts=hosts, roles=config["roles"], switch=switch,
                        board=config["board"], cleanups=cleanups, groups=config["groups"],
                        port=config["port"], description=config["topology"],
                        teardown=teardown)
    topology.teardown.append(lambda: _rmtree_local(outdir))
    topology.leases = leases
    return topology


_PENDING: list[list] = []


def _guard(teardown: list) -> None:
    """Release the leases and remove the work directories even when the run is ended by
    SIGTERM (turned into an interrupt, as Ctrl-C is) or ends without its fixtures' teardown."""
    if not _PENDING:
        atexit.register(_run_pending)
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _on_sigterm)
    _PENDING.append(teardown)


def _run_pending() -> None:
    while _PENDING:
        hooks = _PENDING.pop()
        for hook in reversed(hooks):
            with contextlib.suppress(Exception):
                hook()
        hooks.clear()


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _remove_workdir(host: Host) -> None:
    # The run's directory only: its parent is the user's.
    with contextlib.suppress(HilError):
        host.run(["rm", "-rf", os.path.dirname(host.workdir)])


def _rmtree_local(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
