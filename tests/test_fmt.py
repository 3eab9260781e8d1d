"""The readout format: hit fields, each decoder situation on hand-built readouts, serialization."""

from __future__ import annotations

import numpy as np
import pytest

from astropix_hil.astep_fmt import HIT_DTYPE as ASTEP_HIT_DTYPE
from astropix_hil.astep_fmt import AstepHit, AstepReadout
from astropix_hil.errors import BadReadoutHeaderError, LengthMismatchError, TruncatedError
from astropix_hil.fmt import (
    BIT_REVERSE,
    FIELD_SHIFTS,
    HIT_COLUMNS,
    HIT_FIELDS,
    AstroPix4Hit,
    AstroPix4Readout,
    Decoding,
    DecodingStatus,
    binary_to_gray,
    decode_readout,
    decode_stream,
    encode_hit,
    gray_to_binary,
    is_start_byte,
    iter_readouts,
)

# Hit words from the real run (readouts 0, 1 and the two back-to-back hits of readout 423).
W0 = bytes.fromhex("e0401eac0dccc200")
W1 = bytes.fromhex("e040b6a80fba1c02")
W423A = bytes.fromhex("e0404a2006e47477")  # holds a start-like byte (0xe4) as data
W423B = bytes.fromhex("e040ca4904e6a403")
IDLE = b"\xbc"
PAD = b"\xff"


def hit(chip_id=0, row=0, column=9, **ts) -> bytes:
    fields = dict(ts_neg1=0, ts_coarse1=0, ts_fine1=0, ts_tdc1=0, ts_neg2=0, ts_coarse2=0,
                  ts_fine2=0, ts_tdc2=0)
    fields.update(ts)
    return encode_hit(chip_id, 7, row, column, **fields)


def words(data: bytes, extra=None):
    return decode_readout(data, extra)


def flags(code: int) -> set[Decoding]:
    return set(DecodingStatus(code).flags())


def test_bit_reverse_table_reverses_each_byte():
    assert BIT_REVERSE[0b0000_0001] == 0b1000_0000
    assert BIT_REVERSE[0b1100_0000] == 0b0000_0011
    assert all(BIT_REVERSE[BIT_REVERSE[b]] == b for b in range(256))


def test_gray_code_round_trip_and_known_values():
    assert [binary_to_gray(v) for v in range(5)] == [0, 1, 3, 2, 6]
    assert all(gray_to_binary(binary_to_gray(v)) == v for v in range(0, 2**17, 97))


def test_field_layout_covers_64_bits_msb_first():
    assert sum(width for _, width in HIT_FIELDS) == 64
    assert FIELD_SHIFTS["chip_id"] == (59, 0x1F)
    assert FIELD_SHIFTS["ts_coarse1"] == (31, 0x3FFF)
    assert FIELD_SHIFTS["ts_tdc2"] == (0, 0x1F)


def test_start_bytes_are_111xxxxx_but_never_ff():
    starts = [b for b in range(256) if is_start_byte(b)]
    assert starts == list(range(0xE0, 0xFF))


def test_real_hit_fields_match_the_reference_csv_row():
    # Row 0 of the reference CSV: 0,7,0,...,0,9,1,12395,3,0,0,13123,0,0,66157,70639,224.1
    h = AstroPix4Hit(W0, readout_id=0, timestamp=1753255536707629800)
    assert (h.chip_id, h.payload, h.row, h.column) == (0, 7, 0, 9)
    assert (h.ts_neg1, h.ts_coarse1, h.ts_fine1, h.ts_tdc1) == (1, 12395, 3, 0)
    assert (h.ts_neg2, h.ts_coarse2, h.ts_fine2, h.ts_tdc2) == (0, 13123, 0, 0)
    assert (h.ts_dec1, h.ts_dec2, h.tot_us) == (66157, 70639, 224.1)
    assert h.values()[:5] == (0, 7, 0, 1753255536707629800, 0)
    assert list(h.as_dict()) == list(HIT_COLUMNS)


def test_timestamp_rollover_unwraps_ts_dec2():
    late = binary_to_gray(2**17 - 10)
    early = binary_to_gray(30)
    h = AstroPix4Hit(hit(ts_coarse1=late >> 3, ts_fine1=late & 7,
                         ts_coarse2=early >> 3, ts_fine2=early & 7))
    assert h.ts_dec1 == 2**17 - 10
    assert h.ts_dec2 == 2**17 + 30
    assert h.tot_us == 40 / 20


def test_encode_hit_is_the_inverse_of_decoding():
    h = AstroPix4Hit(W423A)
    raw = {name: getattr(h, name) for name, _ in HIT_FIELDS}
    assert encode_hit(**raw) == W423A


def test_encode_hit_rejects_a_field_too_wide():
    with pytest.raises(ValueError, match="row=32"):
        encode_hit(0, 7, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0)


