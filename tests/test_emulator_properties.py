"""Property tests of the emulator: for any seed, configuration and anomaly mix, decoding the
emitted readouts (in order, extra bytes passed along) gives exactly the truth."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from astropix_hil import strategies as apx
from astropix_hil.bulk import decode_readouts
from astropix_hil.emulator import ChipStream, Emulator, Fate, encode_hit
from astropix_hil.emulator.config import LEAD_IDLE, TRAIL_IDLE
from astropix_hil.fmt import HIT_DTYPE, HIT_FIELDS, AstroPix4Hit, decode_stream

seeds = st.integers(0, 2**63 - 1)


def per_object(readouts) -> np.ndarray:
    values = [hit.values() for hit in decode_stream(readouts)]
    return np.array(values, dtype=HIT_DTYPE) if values else np.empty(0, dtype=HIT_DTYPE)


@given(apx.emulator_configs(), seeds, st.integers(1, 60))
def test_decoding_the_emulated_readouts_gives_exactly_the_truth(config, seed, count):
    run = Emulator(config, seed).generate(readouts=count)
    readouts = run.readouts()
    assert len(readouts) == count
    assert np.array_equal(per_object(readouts), run.truth)
    assert np.array_equal(decode_readouts(readouts).hits, run.truth)
    # The truth is every sent hit whose fate lets the decoder report it in an emitted readout.
    assert len(run.truth) == int((run.generated["readout_id"] >= 0).sum())


@given(apx.emulator_configs(read_sizes=(2048,)), seeds, st.floats(0.0, 0.02))
def test_decoding_a_fixed_duration_gives_exactly_the_truth(config, seed, duration):
    run = Emulator(config, seed).generate(duration=duration)
    assert np.array_equal(decode_readouts(run.readouts()).hits, run.truth)
    # Polls up to the duration read every frame completed before the last of them.
    last_poll = int(duration * 1e9) // config.poll_interval_ns
    assert np.all(run.generated["time_ns"] < last_poll * config.poll_interval_ns)
    assert np.all(run.timestamps >= config.start_ns + config.poll_interval_ns)


@given(apx.hit_fields(real=False))
def test_encode_hit_round_trips_any_fields(fields):
    hit = AstroPix4Hit(encode_hit(**fields))
    assert {name: getattr(hit, name) for name, _ in HIT_FIELDS} == fields


@given(apx.emulator_configs(), seeds)
def test_layout_places_each_hit_word_where_it_says(config, seed):
    stream = ChipStream(config, seed)
    layout, t0, t1 = stream.next_layout()
    buf = layout.buf.tobytes()
    for i in range(min(len(layout.hits), 300)):
        record = layout.hits[i]
        word = encode_hit(*(int(record[name]) for name, _ in HIT_FIELDS))
        at = int(layout.hit_pos[i])
        if layout.hit_fate[i] == Fate.TRUNCATED:
            kept = int(layout.hit_pos[i + 1]) - at
            assert 1 <= kept < 8 and buf[at:at + kept] == word[:kept]
        else:
            assert buf[at:at + 8] == word
    frames = np.diff(layout.frame_ends, prepend=0)
    assert frames.size == 0 or frames.max() <= config.read_size
    starts = layout.frame_starts()
    assert all(buf[s:s + LEAD_IDLE] == b"\xbc" * LEAD_IDLE for s in starts[:300])
    assert all(buf[e - 5:e] == b"\xbc" * (TRAIL_IDLE - 1) for e in layout.frame_ends[:300])
    split = layout.hit_split[layout.hit_split >= 0]
    assert np.array_equal(np.sort(split), layout.piece_ends[layout.piece_breaks])
    assert np.all((layout.hit_time >= t0) & (layout.hit_time < t1))


@given(apx.emulator_configs(), seeds)
def test_same_seed_same_readouts(config, seed):
    a = Emulator(config, seed).generate(readouts=5)
    b = Emulator(config, seed).generate(readouts=5)
    assert a.serialized() == b.serialized()
    assert np.array_equal(a.truth, b.truth)
