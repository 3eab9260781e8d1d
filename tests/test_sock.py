"""Sender and receiver over real sockets, on loopback in a network namespace made per test."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from astropix_hil.errors import TransportError
from astropix_hil.fmt import AstroPix4Readout
from astropix_hil.framing import FrameEncoder, TransportKey
from astropix_hil.sock import MulticastReceiver, MulticastSender

from .netns import made_netns

GROUP, PORT = "239.1.2.3", 5007
KEY = TransportKey.from_secret(b"socket test key, 32 bytes long..")



@pytest.fixture
def ns():
    """A network namespace of this test's own."""
    yield from made_netns()

def readouts(n: int, first: int = 0, size: int = 16) -> list[AstroPix4Readout]:
    return [AstroPix4Readout._parsed(bytes([0xBC]) * size, i, 10**18 + i)
            for i in range(first, first + n)]


def drain(receiver: MulticastReceiver, timeout: float = 0.3, limit: int = 100_000) -> list:
    """Every readout that arrives until ``timeout`` s of silence (at most ``limit``)."""
    got = []
    while len(got) < limit:
        try:
            got.append(receiver.receive(timeout=timeout))
        except TimeoutError:
            break
    return got


def until(condition, receiver: MulticastReceiver | None = None, timeout: float = 20) -> None:
    """Until ``condition()`` holds (fail after ``timeout`` s); meanwhile ``receiver`` takes
    datagrams in, and must hand out no readout."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        if receiver is None:
            time.sleep(0.01)
            continue
        with pytest.raises(TimeoutError):
            receiver.receive(timeout=0.02)


def test_two_receivers_on_one_host_and_port_both_get_everything(ns):
    sent = readouts(3000) + readouts(3, 3000, size=5000)
    with ns.entered():
        first = MulticastReceiver(AstroPix4Readout, group=GROUP, port=PORT)
        second = MulticastReceiver(AstroPix4Readout, group=GROUP, port=PORT)
        sender = MulticastSender(group=GROUP, port=PORT, header={"run": "two"})
    with first, second:
        with sender:
            for readout in sent:
                sender.send_readout(readout)
        for receiver in (first, second):
            assert drain(receiver) == sent
            receiver.finish()
            totals = receiver.stats.totals()
            assert totals["readouts_received"] == len(sent)
            assert totals["datagrams_lost"] == totals["readouts_lost"] == 0
            assert receiver.stats.run_header == {"run": "two"}
    assert sender.stats.datagrams_failed == 0
    assert sender.stats.readouts == len(sent)


def test_settle_reads_the_end_heartbeats_behind_the_last_readout(ns):
    """A receiver that stops at a count right after the first END heartbeat reads on while the
    others are in flight, instead of counting them lost (the race of ``recv --count``)."""
    sent = readouts(5)
    enc = FrameEncoder(now=time.monotonic())
    datagrams = enc.add_many(b"".join(r.to_bytes() for r in sent), time.monotonic())
    datagrams += enc.close(time.monotonic())
    *first, end2, end3 = datagrams  # the readouts and the first END heartbeat, then 2 more
    with ns.entered():
        receiver = MulticastReceiver(AstroPix4Readout, group=GROUP, port=PORT)
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    with receiver, tx:
        for d in first:
            tx.sendto(d, (GROUP, PORT))
        got = [receiver.receive(timeout=5) for _ in sent]
        until(lambda: receiver._decoder.awaiting_end(), receiver)
        for d in (end2, end3):  # still in flight when the count is reached
            tx.sendto(d, (GROUP, PORT))
        receiver.settle(5.0)
        receiver.finish()
        assert got == sent
        assert receiver.stats.totals()["datagrams_lost"] == 0
        assert receiver.stats.datagrams == len(datagrams)


def test_a_receiver_joining_late_gets_the_run_header_from_a_heartbeat(ns):
    with ns.entered():
        sender = MulticastSender(group=GROUP, port=PORT, heartbeat_interval=0.1,
                                 header={"run": "late", "chip": 4})
    with sender:
        for readout in readouts(100):
            sender.send_readout(readout)
        sender.flush()
        # The stream runs a while (two heartbeats: 0.1 s) before the monitor starts.
        until(lambda: sender.stats.heartbeats_sent >= 2)
        with ns.entered():
            receiver = MulticastReceiver(group=GROUP, port=PORT)
        with receiver:
            # Only heartbeats come now.
            until(lambda: sum(s.heartbeats for s in receiver.stats.streams.values()) >= 2,
                  receiver)
            assert receiver.stats.run_header == {"run": "late", "chip": 4}
            (stream,) = receiver.stats.streams.values()
            assert stream.joined_late
            assert stream.datagrams_lost == stream.readouts_lost == 0


def test_legacy_and_framed_senders_share_a_group(ns):
    with ns.entered():
        receiver = MulticastReceiver(group=GROUP, port=PORT)
        legacy = MulticastSender(group=GROUP, port=PORT, legacy=True)
        framed = MulticastSender(group=GROUP, port=PORT)
    with receiver, legacy, framed:
        for a, b in zip(readouts(50), readouts(50, 1000), strict=True):
            legacy.send_readout(a)
            framed.send_readout(b)
        framed.flush()
        got = drain(receiver)
    assert sorted(r.readout_id for r in got) == list(range(50)) + list(range(1000, 1050))
    streams = receiver.stats.streams
    assert sum(s.legacy for s in streams.values()) == 1
    assert all(s.readouts_received == 50 and s.readouts_lost == 0 for s in streams.values())
    assert legacy.stats.datagrams_sent == 50


def test_the_legacy_sender_speaks_the_astropix_tools_wire_format(ns):
    # Their receiver: a plain socket that parses each datagram with from_bytes.
    with ns.entered():
        plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        plain.bind(("", PORT))
        plain.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                         socket.inet_aton(GROUP) + socket.inet_aton("0.0.0.0"))
        plain.settimeout(2)
        sender = MulticastSender(group=GROUP, port=PORT, legacy=True)
    with plain, sender:
        sent = readouts(5)
        for readout in sent:
            sender.send_readout(readout)
        assert [AstroPix4Readout.from_bytes(plain.recv(65535)) for _ in sent] == sent


def test_a_keyed_receiver_takes_only_authenticated_datagrams(ns):
    with ns.entered():
        receiver = MulticastReceiver(group=GROUP, port=PORT, key=KEY)
        good = MulticastSender(group=GROUP, port=PORT, key=KEY)
        bad = MulticastSender(group=GROUP, port=PORT)
    with receiver, good, bad:
        for a, b in zip(readouts(20), readouts(20, 500), strict=True):
            good.send_readout(a)
            bad.send_readout(b)
        good.flush()
        bad.flush()
        assert drain(receiver) == readouts(20)
    assert receiver.stats.malformed["unauthenticated"] >= 2  # heartbeat and data


def test_the_allow_list_filters_by_sender_address(ns):
    with ns.entered():
        allowed = MulticastReceiver(group=GROUP, port=PORT, allow=["127.0.0.1"])
        refused = MulticastReceiver(group=GROUP, port=PORT, allow=["198.18.0.77"])
        sender = MulticastSender(group=GROUP, port=PORT, interface="lo")
    with allowed, refused, sender:
        for readout in readouts(10):
            sender.send_readout(readout)
        sender.flush()
        assert drain(allowed) == readouts(10)
        assert drain(refused) == []
    assert refused.stats.malformed["unexpected_source"] >= 2


def test_the_sender_counts_network_trouble_and_never_raises(ns):
    subprocess.run(["ip", "-n", ns.name, "route", "del", "224.0.0.0/4"], check=True)
    subprocess.run(["ip", "-n", ns.name, "link", "set", "lo", "down"], check=True)
    with ns.entered():
        sender = MulticastSender(group=GROUP, port=PORT)
    with sender:
        for readout in readouts(200):
            sender.send_readout(readout)
        sender.flush()
    stats = sender.stats
    assert stats.datagrams_sent == 0
    assert stats.datagrams_failed >= 6  # heartbeat, 5 batches, end heartbeats
    assert stats.readouts_failed == 200
    assert set(stats.errors) <= {"ENETUNREACH", "ENODEV", "EADDRNOTAVAIL"}
    with pytest.raises(TransportError, match="closed"):
        sender.send_readout(readouts(1)[0])


def test_an_overloaded_receiver_counts_exactly_the_kernel_drops(ns):
    with ns.entered():
        receiver = MulticastReceiver(group=GROUP, port=PORT, rcvbuf=64 * 1024)
        sender = MulticastSender(group=GROUP, port=PORT, timer=False)
    with receiver:
        sent = readouts(40 * 2000)
        for readout in sent:  # nobody reads meanwhile: the socket buffer overflows
            sender.send_readout(readout)
        got = drain(receiver, 0.2)
        sender.close()  # the END heartbeats now find room
        got += drain(receiver, 0.2)
        receiver.finish()
        stats = receiver.stats
        totals = stats.totals()
        assert stats.socket_drops and stats.socket_drops > 100
        assert totals["datagrams_lost"] == stats.socket_drops
        assert totals["readouts_received"] == len(got)
        assert totals["readouts_lost"] + len(got) == len(sent)


def test_idle_sender_heartbeats_and_receiver_api(ns):
    with ns.entered():
        receiver = MulticastReceiver(AstroPix4Readout, GROUP, PORT, "127.0.0.1")
        sender = MulticastSender(GROUP, PORT, 1, "lo", heartbeat_interval=0.05)
    with receiver, sender:
        with pytest.raises(TimeoutError, match="no readout within"):
            receiver.receive(timeout=0.1)
        until(lambda: sum(s.heartbeats for s in receiver.stats.streams.values()) >= 4,
              receiver)
        assert len(receiver.stats.streams) == 1
        sender.send_data(b"".join(r.to_bytes() for r in readouts(3)))
        first, *_ = readouts(3)
        assert next(iter(receiver)) == first
        batch = receiver.receive_batch(timeout=1)
        assert (batch.count, batch.first_readout, batch.contiguous) == (2, 1, True)
    with pytest.raises(TransportError):
        receiver.receive(timeout=0)


def test_bad_arguments_are_refused():
    with pytest.raises(TransportError, match="not a multicast group"):
        MulticastSender(group="10.0.0.1")
    with pytest.raises(TransportError, match="no network interface named"):
        MulticastReceiver(interface="nosuchif0", port=5999)
    with pytest.raises(ValueError, match="cannot be authenticated"):
        MulticastSender(legacy=True, key=KEY)


def test_take_ready_hands_out_what_was_received_without_waiting(ns):
    with ns.entered():
        receiver = MulticastReceiver(group=GROUP, port=PORT)
        legacy = MulticastSender(group=GROUP, port=PORT, legacy=True)
        framed = MulticastSender(group=GROUP, port=PORT, timer=False)
    with receiver:
        with legacy, framed:
            for a, b in zip(readouts(20), readouts(20, 1000), strict=True):
                legacy.send_readout(a)
                framed.send_readout(b)
                framed.flush()  # one datagram each: the streams alternate
        # Everything is queued on the socket: one read takes it all in, as many batches.
        first = receiver.receive_batch(timeout=10)
        rest = receiver.take_ready()
        assert rest, "the streams alternate: more than one batch"
        got = [r for batch in (first, *rest) for r in batch.readouts()]
        assert sorted(r.readout_id for r in got) == list(range(20)) + list(range(1000, 1020))
        assert receiver.take_ready() == []