def test_lone_hit_between_idle_bytes():
    result = words(IDLE * 2 + W0 + IDLE * 6)
    assert result.words == [W0]
    assert result.status == 0
    assert result.extra_bytes is None


def test_two_hits_back_to_back_with_a_start_like_byte_inside_the_first():
    result = words(IDLE * 2 + W423A + W423B + IDLE * 6)
    assert result.words == [W423A, W423B]
    assert result.status == 0


def test_start_like_byte_inside_a_hit_kept_when_the_next_word_starts_well():
    inner = hit(row=7, column=31)  # bytes with start-like patterns inside
    assert any(is_start_byte(b) for b in inner[1:])
    result = words(IDLE + inner + IDLE * 3 + W0 + IDLE)
    assert result.words == [inner, W0]
    assert result.status == 0


def test_truncated_hit_followed_directly_by_the_next_start_byte_is_dropped():
    truncated = W0[:4]
    result = words(IDLE * 2 + truncated + W1 + IDLE * 6)
    assert result.words == [W1]
    assert flags(result.status) == {Decoding.INCOMPLETE_DATA_DROPPED}


def test_hit_split_across_two_readouts_is_rejoined_in_the_second():
    first = AstroPix4Readout(IDLE * 2 + W0 + IDLE * 2 + W1[:3], 0, 10)
    second = AstroPix4Readout(W1[3:] + IDLE * 4, 1, 20)
    hits = list(decode_stream([first, second]))
    assert [h.word() for h in hits] == [W0, W1]
    assert first.extra_bytes() == W1[:3]
    assert first.decoding_status()[Decoding.VALID_EXTRA_BYTES] == 1
    assert second.decoding_status()[Decoding.ORPHAN_BYTES_MATCHED] == 1
    assert (hits[1].readout_id, hits[1].timestamp, hits[1].decoding_order) == (1, 20, 0)


def test_orphan_bytes_without_extra_bytes_are_not_used():
    result = words(W1[3:] + IDLE * 2 + W0 + IDLE * 2)
    assert result.words == [W0]
    assert flags(result.status) == {Decoding.ORPHAN_BYTES_NOT_USED}


def test_orphan_bytes_that_do_not_add_up_to_a_hit_are_dropped():
    result = words(W1[4:] + IDLE * 2 + W0 + IDLE * 2, extra=W1[:3])
    assert result.words == [W0]
    assert flags(result.status) == {Decoding.ORPHAN_BYTES_DROPPED}


def test_orphan_bytes_lose_their_trailing_idle_bytes():
    result = words(W1[5:] + IDLE * 3 + W0 + IDLE, extra=W1[:5])
    assert result.words == [W1, W0]
    assert flags(result.status) == {Decoding.ORPHAN_BYTES_MATCHED}


def test_padding_runs_interleaved_with_idle_bytes_are_skipped():
    data = IDLE + PAD * 3 + IDLE + W423A + IDLE + PAD * 5 + IDLE * 2 + W0 + IDLE + PAD + IDLE
    result = words(data)
    assert result.words == [W423A, W0]
    assert result.status == 0


def test_partial_word_without_a_start_byte_at_the_end_is_invalid_extra():
    result = words(IDLE * 2 + W0 + IDLE * 2 + b"\x12\x34")
    assert result.words == [W0]
    assert result.extra_bytes is None
    assert flags(result.status) == {Decoding.INVALID_EXTRA_BYTES}


def test_a_word_reaching_the_last_byte_is_kept_as_extra_bytes_like_the_reference():
    result = words(IDLE * 2 + W0)
    assert result.words == []
    assert result.extra_bytes == W0
    assert flags(result.status) == {Decoding.VALID_EXTRA_BYTES}


def test_a_byte_that_cannot_start_a_hit_stops_decoding():
    result = words(IDLE * 2 + W0 + IDLE + b"\x12" + IDLE * 10 + W1 + IDLE)
    assert result.words == [W0]
    assert flags(result.status) == {Decoding.NOT_ALL_BYTES_VISITED}


@pytest.mark.parametrize("data", [b"", IDLE * 7, PAD * 3, IDLE + PAD + IDLE])
def test_readouts_without_hits_decode_to_nothing(data):
    result = words(data)
    assert result == ([], None, 0)


def test_readout_strips_trailing_padding_and_keeps_its_fields():
    readout = AstroPix4Readout(bytearray(IDLE * 2 + W0 + IDLE * 6 + PAD * 2032), 5, 123)
    assert readout.data() == IDLE * 2 + W0 + IDLE * 6
    assert (readout.readout_id, readout.timestamp) == (5, 123)
    assert readout.hits()[0].word() == W0
    assert not readout.decoding_status()


def test_readout_timestamp_defaults_to_now(monkeypatch):
    monkeypatch.setattr("time.time_ns", lambda: 42)
    assert AstroPix4Readout(W0, 0).timestamp == 42


