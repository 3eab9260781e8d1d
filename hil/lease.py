"""Leases on bench hosts: two people must not run the suite against the same hosts at once.

A run takes a lease on every host before anything else (a lock file with its owner and
expiry, written through the host's runner by :mod:`hil.leasefile`), renews it while it runs
and releases it at the end, also when interrupted (Ctrl-C, SIGTERM). A lease that expired
(its run died without releasing it) is taken over, and the report says from whom.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass

from .errors import HilError
from .topology import Host

#: How long a lease holds without renewal (the suite renews it before every test).
DEFAULT_TTL_S = 1800.0
_SOURCE: str | None = None


class LeaseHeld(HilError):
    """Another run holds an unexpired lease on a host."""


def _source() -> str:
    global _SOURCE
    if _SOURCE is None:
        with open(os.path.join(os.path.dirname(__file__), "leasefile.py"),
                  encoding="utf-8") as stream:
            _SOURCE = stream.read()
    return _SOURCE


def default_owner() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no name for this uid
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def lease_path(base: str, host: Host) -> str:
    """The lease file of ``host`` under ``base`` (its configured work directory): named after
    its LAN address (or name), which identifies the machine within a bench."""
    ident = host.address() if "lan" in host.interfaces else host.name
    return f"{base.rstrip('/')}/apx-hil-{ident}.lease"


def _when(epoch: float | None) -> str:
    if not isinstance(epoch, (int, float)):
        return "an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch))


@dataclass
class Lease:
    """Our lease on one host."""

    host: Host
    path: str
    token: str
    owner: str
    expires: float
    #: The owner of the expired lease this one replaced, if any.
    took_over: str | None = None

    def _call(self, *args: str) -> dict:
        done = self.host.run([*self.host.python, "-c", _source(), *args], timeout=30)
        done.check(self.host.name)
        return json.loads(done.text.strip().splitlines()[-1])

    @classmethod
    def take(cls, host: Host, path: str, ttl: float = DEFAULT_TTL_S, owner: str | None = None,
             now: float | None = None) -> Lease:
        """Take the lease on ``host`` or raise :class:`LeaseHeld` naming who holds it."""
        now = time.time() if now is None else now
        lease = cls(host, path, secrets.token_hex(16), owner or default_owner(), now + ttl)
        record = {"owner": lease.owner, "token": lease.token, "taken": now,
                  "expires": lease.expires}
        got = lease._call("take", path, json.dumps(record), repr(now))
        if not got["taken"]:
            holder = got.get("holder") or {}
            raise LeaseHeld(f"host {host.name} is leased by {holder.get('owner')} until "
                            f"{_when(holder.get('expires'))} ({path}): another run uses this "
                            "bench; wait for it to end, or remove the file if that run is "
                            "gone")
        replaced = got.get("replaced")
        if replaced:
            lease.took_over = str(replaced.get("owner"))
        return lease

    def renew(self, ttl: float = DEFAULT_TTL_S) -> None:
        expires = time.time() + ttl
        got = self._call("renew", self.path, self.token, repr(expires))
        if not got["renewed"]:
            holder = got.get("holder") or {}
            raise LeaseHeld(f"host {self.host.name}: our lease was taken by "
                            f"{holder.get('owner')} ({self.path})")
        self.expires = expires

    def release(self) -> bool:
        """Remove the lease file if it is still ours; True if it was."""
        return bool(self._call("release", self.path, self.token)["released"])


class Leases:
    """Our leases on every host of a bench; taken all or none."""

    def __init__(self, ttl: float = DEFAULT_TTL_S) -> None:
        self.ttl = ttl
        self.held: list[Lease] = []
        self._renewed = time.monotonic()

    def take(self, hosts: dict[str, Host], base: dict[str, str]) -> None:
        try:
            for name, host in hosts.items():
                self.held.append(Lease.take(host, lease_path(base[name], host), self.ttl))
        except BaseException:
            self.release()
            raise

    def renew_if_due(self) -> None:
        """Renew every lease once a tenth of its time has passed."""
        if time.monotonic() - self._renewed >= self.ttl / 10:
            for lease in self.held:
                lease.renew(self.ttl)
            self._renewed = time.monotonic()

    def release(self) -> list[str]:
        """Release every lease; return what could not be released."""
        problems = []
        while self.held:
            lease = self.held.pop()
            try:
                lease.release()
            except Exception as exc:  # go on: the other hosts' leases must go too
                problems.append(f"lease on {lease.host.name} ({lease.path}): {exc}")
        return problems

    def notes(self) -> list[str]:
        return [f"{lease.host.name}: took over the expired lease of {lease.took_over}"
                for lease in self.held if lease.took_over]


def release_quietly(leases: Leases) -> None:
    with contextlib.suppress(Exception):
        leases.release()
