"""Case 3, loss measured against the kernel.

An nftables rule on one monitor's host drops a random fraction of the data datagrams at its
input and counts each drop. Proves that the monitor's own count of lost datagrams is exactly
the kernel's drop counter, that its count of lost readouts is exactly what the DAQ sent minus
what it received, and that the other monitors lose nothing.
"""

from __future__ import annotations

import pytest

from . import kernel, programs
from .expect import expect
from .report import DaqFigures, MonitorFigures

pytestmark = pytest.mark.case("3 loss")

DURATION = 4.0
DROP_PERCENT = 20


def test_lost_counts_equal_the_kernel_drop_counter(lab, case) -> None:
    flow = lab.flow(3)
    lossy = lab.monitors[1]
    rule = kernel.loss_rule(lossy, flow.group, flow.port, DROP_PERCENT)
    board = programs.start_board(lab, lab.daq, programs.BOARD_SEED, programs.BOARD_RATE)
    recvs = [programs.start_monitor(m, flow, idle_exit=3.0) for m in lab.monitors]
    lab.switch.wait_joined(flow.group, lab.monitors)
    daq = programs.start_daq(lab.daq, board, flow, duration=DURATION)
    summary = daq.result()
    stats = {r.host.name: r.result() for r in recvs}
    board.stop()
    counters = rule.counters()
    dropped, seen = counters["dropped"]["packets"], counters["seen"]["packets"]

    sent = programs.sent_readouts(summary)
    sender = summary["sender"]
    case.daq.append(DaqFigures.from_summary("3 monitors, 1 lossy", lab.daq.name, summary))
    for host in lab.monitors:
        is_lossy = host is lossy
        case.monitors.append(MonitorFigures.from_stats(
            host.name, stats[host.name], sent, dropped=dropped if is_lossy else None,
            dropped_by="nft rule" if is_lossy else "",
            note=f"{DROP_PERCENT}% of data datagrams dropped" if is_lossy else ""))

    assert sender["datagrams_failed"] == 0
    # The rule saw every data datagram of the run, and dropped some.
    assert seen == sender["datagrams_sent"] - sender["heartbeats_sent"]
    assert 0 < dropped < seen
    for host in lab.monitors:
        st = stats[host.name]
        totals = st["totals"]
        expect(host.name, "socket_drops", st["socket_drops"], 0, "no other loss on the way")
        expect(host.name, "readouts_received + readouts_lost",
               totals["readouts_received"] + totals["readouts_lost"], sent,
               "readouts the DAQ sent")
        if host is lossy:
            expect(host.name, "datagrams_lost", totals["datagrams_lost"], dropped,
                   "the nft rule's drop counter")
            expect(host.name, "readouts_lost", totals["readouts_lost"],
                   sent - totals["readouts_received"], "sent minus received")
            assert totals["readouts_lost"] > 0
        else:
            expect(host.name, "datagrams_lost", totals["datagrams_lost"], 0)
            expect(host.name, "readouts_lost", totals["readouts_lost"], 0)
            expect(host.name, "readouts_received", totals["readouts_received"], sent)