def test_serialized_readout_layout_and_round_trip():
    readout = AstroPix4Readout(IDLE * 2 + W0 + IDLE * 6, 0x01020304, 0x1122334455667788)
    raw = readout.to_bytes()
    assert raw[:3] == b"\xfe\xdc\xba"
    assert raw[3:7] == bytes([4, 3, 2, 1])
    assert raw[7:15] == bytes.fromhex("8877665544332211")
    assert raw[15:19] == (16).to_bytes(4, "little")
    assert raw[19:] == readout.data()
    assert AstroPix4Readout.from_bytes(raw) == readout
    assert AstroPix4Readout.from_bytes(raw).to_bytes() == raw


def test_parsed_readout_keeps_foreign_padding_so_reserializing_is_exact():
    raw = AstroPix4Readout(W0 + IDLE, 1, 2).to_bytes()
    raw = raw[:15] + (10).to_bytes(4, "little") + raw[19:] + PAD
    readout = AstroPix4Readout.from_bytes(raw)
    assert readout.to_bytes() == raw
    assert readout.hits()[0].word() == W0


def test_from_bytes_names_each_problem():
    raw = AstroPix4Readout(W0, 1, 2).to_bytes()
    with pytest.raises(BadReadoutHeaderError, match="not fedcba"):
        AstroPix4Readout.from_bytes(b"\x00" + raw[1:])
    with pytest.raises(TruncatedError, match="declares 8 data bytes, only 7"):
        AstroPix4Readout.from_bytes(raw[:-1])
    with pytest.raises(TruncatedError, match="header cut short"):
        AstroPix4Readout.from_bytes(raw[:10])
    with pytest.raises(LengthMismatchError, match="declares 8 data bytes but 9 follow"):
        AstroPix4Readout.from_bytes(raw + b"\x00")


def test_iter_readouts_reads_back_to_back_readouts():
    readouts = [AstroPix4Readout(W0 * i, i, i) for i in range(4)]
    raw = b"".join(r.to_bytes() for r in readouts)
    assert list(iter_readouts(raw)) == readouts


def test_decoding_status_reports_its_flags():
    status = DecodingStatus()
    assert not status
    status.set(Decoding.VALID_EXTRA_BYTES)
    assert status[Decoding.VALID_EXTRA_BYTES] == 1
    assert status[Decoding.ORPHAN_BYTES_MATCHED] == 0
    assert status.code == 8
    assert "VALID_EXTRA_BYTES" in repr(status)


def test_real_run_decodes_exactly_as_the_reference_csv(real_apx, real_csv):
    raw = real_apx.read_bytes()
    header_length = int.from_bytes(raw[6:10], "little")
    hits = list(decode_stream(iter_readouts(raw, 10 + header_length)))
    expected = real_csv.read_text().splitlines()[2:]
    rows = [",".join(map(str, h.values())) for h in hits]
    assert len(rows) == 776
    assert rows == expected


def test_hits_compare_by_value_within_their_kind_only():
    readout = AstroPix4Readout(bytes.fromhex("bcbce050fecd067cc500bcbc"), 1, 2)
    hit = readout.decode()[0]
    same = AstroPix4Readout(bytes.fromhex("bcbce050fecd067cc500bcbc"), 1, 2).decode()[0]
    other = AstroPix4Readout(bytes.fromhex("bcbce050fecd067cc500bcbc"), 7, 2).decode()[0]
    assert hit == same and hash(hit) == hash(same) and hit != other
    assert hit.as_dict()["readout_id"] == 1 and list(hit.as_dict()) == list(HIT_COLUMNS)
    assert repr(hit).startswith("AstroPix4Hit(chip_id=0, payload=7, readout_id=1,")
    astep = AstepHit(np.zeros(1, dtype=ASTEP_HIT_DTYPE)[0])
    assert astep == AstepHit(np.zeros(1, dtype=ASTEP_HIT_DTYPE)[0])
    assert astep != hit and hit != astep  # another kind of hit, whatever its values
    assert hit.__eq__(astep) is NotImplemented
    assert repr(astep).startswith("AstepHit(readout_id=0, timestamp=0, decoding_order=0,")


def test_readouts_compare_by_bytes_id_and_timestamp_within_their_kind_only():
    data = bytes.fromhex("bcbce050fecd067cc500bcbc")
    readout = AstroPix4Readout(data, 1, 2)
    assert readout == AstroPix4Readout(data, 1, 2) and hash(readout) == hash(
        AstroPix4Readout(data, 1, 2))
    assert readout != AstroPix4Readout(data, 1, 3) and readout != AstroPix4Readout(data, 2, 2)
    astep = AstepReadout(data, 1, 2)
    assert astep.to_bytes() == readout.to_bytes()  # one serialization for every kind
    assert astep != readout and readout != astep  # but another kind of readout
    assert repr(astep) == "AstepReadout(12 bytes, readout_id=1, timestamp=2)"
    assert repr(readout) == "AstroPix4Readout(12 bytes, readout_id=1, timestamp=2)"
