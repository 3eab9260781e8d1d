"""A-STEP chip configuration from a YAML file (spec astep-fw.md §6.4): the bit order, the
shift-register and SPI byte streams against references written from the spec's text, the
round trip through the virtual board, and ``apx-hil daq --profile astep --config``."""

from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import astropix_hil  # noqa: F401 - registers astepemu://
from astropix_hil.boards.astep import board as board_module
from astropix_hil.boards.astep.configstream import (
    ConfigRecord,
    SpiDecoder,
    SrDecoder,
    chip_vector,
    spi_frames,
    sr_streams,
)
from astropix_hil.boards.astep.link import open_link
from astropix_hil.boards.astep.sequence import start_run
from astropix_hil.chipconfig import decode_main_vector, load_bundled, load_config
from astropix_hil.chipconfig.vector import decode_tdac_row
from astropix_hil.cli import main
from astropix_hil.fileio import read_header

NONE_YAML = resources.files("astropix_hil.chipconfig").joinpath("data", "config_v4_none.yml")

# -- references from the spec's text (not from the code under test) --------------------------


def ref_chip_bits(content: dict) -> list[int]:
    """§6.4: groups in file order, each field `width` bits MSB first, VDAC fields reversed
    (LSB first); then the whole chip vector reversed."""
    vector: list[int] = []
    for group, fields in content["astropix4"]["config"].items():
        for width, value in fields.values():
            bits = [int(c) for c in format(value, f"0{width}b")]
            vector += bits[::-1] if group == "vdacs" else bits
    return vector[::-1]


def ref_tdac_bits() -> list[int]:
    """§6.4: row0 = 5-bit fields of value 1 for every column (16), as the 80-bit integer whose
    bit 0 is shifted first (nexys spec §4.7)."""
    image = int("00001" * 16, 2)
    return [(image >> i) & 1 for i in range(80)]


def ref_sr_data(bits: list[int], load: int) -> bytes:
    """§6.4 table: five values per bit, each 8 times; then s | load and 0, 8 times each."""
    out = bytearray()
    s = 0
    for b in bits:
        s = b << 2
        for v in (s, s | 0x01, s, s | 0x02, s):
            out += bytes([v]) * 8
    return bytes(out + bytes([s | load]) * 8 + bytes(8))


def ref_write(address: int, data: bytes) -> bytes:
    """§1.3/§1.5: header 0x01 (write, fixed address), address, length LSB first; one command
    split every 65535 data bytes."""
    out = bytearray()
    for i in range(0, len(data), 65535):
        part = data[i:i + 65535]
        out += bytes([0x01, address]) + len(part).to_bytes(2, "little") + part
    return bytes(out)


def ref_spi_frame(bits: list[int], k: int, nchips: int) -> bytes:
    return bytes([0x60 | k]) + bytes(bits) + b"\x03" * 10 + bytes(2 * (nchips - 1))


def none_content() -> dict:
    return yaml.safe_load(NONE_YAML.read_text())


class Recorder:
    """Wraps a board's ``process`` to keep every byte the host sent."""

    def __init__(self, board) -> None:
        self.sent = bytearray()
        inner = board.process

        def process(data: bytes) -> bytes:
            self.sent += data
            return inner(data)

        board.process = process


def contains_in_order(haystack: bytes, needles: list[bytes]) -> bool:
    at = 0
    for needle in needles:
        found = haystack.find(needle, at)
        if found < 0:
            return False
        at = found + len(needle)
    return True


def run_on_board(config, method: str, layers: int, chips: int):
    link = open_link(f"astepemu://?layers={layers}&chips={chips}&seed=1&rate=0",
                     reply_timeout=0.5)
    board = link.port.board
    recorder = Recorder(board)
    info = start_run(link, layers=layers, chips=chips, reset_delay=0.0, chip_config=config,
                     config_method=method)
    link.close()
    return board, recorder, info


# -- the bit order ---------------------------------------------------------------------------


def test_the_astep_chip_vector_is_the_nexys_852_bit_vector():
    """The A-STEP order of §6.4 and the Nexys one (nexys spec §4.3) are the same algorithm:
    the reference built from the A-STEP text has the Nexys spec's golden SHA-256."""
    content = none_content()
    reference = ref_chip_bits(content)
    assert len(reference) == 852
    text = "".join(map(str, reference))
    assert hashlib.sha256(text.encode()).hexdigest() == (
        "02602c05ee62b2fb428480d42e5a1a748a8d462b9cc0470c98e4b63b7ad236fc")
    assert chip_vector(load_config(NONE_YAML)).tolist() == reference


