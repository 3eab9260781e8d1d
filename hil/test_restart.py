"""Case 6, restart: the DAQ is killed (SIGKILL) mid-run and started again on the same board.

Proves that the monitors, which keep running, see the second run as a new stream that
replaces the first (a restart, not a loss), receive all of it, and that the killed run's file
is still readable.
"""

from __future__ import annotations

import signal

import pytest

from astropix_hil.fileio import read_hits

from . import programs
from .expect import expect
from .report import DaqFigures, MonitorFigures

pytestmark = pytest.mark.case("6 restart")

READOUTS = 2000


def test_monitors_report_a_new_stream_and_keep_going(lab, case, tmp_path) -> None:
    flow = lab.flow(6)
    board = programs.start_board(lab, lab.daq, programs.BOARD_SEED, programs.BOARD_RATE)
    # Idle limit: well above the restart's gap (a new DAQ process starting).
    recvs = [programs.start_monitor(m, flow, idle_exit=4.0) for m in lab.monitors]
    lab.switch.wait_joined(flow.group, lab.monitors)
    killed = programs.start_daq(lab.daq, board, flow, duration=60.0)
    killed.wait_running()
    killed.proc.signal(signal.SIGKILL)
    assert killed.proc.wait(30) == -signal.SIGKILL
    second = programs.start_daq(lab.daq, board, flow, readouts=READOUTS)
    summary = second.result()
    stats = [r.result() for r in recvs]
    board.stop()

    sent = programs.sent_readouts(summary)
    case.daq.append(DaqFigures.from_summary("after the restart", lab.daq.name, summary))
    first_counts = set()
    for recv, st in zip(recvs, stats, strict=True):
        name = recv.host.name
        old, new = programs.streams_from(st, lab.daq)
        case.monitors.append(MonitorFigures.from_stats(
            name, st, None, note=f"killed run {old['readouts_received']} readouts, new run "
                                 f"{new['readouts_received']}"))
        assert st["restarts"] == 1, name
        assert new["restart_of"] == old["stream"] != new["stream"], name
        assert not old["ended"] and new["ended"], name
        assert sent == READOUTS
        expect(name, "second run readouts_received", new["readouts_received"], sent)
        expect(name, "second run readouts_lost", new["readouts_lost"], 0)
        expect(name, "second run datagrams_lost", new["datagrams_lost"], 0)
        assert old["readouts_received"] > 0, name
        assert (old["readouts_lost"], old["datagrams_lost"]) == (0, 0), name
        first_counts.add(old["readouts_received"])
    # Every monitor saw the same part of the killed run.
    assert len(first_counts) == 1
    assert len(read_hits(programs.fetch(lab.daq, killed.out, str(tmp_path)))) > 0
