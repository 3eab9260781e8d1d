"""Case 2, join and leave: monitors come and go while the DAQ runs.

Proves that monitors joining late and leaving mid-run do not change the DAQ's rate or make it
fail to send; that a late joiner learns the run header from the heartbeat (it never saw the
start); that it counts nothing before it joined as lost; and that after a monitor leaves, the
switch (IGMP snooping) stops forwarding the group to its host.
"""

from __future__ import annotations

import time

import pytest

from . import kernel, programs
from .expect import expect
from .programs import BOARD_RATE, BOARD_SEED, assert_same_rate
from .report import DaqFigures, MonitorFigures

pytestmark = pytest.mark.case("2 join and leave")

DURATION = 10.0
#: How long a mid-run monitor stays.
STAY = 2.5
#: How long the left host's ingress counter is watched while the DAQ still sends.
WATCH = 1.0


def test_monitors_join_late_and_leave_without_disturbing_the_daq(lab, case, daq_baseline,
                                                                 tmp_path) -> None:
    flow = lab.flow(2)
    first, leaver, late = lab.monitors[:3]
    leaver_in = kernel.ingress_counter(leaver, flow.group, flow.port)
    board = programs.start_board(lab, lab.daq, BOARD_SEED, BOARD_RATE)
    m_first = programs.start_monitor(first, flow, idle_exit=3.0)
    lab.switch.wait_joined(flow.group, [first])
    daq = programs.start_daq(lab.daq, board, flow, duration=DURATION)
    daq.wait_running()

    m_leaver = programs.start_monitor(leaver, flow, duration=STAY)
    m_late = programs.start_monitor(late, flow, idle_exit=3.0)
    lab.switch.wait_joined(flow.group, [leaver, late])
    leaver_stats = m_leaver.result()
    lab.switch.wait_left(flow.group, leaver)
    arrived_while_joined = leaver_in.packets("arrived")
    time.sleep(WATCH)
    still_sending = daq.proc.poll() is None
    arrived_after = leaver_in.packets("arrived")

    summary = daq.result()
    first_stats, late_stats = m_first.result(), m_late.result()
    board.stop()
    sent = programs.sent_readouts(summary)
    apx = programs.fetch(lab.daq, daq.out, str(tmp_path))
    with_monitors = DaqFigures.from_summary("monitors come and go", lab.daq.name, summary,
                                            programs.steady_hit_rate(apx))
    case.daq += [daq_baseline, with_monitors]
    for host, st, note in ((first, first_stats, "whole run"),
                           (leaver, leaver_stats, f"joined late, left after {STAY} s"),
                           (late, late_stats, "joined late")):
        case.monitors.append(MonitorFigures.from_stats(host.name, st, sent, note=note))

    # The DAQ: same rate as alone, nothing refused by the kernel.
    assert summary["sender"]["datagrams_failed"] == 0 == daq_baseline.send_errors
    assert_same_rate(with_monitors, daq_baseline)
    # The monitor that was there from the start got everything.
    expect(first.name, "readouts_received", first_stats["totals"]["readouts_received"], sent)
    expect(first.name, "readouts_lost", first_stats["totals"]["readouts_lost"], 0)
    # Late joiners: the run header from the heartbeat, nothing before them counted lost.
    header = programs.run_metadata(apx)
    for host, st in ((leaver, leaver_stats), (late, late_stats)):
        (stream,) = programs.streams_from(st, lab.daq)
        assert stream["joined_late"], host.name
        assert st["run_header"] == header, host.name
        assert (stream["readouts_lost"], stream["datagrams_lost"]) == (0, 0), host.name
        assert 0 < stream["readouts_received"] < sent, host.name
    # The late joiner stayed to the end: it has the rest of the run, from where it joined.
    (stream,) = programs.streams_from(late_stats, lab.daq)
    assert stream["ended"]
    # The leaver's host: traffic while joined, none once the switch forgot it.
    assert arrived_while_joined > 0
    assert still_sending, "the DAQ ended before the watch interval did: lengthen DURATION"
    expect(leaver.name, "arrived (nft ingress counter) after leaving", arrived_after,
           arrived_while_joined, "the switch stopped forwarding the group")
    case.notes.append(f"after {leaver.name} left: {arrived_after - arrived_while_joined} "
                      f"datagrams reached it in {WATCH} s while the DAQ sent")
