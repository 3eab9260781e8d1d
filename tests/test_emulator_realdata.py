"""The emulator against the real AstroPix4 run: byte accuracy of every hit, and readouts laid
out as the real ones."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from astropix_hil.emulator import Emulator, EmulatorConfig, encode_hit
from astropix_hil.fileio import apx_open, read_hits
from astropix_hil.fmt import HIT_FIELDS, IDLE_BYTE, PADDING_BYTE
from astropix_hil.hitcsv import read_hits_csv

FIELD_NAMES = [name for name, _ in HIT_FIELDS]


@pytest.fixture(scope="module")
def real_readouts(real_apx):
    with apx_open(real_apx) as reader:
        return list(reader)


def words_and_layout(data: bytes) -> tuple[list[bytes], str]:
    """The hit words of a well-formed readout and its byte-class layout: one letter per idle
    (I) or padding (P) byte, H per 8-byte hit word."""
    words, layout, i = [], [], 0
    while i < len(data):
        if data[i] == IDLE_BYTE:
            layout.append("I")
            i += 1
        elif data[i] == PADDING_BYTE:
            layout.append("P")
            i += 1
        else:
            words.append(data[i:i + 8])
            layout.append("H")
            i += 8
    return words, "".join(layout)


def test_encode_hit_gives_the_bytes_of_every_real_hit(real_readouts, real_csv):
    # Fields from the AstroPix team's reference decoder, bytes from the board.
    _, reference = read_hits_csv(real_csv)
    by_readout = {r.readout_id: words_and_layout(r.data())[0] for r in real_readouts}
    assert len(reference) == 776
    for hit in reference:
        fields = [int(hit[name]) for name in FIELD_NAMES]
        stood = by_readout[int(hit["readout_id"])][int(hit["decoding_order"])]
        assert encode_hit(*fields) == stood


def test_clean_injection_mode_lays_out_readouts_as_the_real_run(real_readouts):
    real = Counter(words_and_layout(r.data())[1] for r in real_readouts)
    assert real == {"IIHIIIIII": 774, "IIHHIIIIII": 1}
    run = Emulator(EmulatorConfig.build(mode="injection"), seed=1).generate(
        readouts=len(real_readouts))
    emulated = Counter(words_and_layout(r.data())[1] for r in run.readouts())
    assert emulated == {"IIHIIIIII": len(real_readouts)}
    assert [len(r.data()) for r in run.readouts()] == [16] * len(real_readouts)
    assert all(run.read(i).endswith(b"\xff" * 2032) for i in range(len(run)))


def test_back_to_back_anomaly_makes_the_real_runs_double_hit_layout():
    run = Emulator(EmulatorConfig.build(mode="injection", rate=20_000, anomalies="no_idle=0.5"),
                   seed=2).generate(readouts=50)
    layouts = {words_and_layout(r.data())[1] for r in run.readouts()}
    assert any("IIHHIIIIII" in layout for layout in layouts)


def test_injection_mode_timing_and_fields_match_the_real_run(real_apx):
    real = read_hits(real_apx)
    run = Emulator(EmulatorConfig.build(mode="injection"), seed=3).generate(readouts=200)
    hits = run.truth
    assert set(hits["row"].tolist()) == {0} and set(hits["column"].tolist()) == {9}
    assert set(hits["payload"].tolist()) == {7} and set(hits["chip_id"].tolist()) == {0}
    assert set(hits["ts_neg1"].tolist()) == {0, 1} and set(hits["ts_neg2"].tolist()) == {0, 1}
    # Consecutive pulses advance the 17-bit counter by the same step as in the real run.
    step = np.diff(hits["ts_dec1"].astype(np.int64)) % (1 << 17)
    real_step = np.diff(real["ts_dec1"].astype(np.int64)) % (1 << 17)
    assert abs(np.median(step) - np.median(real_step)) <= 2
    assert abs(np.median(hits["tot_us"]) - np.median(real["tot_us"])) < 10
    spacing = np.diff(run.timestamps.astype(np.int64)) / 1e6
    assert np.all(np.abs(spacing - 77.36) < 1.1)
