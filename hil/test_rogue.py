"""The rogue host's datagrams are what case 7 says they are: each is refused by a keyed
receiver under the reason :data:`hil.rogue.KINDS` gives (checked on the pure decoder)."""

from __future__ import annotations

import os

from astropix_hil.framing import FrameDecoder, FrameEncoder, TransportKey

from .rogue import HEADER as ROGUE_HEADER
from .rogue import KINDS, datagrams


def _captured(key: TransportKey) -> tuple:
    encoder = FrameEncoder(now=0.0, key=key)
    (heartbeat,) = encoder.heartbeat(0.0)
    return ROGUE_HEADER.unpack_from(heartbeat)


def test_each_kind_is_refused_for_its_reason() -> None:
    key = TransportKey.from_secret(os.urandom(32))
    forged = datagrams(_captured(key))
    assert set(forged) == set(KINDS)
    for kind, raw in forged.items():
        decoder = FrameDecoder(now=0.0, keys=key)
        decoder.feed(raw, ("198.18.0.66", 40000), now=0.0)
        counted = {r: n for r, n in decoder.stats.malformed.items() if n}
        assert counted == {KINDS[kind]: 1}, kind
        assert decoder.take() == []


def test_an_allow_list_refuses_them_all_by_source() -> None:
    key = TransportKey.from_secret(os.urandom(32))
    decoder = FrameDecoder(now=0.0, keys=key, allow=["198.18.0.10"])
    for raw in datagrams(_captured(key)).values():
        decoder.feed(raw, ("198.18.0.66", 40000), now=0.0)
    assert {r: n for r, n in decoder.stats.malformed.items() if n} == \
        {"unexpected_source": len(KINDS)}


def test_without_a_key_the_forgeries_would_pass() -> None:
    # Why case 7 needs the key: the unsigned forgery is a valid datagram to a keyless monitor.
    key = TransportKey.from_secret(os.urandom(32))
    decoder = FrameDecoder(now=0.0)
    decoder.feed(datagrams(_captured(key))["unsigned"], ("198.18.0.66", 40000), now=0.0)
    assert sum(decoder.stats.malformed.values()) == 0
