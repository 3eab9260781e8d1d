"""The datagram format on hand-built cases: the byte table, batching and timers, every malformed
reason, reordering policy, fragments, heartbeats, legacy datagrams, keys."""

from __future__ import annotations

import json
import struct

import pytest

from astropix_hil.errors import DatagramError, FormatError, KeyFileError
from astropix_hil.fmt import AstroPix4Readout
from astropix_hil.framing import (
    DEFAULT_MAX_DATAGRAM,
    END_HEARTBEATS,
    HEADER,
    MAC_SIZE,
    MALFORMED_REASONS,
    Flag,
    FrameDecoder,
    FrameEncoder,
    Kind,
    TransportKey,
    check_data_payloads,
    encode_datagram,
    heartbeat_payload,
    legacy_datagrams,
    load_key,
    parse_datagram,
    split_readouts,
)

SRC = ("198.18.0.1", 5000)
KEY = TransportKey.from_secret(b"a shared secret of 32 bytes.....")


def ro(i: int, size: int = 16) -> AstroPix4Readout:
    return AstroPix4Readout._parsed(bytes([0xBC]) * size, i, 1_700_000_000_000_000_000 + i)


def decoded(dec: FrameDecoder) -> list[AstroPix4Readout]:
    return [r for batch in dec.take() for r in batch.readouts()]


def test_header_is_52_bytes_at_fixed_offsets():
    raw = encode_datagram(Kind.DATA, 0x1122334455667788, 7, 42, ro(0).to_bytes(), age_ms=1234,
                          count=1)
    assert HEADER.size == 52
    assert raw[:4] == b"APXM" and raw[4] == 1 and raw[5] == Kind.DATA and raw[6] == 0
    assert struct.unpack_from("<QQQIHHHHII", raw, 8) == (
        0x1122334455667788, 7, 42, 1234, 4000, 1, 0, 0, 0, 35)
    assert raw[52:] == ro(0).to_bytes()


def test_a_batch_fills_a_1500_byte_mtu_and_no_more():
    enc = FrameEncoder(now=0.0)
    out = []
    for i in range(1000):
        out += enc.add(ro(i).to_bytes(), 0.0)
    out += enc.flush(0.0)
    assert all(len(d) <= DEFAULT_MAX_DATAGRAM for d in out)
    assert len(out) == 25  # 40 readouts of 35 bytes per datagram
    assert parse_datagram(out[0]).count == 40


def test_an_open_batch_is_flushed_after_the_flush_delay():
    enc = FrameEncoder(now=0.0, flush_delay=0.01)
    enc.poll(0.0)  # opening heartbeat
    assert enc.add(ro(0).to_bytes(), 0.5) == []
    assert enc.next_deadline() == pytest.approx(0.51)
    assert enc.poll(0.505) == []
    (datagram,) = enc.poll(0.51)
    assert parse_datagram(datagram).count == 1
    assert enc.next_deadline() == pytest.approx(1.0)  # next heartbeat: 1 s after the first


def test_heartbeats_come_every_interval_also_when_idle_and_carry_the_header():
    enc = FrameEncoder(now=0.0, heartbeat_interval=1.0, header={"run": 3})
    beats = [parse_datagram(d) for t in (0.0, 0.5, 1.0, 1.7, 2.0) for d in enc.poll(t)]
    assert [b.kind for b in beats] == [Kind.HEARTBEAT] * 3
    assert [b.seq for b in beats] == [0, 1, 2]
    assert all(b.last_seq == b.seq and b.header == {"run": 3} for b in beats)
    assert beats[0].interval == 1.0


def test_a_heartbeat_flushes_the_open_batch_first():
    enc = FrameEncoder(now=0.0)
    enc.poll(0.0)
    enc.add(ro(0).to_bytes(), 0.1)
    data, beat = (parse_datagram(d) for d in enc.heartbeat(0.2))
    assert data.kind == Kind.DATA and beat.kind == Kind.HEARTBEAT
    assert beat.readout_seq == 1