def random_content(draw_values: list[int]) -> dict:
    content = none_content()
    it = iter(draw_values)
    for fields in content["astropix4"]["config"].values():
        for name, (width, _) in fields.items():
            fields[name] = [width, next(it) % (1 << width)]
    return content


LAYOUT_FIELDS = sum(len(f) for f in none_content()["astropix4"]["config"].values())
values_strategy = st.lists(st.integers(0, 2**38 - 1), min_size=LAYOUT_FIELDS,
                           max_size=LAYOUT_FIELDS)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=values_strategy)
def test_the_chip_vector_follows_the_spec_for_any_configuration(values, tmp_path_factory):
    content = random_content(values)
    path = tmp_path_factory.mktemp("cfg") / "c.yml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    assert chip_vector(load_config(path)).tolist() == ref_chip_bits(content)


# -- pure encoder <-> board decoders -------------------------------------------------------------


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=values_strategy, layers=st.integers(1, 3), chips=st.integers(1, 4),
       split=st.integers(1, 70000))
def test_any_configuration_decodes_back_from_the_streams(values, layers, chips, split):
    layout = load_bundled("config_v4_none.yml")
    config = layout.copy()
    for (group, name, width), value in zip(layout.layout(), values, strict=True):
        config.set(group, name, value % (1 << width))
    record = ConfigRecord()
    sr = SrDecoder(record)
    for stream in sr_streams(config, layers, chips):
        sr.feed(stream[:split])  # streams arrive in pieces
        sr.feed(stream[split:])
    assert sorted(record.sr) == list(range(layers)) and sorted(record.tdac) == [0]
    for lane in range(layers):
        bits = record.sr[lane]
        assert bits.size == chips * 852
        for chip in range(chips):
            assert decode_main_vector(bits[chip * 852:(chip + 1) * 852], layout).groups == \
                config.groups
    assert all(decode_tdac_row(record.tdac[0][c * 80:(c + 1) * 80]) == int("00001" * 16, 2)
               for c in range(chips))
    spi = SpiDecoder(record, layer=1)
    for frame in spi_frames(config, chips):
        spi.feed(frame)
    assert sorted(record.spi) == [(1, k) for k in range(chips)]
    assert all(decode_main_vector(record.spi[(1, k)], layout).groups == config.groups
               for k in range(chips))


# -- on the wire and through the board ------------------------------------------------------------


@pytest.mark.parametrize(("layers", "chips"), [(1, 1), (2, 3)])
def test_shift_register_bytes_on_the_wire_are_the_team_software_s(layers, chips):
    content = none_content()
    content["astropix4"]["config"]["vdacs"]["thpix"] = [10, 0x2A5]
    content["astropix4"]["config"]["recconfig"]["col3"] = [38, 0x0FFFFFFFF0 | 0b0101]
    config = load_config_from(content)
    board, recorder, info = run_on_board(config, "sr", layers, chips)
    chain = ref_chip_bits(content) * chips
    data = [ref_sr_data(chain, 1 << (3 + lane)) for lane in range(layers)]
    data.append(ref_sr_data(ref_tdac_bits() * chips, 0x40))
    assert b"".join(ref_write(0x91, d) for d in data) in bytes(recorder.sent)
    assert info.config_method == "sr" and info.config_bytes == sum(map(len, data))
    # ... and the board decodes it back to the YAML's configuration, on every chip.
    layout = load_config(NONE_YAML)
    record = board.config_record
    for lane in range(layers):
        bits = record.sr[lane]
        for chip in range(chips):
            got = decode_main_vector(bits[chip * 852:(chip + 1) * 852], layout)
            assert got.groups == config.groups
    assert record.tdac[0].tolist() == ref_tdac_bits() * chips and not record.spi


def test_spi_bytes_on_the_wire_are_the_team_software_s():
    content = none_content()
    content["astropix4"]["config"]["idacs"]["vn1"] = [6, 33]
    config = load_config_from(content)
    layers, chips = 2, 3
    board, recorder, info = run_on_board(config, "spi", layers, chips)
    bits = ref_chip_bits(content)
    mosi = {0: 0x49, 1: 0x4E}
    writes = []
    for k in range(chips):
        writes.append(bytes([0x01, 0x1F, 1, 0, 0x1D]))  # select (L0 |= cs)
        for lane in range(layers):
            frame = ref_spi_frame(bits, k, chips)
            writes += [ref_write(mosi[lane], frame[i:i + 256])
                       for i in range(0, len(frame), 256)]
        writes.append(bytes([0x01, 0x1F, 1, 0, 0x15]))  # deselect
    assert contains_in_order(bytes(recorder.sent), writes)
    # Before each chunk, the MOSI write-size register is read (06 4a 04 00).
    sent = bytes(recorder.sent)
    first_chunk = ref_write(0x49, ref_spi_frame(bits, 0, chips)[:256])
    assert sent[:sent.find(first_chunk)].endswith(bytes([0x06, 0x4A, 0x04, 0x00]))
    assert info.config_method == "spi"
    assert info.config_bytes == layers * chips * (1 + 852 + 10 + 2 * (chips - 1))
    layout = load_config(NONE_YAML)
    record = board.config_record
    assert sorted(record.spi) == [(n, k) for n in range(layers) for k in range(chips)]
    for frame_bits in record.spi.values():
        assert decode_main_vector(frame_bits, layout).groups == config.groups
    assert not record.sr and board.stats.routings == layers


