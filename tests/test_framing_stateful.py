"""A sender, a lossy channel and a receiver driven together by hypothesis, with a fake clock."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from astropix_hil import strategies as apx
from astropix_hil.fmt import AstroPix4Readout
from astropix_hil.framing import HEADER, FrameDecoder, FrameEncoder

SOURCE = ("198.18.0.2", 40001)
MAX_DATAGRAM = 200
LIMIT = MAX_DATAGRAM - HEADER.size


class LossyLink(RuleBasedStateMachine):
    """Readouts of any size go through a channel that drops, duplicates, reorders and delays
    datagrams while time passes; the receiver must deliver each readout intact and at most
    once, in order, and in the end account for every readout exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.dec = FrameDecoder(now=self.now - 1, reorder_window=8, reorder_timeout=0.05,
                                fragment_timeout=0.2)
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

    @rule(data=st.one_of(apx.readout_bytes(max_size=40), st.binary(max_size=3 * LIMIT)))
    def send_readout(self, data):
        readout = AstroPix4Readout._parsed(data, len(self.readouts), len(self.readouts))
        self.readouts.append(readout)
        self._emit(self.enc.add(readout.to_bytes(), self.now))

    @rule(dt=st.floats(0, 0.4))
    def time_passes(self, dt):
        self.now += dt
        self._emit(self.enc.poll(self.now))
        self.dec.poll(self.now)
        self._collect()

    @precondition(lambda self: self.channel)
    @rule(data=st.data())
    def deliver(self, data):
        # Any datagram in flight may arrive next: reordering.
        i = data.draw(st.integers(0, len(self.channel) - 1))
        index = self.channel.pop(i)
        self.arrived.add(index)
        self.dec.feed(self.sent[index], SOURCE, self.now)
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
            self.arrived.add(index)
            self.dec.feed(self.sent[index], SOURCE, self.now)
        self.channel = []
        self.now += 1.0
        closing = self.enc.close(self.now)
        for datagram in closing:
            self.arrived.add(len(self.sent))
            self.sent.append(datagram)
            self.dec.feed(datagram, SOURCE, self.now)
        self.dec.finish(self.now + 1.0)
        self._collect()
        self.delivered_readouts_are_intact_unique_and_in_order()
        (stream,) = self.dec.stats.streams.values()
        # Every readout is delivered or counted lost, exactly once.
        assert stream.readouts_received + stream.readouts_lost == len(self.readouts)
        never = len(self.sent) - len(self.arrived)
        # A datagram given up on that arrives after all is counted lost and late.
        assert never <= stream.datagrams_lost <= never + stream.late
        assert stream.ended and stream.run_header == {"run": "stateful"}


TestLossyLink = LossyLink.TestCase
TestLossyLink.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