def test_close_sends_end_heartbeats_that_all_name_the_last_sequence_number():
    enc = FrameEncoder(now=0.0)
    enc.add(ro(0).to_bytes(), 0.0)
    out = [parse_datagram(d) for d in enc.close(0.0)]
    assert out[0].kind == Kind.DATA
    ends = out[1:]
    assert len(ends) == END_HEARTBEATS
    assert all(e.flags & Flag.END and e.last_seq == ends[-1].seq for e in ends)
    with pytest.raises(ValueError, match="ended"):
        enc.add(ro(1).to_bytes(), 0.0)


def test_a_stream_whose_end_heartbeats_are_still_arriving_is_awaited():
    """A receiver that stops of its own accord right after the first END heartbeat would count
    the others, still in flight, as lost: ``awaiting_end`` tells it to read on."""
    enc = FrameEncoder(now=0.0)
    out = enc.add(ro(0).to_bytes(), 0.0) + enc.close(0.0)
    dec = FrameDecoder(now=-1.0)
    assert not dec.awaiting_end()
    for d in out[:2]:  # the data and the first END heartbeat
        dec.feed(d, SRC, 0.0)
    assert dec.awaiting_end()
    for d in out[2:]:
        dec.feed(d, SRC, 0.0)
    assert not dec.awaiting_end()
    dec.finish(0.0)
    (s,) = dec.stats.streams.values()
    assert s.datagrams_lost == 0
    # Had it stopped after the first END heartbeat, the rest would have been counted lost.
    early = FrameDecoder(now=-1.0)
    for d in out[:2]:
        early.feed(d, SRC, 0.0)
    early.finish(0.0)
    (s,) = early.stats.streams.values()
    assert s.datagrams_lost == END_HEARTBEATS - 1


def test_add_many_packs_exactly_like_add_one_by_one():
    readouts = [ro(i, size) for i, size in enumerate([16, 0, 3000, 40, 16, 1500, 7] * 5)]
    one, many = FrameEncoder(now=0.0, stream_id=5), FrameEncoder(now=0.0, stream_id=5)
    a = [d for r in readouts for d in one.add(r.to_bytes(), 0.0)] + one.flush(0.0)
    b = many.add_many(b"".join(r.to_bytes() for r in readouts), 0.0) + many.flush(0.0)
    assert a == b


def test_send_data_that_is_not_whole_readouts_is_refused_with_its_offset():
    enc = FrameEncoder(now=0.0)
    with pytest.raises(FormatError, match="byte offset 35"):
        enc.add_many(ro(0).to_bytes() + b"\x00" * 20, 0.0)
    with pytest.raises(FormatError):
        split_readouts(ro(0).to_bytes()[:-1])


def test_fragments_reassemble_and_a_missing_one_loses_only_that_readout():
    enc = FrameEncoder(now=0.0, max_datagram=200)
    big = ro(1, 1000)
    out = enc.add(ro(0).to_bytes(), 0.0) + enc.add(big.to_bytes(), 0.0)
    out += enc.add(ro(2).to_bytes(), 0.0) + enc.close(0.0)
    frags = [d for d in out if parse_datagram(d).kind == Kind.FRAGMENT]
    assert len(frags) == 7
    dec = FrameDecoder(now=-1.0)
    for d in out:
        dec.feed(d, SRC, 0.0)
    assert decoded(dec) == [ro(0), big, ro(2)]
    dec = FrameDecoder(now=-1.0)
    for d in out:
        if d is not frags[3]:
            dec.feed(d, SRC, 0.0)
    dec.finish(1.0)
    assert decoded(dec) == [ro(0), ro(2)]
    (s,) = dec.stats.streams.values()
    assert (s.readouts_lost, s.fragments_incomplete, s.datagrams_lost) == (1, 1, 1)


