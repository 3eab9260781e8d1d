"""The suite's report: figures from the programs' JSON, the text table, the JSON file."""

from __future__ import annotations

import json

from .report import NO_MONITORS, CaseReport, DaqFigures, HilReport, MonitorFigures

DAQ_SUMMARY = {"readouts": 4776, "hits": 12960, "data_bytes": 208000, "elapsed_s": 4.0,
               "sender": {"readouts": 4776, "readouts_failed": 0, "datagrams_sent": 389,
                          "datagrams_failed": 0, "heartbeats_sent": 7}}
RECV_STATS = {"totals": {"readouts_received": 3718, "readouts_lost": 1058,
                         "datagrams_lost": 81, "bytes_received": 300000, "malformed": 2},
              "consumed": {"receiving_s": 4.0}}


def test_figures_from_program_output() -> None:
    daq = DaqFigures.from_summary("3 monitors", "daq", DAQ_SUMMARY)
    assert (daq.readouts, daq.hits, daq.datagrams, daq.send_errors) == (4776, 12960, 389, 0)
    assert (daq.readouts_per_s, daq.hits_per_s, daq.mb_per_s) == (1194.0, 3240.0, 0.052)
    mon = MonitorFigures.from_stats("m2", RECV_STATS, 4776, dropped=81, dropped_by="nft rule")
    assert (mon.received, mon.lost, mon.datagrams_lost, mon.dropped) == (3718, 1058, 81, 81)
    assert (mon.readouts_per_s, mon.mb_per_s, mon.malformed) == (929.5, 0.075, 2)


def _report() -> HilReport:
    report = HilReport(topology="netns: test")
    loss = CaseReport("3 loss", "hil/test_loss.py::t", outcome="passed", duration_s=8.1)
    loss.daq.append(DaqFigures.from_summary("3 monitors", "daq", DAQ_SUMMARY))
    loss.monitors.append(MonitorFigures.from_stats("m2", RECV_STATS, 4776, dropped=81,
                                                   dropped_by="nft rule", note="20%"))
    base = CaseReport("2 join and leave", "hil/test_join_leave.py::t", outcome="failed")
    alone = DaqFigures.from_summary(NO_MONITORS, "daq", {**DAQ_SUMMARY, "elapsed_s": 2.0})
    base.daq.append(alone)
    report.cases += [loss, base]
    return report


def test_text_report_has_a_row_per_monitor_and_the_daq_rates() -> None:
    text = "\n".join(_report().lines())
    assert "3 loss  [passed, 8.1 s]  hil/test_loss.py::t" in text
    assert "2 join and leave  [failed, 0.0 s]" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("m2"))
    assert row.split()[:7] == ["m2", "4776", "3718", "1058", "81", "81", "nft"]
    assert ("DAQ rate without monitors: 2388 readouts/s, 6480 hits/s, 0.104 MB/s (mean of 1 "
            "runs); with monitors: 1194 readouts/s, 3240 hits/s, 0.052 MB/s") in text


def test_json_report(tmp_path) -> None:
    path = tmp_path / "out" / "report.json"
    _report().write(str(path))
    data = json.loads(path.read_text())
    assert data["topology"] == "netns: test"
    assert data["daq_rates"]["without monitors"]["readouts_per_s"] == 2388.0
    (monitor,) = data["cases"][0]["monitors"]
    assert (monitor["host"], monitor["sent"], monitor["received"], monitor["lost"],
            monitor["dropped"], monitor["dropped_by"]) == ("m2", 4776, 3718, 1058, 81,
                                                           "nft rule")
    assert data["cases"][0]["daq"][0]["hits_per_s"] == 3240.0
