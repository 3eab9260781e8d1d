"""A sender, a lossy channel and a receiver driven together by hypothesis, with a fake clock.

The receiver's datagram counters (lost, reordered, late, duplicates) are checked after every
step against :class:`OrderingModel`, the ordering policy of
:class:`~astropix_hil.framing.FrameDecoder` as its documentation states it, written over
sequence numbers alone."""

from __future__ import annotations

import struct
from collections import Counter

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from astropix_hil import strategies as apx
from astropix_hil.fmt import AstroPix4Readout
from astropix_hil.framing import HEADER, FrameDecoder, FrameEncoder

SOURCE = ("198.18.0.2", 40001)
MAX_DATAGRAM = 200
LIMIT = MAX_DATAGRAM - HEADER.size
WINDOW = 8
TIMEOUT = 0.05
_HEARTBEAT, _END = 3, 2


class OrderingModel:
    """What a receiver counts for one stream, from sequence numbers and arrival times.

    Datagrams are processed in sequence order. One arriving after a gap is held (counted
    ``reordered`` if a later one arrived before it); a gap is given up, its datagrams counted
    lost, when more than ``window`` are held or the oldest held one is ``timeout`` old. An END
    heartbeat names the last sequence number: once everything before it is settled and it is
    ``timeout`` old, the missing tail is lost. A datagram whose place was given up is ``late``;
    one already held or processed is a duplicate.
    """

    def __init__(self, window: int, timeout: float) -> None:
        self.window, self.timeout = window, timeout
        self.next = 0
        self.held: dict[int, float] = {}  # sequence number -> arrival time
        self.info: dict[int, tuple[bool, int]] = {}  # seq -> (is END, its last seq)
        self.highest: int | None = None
        self.lost: set[int] = set()
        self.end_seq: int | None = None
        self.end_since = 0.0
        self.counts: Counter[str] = Counter()

    def arrive(self, seq: int, end: bool, last_seq: int, now: float) -> None:
        behind = self.highest is not None and seq < self.highest
        self.highest = seq if self.highest is None else max(self.highest, seq)
        self.info[seq] = (end, last_seq)
        if seq == self.next and not self.held:
            self.next += 1
            self._process(seq, now)
        elif seq >= self.next:
            if seq in self.held:
                self.counts["duplicates"] += 1
                return
            self.counts["reordered"] += behind
            self.held[seq] = now
            self._drain(now)
            self.release(now)
        elif seq in self.lost:
            self.counts["late"] += 1
        else:
            self.counts["duplicates"] += 1

    def _process(self, seq: int, now: float) -> None:
        end, last_seq = self.info[seq]
        if end and self.end_seq is None:
            self.end_seq, self.end_since = last_seq, now

    def _drain(self, now: float) -> None:
        while self.next in self.held:
            del self.held[self.next]
            self.next += 1
            self._process(self.next - 1, now)

    def _give_up(self, upto: int) -> None:
        self.lost.update(range(self.next, upto))
        self.counts["datagrams_lost"] += upto - self.next
        self.next = upto

    def release(self, now: float, force: bool = False) -> None:
        while self.held and (force or len(self.held) > self.window
                             or now - min(self.held.values()) >= self.timeout):
            self._give_up(min(self.held))
            self._drain(now)
        if (self.end_seq is not None and self.next <= self.end_seq and not self.held
                and (force or now - self.end_since >= self.timeout)):
            self._give_up(self.end_seq + 1)


