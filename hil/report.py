"""The suite's report: per case and per monitor, what was sent, received, lost and dropped.

Cases fill a :class:`CaseReport` (the ``case`` fixture); the conftest prints the whole
:class:`HilReport` at the end of the run (``pytest_terminal_summary``) and writes it as JSON.
Pure data and formatting, no I/O but :meth:`HilReport.write`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

#: The label of a DAQ run with no monitor on the network.
NO_MONITORS = "no monitors"


@dataclass
class DaqFigures:
    """One DAQ run, from its ``--json`` summary."""

    label: str
    host: str
    readouts: int
    hits: int
    datagrams: int
    send_errors: int
    elapsed_s: float
    data_bytes: int
    #: Hits per second after the first second, from the run's file (see
    #: :func:`hil.programs.steady_hit_rate`); None where not measured.
    steady_hits_per_s: float | None = None

    @property
    def readouts_per_s(self) -> float:
        return self.readouts / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def hits_per_s(self) -> float:
        return self.hits / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.data_bytes / self.elapsed_s / 1e6 if self.elapsed_s > 0 else 0.0

    @classmethod
    def from_summary(cls, label: str, host: str, summary: dict[str, Any],
                     steady_hits_per_s: float | None = None) -> DaqFigures:
        sender = summary.get("sender") or {}
        return cls(label=label, host=host, readouts=int(summary["readouts"]),
                   hits=int(summary.get("hits") or 0),
                   datagrams=int(sender.get("datagrams_sent", 0)),
                   send_errors=int(sender.get("datagrams_failed", 0)),
                   elapsed_s=float(summary["elapsed_s"]),
                   data_bytes=int(summary["data_bytes"]),
                   steady_hits_per_s=steady_hits_per_s)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "readouts_per_s": self.readouts_per_s,
                "hits_per_s": self.hits_per_s, "mb_per_s": self.mb_per_s}


@dataclass
class MonitorFigures:
    """One monitor in one case: readouts sent to it, received, lost by its own count, and
    dropped by the kernel (a rule's counter or the socket's overflow counter)."""

    host: str
    sent: int | None
    received: int
    lost: int
    datagrams_lost: int
    dropped: int | None
    dropped_by: str
    malformed: int
    readouts_per_s: float
    mb_per_s: float
    note: str = ""

    @classmethod
    def from_stats(cls, host: str, stats: dict[str, Any], sent: int | None,
                   dropped: int | None = None, dropped_by: str = "",
                   note: str = "") -> MonitorFigures:
        totals = stats["totals"]
        consumed = stats.get("consumed", {})
        busy = float(consumed.get("receiving_s") or 0.0)
        received = int(totals["readouts_received"])
        return cls(host=host, sent=sent, received=received, lost=int(totals["readouts_lost"]),
                   datagrams_lost=int(totals["datagrams_lost"]), dropped=dropped,
                   dropped_by=dropped_by, malformed=int(totals["malformed"]),
                   readouts_per_s=received / busy if busy > 0 else 0.0,
                   mb_per_s=int(totals["bytes_received"]) / busy / 1e6 if busy > 0 else 0.0,
                   note=note)


@dataclass
class CaseReport:
    """What one case measured."""

    case: str
    test: str
    outcome: str = "not run"
    duration_s: float = 0.0
    daq: list[DaqFigures] = field(default_factory=list)
    monitors: list[MonitorFigures] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: What the DAQ (and the probes) sent to: host, group, port, TTL, interface.
    flows: list[dict[str, Any]] = field(default_factory=list)
    #: Kernel counters of every host of a role, read before and after the case:
    #: {host: {"before": {...}, "after": {...}, "delta": {...}}} (see :func:`counter_record`).
    counters: dict[str, Any] = field(default_factory=dict)
    #: Why it failed: ``message``, and where a check named them ``host``, ``role``,
    #: ``counter``, ``actual``, ``expected``.
    failure: dict[str, Any] | None = None
    #: host -> the roles it plays in the topology of the run (for the JUnit test cases).
    roles: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"case": self.case, "test": self.test, "outcome": self.outcome,
                "duration_s": self.duration_s, "daq": [d.as_dict() for d in self.daq],
                "monitors": [asdict(m) for m in self.monitors], "notes": list(self.notes),
                "flows": list(self.flows), "counters": self.counters,
                "failure": self.failure, "roles": self.roles}

    def hosts(self) -> list[str]:
        """The hosts that took part, in order of appearance."""
        names = [d.host for d in self.daq] + [m.host for m in self.monitors] + \
            [f["host"] for f in self.flows]
        if self.failure and self.failure.get("host"):
            names.append(self.failure["host"])
        return list(dict.fromkeys(names))


@dataclass
class HilReport:
    """Every case of the run, and the topology it ran on."""

    topology: str = ""
    cases: list[CaseReport] = field(default_factory=list)
    #: Where the results come from: project version and commit, controller, each host's
    #: name, kernel, interfaces, Python and packages (see :func:`host_provenance`).
    provenance: dict[str, Any] = field(default_factory=dict)
    #: The preflight table's rows: host, cells, problems.
    preflight: list[dict[str, Any]] = field(default_factory=list)

    def daq_rates(self) -> dict[str, dict[str, float] | None]:
        """Mean DAQ rates (readouts/s, hits/s, MB/s) of the runs without monitors and of the
        runs with monitors."""
        groups: dict[str, list[DaqFigures]] = {"without monitors": [], "with monitors": []}
        for case in self.cases:
            for run in case.daq:
                key = "without monitors" if run.label == NO_MONITORS else "with monitors"
                if run not in groups[key]:
                    groups[key].append(run)
        out: dict[str, dict[str, float] | None] = {}
        for key, runs in groups.items():
            steady = [r.steady_hits_per_s for r in runs if r.steady_hits_per_s is not None]
            out[key] = None if not runs else {
                "readouts_per_s": sum(r.readouts_per_s for r in runs) / len(runs),
                "hits_per_s": sum(r.hits_per_s for r in runs) / len(runs),
                "mb_per_s": sum(r.mb_per_s for r in runs) / len(runs),
                "steady_hits_per_s": sum(steady) / len(steady) if steady else None,
                "runs": len(runs)}
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"topology": self.topology, "provenance": self.provenance,
                "preflight": self.preflight, "daq_rates": self.daq_rates(),
                "cases": [c.as_dict() for c in self.cases]}

    def write(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as stream:
            json.dump(self.as_dict(), stream, indent=2)
            stream.write("\n")

    def lines(self) -> list[str]:
        """The report as text, one table per case. Monitor columns: readouts sent to it,
        received and lost (by its own count), datagrams lost (its count) and dropped (the
        kernel's count, and which counter), bad datagrams it refused, its throughput."""
        out = [f"topology: {self.topology}"]
        if self.provenance:
            project = self.provenance.get("project", {})
            out.append(f"astropix-hil {project.get('version')} commit "
                       f"{project.get('commit') or 'unknown'}"
                       f"{' (modified)' if project.get('dirty') else ''}, controller "
                       f"{project.get('controller')}")
            for name, host in self.provenance.get("hosts", {}).items():
                ifaces = ", ".join(f"{i['label']} {i['device']} {i['address']} mtu {i['mtu']}"
                                   for i in host.get("interfaces", []))
                out.append(f"  host {name} ({'/'.join(host.get('roles', [])) or '-'}): "
                           f"{host.get('hostname')} kernel {host.get('kernel')} python "
                           f"{host.get('python')} astropix-hil {host.get('astropix_hil')}"
                           + (f"; {ifaces}" if ifaces else ""))
        for case in self.cases:
            out.append("")
            out.append(f"{case.case}  [{case.outcome}, {case.duration_s:.1f} s]  {case.test}")
            for run in case.daq:
                out.append(f"  DAQ {run.label:<22} on {run.host:<8} {run.readouts:>8} readouts "
                           f"{run.datagrams:>7} datagrams  {run.send_errors} send errors  "
                           f"{run.readouts_per_s:7.0f} readouts/s {run.hits_per_s:7.0f} hits/s "
                           f"{run.mb_per_s:6.3f} MB/s"
                           + ("" if run.steady_hits_per_s is None else
                              f"  (steady {run.steady_hits_per_s:.0f} hits/s)"))
            if case.monitors:
                out.append(f"  {'monitor':<9}{'sent':>8}{'received':>10}{'lost':>7}"
                           f"{'lost dg':>9}{'kernel dg':>11}  {'by':<14}{'bad dg':>7}"
                           f"{'readouts/s':>12}{'MB/s':>7}  note")
                for m in case.monitors:
                    out.append(
                        f"  {m.host:<9}{_n(m.sent):>8}{m.received:>10}{m.lost:>7}"
                        f"{m.datagrams_lost:>9}{_n(m.dropped):>11}  {m.dropped_by or '-':<14}"
                        f"{m.malformed:>7}{m.readouts_per_s:>12.0f}{m.mb_per_s:>7.2f}  {m.note}")
            out.extend(f"  note: {note}" for note in case.notes)
            for flow in case.flows:
                out.append(f"  flow: {flow['program']} on {flow['host']} to {flow['group']}:"
                           f"{flow['port']} ttl {flow['ttl']} via {flow['interface']}")
            if case.failure:
                out.append(f"  FAILED: {failure_line(case.failure)}")
        rates = self.daq_rates()
        out.append("")
        out.append("DAQ rate without monitors: " + _rate(rates["without monitors"])
                   + "; with monitors: " + _rate(rates["with monitors"]))
        return out


def failure_line(failure: dict[str, Any]) -> str:
    """A failure in one line: host (role), counter, what it was and what was expected."""
    if failure.get("counter"):
        role = f" ({failure['role']})" if failure.get("role") else ""
        why = f" ({failure['why']})" if failure.get("why") else ""
        return (f"on {failure['host']}{role}: {failure['counter']} is {failure['actual']}, "
                f"expected {failure['expected']}{why}")
    return str(failure.get("message", "")).splitlines()[0] if failure.get("message") else "?"


def counter_record(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """{host: {"before", "after", "delta"}} from two readings {host: {group: {name: n}}}."""
    out: dict[str, Any] = {}
    for host, groups in after.items():
        old = before.get(host) or {}
        delta = {g: {k: int(v) - int((old.get(g) or {}).get(k, 0)) for k, v in values.items()}
                 for g, values in groups.items() if isinstance(values, dict)}
        out[host] = {"before": old, "after": groups, "delta": delta}
    return out


def host_provenance(name: str, roles: list[str], facts: dict[str, Any] | None,
                    configured: list[tuple[str, str, str]], clock_offset_s: float | None,
                    error: str | None = None) -> dict[str, Any]:
    """What the report says of one host: from :mod:`hil.facts` and the configured
    interfaces (label, device, address)."""
    if facts is None:
        return {"roles": roles, "error": error}
    present = {i.get("ifname"): i for i in facts.get("interfaces") or []}
    interfaces = []
    for label, device, address in configured:
        dev = present.get(device, {})
        interfaces.append({
            "label": label, "device": device, "address": address, "mtu": dev.get("mtu"),
            "state": dev.get("operstate"),
            "addresses": [f"{a.get('local')}/{a.get('prefixlen')}"
                          for a in dev.get("addr_info", [])]})
    return {"roles": roles, "hostname": facts.get("hostname"), "kernel": facts.get("kernel"),
            "system": facts.get("system"), "python": facts.get("python"),
            "python_executable": facts.get("python_executable"),
            "astropix_hil": (facts.get("astropix_hil") or {}).get("version"),
            "packages": facts.get("packages"), "interfaces": interfaces,
            "clock_offset_s": clock_offset_s}


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def _rate(value: dict[str, float] | None) -> str:
    if value is None:
        return "not measured"
    steady = value.get("steady_hits_per_s")
    return (f"{value['readouts_per_s']:.0f} readouts/s, {value['hits_per_s']:.0f} hits/s, "
            f"{value['mb_per_s']:.3f} MB/s (mean of {value['runs']:.0f} runs"
            + ("" if steady is None else f"; steady {steady:.0f} hits/s") + ")")
