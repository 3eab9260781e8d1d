"""The chip emulator by example: sources, timestamps, layout, anomalies, truth, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from astropix_hil import emulator
from astropix_hil.bulk import decode_readouts
from astropix_hil.emulator import (
    Anomalies,
    Applied,
    ChipStream,
    Emulator,
    EmulatorConfig,
    Fate,
    InjectionSource,
    PixelMap,
    PoissonSource,
    TotDistribution,
)
from astropix_hil.emulator.readouts import cut_reads, place_hits
from astropix_hil.emulator.timestamps import MAX_TOT_TICKS, counter_ticks, edges, gray_fields
from astropix_hil.errors import EmulatorConfigError
from astropix_hil.fmt import (
    HIT_DTYPE,
    AstroPix4Hit,
    compose_timestamp,
    decode_stream,
    encode_hit,
    gray_to_binary,
)

LONE_HIT = b"\xbc\xbc" + b"H" * 8 + b"\xbc" * 6


def decoded(run) -> np.ndarray:
    """Per-object decode of a run's readouts, as records."""
    values = [hit.values() for hit in decode_stream(run.readouts())]
    return np.array(values, dtype=HIT_DTYPE) if values else np.empty(0, dtype=HIT_DTYPE)


def poisson(rate=1e5, **options) -> EmulatorConfig:
    return EmulatorConfig.build(mode="poisson", rate=rate, **options)


# -- encode_hit and the counter -------------------------------------------------------------

def test_encode_hit_is_the_format_modules_function():
    assert emulator.encode_hit is encode_hit
    word = emulator.encode_hit(0, 7, 0, 9, 1, 12395, 3, 0, 0, 13123, 0, 0)
    assert word == bytes.fromhex("e0401eac0dccc200")  # first hit of the real run


def test_counter_runs_at_20_mhz_and_rolls_over_at_17_bits():
    assert counter_ticks(np.array([0, 49, 50, 100]), phase=0).tolist() == [0, 0, 1, 2]
    assert counter_ticks(np.array([0]), phase=(1 << 17) - 1).tolist() == [(1 << 17) - 1]
    assert counter_ticks(np.array([50]), phase=(1 << 17) - 1).tolist() == [0]


def test_gray_fields_decode_to_the_counter():
    ticks = np.arange(0, 1 << 17, 97)
    fields = gray_fields(ticks)
    back = [compose_timestamp(int(c), int(f)) for c, f in zip(fields.coarse, fields.fine,
                                                              strict=True)]
    assert back == ticks.tolist()
    assert all(gray_to_binary(int((c << 3) | f)) == t
               for c, f, t in zip(fields.coarse[:50], fields.fine[:50], ticks[:50], strict=True))


def test_trailing_edge_past_a_rollover_decodes_to_the_tot():
    lead, trail = edges(np.array([((1 << 17) - 10) * 50]), np.array([30]), phase=0)
    word = encode_hit(0, 7, 1, 2, 0, int(lead.coarse[0]), int(lead.fine[0]), 0, 0,
                      int(trail.coarse[0]), int(trail.fine[0]), 0)
    hit = AstroPix4Hit(word)
    assert trail.ticks[0] == 20  # wrapped
    assert hit.ts_dec2 - hit.ts_dec1 == 30
    assert hit.tot_us == 1.5


def test_tot_beyond_the_counter_range_is_refused():
    with pytest.raises(ValueError, match="TOT"):
        edges(np.array([0]), np.array([MAX_TOT_TICKS + 1]))


# -- sources ----------------------------------------------------------------------------------

def test_poisson_source_has_the_asked_rate_and_stays_in_its_window():
    source = PoissonSource(20_000.0)
    hits = source.sample(np.random.default_rng(1), 10**9, 2 * 10**9)
    assert 19_400 < len(hits.time_ns) < 20_600  # 4 sigma
    assert hits.time_ns.min() >= 10**9 and hits.time_ns.max() < 2 * 10**9
    assert np.all(np.diff(hits.time_ns) >= 0)
    gaps = np.diff(hits.time_ns) / 1e9
    assert abs(gaps.mean() * 20_000 - 1) < 0.03