def test_a_readout_whose_fragments_stop_coming_expires():
    enc = FrameEncoder(now=0.0, max_datagram=200)
    out = enc.add(ro(0, 1000).to_bytes(), 0.0)
    dec = FrameDecoder(now=-1.0, fragment_timeout=0.5)
    for d in out[:3]:
        dec.feed(d, SRC, 0.0)
    assert dec.next_deadline() == pytest.approx(0.5)
    dec.poll(0.4)
    assert dec.stats.totals()["fragments_incomplete"] == 0
    dec.poll(0.5)
    totals = dec.stats.totals()
    assert totals["fragments_incomplete"] == totals["readouts_lost"] == 1
    for d in out[3:]:  # the rest, after all: ignored, nothing delivered
        dec.feed(d, SRC, 0.6)
    assert decoded(dec) == []


def test_a_gap_is_held_back_then_given_up_and_a_late_datagram_dropped():
    enc = FrameEncoder(now=0.0, max_datagram=100)  # one readout per datagram
    out = [d for i in range(5) for d in enc.add(ro(i).to_bytes(), 0.0)]
    dec = FrameDecoder(now=-1.0, reorder_timeout=0.05)
    dec.feed(out[0], SRC, 0.0)
    dec.feed(out[2], SRC, 0.01)  # out[1] missing: out[2] is held
    assert decoded(dec) == [ro(0)]
    assert dec.next_deadline() == pytest.approx(0.06)
    dec.feed(out[1], SRC, 0.02)  # arrives in time: reordered, delivered in order
    assert decoded(dec) == [ro(1), ro(2)]
    dec.feed(out[4], SRC, 0.03)  # out[3] missing
    dec.poll(0.08)
    assert decoded(dec) == [ro(4)]
    dec.feed(out[3], SRC, 0.09)  # too late
    dec.feed(out[0], SRC, 0.09)  # a duplicate
    s = dec.stats.totals()
    assert (s["reordered"], s["datagrams_lost"], s["readouts_lost"], s["late"],
            s["duplicates"]) == (1, 1, 1, 1, 1)
    assert decoded(dec) == []


def test_the_window_gives_up_a_gap_when_too_much_is_held():
    enc = FrameEncoder(now=0.0, max_datagram=100)
    out = [d for i in range(10) for d in enc.add(ro(i).to_bytes(), 0.0)]
    dec = FrameDecoder(now=-1.0, reorder_window=3, reorder_timeout=100)
    for d in out[1:4]:
        dec.feed(d, SRC, 0.0)
    assert decoded(dec) == []
    dec.feed(out[4], SRC, 0.0)  # a fourth held datagram: out[0] is given up
    assert [r.readout_id for r in decoded(dec)] == [1, 2, 3, 4]
    assert dec.stats.totals()["datagrams_lost"] == 1


def test_a_tail_loss_is_noticed_from_the_next_heartbeat():
    enc = FrameEncoder(now=0.0, max_datagram=100)
    out = enc.poll(0.0) + [d for i in range(3) for d in enc.add(ro(i).to_bytes(), 0.0)]
    out += enc.flush(0.0)
    beat = enc.poll(1.0)
    dec = FrameDecoder(now=-1.0)
    for d in out[:2] + beat:  # the last two data datagrams are lost
        dec.feed(d, SRC, 1.0)
    dec.poll(1.1)
    s = dec.stats.totals()
    assert (s["datagrams_lost"], s["readouts_lost"]) == (2, 2)


def test_end_heartbeat_settles_the_tail_when_the_others_are_lost():
    enc = FrameEncoder(now=0.0)
    out = enc.poll(0.0) + enc.close(0.0)
    dec = FrameDecoder(now=-1.0)
    dec.feed(out[0], SRC, 0.0)
    dec.feed(out[1], SRC, 0.0)  # first END heartbeat only
    dec.finish(0.1)
    (s,) = dec.stats.streams.values()
    assert s.ended and s.datagrams_lost == END_HEARTBEATS - 1