def load_config_from(content: dict):
    from astropix_hil.chipconfig import from_mapping

    return from_mapping(content)


# -- apx-hil daq --profile astep --config ---------------------------------------------------------


@pytest.fixture
def boards(monkeypatch):
    """Every virtual A-STEP board the command creates."""
    made = []
    original = board_module.AstepBoard.from_options.__func__

    def from_options(cls, *args, **kwargs):
        made.append(original(cls, *args, **kwargs))
        return made[-1]

    monkeypatch.setattr(board_module.AstepBoard, "from_options", classmethod(from_options))
    return made


@pytest.mark.parametrize("method", ["sr", "spi"])
def test_daq_configures_the_chips_and_the_header_stores_what_was_sent(
        method, tmp_path, boards, capsys):
    content = none_content()
    content["astropix4"]["config"]["vdacs"]["vinj"] = [10, 300]
    path = tmp_path / "chip.yml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    out = tmp_path / "run.apx"
    rc = main(["daq", "--profile", "astep", "--port",
               "astepemu://?layers=2&chips=2&seed=1&rate=3000", "--layers", "2", "--chips", "2",
               "--reset-delay", "0", "--config", str(path), "--config-method", method,
               "--out", str(out), "--readouts", "2", "--no-multicast", "--no-hits"])
    assert rc == 0, capsys.readouterr().err
    (board,) = boards
    record = board.config_record
    layout = load_config(NONE_YAML)
    decoded = ([record.sr[lane][c * 852:(c + 1) * 852] for lane in range(2) for c in range(2)]
               if method == "sr" else list(record.spi.values()))
    assert len(decoded) == 4
    assert all(decode_main_vector(b, layout).get("vdacs", "vinj") == 300 for b in decoded)
    header = read_header(out)
    sent = header["configuration"]
    assert sent["astropix4"]["config"] == {
        g: {n: list(v) for n, v in f.items()} for g, f in content["astropix4"]["config"].items()}
    assert sent["astep"]["method"] == method and sent["astep"]["chips_per_layer"] == 2
    assert sent["astep"]["bytes"] == header["astep"]["config_bytes"] > 0
    # What the header says was sent is what the board decoded.
    from astropix_hil.chipconfig import from_mapping

    assert np.array_equal(chip_vector(from_mapping(sent)), decoded[0])


def test_a_bad_yaml_is_one_line_before_the_board_is_touched(tmp_path, boards, capsys):
    path = tmp_path / "bad.yml"
    path.write_text("astropix4:\n  config:\n    vdacs:\n      thpix: [10, 5000]\n")
    rc = main(["daq", "--profile", "astep", "--port", "astepemu://?seed=1&rate=0",
               "--config", str(path), "--out", str(tmp_path / "run.apx"), "--readouts", "1",
               "--no-multicast"])
    err = capsys.readouterr().err
    assert rc != 0 and not boards and not (tmp_path / "run.apx").exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "thpix" in lines[0] and "Traceback" not in err, err


def test_config_and_sr_config_together_are_refused(tmp_path, boards, capsys):
    raw = tmp_path / "sr.bin"
    raw.write_bytes(b"\x04")
    rc = main(["daq", "--profile", "astep", "--port", "astepemu://?seed=1&rate=0",
               "--config", str(NONE_YAML), "--sr-config", str(raw),
               "--out", str(tmp_path / "run.apx"), "--readouts", "1", "--no-multicast"])
    err = capsys.readouterr().err
    assert rc != 0 and not boards and "--sr-config" in err and len(err.strip().splitlines()) == 1


def test_the_shift_register_chain_takes_the_last_chip_first():
    """§6.4: "take the bit vector of all chips, last chip first, then chip N-2 ... chip 0"."""
    from astropix_hil.boards.astep.configstream import chain_vector

    chips = [np.array([k & 1, k >> 1 & 1, 1], dtype=np.uint8) for k in range(4)]
    assert chain_vector(chips).tolist() == [1, 1, 1, 0, 1, 1, 1, 0, 1, 0, 0, 1]
