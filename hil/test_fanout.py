"""Case 1, fan-out: one DAQ run (virtual board, fixed seed) to three monitors on other hosts.

Proves that every monitor receives every readout the DAQ sent, that the hits the monitors
decode are exactly the board's truth, and that the DAQ's ``.apx`` file holds what the monitors
saw, hit for hit.
"""

from __future__ import annotations

import numpy as np
import pytest

from astropix_hil.fileio import read_hits
from astropix_hil.fmt import HIT_COLUMNS
from astropix_hil.hitcsv import read_hits_csv

from . import programs
from .errors import CapabilityError
from .expect import expect
from .report import DaqFigures, MonitorFigures

pytestmark = pytest.mark.case("1 fan-out")

SEED = 1
RATE = 3000.0
READOUTS = 3000
#: Compared field by field; the readout timestamp is the host's (DAQ) or the board's (truth).
TRUTH_FIELDS = [name for name in HIT_COLUMNS if name != "timestamp"]


def test_every_monitor_gets_every_readout_and_the_truth(lab, case, tmp_path) -> None:
    flow = lab.flow(1)
    daq_host, monitors = lab.daq, lab.monitors
    board = programs.start_board(lab, daq_host, SEED, RATE)
    recvs = [programs.start_monitor(m, flow, count=READOUTS, idle_exit=10.0, csv=True)
             for m in monitors]
    lab.switch.wait_joined(flow.group, monitors)
    daq = programs.start_daq(daq_host, board, flow, readouts=READOUTS)
    summary = daq.result()
    stats = [r.result() for r in recvs]
    board_stats = board.stop()

    sent = programs.sent_readouts(summary)
    case.daq.append(DaqFigures.from_summary("3 monitors", daq_host.name, summary))
    for recv, st in zip(recvs, stats, strict=True):
        case.monitors.append(MonitorFigures.from_stats(recv.host.name, st, sent))
    assert summary["readouts"] == READOUTS and sent == READOUTS
    assert summary["sender"]["datagrams_failed"] == 0

    apx = programs.fetch(daq_host, daq.out, str(tmp_path))
    daq_hits = read_hits(apx)
    assert len(daq_hits) > 0
    for recv, st in zip(recvs, stats, strict=True):
        name = recv.host.name
        totals = st["totals"]
        expect(name, "readouts_received", totals["readouts_received"], READOUTS,
               "every readout the DAQ sent")
        for counter in ("readouts_lost", "datagrams_lost", "malformed"):
            expect(name, counter, totals[counter], 0)
        expect(name, "consumed.readouts", st["consumed"]["readouts"], READOUTS)
        header, hits = read_hits_csv(programs.fetch(recv.host, recv.csv, str(tmp_path)))
        # What the monitor saw is what the DAQ wrote: every hit, every field.
        assert np.array_equal(hits, daq_hits), name
        assert header == programs.run_metadata(apx), name

    if not lab.board.has_truth:
        raise CapabilityError(f"case 1 compares with the board's truth; the bench's board is "
                              f"a real port ({lab.board.url}): set board.kind: emulator")
    assert board_stats is not None and board_stats["truth_exact"]
    _, truth = read_hits_csv(programs.fetch(daq_host, board.truth, str(tmp_path)))
    assert len(truth) == len(daq_hits)
    for name in TRUTH_FIELDS:
        assert np.array_equal(truth[name], daq_hits[name]), name
    case.notes.append(f"{len(daq_hits)} hits in {READOUTS} readouts equal the board's truth")
