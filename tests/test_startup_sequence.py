"""The start-up sequence as data, byte for byte against the spec's §7, and what the
configured chip makes of it (bit-bang decoders, voltage card, pattern generator)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings

from astropix_hil.boards.nexys.board import VirtualBoard
from astropix_hil.boards.nexys.link import NexysLink
from astropix_hil.boards.nexys.protocol import RequestParser, write_request
from astropix_hil.chipconfig import PatternGenerator, StartupOptions, load_bundled
from astropix_hil.chipconfig.configure import configure
from astropix_hil.chipconfig.patgen import start_writes
from astropix_hil.chipconfig.sequence import Flush, Read, Wait, Write, startup_sequence, writes_of
from astropix_hil.chipconfig.streams import sr_payload, vb_payload, vb_vector
from astropix_hil.chipconfig.vector import main_vector
from astropix_hil.emulator.bitbang import (
    PatternGeneratorState,
    ShiftRegisterDecoder,
    VoltageCardDecoder,
)

from .test_chipconfig import configurations


def w(register: int, *values: int) -> bytes:
    return b"".join(bytes([1, register, 0, 1, v]) for v in values)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_writes_without_injection_are_the_spec_sequence_byte_for_byte():
    steps = startup_sequence(load_bundled("config_v4_none.yml"))
    sent = writes_of(steps)
    config_req = 34324
    expected_prefix = (w(0x09, 0x55) + w(0x15, 0x93, 0x92, 0x9A, 0x92) + w(0x3D, 0x13, 0x12)
                       + w(0x00, 0x10, 0x00))
    assert sent.startswith(expected_prefix)
    at = len(expected_prefix)
    first = sent[at:at + config_req]
    assert sha(first) == "73308a8775bdffb1a8202ea82f6228c35464bc083603ecc3b2eb2d484bcaa782"
    at += config_req
    card = sent[at:at + 3428]
    assert sha(card) == "c12d9f69d8a72099ded398ad66bcd87d2297a74c8e3af8ae95860e990f936cbf"
    at += 3428
    middle = (w(0x15, 0x12) + w(0x15, 0x13, 0x12, 0x1A, 0x12) + w(0x16, 0x28)
              + bytes.fromhex("01 17 00 08 04 00 00 00 00 00 00 00") + w(0x00, 0x10, 0x00))
    assert sent[at:at + len(middle)] == middle
    at += len(middle)
    assert sent[at:at + config_req] == first  # no -i: the same configuration again
    at += config_req
    tdac = sent[at:]
    assert sha(tdac) == "bf6f7f365fb12afd179dfede25ea3c04971917a22a35e6bd6087d6f41fe35920"
    assert isinstance(steps[-1], Flush)
    waits = [s for s in steps if isinstance(s, Wait)]
    assert [s.seconds for s in waits] == [0.1, 0.1]  # the two chip resets


def test_with_injection_the_pixel_vinj_and_generator_follow():
    none = load_bundled("config_v4_none.yml")
    steps = startup_sequence(none, StartupOptions(inject=(2, 7), vinj_mv=250,
                                                  threshold_mv=100))
    configs = [s.data for s in steps if isinstance(s, Write) and s.register == 0
               and len(s.data) > 30000]
    first, final = none.copy(), none.copy()
    for c in (first, final):
        c.enable_ampout(0)
        c.enable_injection(2, 7)
    final.enable_pixel(2, 7)
    final.set("vdacs", "vinj", int(0.25 / 1.8 * 1024))
    assert configs == [sr_payload(main_vector(first)), sr_payload(main_vector(final))]
    card = next(s.data for s in steps if isinstance(s, Write) and s.register == 0x0C)
    final.set_threshold(100)
    assert card == vb_payload(vb_vector(final.voltage_card.dacs, 4))
    tail = writes_of(steps[-100:])
    start = w(0x03, 1) + w(0x02, 1) + w(0x02, 0) + w(0x03, 0)
    assert tail.endswith(start)
    assert len(writes_of([s for s in steps if isinstance(s, Write) and 2 <= s.register <= 7
                          ])) == 4 * 5 + 345 + 4 * 5


def test_reads_check_the_bits_the_firmware_stores():
    steps = startup_sequence(load_bundled("config_v4_none.yml"))
    checked = [s for s in steps if isinstance(s, Read) and s.mask]
    assert checked and all(s.mask for s in checked)
    assert Read(0x16, 40, 0xFF) in checked


@settings(max_examples=15, deadline=None)
@given(configurations())
def test_the_chip_latches_what_the_bit_bang_shifts_in(config):
    layout = load_bundled("config_v4_none.yml")
    decoder = ShiftRegisterDecoder(layout)
    payload = sr_payload(main_vector(config))
    # Split anywhere: the waveform, not the request boundaries, matters.
    cut = len(payload) // 3
    assert decoder.feed(payload[:cut]) + decoder.feed(payload[cut:]) == ["load"]
    assert decoder.config == config


def test_the_voltage_card_latches_the_dacs_and_ignores_the_trailing_empty_load():
    card = VoltageCardDecoder()
    dacs = [0.0, 0.0, 1.1, 1.0, 0.0, 0.0, 0.8, 1.25]
    assert card.feed(vb_payload(vb_vector(dacs, 4)))
    assert card.slot == 4
    assert np.allclose(card.dacs, dacs, atol=2e-4)


def test_pattern_generator_runs_from_the_release_of_its_reset():
    gen = PatternGenerator.for_period(10, cycle=3)
    state = PatternGeneratorState()
    for register, value in start_writes(gen)[:-1]:
        state.feed(register, bytes([value]), 1000)
    assert state.running is None  # still suspended
    state.feed(0x03, b"\x00", 5000)
    assert state.running == gen and state.started_ns == 5000
    edges = state.pulses_ns(0, 10**9)
    assert edges.tolist() == [5000 + t for t in gen.rising_edges_ns(0, 10**9)]
    assert len(edges) == 3
    state.feed(0x05, b"\x01", 6000)  # the card's chopper only: nothing reaches the chip
    assert state.pulses_ns(0, 10**9).size == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        self.now += 1000
        return self.now


class BoardPort:
    """A port whose other end is a board, in this thread."""

    def __init__(self, board: VirtualBoard) -> None:
        self.board, self.timeout, self._rx = board, 0.01, bytearray()
        self.sent = bytearray()

    def write(self, data: bytes) -> int:
        self.sent += data
        self._rx += self.board.process(data)
        return len(data)

    def read(self, n: int = 1) -> bytes:
        out = bytes(self._rx[:n])
        del self._rx[:n]
        return out

    @property
    def in_waiting(self) -> int:
        return len(self._rx)

    def reset_input_buffer(self) -> None:
        self._rx.clear()

    def close(self) -> None:
        pass


def test_configure_reads_back_clean_and_leaves_the_chip_as_sent():
    board = VirtualBoard.from_options(seed=1, clock=FakeClock(), pull_interval=0)
    link = NexysLink(BoardPort(board))
    report = configure(link, load_bundled("config_v4_none.yml"), inject=(1, 2),
                       threshold_mv=150, sleep=lambda s: None)
    assert not report.mismatches and report.reads > 10
    chip = board.chip
    assert np.array_equal(main_vector(chip.active_config), main_vector(report.config))
    assert chip.state.comparator.sum() == 1 and chip.state.comparator[1, 2]
    assert chip.state.injection[1, 2] and chip.state.threshold_mv == pytest.approx(150, abs=0.2)
    assert chip.generator.running is not None and board.spi_enabled
    # Configuring again (a scan) keeps reading back clean.
    assert not configure(link, report.config, sleep=lambda s: None).mismatches


def test_configure_sends_the_sequence_s_writes_byte_for_byte():
    board = VirtualBoard.from_options(seed=1, clock=FakeClock(), pull_interval=0)
    port = BoardPort(board)
    config = load_bundled("config_v4_none.yml")
    configure(NexysLink(port), config, inject=(0, 9), vinj_mv=250, threshold_mv=80,
              sleep=lambda s: None)
    requests = RequestParser().feed(bytes(port.sent))
    writes = b"".join(write_request(r.register, r.data) for r in requests if not r.is_read)
    expected = startup_sequence(config, StartupOptions(inject=(0, 9), vinj_mv=250,
                                                       threshold_mv=80))
    assert writes == writes_of(expected)
