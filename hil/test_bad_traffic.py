"""Case 7, bad traffic: a host on the network sends malformed and forged datagrams to the group.

The DAQ authenticates its datagrams with a shared key. One monitor checks the key, one the
key and the sender's address, one only the sender's address. The rogue host listens to the
group first and forges datagrams with the DAQ's own stream id and key id. Proves that every
monitor counts every bad datagram (by reason), keeps every good readout and loses nothing.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

from . import programs
from .expect import expect
from .report import DaqFigures, MonitorFigures
from .rogue import KINDS
from .runners import first_line

pytestmark = pytest.mark.case("7 bad traffic")

DURATION = 5.0
ROUNDS = 25


def _rogue_source() -> str:
    with open(os.path.join(os.path.dirname(__file__), "rogue.py"), encoding="utf-8") as f:
        return f.read()


def test_monitors_skip_bad_datagrams_and_keep_every_good_readout(lab, case) -> None:
    flow = lab.flow(7)
    rogue, daq_host = lab.rogue, lab.daq
    key_name = programs.share_key([daq_host, *lab.monitors])
    allow = (daq_host.address(),)
    options = [{"key": True}, {"key": True, "allow": True}, {"allow": True}]
    board = programs.start_board(lab, daq_host, programs.BOARD_SEED, programs.BOARD_RATE)
    recvs = [programs.start_monitor(m, flow, idle_exit=3.0,
                                    key=m.path(key_name) if o.get("key") else None,
                                    allow_sender=allow if o.get("allow") else ())
             for m, o in zip(lab.monitors, options, strict=True)]
    lab.switch.wait_joined(flow.group, lab.monitors)
    daq = programs.start_daq(daq_host, board, flow, duration=DURATION,
                             key=daq_host.path(key_name))
    bad = rogue.spawn([*rogue.python, "-c", _rogue_source(), flow.group, str(flow.port),
                       "--interface", rogue.address(), "--rounds", str(ROUNDS)], "rogue")
    assert first_line(bad, 30.0) == "captured"
    rogue_out = programs.finish(bad, f"rogue on {rogue.name}", 60.0)
    rogue_ended_while_sending = daq.proc.poll() is None
    summary = daq.result()
    stats = [r.result() for r in recvs]
    board.stop()

    sent = programs.sent_readouts(summary)
    case.daq.append(DaqFigures.from_summary("3 monitors, 1 rogue", daq_host.name, summary))
    for host, st, o in zip(lab.monitors, stats, options, strict=True):
        case.monitors.append(MonitorFigures.from_stats(host.name, st, sent,
                                                       note=" + ".join(sorted(o))))
    bad_total = sum(rogue_out["sent"].values())
    case.notes.append(f"rogue sent {bad_total} datagrams: {rogue_out['sent']}")

    assert rogue_out["sent"] == dict.fromkeys(KINDS, ROUNDS)
    assert rogue_ended_while_sending, "the DAQ ended before the rogue did: lengthen DURATION"
    assert summary["sender"]["datagrams_failed"] == 0
    expected_by_key = Counter()
    for reason in KINDS.values():
        expected_by_key[reason] += ROUNDS
    for host, st, o in zip(lab.monitors, stats, options, strict=True):
        totals = st["totals"]
        expect(host.name, "readouts_received", totals["readouts_received"], sent)
        expect(host.name, "readouts_lost", totals["readouts_lost"], 0)
        expect(host.name, "datagrams_lost", totals["datagrams_lost"], 0)
        # One stream: the forged datagrams never became a stream of their own.
        assert [s["source"].rsplit(":", 1)[0] for s in st["streams"].values()] == \
            [daq_host.address()], host.name
        counted = {reason: n for reason, n in st["malformed"].items() if n}
        if o.get("allow"):
            expect(host.name, "malformed", counted, {"unexpected_source": bad_total},
                   "every rogue datagram, by its source")
        else:
            expect(host.name, "malformed", counted, dict(expected_by_key),
                   "every rogue datagram, by its reason")
