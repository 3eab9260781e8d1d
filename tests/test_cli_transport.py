"""``apx-hil send`` and ``apx-hil recv`` as separate processes in a network namespace."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from astropix_hil.cli import main
from astropix_hil.fileio import apx_open, write_apx
from astropix_hil.fmt import AstroPix4Readout
from astropix_hil.hitcsv import read_hits_csv

from .netns import Netns, made_netns

PORT = 5007
TIMEOUT = 60



@pytest.fixture
def ns():
    """A network namespace of this test's own."""
    yield from made_netns()

def wait_listening(ns: Netns, proc: subprocess.Popen, port: int = PORT,
                   count: int = 1) -> None:
    ns.wait_udp_bound(proc, port, count)


def recv(ns: Netns, *args: str) -> subprocess.Popen:
    proc = ns.apx_hil("recv", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_listening(ns, proc)
    return proc


def send(ns: Netns, *args: str) -> dict:
    proc = ns.apx_hil("send", *args, "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    return json.loads(out)


def finish(proc: subprocess.Popen) -> tuple[dict, str, str]:
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    return json.loads(out.splitlines()[-1]), out, err


def readouts_of(path) -> list[AstroPix4Readout]:
    with apx_open(path) as reader:
        return list(reader)


def test_replay_of_a_run_decodes_to_its_truth(ns, emulated_run, emulated_truth, tmp_path):
    out_csv = tmp_path / "hits.csv"
    count = len(readouts_of(emulated_run))
    truth_header, truth = read_hits_csv(emulated_truth)
    proc = recv(ns, "--count", str(count), "--hits", "--quiet", "--csv", str(out_csv), "--json")
    sent = send(ns, str(emulated_run), "--as-fast-as-possible")
    stats, _, _ = finish(proc)
    assert sent["readouts_sent"] == count and sent["sender"]["datagrams_failed"] == 0
    assert stats["consumed"]["readouts"] == count
    assert stats["consumed"]["hits"] == len(truth)
    assert stats["totals"]["readouts_lost"] == stats["totals"]["datagrams_lost"] == 0
    header, hits = read_hits_csv(out_csv)
    assert header == truth_header  # from the heartbeat sent first
    assert (hits == truth).all()


def test_recv_prints_readouts_and_their_hits(ns, emulated_run, emulated_truth):
    first = readouts_of(emulated_run)[0]
    _, truth = read_hits_csv(emulated_truth)
    hit = truth[truth["readout_id"] == first.readout_id][0]
    proc = recv(ns, "--count", "1", "--hits")
    send(ns, str(emulated_run), "--as-fast-as-possible")
    proc.wait(timeout=TIMEOUT)
    out, err = proc.communicate(timeout=TIMEOUT)
    lines = out.splitlines()
    assert lines[0].startswith(f"readout {first.readout_id} stream ")
    assert lines[0].endswith(f"{len(first.data())} bytes {first.hex()}")
    assert lines[1] == (f"  hit chip {hit['chip_id']} row {hit['row']} column {hit['column']} "
                        f"ts_dec1 {hit['ts_dec1']} ts_dec2 {hit['ts_dec2']} "
                        f"tot_us {hit['tot_us']}")
    hits = int((truth["readout_id"] == first.readout_id).sum())
    assert f"received 1 readouts, {hits} hits" in err
    assert "datagrams" in err and "lost 0" in err


def test_sigterm_stops_recv_with_the_statistics(ns, emulated_run):
    proc = recv(ns, "--json", "--quiet")
    send(ns, str(emulated_run), "--as-fast-as-possible")
    # Every datagram is in (send has ended); stop once recv has read them off its socket:
    # what it has read and not yet handed on must still be counted.
    ns.wait_udp_drained(proc)
    proc.send_signal(signal.SIGTERM)
    stats, _, _ = finish(proc)
    assert stats["consumed"]["stop_reason"] == "signal SIGTERM"
    assert stats["consumed"]["readouts"] == len(readouts_of(emulated_run))
    (stream,) = stats["streams"].values()
    assert stream["ended"] and stream["readouts_lost"] == 0


def test_idle_exit_waits_for_the_first_datagram(ns, real_apx):
    # A monitor started before its sender: the sender's start-up is not silence.
    proc = recv(ns, "--json", "--quiet", "--idle-exit", "0.2")
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=1.0)
    send(ns, str(real_apx), "--as-fast-as-possible")
    stats, _, _ = finish(proc)
    assert stats["consumed"]["stop_reason"] == "idle"
    assert stats["consumed"]["readouts"] == 775


def test_a_receiver_without_a_key_says_it_did_not_check_hmacs(ns, real_apx, tmp_path):
    key = tmp_path / "key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    passive = recv(ns, "--quiet", "--idle-exit", "0.5")
    sent = send(ns, str(real_apx), "--as-fast-as-possible", "--key", str(key))
    _, err = passive.communicate(timeout=TIMEOUT)
    assert passive.returncode == 0, err
    assert "received 775 readouts" in err
    datagrams = sent["sender"]["datagrams_sent"]
    assert f"unverified {datagrams}: datagrams carrying an HMAC accepted unchecked" in err
    passive = recv(ns, "--json", "--quiet", "--idle-exit", "0.5")
    send(ns, str(real_apx), "--as-fast-as-possible")
    stats, _, err = finish(passive)
    assert stats["unverified"] == 0 and "unverified" not in err


def test_idle_exit_and_legacy_mode(ns, real_apx):
    proc = recv(ns, "--json", "--quiet", "--idle-exit", "0.5")
    sent = send(ns, str(real_apx), "--as-fast-as-possible", "--legacy")
    stats, _, _ = finish(proc)
    assert sent["sender"]["datagrams_sent"] == 775
    assert stats["consumed"]["stop_reason"] == "idle"
    (stream,) = stats["streams"].values()
    assert stream["legacy"] and stream["readouts_received"] == 775
    assert stream["readouts_lost"] == 0


def test_keys_and_sender_allow_list(ns, real_apx, tmp_path):
    key = tmp_path / "key"
    key.write_text("0123456789abcdef0123456789abcdef\n")
    keyed = recv(ns, "--json", "--quiet", "--idle-exit", "0.5", "--key", str(key))
    send(ns, str(real_apx), "--as-fast-as-possible")
    stats, _, _ = finish(keyed)
    assert stats["consumed"]["readouts"] == 0
    assert stats["malformed"]["unauthenticated"] > 0
    keyed = recv(ns, "--json", "--quiet", "--idle-exit", "0.5", "--key", str(key),
                 "--allow-sender", "127.0.0.1")
    send(ns, str(real_apx), "--as-fast-as-possible", "--key", str(key), "--interface", "lo")
    stats, _, _ = finish(keyed)
    assert stats["consumed"]["readouts"] == 775
    assert sum(stats["malformed"].values()) == 0


def test_send_paces_by_rate(ns, tmp_path):
    path = tmp_path / "run.apx"
    write_apx(path, [AstroPix4Readout(b"\xbc" * 16, i, i) for i in range(50)])
    proc = recv(ns, "--json", "--quiet", "--count", "50")
    sent = send(ns, str(path), "--rate", "200")
    stats, _, _ = finish(proc)
    assert sent["elapsed_s"] >= 49 / 200
    assert stats["consumed"]["readouts"] == 50


def test_recv_stops_after_duration_with_nothing_received(ns):
    proc = recv(ns, "--json", "--duration", "0.3")
    stats, _, _ = finish(proc)
    assert stats["consumed"]["stop_reason"] == "duration"
    assert stats["datagrams"] == 0 and stats["streams"] == {}


def test_send_of_a_file_that_is_not_apx_fails_with_one_line(tmp_path, capsys):
    path = tmp_path / "bad.apx"
    path.write_bytes(b"not an apx file")
    assert main(["send", str(path)]) == 1
    assert "not an .apx file" in capsys.readouterr().err
