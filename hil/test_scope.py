"""Case 5, scope: where the DAQ's datagrams may go.

Proves that with TTL 1 (the default) the readouts never leave the DAQ's subnet, not even
through a multicast router; that TTL 2 crosses the router to a monitor on the next subnet;
and that on a DAQ host with two interfaces the ``--interface`` option alone decides which
network gets the readouts. "Nothing arrived" is checked by the receiving program and by an
ingress counter on the host (the kernel saw none of the group's datagrams).
"""

from __future__ import annotations

import pytest

from . import kernel, programs
from .expect import expect
from .report import DaqFigures, MonitorFigures
from .topology import Host

pytestmark = pytest.mark.case("5 scope")

READOUTS = 1000
#: A monitor gives up after this long without a datagram, counted from its own start: long
#: enough for the DAQ to start on a loaded bench host (over SSH, seconds), since the monitor
#: behind the router has no switch to wait for. It normally ends on its count.
IDLE = 10.0


def _run(lab, case, daq_host: Host, flow, *, ttl: int, interface: str | None,
         reached: Host, unreached: Host, label: str) -> None:
    counter = kernel.ingress_counter(unreached, flow.group, flow.port)
    board = programs.start_board(lab, daq_host, programs.BOARD_SEED, programs.BOARD_RATE)
    # The reached monitor ends by itself once it has every readout; the other is stopped then.
    near = programs.start_monitor(reached, flow, count=READOUTS, idle_exit=IDLE)
    away = programs.start_monitor(unreached, flow)
    for host in (reached, unreached):
        if host in lab.monitors:
            lab.switch.wait_joined(flow.group, [host])
    daq = programs.start_daq(daq_host, board, flow, readouts=READOUTS, ttl=ttl,
                             interface=interface)
    summary = daq.result()
    near_stats = near.result()
    away_stats = away.stop()
    board.stop()
    arrived = counter.packets("arrived")

    sent = programs.sent_readouts(summary)
    case.daq.append(DaqFigures.from_summary(label, daq_host.name, summary))
    case.monitors.append(MonitorFigures.from_stats(reached.name, near_stats, sent,
                                                   note=f"{label}: reached"))
    case.monitors.append(MonitorFigures.from_stats(unreached.name, away_stats, sent,
                                                   dropped=arrived, dropped_by="arrived (nft)",
                                                   note=f"{label}: must not be reached"))
    assert sent == READOUTS
    assert summary["sender"]["datagrams_failed"] == 0
    expect(reached.name, "readouts_received", near_stats["totals"]["readouts_received"],
           READOUTS)
    expect(reached.name, "readouts_lost", near_stats["totals"]["readouts_lost"], 0)
    expect(unreached.name, "datagrams", away_stats["datagrams"], 0, f"{label}: out of reach")
    expect(unreached.name, "arrived (nft ingress counter)", arrived, 0,
           f"{label}: no datagram of the group may reach the host")


def test_ttl_1_stays_in_the_subnet(lab, case) -> None:
    _run(lab, case, lab.daq, lab.flow(5, 0), ttl=1, interface=None, reached=lab.monitors[0],
         unreached=lab.far, label="ttl 1")


def test_ttl_2_crosses_the_router(lab, case) -> None:
    flow = lab.flow(5, 1)
    board = programs.start_board(lab, lab.daq, programs.BOARD_SEED, programs.BOARD_RATE)
    far = programs.start_monitor(lab.far, flow, count=READOUTS, idle_exit=IDLE)
    near = programs.start_monitor(lab.monitors[0], flow, count=READOUTS, idle_exit=IDLE)
    lab.switch.wait_joined(flow.group, lab.monitors[:1])
    summary = programs.start_daq(lab.daq, board, flow, readouts=READOUTS, ttl=2).result()
    far_stats, near_stats = far.result(), near.result()
    board.stop()
    sent = programs.sent_readouts(summary)
    case.daq.append(DaqFigures.from_summary("ttl 2", lab.daq.name, summary))
    case.monitors += [MonitorFigures.from_stats(lab.far.name, far_stats, sent,
                                                note="ttl 2: behind the router"),
                      MonitorFigures.from_stats(lab.monitors[0].name, near_stats, sent,
                                                note="ttl 2: same subnet")]
    assert sent == READOUTS
    for host, st in ((lab.far, far_stats), (lab.monitors[0], near_stats)):
        expect(host.name, "readouts_received", st["totals"]["readouts_received"], READOUTS)
        expect(host.name, "readouts_lost", st["totals"]["readouts_lost"], 0)


@pytest.mark.parametrize("label", ["alt", "lan"])
def test_interface_option_picks_the_interface(lab, case, label: str) -> None:
    dual = lab.dual
    peer, lan_monitor = lab.dual_peer, lab.monitors[0]
    reached, unreached = (peer, lan_monitor) if label == "alt" else (lan_monitor, peer)
    flow = lab.flow(5, 2 if label == "alt" else 3)
    _run(lab, case, dual, flow, ttl=1, interface=dual.address(label), reached=reached,
         unreached=unreached, label=f"--interface {label}")
