"""Case 4, overload: a monitor that cannot keep up.

One monitor has a small socket receive buffer and a slow consumer, and stalls for a while in
the middle of the run (stopped with SIGSTOP, as a monitor host swapping or a paused debugger
would), so that its socket overflows. Proves that its count of lost datagrams equals the
kernel's receive-buffer drops for its socket (``SO_RXQ_OVFL``, and on a quiet host the
``RcvbufErrors`` of ``/proc/net/snmp``), that the other monitors lose nothing, and that the DAQ
is not slowed and refuses nothing.

The stall ends well before the run does: a receiver can only count what it lost up to the
last datagram it hears (the stream's end heartbeats), so the tail of the run must reach it.
"""

from __future__ import annotations

import signal
import time

import pytest

from . import kernel, programs
from .expect import expect
from .report import DaqFigures, MonitorFigures

pytestmark = pytest.mark.case("4 overload")

DURATION = 6.0
#: Receive buffer asked for (the kernel doubles it) and seconds of work per readout.
RCVBUF = 16384
CONSUME_DELAY = 0.0002
STALL = 2.0


def test_slow_monitor_loss_equals_the_kernel_buffer_drops(lab, case, daq_baseline,
                                                          tmp_path) -> None:
    flow = lab.flow(4)
    slow = lab.monitors[2]
    board = programs.start_board(lab, lab.daq, programs.BOARD_SEED, programs.BOARD_RATE)
    recvs = [programs.start_monitor(m, flow, idle_exit=3.0,
                                    **({"rcvbuf": RCVBUF, "consume_delay": CONSUME_DELAY}
                                       if m is slow else {}))
             for m in lab.monitors]
    lab.switch.wait_joined(flow.group, lab.monitors)
    udp_before = kernel.read_udp_counters(slow)
    daq = programs.start_daq(lab.daq, board, flow, duration=DURATION)
    daq.wait_running()
    slow_recv = recvs[2]
    slow_recv.proc.signal(signal.SIGSTOP)
    try:
        time.sleep(STALL)
    finally:
        slow_recv.proc.signal(signal.SIGCONT)
    stall_ended_while_sending = daq.proc.poll() is None
    summary = daq.result()
    stats = {r.host.name: r.result() for r in recvs}
    udp = kernel.delta(kernel.read_udp_counters(slow), udp_before)
    board.stop()

    sent = programs.sent_readouts(summary)
    loaded = DaqFigures.from_summary("3 monitors, 1 slow", lab.daq.name, summary,
                                     programs.steady_hit_rate(
                                         programs.fetch(lab.daq, daq.out, str(tmp_path))))
    case.daq += [daq_baseline, loaded]
    for host in lab.monitors:
        st = stats[host.name]
        case.monitors.append(MonitorFigures.from_stats(
            host.name, st, sent, dropped=st["socket_drops"], dropped_by="socket rcvbuf",
            note=(f"rcvbuf {RCVBUF}, {CONSUME_DELAY * 1e3:g} ms/readout, stalled {STALL} s; "
                  f"RcvbufErrors +{udp['RcvbufErrors']}") if host is slow else ""))

    assert stall_ended_while_sending, "the DAQ ended during the stall: lengthen DURATION"
    slow_stats = stats[slow.name]
    drops = slow_stats["socket_drops"]
    assert drops is not None, "apx-hil recv does not report its socket's drops (SO_RXQ_OVFL)"
    totals = slow_stats["totals"]
    assert drops > 0
    expect(slow.name, "datagrams_lost", totals["datagrams_lost"], drops,
           "the socket's overflow counter (SO_RXQ_OVFL)")
    expect(slow.name, "readouts_lost", totals["readouts_lost"],
           sent - totals["readouts_received"], "sent minus received")
    assert totals["readouts_lost"] > 0
    if "quiet" in slow.capabilities:
        expect(slow.name, "RcvbufErrors (/proc/net/snmp)", udp["RcvbufErrors"], drops,
               "the socket's overflow counter")
    for host in lab.monitors:
        if host is not slow:
            t = stats[host.name]["totals"]
            expect(host.name, "datagrams_lost", t["datagrams_lost"], 0)
            expect(host.name, "readouts_lost", t["readouts_lost"], 0)
            expect(host.name, "socket_drops", stats[host.name]["socket_drops"], 0)
            expect(host.name, "readouts_received", t["readouts_received"], sent)
    # The DAQ does not wait for anyone.
    assert summary["sender"]["datagrams_failed"] == 0
    programs.assert_same_rate(loaded, daq_baseline)