def test_uniform_pixels_cover_the_array_and_hot_pixels_dominate():
    rng = np.random.default_rng(2)
    rows, cols = PixelMap(4, 3).sample(rng, 12_000)
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == {(r, c) for r in range(4)
                                                                   for c in range(3)}
    hot = PixelMap.parse_hot("1,2:1000", rows=4, cols=3)
    rows, cols = hot.sample(rng, 10_000)
    share = np.mean((rows == 1) & (cols == 2))
    assert 0.98 < share < 1.0  # 1000 / (1000 + 11)
    only = PixelMap.from_weights(np.array([[0, 0], [0, 3.0]]))
    rows, cols = only.sample(rng, 100)
    assert set(rows.tolist()) == {1} and set(cols.tolist()) == {1}


def test_fixed_pixel_and_geometry_limits():
    rows, cols = PixelMap(fixed=(5, 7)).sample(np.random.default_rng(0), 3)
    assert rows.tolist() == [5, 5, 5] and cols.tolist() == [7, 7, 7]
    with pytest.raises(EmulatorConfigError, match="5-bit row field"):
        PixelMap(rows=35)
    with pytest.raises(EmulatorConfigError, match="outside"):
        PixelMap(rows=4, cols=4, fixed=(4, 0))


def test_injection_pulses_are_periodic_at_one_pixel():
    source = InjectionSource()
    hits = source.sample(np.random.default_rng(3), 0, 10**9)
    assert len(hits.time_ns) == 13  # 1 s / 77.36 ms
    periods = np.diff(hits.time_ns)
    assert np.all(np.abs(periods - 77_363_000) < 1000)
    assert set(hits.row.tolist()) == {0} and set(hits.column.tolist()) == {9}
    tot_us = hits.tot_ticks / 20
    assert np.all((tot_us > 150) & (tot_us < 320))


@pytest.mark.parametrize(("text", "kind", "mean"), [
    ("normal:235,18", "normal", 235), ("uniform:10,30", "uniform", 20),
    ("exponential:50", "exponential", 50), ("fixed:7.5", "fixed", 7.5)])
def test_tot_distributions(text, kind, mean):
    tot = TotDistribution.parse(text)
    assert tot.kind == kind and str(tot) == text
    ticks = tot.sample_ticks(np.random.default_rng(4), 20_000)
    assert ticks.dtype == np.int64 and ticks.min() >= 0 and ticks.max() <= MAX_TOT_TICKS
    assert abs(ticks.mean() / 20 - mean) < 0.05 * mean + 0.5


@pytest.mark.parametrize("text", ["normal:1", "gamma:1,2", "uniform:5,1", "fixed:x"])
def test_bad_tot_is_refused_by_name(text):
    with pytest.raises(EmulatorConfigError, match="tot"):
        TotDistribution.parse(text)


# -- configuration ----------------------------------------------------------------------------

def test_anomaly_specs():
    assert Anomalies.parse("split=0.1,truncated=0.05") == Anomalies(split=0.1, truncated=0.05)
    assert Anomalies.parse("split") == Anomalies(split=1.0)
    assert Anomalies.parse("all") == Anomalies(*(0.05,) * 5)
    assert Anomalies.parse("all=0.2,split=0") == Anomalies(0.2, 0.0, 0.2, 0.2, 0.2)
    assert Anomalies.parse("none").clean and Anomalies.parse("").clean
    assert Anomalies.parse(str(Anomalies(no_idle=0.5, ff_runs=1))) == \
        Anomalies(no_idle=0.5, ff_runs=1)