def _reasons(dec: FrameDecoder) -> dict[str, int]:
    return {k: v for k, v in dec.stats.malformed.items() if v}


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda d: b"XPXM" + d[4:], "bad_magic"),
    (lambda d: d[:4] + b"\x02" + d[5:], "bad_version"),
    (lambda d: d[:-1], "truncated"),
    (lambda d: d[:20], "truncated"),
    (lambda d: d + b"\x00", "length_mismatch"),
    (lambda d: d[:5] + b"\x09" + d[6:], "unknown_kind"),
    (lambda d: d[:36] + struct.pack("<H", 3000) + d[38:], "unknown_type"),
    (lambda d: d[:38] + struct.pack("<H", 2) + d[40:], "bad_payload"),
    (lambda d: d[:52] + b"\x00" + d[53:], "bad_payload"),
])
def test_each_malformed_datagram_is_counted_by_reason_and_skipped(mutate, reason):
    good = encode_datagram(Kind.DATA, 1, 0, 0, ro(0).to_bytes(), count=1)
    dec = FrameDecoder(now=-1.0)
    dec.feed(mutate(good), SRC, 0.0)
    dec.feed(good, SRC, 0.0)
    assert _reasons(dec) == {reason: 1}
    assert decoded(dec) == [ro(0)]
    with pytest.raises(DatagramError) as info:
        parse_datagram(mutate(good), source=SRC)
    assert info.value.reason == reason
    assert "198.18.0.1" in str(info.value)


def test_bad_fragments_and_heartbeats_are_counted():
    dec = FrameDecoder(now=-1.0)
    dec.feed(encode_datagram(Kind.FRAGMENT, 1, 0, 0, b"x", count=2, total=2), SRC, 0.0)
    dec.feed(encode_datagram(Kind.HEARTBEAT, 1, 0, 0, b"\x00"), SRC, 0.0)
    dec.feed(encode_datagram(Kind.HEARTBEAT, 1, 0, 0, heartbeat_payload(0, 1.0, b"[1]")),
             SRC, 0.0)
    dec.feed(encode_datagram(Kind.HEARTBEAT, 1, 0, 0, heartbeat_payload(0, 1.0, b"{")),
             SRC, 0.0)
    dec.feed(encode_datagram(Kind.HEARTBEAT, 1, 5, 0, heartbeat_payload(4, 1.0)), SRC, 0.0)
    assert _reasons(dec) == {"bad_fragment": 1, "bad_heartbeat": 4}
    assert set(dec.stats.malformed) == set(MALFORMED_REASONS)


def test_a_reassembled_readout_that_is_not_one_readout_is_dropped():
    enc = FrameEncoder(now=0.0, max_datagram=100)
    big = bytearray(ro(0, 200).to_bytes())
    big[15] ^= 1  # its length field now lies
    dec = FrameDecoder(now=-1.0)
    for d in enc.add(bytes(big), 0.0) + enc.add(ro(1).to_bytes(), 0.0) + enc.flush(0.0):
        dec.feed(d, SRC, 0.0)
    assert _reasons(dec) == {"bad_fragment": 1}
    assert decoded(dec) == [ro(1)]
    assert dec.stats.totals()["readouts_lost"] == 1


def test_a_keyed_receiver_drops_unauthenticated_altered_and_foreign_datagrams():
    other = TransportKey.from_secret(b"another secret, 32 bytes long...")
    payload = ro(0).to_bytes()
    good = encode_datagram(Kind.DATA, 1, 0, 0, payload, count=1, key=KEY)
    assert len(good) == HEADER.size + len(payload) + MAC_SIZE
    altered = bytearray(good)
    altered[60] ^= 0x40
    dec = FrameDecoder(now=-1.0, keys=KEY)
    for raw in (encode_datagram(Kind.DATA, 1, 0, 0, payload, count=1), bytes(altered),
                encode_datagram(Kind.DATA, 1, 0, 0, payload, count=1, key=other),
                payload, good):
        dec.feed(raw, SRC, 0.0)
    assert _reasons(dec) == {"unauthenticated": 2, "bad_auth": 1, "unknown_key": 1}
    assert decoded(dec) == [ro(0)]
    # Without a key, an authenticated datagram is accepted unchecked.
    dec = FrameDecoder(now=-1.0)
    dec.feed(good, SRC, 0.0)
    assert decoded(dec) == [ro(0)]


