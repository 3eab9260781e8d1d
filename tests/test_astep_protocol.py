"""The A-STEP register-file request codec and register map (spec §1.3-§1.5, §2)."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from astropix_hil.boards.astep.protocol import (
    MAX_LENGTH,
    Request,
    RequestParser,
    encode,
    read_request,
    register_read,
    register_write,
    write_request,
    write_requests,
)
from astropix_hil.boards.astep.registers import BY_ADDRESS, REGISTERS, layer_reg, reg


@st.composite
def requests(draw) -> Request:
    write = draw(st.booleans())
    extended = draw(st.booleans())
    address = draw(st.integers(0, 0xFFFF if extended else 0xFF))
    length = draw(st.integers(1, 300))
    data = draw(st.binary(min_size=length, max_size=length)) if write else b""
    return Request(write, address, length, draw(st.booleans()), extended,
                   draw(st.integers(0, 15)), data)


def parse_all(stream: bytes, cuts: list[int]) -> list[tuple[Request, bytes]]:
    """Feed ``stream`` to a parser in pieces; join each write's data chunks."""
    parser = RequestParser()
    out: list[tuple[Request, bytes]] = []
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    for a, b in pairwise(bounds):
        for request, chunk, offset in parser.feed(stream[a:b]):
            if out and request.write and offset > 0:
                assert out[-1][0] == request and len(out[-1][1]) == offset
                out[-1] = (request, out[-1][1] + chunk)
            else:
                out.append((request, chunk))
    assert parser.idle
    return out


@given(st.lists(requests(), min_size=1, max_size=6), st.lists(st.integers(0, 10**6)),
       st.lists(st.integers(0, 3), min_size=6, max_size=6))
def test_requests_round_trip_through_the_server_parser_split_anywhere(reqs, cuts, fillers):
    stream = b"".join(b"\x00" * f + encode(r) for r, f in zip(reqs, fillers, strict=False))
    parsed = parse_all(stream, cuts)
    # The parser hands write data over in chunks, not inside the request.
    assert [(replace(r, data=b""), r.data) for r in reqs] == parsed


@given(requests())
def test_header_bits_are_the_rtl_ones(request):
    head = encode(request)
    assert head[0] & 1 == request.write and head[0] >> 1 & 1 == (not request.write)
    assert head[0] >> 2 & 1 == request.increment and head[0] >> 3 & 1 == request.extended
    width = 2 if request.extended else 1
    assert int.from_bytes(head[1:1 + width], "little") == request.address
    assert int.from_bytes(head[1 + width:3 + width], "little") == request.length  # LSB first


def test_the_team_software_bytes_of_spec_1_5():
    # Captured from the team's generated register module (spec §1.5).
    assert register_write(reg("LAYER_0_CFG_CTRL").address, 0x0A, 1) == bytes.fromhex("011f01000a")
    assert register_read(reg("HK_FIRMWARE_ID").address, 4) == bytes.fromhex("06000400")
    assert register_read(reg("LAYERS_READOUT_READ_SIZE").address, 4) == bytes.fromhex("06a40400")
    assert read_request(reg("LAYERS_READOUT").address, 300) == bytes.fromhex("02a32c01")
    assert register_write(0xAF, 80, 4) + register_write(0x76, 0x13, 2) == bytes.fromhex(
        "05af04005000000005760200" "1300")
    assert write_request(layer_reg("MOSI", 0).address, bytes([0x40]) + bytes(8)) == \
        bytes.fromhex("014909004000000000000000" "00")


def test_filler_bytes_are_skipped_and_counted():
    parser = RequestParser()
    events = list(parser.feed(b"\x00\x00\x0c\xf0" + read_request(0x08, 1)))
    assert [(e[0].address, e[0].length) for e in events] == [(0x08, 1)]
    assert parser.skipped == 4


def test_length_zero_is_never_sent_and_long_writes_are_split():
    with pytest.raises(ValueError, match="length 0"):
        read_request(0xA3, 0)
    data = bytes(range(256)) * 300  # 76800 bytes: more than one request can carry
    stream = write_requests(0x91, data)
    parsed = parse_all(stream, [])
    assert [len(d) for _, d in parsed] == [MAX_LENGTH, len(data) - MAX_LENGTH]
    assert b"".join(d for _, d in parsed) == data


def test_a_zero_length_on_the_wire_means_65536_bytes_as_in_the_rtl():
    parser = RequestParser()
    events = list(parser.feed(bytes.fromhex("01910000") + bytes(65536) + read_request(8, 1)))
    assert events[0][0].length == 65536
    assert sum(len(e[1]) for e in events if e[0].write) == 65536
    assert events[-1][0].address == 8 and not events[-1][0].write


def test_register_map_matches_the_spec_table():
    # Spot checks of spec §2 (addresses, widths, reset values).
    expected = {"HK_FIRMWARE_ID": (0x00, 4), "CHIP_VERSION": (0x08, 1),
                "LAYER_2_CFG_CTRL": (0x21, 1), "LAYER_1_STAT_FRAME_COUNTER": (0x29, 4),
                "LAYER_2_STAT_WRONGLENGTH_COUNTER": (0x45, 4), "LAYER_2_MOSI": (0x53, 1),
                "LAYER_1_MOSI_WRITE_SIZE": (0x4F, 4), "LAYERS_FPGA_TIMESTAMP_CTRL": (0x76, 2),
                "LAYERS_FPGA_TIMESTAMP_COUNTER": (0x7C, 8), "LAYERS_CFG_NODATA_CONTINUE": (0x90, 1),
                "LAYERS_SR_OUT": (0x91, 1), "LAYERS_READOUT": (0xA3, 1),
                "LAYERS_READOUT_READ_SIZE": (0xA4, 4), "GECCO_SR_CTRL": (0xAA, 1),
                "LAYERS_FPGA_TIMESTAMP_DIVIDER_MATCH": (0xAF, 4)}
    for name, (address, width) in expected.items():
        assert (reg(name).address, reg(name).width) == (address, width), name
    resets = {"CHIP_VERSION": 3, "CLOCK_CTRL": 2, "LAYER_0_CFG_CTRL": 7,
              "LAYERS_FPGA_TIMESTAMP_CTRL": 0x10, "LAYERS_CFG_NODATA_CONTINUE": 5,
              "LAYERS_READOUT_CTRL": 1, "LAYERS_FPGA_TIMESTAMP_DIVIDER_MATCH": 4,
              "LAYERS_INJ_CTRL": 6, "IO_CTRL": 0x18}
    assert {name: reg(name).reset for name in resets} == resets
    # No two registers share an address, and every address up to 0xB2 is decoded.
    assert sum(r.width for r in REGISTERS) == len(BY_ADDRESS) == 0xB3
    assert reg("LAYER_0_CFG_CTRL").field(0x1D, "cs") == 1