@pytest.mark.parametrize(("text", "message"), [
    ("split=2", "probability"), ("bogus=0.1", "unknown kind 'bogus'"),
    ("split=x", "not a probability")])
def test_bad_anomaly_specs_name_the_problem(text, message):
    with pytest.raises(EmulatorConfigError, match=message):
        Anomalies.parse(text)


def test_options_from_strings_and_their_errors():
    config = EmulatorConfig.from_strings({"mode": "poisson", "rate": "1e4", "chips": "3",
                                          "anomalies": "split=0.5", "read_size": "1024",
                                          "ts_neg1": "random", "ts_neg2": "1"})
    assert [c.chip_id for c in config.chips] == [0, 1, 2]
    assert config.mean_rate() == 3e4 and config.read_size == 1024
    assert config.chips[0].ts_neg1 is None and config.chips[0].ts_neg2 == 1
    with pytest.raises(EmulatorConfigError, match="unknown emulator option 'colour'"):
        EmulatorConfig.from_strings({"colour": "red"})
    with pytest.raises(EmulatorConfigError, match="rate='fast'"):
        EmulatorConfig.from_strings({"rate": "fast"})
    with pytest.raises(EmulatorConfigError, match="chip_id=31"):
        EmulatorConfig.build(chip_ids=[31])
    with pytest.raises(EmulatorConfigError, match="not distinct"):
        EmulatorConfig.build(chip_ids=[2, 2])
    with pytest.raises(EmulatorConfigError, match="read_size=16"):
        EmulatorConfig.build(read_size=16)
    with pytest.raises(ValueError, match="mode"):  # the config errors are ValueErrors
        EmulatorConfig.build(mode="cosmic")


# -- layout -----------------------------------------------------------------------------------

def test_clean_mode_is_the_real_runs_layout():
    run = Emulator(poisson(rate=50.0), seed=1).generate(readouts=40)
    for i in range(len(run)):
        data = run.readout(i).data()
        assert len(data) % 16 == 0
        for frame in range(0, len(data), 16):
            chunk = data[frame:frame + 16]
            assert chunk[:2] == b"\xbc\xbc" and chunk[10:] == b"\xbc" * 6
        read = run.read(i)
        assert len(read) == 2048 and read[len(data):] == b"\xff" * (2048 - len(data))
    assert np.all(run.generated["applied"] == 0)
    assert np.all(run.generated["fate"] == Fate.COMPLETE)


def test_every_anomaly_shows_up_when_forced():
    seen = 0
    for kind, flag in (("no_idle", Applied.NO_IDLE), ("split", Applied.SPLIT),
                       ("truncated", Applied.TRUNCATED), ("ff_runs", Applied.FF_RUN),
                       ("start_like", Applied.START_LIKE)):
        run = Emulator(poisson(anomalies=f"{kind}=1"), seed=2).generate(readouts=50)
        applied = run.generated["applied"]
        assert np.mean((applied & flag) != 0) > 0.3, kind
        seen |= int(np.bitwise_or.reduce(applied))
        assert np.array_equal(decode_readouts(run.readouts()).hits, run.truth), kind
    assert seen == 31


def test_forced_anomalies_leave_their_marks_in_the_bytes():
    ff = Emulator(poisson(anomalies="ff_runs=1"), seed=3).generate(readouts=5)
    assert b"\xbc\xff" in ff.readout(0).data()
    tight = Emulator(poisson(anomalies="no_idle=1"), seed=3).generate(readouts=5)
    data = tight.readout(0).data()
    assert data[:2] == b"\xbc\xbc" and 0xE0 <= data[10] <= 0xFE  # second hit right behind
    start = Emulator(poisson(anomalies="start_like=1"), seed=3).generate(readouts=5)
    words = [hit.word() for hit in decode_stream(start.readouts())]
    assert all(any(0xE0 <= b <= 0xFE for b in (w[4], w[7])) for w in words)


