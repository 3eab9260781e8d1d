"""Chip configuration: YAML loading, edits, golden bit streams of the spec, the round trip."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astropix_hil.chipconfig import (
    ChipConfigError,
    ChipConfiguration,
    Field,
    PatternGenerator,
    config_request,
    decode_main_vector,
    from_mapping,
    load_bundled,
    load_config,
    main_vector,
    tdac_request,
    tdac_row_vector,
    to_mapping,
    voltage_request,
)
from astropix_hil.chipconfig.patgen import START_WRITES, as_requests, configure_writes
from astropix_hil.chipconfig.streams import vb_codes, vb_vector
from astropix_hil.chipconfig.vector import bit_string, decode_tdac_row
from astropix_hil.yamlfile import YamlFileError

REAL_CONFIG = "config_v4_none_20250723_092534.yml"


def sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


@pytest.fixture
def none() -> ChipConfiguration:
    return load_bundled("config_v4_none.yml")


def test_main_vector_of_config_v4_none_is_the_spec_golden_value(none):
    s = bit_string(main_vector(none))
    assert len(s) == 852
    assert s.startswith("0111111111111111111111111111111111110001")
    assert s.endswith("11111000000000000000")
    assert sha(s) == "02602c05ee62b2fb428480d42e5a1a748a8d462b9cc0470c98e4b63b7ad236fc"


def test_register_0_request_after_ampout_col0_is_the_spec_golden_value(none):
    none.enable_ampout(0)
    request = config_request(none)
    assert request[:4] == bytes.fromhex("01008610") and len(request) == 34324
    assert sha(request) == "73308a8775bdffb1a8202ea82f6228c35464bc083603ecc3b2eb2d484bcaa782"


def test_tdac_row0_request_is_the_spec_golden_value(none):
    request = tdac_request(none, 0)
    assert request[:4] == bytes.fromhex("01000d70") and len(request) == 3444
    assert sha(request) == "bf6f7f365fb12afd179dfede25ea3c04971917a22a35e6bd6087d6f41fe35920"


def test_voltage_card_request_is_the_spec_golden_value(none):
    card = none.voltage_card
    assert vb_codes(card.dacs)[::-1] == [7362, 4908, 0, 0, 6135, 6748, 0, 0]
    assert int(bit_string(vb_vector(card.dacs, card.slot)), 2) == \
        0x73084cb0000000005fdc69700000000010
    request = voltage_request(none)
    assert request[:4] == bytes.fromhex("010c0d60") and len(request) == 3428
    assert sha(request) == "c12d9f69d8a72099ded398ad66bcd87d2297a74c8e3af8ae95860e990f936cbf"


def test_threshold_sets_dac7_above_the_baseline_with_the_spec_codes(none):
    for mv, code in ((25, 6288), (50, 6442), (100, 6748), (200, 7362)):
        none.set_threshold(mv)
        assert vb_codes(none.voltage_card.dacs)[7] == code
        assert none.threshold_mv == pytest.approx(mv)
    with pytest.raises(ChipConfigError, match="outside"):
        none.set_threshold(900)


def test_pattern_generator_stream_and_timing_match_the_spec():
    stream = as_requests(configure_writes(PatternGenerator()))
    assert len(stream) == 345
    assert stream.startswith(bytes.fromhex(
        "01 05 00 01 02 01 06 00 01 00 01 07 00 01 01 01 04 00 01 01 01 04 00 01 00"))
    assert stream.endswith(bytes.fromhex(
        "01 06 00 01 07 01 07 00 01 01 01 04 00 01 01 01 04 00 01 00"))
    assert as_requests(START_WRITES) == bytes.fromhex(
        "0103000101 0102000101 0102000100 0103000100")
    gen = PatternGenerator()
    assert gen.tick_ns == 3010 and gen.set_ticks == 25702  # 77.36 ms, 12.93 Hz
    edges = gen.rising_edges_ns(0, 3 * gen.period_ns)
    assert edges == [101 * 3010 + k * 25702 * 3010 for k in range(3)]
    burst = PatternGenerator(period=1, clkdiv=0, initdelay=9, pulses=3, cycle=2)
    # sets of 3 pulses, rising edges 2 * 257 ticks apart, 2 sets only
    assert burst.rising_edges_ns(0, 10**9) == [
        10 * 10 + k * burst.period_ns + p * 514 * 10 for k in range(2) for p in range(3)]
    assert abs(PatternGenerator.for_period(10).period_ns - 10e6) < 10e6 * 0.003


def test_edits_set_the_bits_the_team_helpers_set(none):
    assert not any(none.comparator_enabled(r, c) for r in range(13) for c in range(16))
    none.enable_pixel(5, 3)
    assert none.comparator_enabled(5, 3)
    assert none.columns[3] == 0x0FFFFFFFFE & ~(1 << 6)
    none.enable_injection(2, 7)
    assert none.columns[7] >> 36 & 1 and none.columns[2] & 1
    assert none.injection_enabled(2, 7) and not none.injection_enabled(3, 7)
    none.enable_ampout(4)
    assert [c >> 37 & 1 for c in none.columns] == [int(c == 4) for c in range(16)]
    none.set_injection_amplitude(300)
    assert none.vdacs["vinj"] == 170
    with pytest.raises(ChipConfigError, match="outside"):
        none.enable_pixel(40, 0)


def test_the_real_runs_file_loads_with_its_pixel_and_injection(realdata):
    config = load_config(realdata / REAL_CONFIG)
    assert config.nbits == 852
    enabled = [(r, c) for r in range(13) for c in range(16) if config.comparator_enabled(r, c)]
    injected = [(r, c) for r in range(13) for c in range(16) if config.injection_enabled(r, c)]
    assert enabled == injected == [(0, 9)]
    assert config.vdacs["vinj"] == 142
    # No card and no TDAC rows in that file: the team's fallbacks.
    assert config.voltage_card.slot == 4 and len(config.tdac_rows) == 13


def test_mapping_round_trip_keeps_every_field(none):
    none.enable_pixel(1, 1)
    back = from_mapping(to_mapping(none))
    assert back == none


@pytest.mark.parametrize("content, message", [
    ({}, "astropix4"),
    ({"astropix4": {"config": {"g": {"f": [3, 9]}}}}, "does not fit in 3 bits"),
    ({"astropix4": {"config": {"g": {"f": "x"}}}}, r"\[width, value\]"),
    ({"astropix4": {"config": {"g": {"f": [1, 0]}}, "tdac_config": {"row0": [8, 1]}}},
     "80 bits"),
])
def test_bad_files_are_named(content, message):
    with pytest.raises(ChipConfigError, match=message):
        from_mapping(content)


def test_unreadable_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("astropix4: [\n")
    with pytest.raises(YamlFileError, match="not valid YAML"):
        load_config(bad)


@st.composite
def configurations(draw) -> ChipConfiguration:
    """Random configurations with the v4 layout: every field any value it can hold."""
    config = load_bundled("config_v4_none.yml")
    for group, fields in config.groups.items():
        for name, f in fields.items():
            config.set(group, name, draw(st.integers(0, (1 << f.width) - 1)))
    return config


@settings(max_examples=60, deadline=None)
@given(configurations())
def test_decoding_the_main_vector_gives_back_the_configuration(config):
    stream = main_vector(config)
    template = load_bundled("config_v4_none.yml")
    assert decode_main_vector(stream, template) == config


@settings(max_examples=60, deadline=None)
@given(st.integers(0, (1 << 80) - 1))
def test_tdac_rows_round_trip(image):
    assert decode_tdac_row(tdac_row_vector(image)) == image


def test_vector_positions_follow_the_spec_closed_forms(none):
    # column c, bit b -> shift index 38 (15 - c) + b; vdac bit j -> N - 1 - o - j
    none.enable_pixel(4, 2)  # column 2 bit 5 cleared
    s = main_vector(none)
    assert s[38 * 13 + 5] == 0 and s[38 * 13 + 6] == 1
    none.set("vdacs", "vinj", 1)  # vinj: vector offset 234, bit 0 -> 851 - 234 = 617
    assert main_vector(none)[617] == 1 and np.count_nonzero(main_vector(none)[608:618]) == 1


@st.composite
def layouts_and_values(draw) -> ChipConfiguration:
    """Any layout: groups (``vdacs`` among them or not) of fields of any width and value."""
    names = draw(st.lists(st.sampled_from(["digitalconfig", "biasconfig", "idacs", "vdacs",
                                           "recconfig", "extra"]), min_size=1, max_size=6,
                          unique=True))
    groups = {}
    for g in names:
        widths = draw(st.lists(st.integers(1, 40), min_size=1, max_size=8))
        groups[g] = {f"f{i}": Field(w, draw(st.integers(0, (1 << w) - 1)))
                     for i, w in enumerate(widths)}
    return ChipConfiguration(groups)


@settings(max_examples=100, deadline=None)
@given(layouts_and_values())
def test_round_trip_over_any_layout(config):
    template = config.copy()
    for fields in template.groups.values():
        for name, f in fields.items():
            fields[name] = Field(f.width, 0)
    assert decode_main_vector(main_vector(config), template) == config