def test_the_allow_list_drops_other_senders():
    dec = FrameDecoder(now=-1.0, allow=["198.18.0.1"])
    dec.feed(ro(0).to_bytes(), ("198.18.0.9", 1), 0.0)
    dec.feed(ro(1).to_bytes(), SRC, 0.0)
    assert _reasons(dec) == {"unexpected_source": 1}
    assert decoded(dec) == [ro(1)]


def test_key_files(tmp_path):
    path = tmp_path / "key"
    path.write_text("00112233445566778899aabbccddeeff\n")
    key = load_key(path)
    assert key.secret == b"00112233445566778899aabbccddeeff"
    assert key.key_id == TransportKey.from_secret(key.secret).key_id != 0
    assert "0011" not in repr(key)
    path.write_text("short\n")
    with pytest.raises(KeyFileError, match="at least 16 bytes"):
        load_key(path)
    with pytest.raises(KeyFileError, match="cannot read"):
        load_key(tmp_path / "missing")


def test_legacy_datagrams_are_accepted_beside_framed_ones_and_accounted_by_readout_id():
    dec = FrameDecoder(now=-1.0)
    legacy = legacy_datagrams(b"".join(ro(i).to_bytes() for i in (0, 1, 3, 2, 2, 4)))
    enc = FrameEncoder(now=0.0)
    framed = enc.add(ro(100).to_bytes(), 0.0) + enc.flush(0.0)
    for raw in legacy[:3] + framed + legacy[3:]:
        dec.feed(raw, ("198.18.0.3", 7000), 0.0)
    dec.feed(ro(5).to_bytes()[:-1], ("198.18.0.3", 7000), 0.0)
    got = [r.readout_id for r in decoded(dec)]
    assert got == [0, 1, 3, 100, 2, 4]
    s = dec.stats.streams["legacy/198.18.0.3:7000"]
    assert s.legacy and (s.readouts_received, s.readouts_lost, s.reordered, s.duplicates) == \
        (5, 0, 1, 1)
    assert _reasons(dec) == {"bad_legacy": 1}


def test_a_new_stream_from_the_same_host_is_a_restart_and_stats_serialize_to_json():
    dec = FrameDecoder(now=-1.0)
    for stream_id in (1, 2):
        enc = FrameEncoder(now=0.0, stream_id=stream_id, header={"n": stream_id})
        for d in enc.poll(0.0) + enc.add(ro(0).to_bytes(), 0.0) + enc.close(0.0):
            dec.feed(d, SRC, 0.0)
    stats = dec.stats
    assert stats.restarts == 1
    assert stats.streams[f"{2:016x}"].restart_of == f"{1:016x}"
    assert stats.run_header == {"n": 2}
    data = json.loads(json.dumps(stats.as_dict()))
    assert data["totals"]["readouts_received"] == 2
    assert data["streams"][f"{1:016x}"]["ended"] is True


def test_streams_beyond_the_limit_are_evicted_without_losing_their_counts():
    dec = FrameDecoder(now=-1.0, max_streams=2, max_stream_stats=3)
    for stream_id in range(1, 6):
        enc = FrameEncoder(now=0.0, stream_id=stream_id)
        for d in enc.add(ro(0).to_bytes(), 0.0) + enc.flush(0.0):
            dec.feed(d, (f"198.18.0.{stream_id}", 1), float(stream_id))
    assert len(dec.stats.streams) == 3
    assert dec.stats.totals()["readouts_received"] == 5


def test_encoder_rejects_impossible_settings():
    with pytest.raises(ValueError, match="max_datagram"):
        FrameEncoder(now=0.0, max_datagram=60)
    with pytest.raises(ValueError, match="max_datagram"):
        FrameEncoder(now=0.0, max_datagram=70000)
    enc = FrameEncoder(now=0.0)
    with pytest.raises(ValueError, match="heartbeat"):
        enc.set_header({"x": "y" * 70000})