class LossyLink(RuleBasedStateMachine):
    """Readouts of any size go through a channel that drops, duplicates, reorders and delays
    datagrams while time passes; the receiver must deliver each readout intact and at most
    once, in order, and in the end account for every readout exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.dec = FrameDecoder(now=self.now - 1, reorder_window=WINDOW,
                                reorder_timeout=TIMEOUT, fragment_timeout=0.2)
        self.model = OrderingModel(WINDOW, TIMEOUT)
        self.closed = False
        self.enc = FrameEncoder(now=self.now, max_datagram=MAX_DATAGRAM, flush_delay=0.01,
                                heartbeat_interval=0.3, header={"run": "stateful"})
        self.readouts: list[AstroPix4Readout] = []
        self.channel: list[int] = []  # indices into self.sent, in flight
        self.sent: list[bytes] = []
        self.arrived: set[int] = set()
        self.delivered: list[AstroPix4Readout] = []

    def _emit(self, datagrams: list[bytes]) -> None:
        for datagram in datagrams:
            self.channel.append(len(self.sent))
            self.sent.append(datagram)

    def _collect(self) -> None:
        for batch in self.dec.take():
            self.delivered.extend(batch.readouts())

    def _feed(self, index: int) -> None:
        raw = self.sent[index]
        self.arrived.add(index)
        seq = struct.unpack_from("<Q", raw, 16)[0]
        end = raw[5] == _HEARTBEAT and bool(raw[6] & _END)
        last_seq = struct.unpack_from("<Q", raw, HEADER.size)[0] if raw[5] == _HEARTBEAT else 0
        self.model.arrive(seq, end, last_seq, self.now)
        self.dec.feed(raw, SOURCE, self.now)

    @precondition(lambda self: not self.closed)
    @rule(data=st.one_of(apx.readout_bytes(max_size=40), st.binary(max_size=3 * LIMIT)))
    def send_readout(self, data):
        readout = AstroPix4Readout._parsed(data, len(self.readouts), len(self.readouts))
        self.readouts.append(readout)
        self._emit(self.enc.add(readout.to_bytes(), self.now))

    @rule(dt=st.one_of(st.floats(0, 0.4), st.sampled_from((TIMEOUT / 2, TIMEOUT))))
    def time_passes(self, dt):
        self.now += dt
        self._emit(self.enc.poll(self.now))
        self.dec.poll(self.now)
        self.model.release(self.now)
        self._collect()

    @precondition(lambda self: not self.closed)
    @rule()
    def sender_closes(self):
        # The END heartbeats join the channel like any datagram: they too may be lost.
        self._emit(self.enc.close(self.now))
        self.closed = True

    @precondition(lambda self: self.channel)
    @rule(data=st.data())
    def deliver(self, data):
        # Any datagram in flight may arrive next: reordering.
        i = data.draw(st.integers(0, len(self.channel) - 1))
        self._feed(self.channel.pop(i))
        self._collect()

    @precondition(lambda self: self.channel)
    @rule(data=st.data())
    def drop(self, data):
        self.channel.pop(data.draw(st.integers(0, len(self.channel) - 1)))

    @precondition(lambda self: self.channel)
    @rule(data=st.data())
    def duplicate(self, data):
        self.channel.append(self.channel[data.draw(st.integers(0, len(self.channel) - 1))])

    @invariant()
    def datagram_counters_match_the_model(self):
        streams = list(self.dec.stats.streams.values())
        got = Counter({name: getattr(streams[0], name) for name in
                       ("datagrams_lost", "reordered", "late", "duplicates")} if streams else {})
        assert +got == +self.model.counts

    @invariant()
    def delivered_readouts_are_intact_unique_and_in_order(self):
        ids = [r.readout_id for r in self.delivered]
        assert ids == sorted(set(ids))
        assert all(r == self.readouts[r.readout_id] for r in self.delivered)
        totals = self.dec.stats.totals()
        assert totals["readouts_received"] == len(self.delivered)
        assert totals["readouts_received"] + totals["readouts_lost"] <= len(self.readouts)
        assert totals["malformed"] == 0

    def teardown(self):
        # The end: what is in flight arrives in order, then the END heartbeats.
        for index in sorted(self.channel):
            self._feed(index)
        self.channel = []
        self.now += 1.0
        if not self.closed:
            self._emit(self.enc.close(self.now))
            for index in self.channel:
                self._feed(index)
        self.dec.finish(self.now + 1.0)
        self.model.release(self.now + 1.0, force=True)
        self._collect()
        self.delivered_readouts_are_intact_unique_and_in_order()
        self.datagram_counters_match_the_model()
        if not self.arrived:  # everything was lost, the END heartbeats too: no stream seen
            assert not self.dec.stats.streams
            return
        (stream,) = self.dec.stats.streams.values()
        never = len(self.sent) - len(self.arrived)
        if stream.ended:
            # Every readout is delivered or counted lost, exactly once.
            assert stream.readouts_received + stream.readouts_lost == len(self.readouts)
            # A datagram given up on that arrives after all is counted lost and late.
            assert never <= stream.datagrams_lost <= never + stream.late
        else:  # every END heartbeat was lost: what came after the last arrival is unknowable
            assert stream.readouts_received + stream.readouts_lost <= len(self.readouts)
            assert stream.datagrams_lost <= never + stream.late
        assert stream.run_header == ({"run": "stateful"} if stream.heartbeats else None)
        assert stream.ended or self.closed  # its END heartbeats may all have been lost


TestLossyLink = LossyLink.TestCase
TestLossyLink.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
