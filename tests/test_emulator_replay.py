"""Replay of a recorded .apx at its pace, scaled, or without waiting (clock and sleep faked)."""

from __future__ import annotations

import math

import pytest

from astropix_hil.emulator import replay
from astropix_hil.errors import EmulatorConfigError
from astropix_hil.fileio import write_apx
from astropix_hil.fmt import AstroPix4Readout


class FakeTime:
    """A clock that only moves when slept on; records the sleeps."""

    def __init__(self, start: int = 5_000) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += round(seconds * 1e9)


def recorded(stamps_ms: list[int]) -> list[AstroPix4Readout]:
    base = 1_753_255_536_000_000_000
    return [AstroPix4Readout(bytes([0xBC, 0xBC, 0xE0 + i % 8, 1, 2, 3, 4, 5, 6, 7, 0xBC]), i,
                             base + ms * 1_000_000) for i, ms in enumerate(stamps_ms)]


def emitted_at(source, speed: float, fake: FakeTime) -> list[tuple[int, int]]:
    """(readout_id, fake time in ns since the replay started) of each readout yielded."""
    start = fake.now
    return [(r.readout_id, fake.now - start)
            for r in replay(source, speed, clock=fake.clock, sleep=fake.sleep)]


def test_readouts_come_out_at_their_recorded_pace():
    fake = FakeTime()
    out = emitted_at(recorded([0, 77, 155, 232]), 1.0, fake)
    assert out == [(0, 0), (1, 77_000_000), (2, 155_000_000), (3, 232_000_000)]
    assert fake.sleeps == [0.077, 0.078, 0.077]


def test_speed_scales_the_pace():
    out = emitted_at(recorded([0, 100, 300]), 10.0, FakeTime())
    assert out == [(0, 0), (1, 10_000_000), (2, 30_000_000)]
    slow = emitted_at(recorded([0, 100]), 0.5, FakeTime())
    assert slow == [(0, 0), (1, 200_000_000)]


@pytest.mark.parametrize("speed", [0, math.inf])
def test_no_wait_at_infinite_speed(speed):
    fake = FakeTime()
    out = emitted_at(recorded([0, 1000, 2000]), speed, fake)
    assert [rid for rid, _ in out] == [0, 1, 2] and fake.sleeps == []


def test_time_going_back_adds_no_wait():
    out = emitted_at(recorded([50, 0, 60]), 1.0, FakeTime())
    assert out == [(0, 0), (1, 0), (2, 10_000_000)]


def test_replay_reads_an_apx_file_and_keeps_the_bytes(tmp_path):
    readouts = recorded([0, 20, 40])
    path = tmp_path / "run.apx"
    write_apx(path, readouts)
    fake = FakeTime()
    back = list(replay(path, clock=fake.clock, sleep=fake.sleep))
    assert back == readouts
    assert fake.now - 5_000 == 40_000_000


def test_restamp_gives_live_timestamps():
    stamps = iter([111, 222])
    out = list(replay(recorded([0, 5]), 0, restamp=lambda: next(stamps)))
    assert [r.timestamp for r in out] == [111, 222]
    assert [r.data() for r in out] == [r.data() for r in recorded([0, 5])]


def test_a_late_consumer_is_not_made_to_wait_again():
    fake = FakeTime()
    gen = replay(recorded([0, 10, 20]), 1.0, clock=fake.clock, sleep=fake.sleep)
    next(gen)
    fake.now += 50_000_000  # the consumer took 50 ms
    assert [r.readout_id for r in gen] == [1, 2]
    assert fake.sleeps == []


def test_negative_speed_is_refused():
    with pytest.raises(EmulatorConfigError, match="speed"):
        list(replay(recorded([0]), -1))