def test_payloads_of_a_whole_batch_are_checked_at_once_and_a_bad_one_is_singled_out():
    payloads = [b"".join(ro(40 * k + i).to_bytes() for i in range(40)) for k in range(20)]
    offsets = [sum(len(p) for p in payloads[:k]) for k in range(20)]
    counts = [40] * 20
    assert check_data_payloads(b"".join(payloads), offsets, counts) == [True] * 20
    bad = list(payloads)
    bad[7] = bad[7][:-1] + b"\x00"  # same length, still whole readouts: fine
    bad[11] = bad[11][:16] + b"\x07" + bad[11][17:]  # a length field changed
    counts[3] = 39  # declares one readout fewer than it holds
    result = check_data_payloads(b"".join(bad), offsets, counts)
    assert [i for i, ok in enumerate(result) if not ok] == [3, 11]


# -- hostile senders: bounded parsing and memory ----------------------------------------------


def _retained(build) -> tuple[object, int]:
    """Run ``build()``; return its result and the bytes it allocated that are still held."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = build()
        gc.collect()
        return result, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("header", [
    b"[" * 2000 + b"]" * 2000,  # RecursionError in json.loads without a bound
    b'{"a":' * 10_000,
    b'{"ok": "' + b"[" * 5000 + b'", "deep": ' + b"[" * 70 + b"]" * 70 + b"}",
])
def test_a_run_header_nested_deep_is_a_bad_heartbeat_not_an_exception(header):
    raw = encode_datagram(Kind.HEARTBEAT, 5, 0, 0, heartbeat_payload(0, 1.0, header))
    dec = FrameDecoder(now=0.0)
    dec.feed(raw, SRC, 0.0)
    dec.feed_many([(raw, SRC)], 0.0)
    assert _reasons(dec) == {"bad_heartbeat": 2}
    with pytest.raises(DatagramError, match="nested more than 64 deep"):
        parse_datagram(raw)


def test_brackets_inside_strings_do_not_count_toward_the_header_depth():
    header = {"note": "[" * 1000 + "{" * 1000, "nested": [[[{"a": [1]}]]]}
    raw = encode_datagram(Kind.HEARTBEAT, 5, 0, 0,
                          heartbeat_payload(0, 1.0, json.dumps(header).encode()))
    assert parse_datagram(raw).header == header


def test_the_encoder_refuses_a_run_header_receivers_would_refuse():
    deep: list = []
    for _ in range(70):
        deep = [deep]
    with pytest.raises(ValueError, match="nested more than 64 deep"):
        FrameEncoder(now=0.0, header={"deep": deep})


def _fragment(seq: int, index: int, total: int, payload: bytes, readout: int = 0) -> bytes:
    return encode_datagram(Kind.FRAGMENT, 9, seq, readout, payload, count=index, total=total)


def test_every_fragment_counts_against_the_readout_size_limit():
    # Fragment 0 is 1 byte and announces 65535 fragments: only the bytes that follow tell.
    piece = bytes(1400)

    def feed():
        dec = FrameDecoder(now=-1.0, max_readout_size=100_000)
        dec.feed(_fragment(0, 0, 0xFFFF, b"\xfe"), SRC, 0.0)
        for i in range(1, 1000):
            dec.feed(_fragment(i, i, 0xFFFF, piece), SRC, 0.0)
        return dec

    dec, held = _retained(feed)
    assert held < 300_000  # 1.4 MB of fragments were sent
    assert _reasons(dec) == {"too_large": 1}
    dec.finish(1.0)
    (s,) = dec.stats.streams.values()
    assert (s.readouts_lost, s.fragments_incomplete, s.readouts_received) == (1, 1, 0)


def test_a_fragmented_readout_over_the_limit_is_lost_and_the_next_one_is_delivered():
    big = ro(0, 3000).to_bytes()
    enc = FrameEncoder(now=0.0, max_datagram=1000)
    out = enc.add(big, 0.0) + enc.add(ro(1).to_bytes(), 0.0) + enc.flush(0.0)
    dec = FrameDecoder(now=-1.0, max_readout_size=2500)
    for raw in out:
        dec.feed(raw, SRC, 0.0)
    assert decoded(dec) == [ro(1)]
    assert _reasons(dec) == {"too_large": 1}
    (s,) = dec.stats.streams.values()
    assert (s.readouts_lost, s.readouts_received) == (1, 1)


def test_held_back_bytes_are_bounded_and_overflow_is_counted_lost():
    enc = FrameEncoder(now=0.0, max_datagram=20_000)
    datagrams = []
    for i in range(60):
        datagrams += enc.add(ro(i, 10_000).to_bytes(), 0.0)
    datagrams += enc.flush(0.0)

    def feed():
        dec = FrameDecoder(now=-1.0, max_held_bytes=100_000, reorder_timeout=60.0)
        for raw in datagrams[1:]:  # the first never comes: everything after waits for it
            dec.feed(raw, SRC, 0.0)
            dec.take()
        return dec

    dec, held = _retained(feed)
    assert held < 400_000
    (s,) = dec.stats.streams.values()
    assert (s.datagrams_lost, s.readouts_lost) == (1, 1)
    assert s.readouts_received == 59


def test_legacy_ids_that_jump_keep_memory_bounded_and_count_every_gap():
    raws = [AstroPix4Readout._parsed(b"\xbc" * 8, i * 4097, i).to_bytes() for i in range(300)]

    def feed():
        dec = FrameDecoder(now=0.0)
        for raw in raws:
            dec.feed(raw, SRC, 0.0)
            dec.take()
        return dec

    dec, held = _retained(feed)
    assert held < 1_000_000  # a set of the missing ids held 1.2 million of them
    (s,) = dec.stats.streams.values()
    assert (s.readouts_received, s.readouts_lost, s.duplicates) == (300, 299 * 4096, 0)


def test_legacy_window_tells_late_arrivals_from_duplicates_and_new_runs():
    dec = FrameDecoder(now=0.0)
    for rid in (10, 11, 15, 13, 13, 11, 15, 14, 12, 5000, 20):
        dec.feed(AstroPix4Readout._parsed(b"\xbc", rid, 0).to_bytes(), SRC, 0.0)
    (s,) = dec.stats.streams.values()
    # 12..14 and 16..4999 missing; 13, 14, 12 come late; 13, 11, 15 repeat; 20 is behind the
    # 4096 ids remembered: a new run.
    assert (s.reordered, s.duplicates) == (3, 3)
    assert s.readouts_lost == 3 + 4984 - 3
    assert s.readouts_received == 8


def test_a_receiver_without_a_key_counts_the_hmacs_it_did_not_check():
    enc = FrameEncoder(now=0.0, key=KEY)
    datagrams = enc.poll(0.0) + enc.add(ro(0).to_bytes(), 0.0) + enc.close(0.0)
    passive = FrameDecoder(now=-1.0)
    keyed = FrameDecoder(now=-1.0, keys=KEY)
    for dec in (passive, keyed):
        dec.feed_many([(raw, SRC) for raw in datagrams], 0.0)
        assert decoded(dec) == [ro(0)]
    assert passive.stats.unverified == len(datagrams)
    assert passive.stats.as_dict()["unverified"] == len(datagrams)
    assert keyed.stats.unverified == 0
    unsigned = FrameDecoder(now=-1.0)
    unsigned.feed(encode_datagram(Kind.DATA, 1, 0, 0, ro(0).to_bytes(), count=1), SRC, 0.0)
    assert unsigned.stats.unverified == 0


def test_hosts_remembered_for_restarts_are_bounded():
    dec = FrameDecoder(now=0.0, max_streams=4, max_stream_stats=8)

    def feed():
        for i in range(2000):
            raw = encode_datagram(Kind.HEARTBEAT, i + 1, 0, 0, heartbeat_payload(0, 1.0))
            dec.feed(raw, (f"198.18.{i >> 8}.{i & 255}", 5000), 0.0)
        return dec

    _, held = _retained(feed)
    assert held < 200_000
    assert len(dec.stats.streams) <= 8
    assert dec.stats.retired["heartbeats"] + sum(
        s.heartbeats for s in dec.stats.streams.values()) == 2000