def test_truncated_hits_are_dropped_and_counted_by_the_decoder():
    run = Emulator(poisson(anomalies="truncated=1"), seed=4).generate(readouts=20)
    truncated = run.generated["fate"] == Fate.TRUNCATED
    assert truncated.sum() > 100
    assert np.all(run.generated["readout_id"][truncated] == -1)
    statuses = [r.decoding_status() for r in run.readouts()]
    assert all(s.code & (1 << 5) for s in statuses)  # INCOMPLETE_DATA_DROPPED
    assert len(run.truth) == int((~truncated & (run.generated["sent_in"] >= 0)).sum())


def test_split_hits_rejoin_first_in_the_next_readout():
    run = Emulator(poisson(anomalies="split=1"), seed=5).generate(readouts=30)
    gen = run.generated
    joined = gen["fate"] == Fate.SPLIT_JOINED
    assert joined.sum() > 20
    reported = joined & (gen["readout_id"] >= 0)
    assert np.all(gen["readout_id"][reported] == gen["sent_in"][reported] + 1)
    assert np.all(gen["decoding_order"][reported] == 0)
    # The readout before ends with the hit's first bytes, the readout after starts with the rest.
    firsts = run.truth[run.truth["decoding_order"] == 0]
    checked = 0
    for hit in firsts[firsts["readout_id"] > 0]:
        word = encode_hit(*(int(hit[name]) for name in (
            "chip_id", "payload", "row", "column", "ts_neg1", "ts_coarse1", "ts_fine1",
            "ts_tdc1", "ts_neg2", "ts_coarse2", "ts_fine2", "ts_tdc2")))
        before = run.readout(int(hit["readout_id"]) - 1).data()
        after = run.readout(int(hit["readout_id"])).data()
        k = next(k for k in range(1, 8) if before.endswith(word[:k]) and after.startswith(word[k:]))
        assert 0xE0 <= word[0] <= 0xFE and after[0] not in (0xBC, 0xFF)
        checked += k > 0
    assert checked > 20
    assert np.array_equal(decoded(run), run.truth)


def test_split_hits_that_cannot_rejoin_are_dropped():
    lost = 0
    for seed in range(6):
        run = Emulator(poisson(anomalies="split=1"), seed=seed).generate(readouts=400)
        bad = run.generated["fate"] == Fate.SPLIT_LOST
        lost += int(bad.sum())
        assert np.all(run.generated["readout_id"][bad] == -1)
        assert np.array_equal(decode_readouts(run.readouts()).hits, run.truth)
    assert lost > 0


def test_frames_never_exceed_the_read_size():
    config = poisson(rate=2e6, anomalies="no_idle=1,ff_runs=1", read_size=64)
    layout, _, _ = ChipStream(config, seed=6).next_layout()
    frames = np.diff(layout.frame_ends, prepend=0)
    assert frames.max() <= 64
    reads = cut_reads(layout, config.poll_interval_ns, 64)
    assert np.all(reads.ends - reads.starts <= 64)
    assert np.all(reads.starts[1:] == reads.ends[:-1])


def test_place_hits_reports_in_byte_order_and_skips_dropped_hits():
    config = poisson(rate=1e6, anomalies="all=0.3", read_size=128)
    layout, _, _ = ChipStream(config, seed=7).next_layout()
    reads = cut_reads(layout, config.poll_interval_ns, 128)
    placed = place_hits(layout, reads.ends)
    dropped = (layout.hit_fate == Fate.TRUNCATED) | (layout.hit_fate == Fate.SPLIT_LOST)
    assert np.all(placed.read[dropped] == -1)
    assert np.all(placed.read[~dropped] >= 0)
    for r in np.unique(placed.read[~dropped])[:50]:
        assert placed.order[placed.read == r].tolist() == list(range((placed.read == r).sum()))


# -- chains, determinism and streaming ----------------------------------------------------------

def test_daisy_chain_chips_share_one_stream_with_their_ids():
    config = poisson(rate=1e4, chip_ids=[3, 7, 30])
    run = Emulator(config, seed=8).generate(readouts=100)
    assert set(run.truth["chip_id"].tolist()) == {3, 7, 30}
    times = run.generated["time_ns"]
    assert np.all(np.diff(times) >= 0)
    assert np.array_equal(decoded(run), run.truth)


def test_same_seed_same_bytes_and_truth_other_seed_other_bytes():
    config = poisson(anomalies="all=0.1", chunk_hits=300)
    a = Emulator(config, seed=9).generate(readouts=200)
    b = Emulator(config, seed=9).generate(readouts=200)
    c = Emulator(config, seed=10).generate(readouts=200)
    assert a.serialized() == b.serialized() and np.array_equal(a.truth, b.truth)
    assert a.serialized() != c.serialized()


def test_a_longer_run_starts_with_the_shorter_one():
    config = poisson(anomalies="all=0.1", chunk_hits=300)
    short = Emulator(config, seed=11).generate(readouts=150)
    long = Emulator(config, seed=11).generate(readouts=400)
    assert long.serialized().startswith(short.serialized())
    # The short run's truth is the long run's minus a hit whose tail was not emitted yet.
    assert np.array_equal(long.truth[:len(short.truth)], short.truth)


def test_stream_yields_the_bulk_readouts_one_by_one():
    config = poisson(anomalies="all=0.1", chunk_hits=500)
    bulk = Emulator(config, seed=12).generate(readouts=120)
    items = list(Emulator(config, seed=12).stream(readouts=120))
    assert [item.readout for item in items] == bulk.readouts()
    assert np.array_equal(np.concatenate([item.truth for item in items]), bulk.truth)
    assert all(len(item.read) == 2048 for item in items)
    assert items[5].read == bulk.read(5)


def test_duration_bounds_the_readouts_by_poll_time():
    config = poisson(rate=1e4, poll_interval_ns=1_000_000)
    run = Emulator(config, seed=13).generate(duration=0.05)
    assert 40 <= len(run) <= 50  # one read per 1 ms poll holding data
    polls = (run.timestamps - config.start_ns) // config.poll_interval_ns
    assert polls.max() <= 50
    assert np.array_equal(decoded(run), run.truth)


def test_readout_timestamps_follow_the_polls():
    config = poisson(rate=1e3)
    run = Emulator(config, seed=14).generate(readouts=30)
    assert np.all(np.diff(run.timestamps.astype(np.int64)) >= 0)
    first_hit = run.generated["time_ns"][0]
    assert run.timestamps[0] - config.start_ns >= first_hit
    assert np.all(run.truth["timestamp"] == run.timestamps[run.truth["readout_id"]])


def test_serialized_readouts_parse_back_with_padding_stripped(tmp_path):
    from astropix_hil.fileio import apx_open, read_hits

    run = Emulator(poisson(anomalies="split=1"), seed=15).generate(readouts=50)
    path = tmp_path / "sim.apx"
    with apx_open(path, "wb", {"note": "test"}) as writer:
        run.write_apx(writer)
        assert writer.readouts_written == 50
    with apx_open(path) as reader:
        back = list(reader)
    assert back == run.readouts()
    assert all(not r.data().endswith(b"\xff") for r in back)
    assert np.array_equal(read_hits(path), run.truth)


def test_rate_zero_and_bad_limits_are_refused():
    with pytest.raises(EmulatorConfigError, match="rate 0"):
        Emulator(poisson(rate=0.0)).generate(readouts=1)
    assert len(Emulator(poisson(rate=0.0)).generate(duration=0.01)) == 0
    with pytest.raises(EmulatorConfigError, match="readouts=N or duration=S"):
        Emulator().generate()
    with pytest.raises(EmulatorConfigError, match="readouts=-1"):
        Emulator().generate(readouts=-1)
