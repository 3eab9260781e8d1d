"""The virtual A-STEP board: register file, three layer interfaces, readout FIFO, timestamps.

:meth:`AstepBoard.process` takes whatever bytes the host sent (requests split anywhere, long
writes streamed) and returns exactly what the firmware sends back: L bytes per read, nothing
for a write, and nothing for a read of an address without a read decoder (a write-only FIFO,
or above 0xB2), where the real host waits forever (spec §1.3).

Model (spec §2-§3), per layer n (``LAYER_n_CFG_CTRL``): ``reset`` holds the interface (frames
do not flow, MOSI is ignored); ``disable_autoread`` = 0 lets delivered frames flow into the
readout FIFO; ``disable_miso`` discards what the chips send; ``cs`` (or autoread) lets MOSI
bytes reach the chips: a routing byte ``0x40 | first`` gives the chain's chips the ids
``first, first + 1, ...``, and every MOSI byte clocks two MISO bytes out of the chain (which is
how the team's ``buffer_flush`` empties the chips). Only layer 0's ``reset`` and ``hold`` reach
the shared sensor pins: reset clears the chips (ids back to 0, held hits lost), hold stops them
recording. Each sensor frame header bumps the frame counter and, if its payload length is not
the one CHIP_VERSION expects (7 for 4, else 4), the wrong-length counter; each autoread burst
ends with ``LAYERS_CFG_NODATA_CONTINUE`` idle bytes (counted by the idle counter). What reaches
the chips' configuration inputs is decoded into :attr:`AstepBoard.config_record`: the bits
shifted through LAYERS_SR_OUT before each LD/LDTDAC load, and each SPI configuration frame
(``0x60 | id``) by layer and chip id (:mod:`.configstream`).

Frames enter the 16384-byte readout FIFO whole, in order, stamped with the FPGA timestamp when
they leave the chip; when the FIFO is full they wait in the chips (back-pressure), and a chip
chain holds at most ``chip_buffer`` hits per chip: more are lost and counted. So
:meth:`AstepBoard.truth` is exact: the hits of every frame served, tagged with the board's read
that carried the frame's last byte (non-empty reads of 0xA3 counted from 0).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import numpy as np

from ...astep_files import format_rows as astep_rows
from ...astep_files import write_astep_csv
from ...astep_fmt import BYTEORDERS, HIT_DTYPE, V4_ROLLOVER, V4_TOT_NS, encode_v4
from ...emulator.astep import EVENT_DTYPE, STRAY, WRONG_LENGTH, AstepChips, AstepChipsConfig
from ...errors import EmulatorConfigError
from ...fmt import gray_to_binary
from ..truth import TruthStore, TruthTarget
from .configstream import ConfigRecord, SpiDecoder, SrDecoder
from .protocol import Request, RequestParser
from .registers import (
    BY_ADDRESS,
    BY_NAME,
    CORE_CLOCK_HZ,
    CS,
    DISABLE_AUTOREAD,
    DISABLE_MISO,
    FIRST_BIG_ENDIAN_VERSION,
    HOLD,
    READ_SIZE,
    READOUT,
    READOUT_FIFO_BYTES,
    RESET,
    STATUS_INTERRUPTN,
    Access,
    Register,
)

log = logging.getLogger(__name__)

IDLE_BYTE = 0x3D
EMPTY_BYTE = 0xFF
#: Hits a chip holds while its output is blocked (an assumption; not documented).
CHIP_BUFFER = 64
REALTIME_PULL_INTERVAL = 0.001
#: HK_FIRMWARE_VERSION of an emulated build with little-endian timestamps (before 2025-11-24).
LITTLE_ENDIAN_VERSION = 25030501


_F = EVENT_DTYPE.names
_DELIVER, _POSITION = _F.index("deliver_ns"), _F.index("position")
_ROW, _KIND, _STRAY = _F.index("row"), _F.index("kind"), _F.index("stray")
assert _F[_ROW:_ROW + 10] == ("row", "column", "ts_neg1", "ts_coarse1", "ts_fine1", "ts_tdc1",
                              "ts_neg2", "ts_coarse2", "ts_fine2", "ts_tdc2")


@dataclass
class AstepBoardStats:
    """What the board did (all counters start at 0)."""

    requests: int = 0
    bytes_in: int = 0
    #: Bytes skipped while waiting for a request header (bits 0 and 1 clear).
    filler_bytes: int = 0
    #: Reads of addresses with no read decoder (no reply: the host waits).
    undecoded_reads: int = 0
    #: Non-empty reads of 0xA3 (the board's read numbering), empty ones, bytes and fill.
    reads_served: int = 0
    empty_reads: int = 0
    bytes_served: int = 0
    fill_bytes: int = 0
    read_size_polls: int = 0
    hits_generated: int = 0
    hits_served: int = 0
    hits_lost_hold: int = 0
    hits_lost_reset: int = 0
    hits_lost_chip_buffer: int = 0
    hits_discarded_miso: int = 0
    #: Hits sent as wrong-length frames (not decodable as hits), stray bytes sent.
    wrong_length_hits: int = 0
    stray_bytes: int = 0
    #: Times frames had to wait in the chips because the readout FIFO was full.
    fifo_full: int = 0
    fifo_max_level: int = 0
    mosi_bytes: int = 0
    routings: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _Layer:
    def __init__(self, chips: int) -> None:
        self.chips = chips
        self.ids = [0] * chips
        self.waiting: deque = deque()  # EVENT_DTYPE records, in delivery order
        self.frames = self.idle = self.wrong = 0
        self.bursting = False


class AstepBoard:
    """The board side of the A-STEP protocol over emulated chips (see the module doc).

    ``byteorder`` is the emulated firmware's FPGA timestamp byte order ("big" since
    2025-11-24; "little" emulates an older build, and HK_FIRMWARE_VERSION says so).
    ``truth``: what to do with the truth of the reads served
    (:class:`~astropix_hil.boards.truth.TruthStore`): nothing (default: memory stays flat),
    ``True`` (kept in memory for :meth:`truth`), or a path or text stream (CSV with
    ``apx-hil convert``'s A-STEP columns, written read by read; :meth:`close_truth` ends it).
    """

    def __init__(self, chips: AstepChips, *, clock: Callable[[], int] | None = None,
                 fifo_size: int = READOUT_FIFO_BYTES, byteorder: str = "big",
                 chip_buffer: int = CHIP_BUFFER, pull_interval: float = 0.0,
                 truth: TruthTarget = None) -> None:
        if byteorder not in BYTEORDERS:
            raise EmulatorConfigError(f"byteorder={byteorder!r}: must be big or little")
        if fifo_size < 32:
            raise EmulatorConfigError(f"fifo_size={fifo_size}: too small for a frame")
        self.chips = chips
        self.byteorder = byteorder
        self.clock = clock if clock is not None else time.monotonic_ns
        self.fifo_size = fifo_size
        self.chip_buffer = chip_buffer
        self.stats = AstepBoardStats()
        self.values: dict[str, int] = {r.name: r.reset for r in BY_NAME.values()}
        if byteorder == "little":
            self.values["HK_FIRMWARE_VERSION"] = LITTLE_ENDIAN_VERSION
        cfg = chips.config
        self.layers = [_Layer(cfg.chips) for _ in range(cfg.layers)]
        # Interfaces of layers without chips still exist (3 in the firmware).
        self.layers += [_Layer(0) for _ in range(3 - cfg.layers)]
        self._parser = RequestParser()
        self._fifo = bytearray()
        self._fifo_frames: deque[tuple[int, tuple | None]] = deque()  # (end, truth record)
        self._fifo_head = 0  # absolute position of _fifo[0]
        self._truth = TruthStore(truth, dtype=HIT_DTYPE, rows=astep_rows)
        self._t0 = self.clock()
        self._ts_base, self._ts_t0 = 0, self._t0
        self._pull_every = int(pull_interval * 1e9)
        self._next_pull = self._t0
        #: The chip configuration that reached the chips, decoded (tests read it).
        self.config_record = ConfigRecord()
        self._sr = SrDecoder(self.config_record)
        self._spi = [SpiDecoder(self.config_record, n) for n in range(3)]

    @classmethod
    def from_options(cls, seed: int | str = 0, *, clock: Callable[[], int] | None = None,
                     fifo_size: int | str = READOUT_FIFO_BYTES, byteorder: str = "big",
                     chip_buffer: int | str = CHIP_BUFFER,
                     pull_interval: float | str = REALTIME_PULL_INTERVAL,
                     truth: TruthTarget = None, **options: Any) -> AstepBoard:
        """A board from simple (string) options, as ``astepemu://?layers=3&chips=4&seed=1``:
        ``seed``, ``fifo_size``, ``byteorder``, ``chip_buffer``, ``pull_interval``, ``truth``
        (see the class) and the options of
        :class:`~astropix_hil.emulator.astep.AstepChipsConfig`."""
        try:
            seed_value, size = int(seed), int(fifo_size)
            buffer, every = int(chip_buffer), float(pull_interval)
        except ValueError as exc:
            raise EmulatorConfigError(f"bad board option: {exc}") from None
        config = AstepChipsConfig.from_strings({k: str(v) for k, v in options.items()})
        return cls(AstepChips(config, seed_value), clock=clock, fifo_size=size,
                   byteorder=byteorder, chip_buffer=buffer, pull_interval=every, truth=truth)

    # -- registers ---------------------------------------------------------------------------

    def _cfg(self, n: int) -> int:
        return self.values[f"LAYER_{n}_CFG_CTRL"]

    def timestamp(self, now: int | None = None) -> int:
        """The FPGA timestamp counter now (64 bits; before truncation to the frame's T)."""
        now = self.clock() if now is None else now
        ctrl = self.values["LAYERS_FPGA_TIMESTAMP_CTRL"]
        if ctrl & 0x40:
            value = self.values["LAYERS_FPGA_TIMESTAMP_FORCED"]
        elif not ctrl & 0x01:
            value = 0
        else:
            value = self._ts_base + self._ticks(now - self._ts_t0)
        if ctrl & 0x80:  # force_lsb_0 clears bit 0 (RTL; the docs say "forced to 1", §7 #4)
            value &= ~1
        return value & ((1 << 64) - 1)

    def _ticks(self, ns: int) -> int:
        ctrl = self.values["LAYERS_FPGA_TIMESTAMP_CTRL"]
        cycles = ns * CORE_CLOCK_HZ // 1_000_000_000
        if ctrl & 0x02:
            match = self.values["LAYERS_FPGA_TIMESTAMP_DIVIDER_MATCH"]
            return cycles // match if match else 0
        return cycles

    def _restart_timestamp(self, now: int) -> None:
        self._ts_base = self.timestamp(now) if self.values[
            "LAYERS_FPGA_TIMESTAMP_CTRL"] & 0x01 else 0
        self._ts_t0 = now

    @property
    def ts_bytes(self) -> int:
        return 2 * ((self.values["LAYERS_FPGA_TIMESTAMP_CTRL"] >> 4) & 3) + 2

    def _read_value(self, register: Register, now: int) -> int:
        name = register.name
        if name == "LAYERS_READOUT_READ_SIZE":
            return len(self._fifo)
        if name == "LAYERS_FPGA_TIMESTAMP_COUNTER":
            return self.timestamp(now)
        if name == "LAYERS_FPGA_TIMESTAMP_DIVIDER":
            match = self.values["LAYERS_FPGA_TIMESTAMP_DIVIDER_MATCH"] or 1
            return ((now - self._ts_t0) * CORE_CLOCK_HZ // 1_000_000_000) % match
        if name.startswith("LAYER_") and name[6].isdigit():
            layer = self.layers[int(name[6])]
            kind = name[8:]
            if kind == "STATUS":
                ready = bool(layer.waiting) and layer.waiting[0][_DELIVER] <= now - self._t0
                return 0 if ready else STATUS_INTERRUPTN
            if kind == "STAT_FRAME_COUNTER":
                return layer.frames
            if kind == "STAT_IDLE_COUNTER":
                return layer.idle
            if kind == "STAT_WRONGLENGTH_COUNTER":
                return layer.wrong
        return self.values.get(name, 0)

    def _write_byte(self, address: int, byte: int, now: int) -> None:
        register = BY_ADDRESS.get(address)
        if register is None or register.access is Access.RO:
            return
        name = register.name
        if register.access is Access.WFIFO:
            if name.endswith("_MOSI") and name.startswith("LAYER_"):
                self._mosi(int(name[6]), bytes([byte]))
            return
        if register.access is Access.RFIFO:
            return
        shift = 8 * (address - register.address)
        byte &= ~(register.ro_bits >> shift) & 0xFF
        value = (self.values[name] & ~(0xFF << shift)) | (byte << shift)
        if name.startswith("LAYER_") and name.endswith("_COUNTER"):
            layer = self.layers[int(name[6])]
            current = self._read_value(register, now)
            value = (current & ~(0xFF << shift)) | (byte << shift)
            attr = {"FRAME": "frames", "IDLE": "idle", "WRONGLENGTH": "wrong"}[name.split("_")[3]]
            setattr(layer, attr, value)
            return
        if name == "LAYERS_SR_OUT":
            self._sr.feed(bytes([byte]))
        if name == "LAYERS_FPGA_TIMESTAMP_CTRL" or name == "LAYERS_FPGA_TIMESTAMP_DIVIDER_MATCH":
            self._restart_timestamp(now)
        self.values[name] = value
        if name == "LAYER_0_CFG_CTRL" and value & RESET:
            self._reset_chips()

    # -- layers and chips ------------------------------------------------------------------

    def _reset_chips(self) -> None:
        for layer in self.layers:
            self.stats.hits_lost_reset += len(layer.waiting)
            layer.waiting.clear()
            layer.ids = [0] * layer.chips

    def _mosi(self, n: int, data: bytes) -> None:
        """Bytes written to LAYER_n_MOSI: routing frames, and clocking the chips' output."""
        self.stats.mosi_bytes += len(data)
        cfg = self._cfg(n)
        layer = self.layers[n]
        # The shared CSN pin is low when any layer has cs set or autoread on (spec §2.1).
        csn_low = any(c & CS or not c & DISABLE_AUTOREAD for c in map(self._cfg, range(3)))
        if cfg & RESET or not csn_low or not layer.chips:
            return
        self._spi[n].feed(data)
        for byte in data:
            if 0x40 <= byte <= 0x5F:  # routing frame header: 0x40 | first chip id
                first = byte & 0x1F
                layer.ids = [(first + k) & 0x1F for k in range(layer.chips)]
                self.stats.routings += 1
        # Each MOSI byte clocks 2 MISO bytes: frames (9 bytes with an idle byte) come out.
        self._drain(n, now=self.clock(), budget=len(data) * 2 // 9)

    def advance(self) -> None:
        """Move the chips up to now while nobody asks (a server's idle hook): the next request
        then finds no backlog to work through, however long the board was idle."""
        self._pull(self.clock())

    def _pull(self, now: int) -> None:
        if now < self._next_pull:
            return
        self._next_pull = now + self._pull_every
        events = self.chips.take_until(now - self._t0)
        self.stats.hits_generated += len(events)
        if self._cfg(0) & RESET:
            self.stats.hits_lost_reset += len(events)
        elif self._cfg(0) & HOLD:
            self.stats.hits_lost_hold += len(events)
        elif len(events):
            # Each layer's chips hold what their buffers take, in time order; the rest of a
            # backlog is counted lost, not handled hit by hit.
            of_layer = events["layer"]
            for n, layer in enumerate(self.layers):
                mine = events[of_layer == n]
                room = max(self.chip_buffer * layer.chips - len(layer.waiting), 0)
                layer.waiting.extend(mine[:room].tolist())  # tuples: fast field access
                self.stats.hits_lost_chip_buffer += max(len(mine) - room, 0)
        for n in range(3):
            cfg = self._cfg(n)
            if not cfg & RESET and not cfg & DISABLE_AUTOREAD:
                self._drain(n, now)

    def _drain(self, n: int, now: int, budget: int | None = None) -> None:
        """Move layer ``n``'s delivered frames out of the chips (into the FIFO, or discarded
        when MISO is disabled); at most ``budget`` frames."""
        layer = self.layers[n]
        cfg = self._cfg(n)
        since = now - self._t0
        moved = 0
        while layer.waiting and (budget is None or moved < budget):
            event = layer.waiting[0]
            if event[_DELIVER] > since:
                break
            if cfg & DISABLE_MISO:
                layer.waiting.popleft()
                self.stats.hits_discarded_miso += 1
                moved += 1
                continue
            frames = self._frames(n, event, now)
            size = sum(len(f) for f, _ in frames)
            if len(self._fifo) + size > self.fifo_size:
                self.stats.fifo_full += 1
                break
            layer.waiting.popleft()
            moved += 1
            for frame, record in frames:
                self._fifo += frame
                self._fifo_frames.append((self._fifo_head + len(self._fifo), record))
        if moved:
            layer.idle += self.values["LAYERS_CFG_NODATA_CONTINUE"]
        self.stats.fifo_max_level = max(self.stats.fifo_max_level, len(self._fifo))

    def _frames(self, n: int, event: tuple, now: int) -> list[tuple[bytes, tuple | None]]:
        """The layer frames one chip event becomes, with the truth record of its hit."""
        layer = self.layers[n]
        chip_id = layer.ids[event[_POSITION]]
        t = self.ts_bytes
        stamp = self.timestamp(now) & ((1 << (8 * t)) - 1)
        expected = 7 if self.values["CHIP_VERSION"] == 4 else 4
        out: list[tuple[bytes, tuple | None]] = []
        if event[_KIND] == STRAY:
            stray = event[_STRAY]
            h = stray & 7
            sensor = bytes([stray]) + bytes([IDLE_BYTE]) * h
            out.append((self._layer_frame(n, sensor, stamp, t), None))
            layer.frames += 1
            layer.wrong += h != expected
            self.stats.stray_bytes += 1
        word = encode_v4(chip_id, *event[_ROW:_ROW + 10])
        layer.frames += 1
        if event[_KIND] == WRONG_LENGTH:
            sensor = bytes([word[0] & 0xF8 | 4]) + word[1:5]
            layer.wrong += expected != 4
            self.stats.wrong_length_hits += 1
            out.append((self._layer_frame(n, sensor, stamp, t), None))
            return out
        layer.wrong += expected != 7
        out.append((self._layer_frame(n, word, stamp, t), self._truth_record(
            n, chip_id, event, stamp)))
        return out

    def _layer_frame(self, n: int, sensor: bytes, stamp: int, t: int) -> bytes:
        return bytes([1 + len(sensor) + t, n + 1]) + sensor + stamp.to_bytes(t, self.byteorder)

    @staticmethod
    def _truth_record(n: int, chip_id: int, event: tuple, stamp: int) -> tuple:
        """The hit's columns after readout_id, timestamp and decoding_order (HIT_DTYPE)."""
        fields = event[_ROW:_ROW + 10]  # row, column, neg1, coarse1, fine1, tdc1, neg2, ...
        dec = [gray_to_binary(fields[3] << 3 | fields[4]) << 1 | fields[2],
               gray_to_binary(fields[7] << 3 | fields[8]) << 1 | fields[6]]
        tot = dec[1] - dec[0] if dec[1] > dec[0] else V4_ROLLOVER - 1 + dec[1] - dec[0]
        return (n + 1, chip_id, 7, *fields, dec[0], dec[1], tot, tot * V4_TOT_NS / 1000, stamp)

    # -- the readout FIFO -----------------------------------------------------------------

    def _read_fifo(self, length: int, now: int) -> bytes:
        take = min(length, len(self._fifo))
        fill = bytes([EMPTY_BYTE]) * (length - take)
        self.stats.fill_bytes += length - take
        if take == 0:
            self.stats.empty_reads += 1
            return fill
        data = bytes(self._fifo[:take])
        del self._fifo[:take]
        self._fifo_head += take
        records = []
        while self._fifo_frames and self._fifo_frames[0][0] <= self._fifo_head:
            _, record = self._fifo_frames.popleft()
            if record is not None:
                records.append(record)
        if self._truth.kept:
            rid = self.stats.reads_served
            self._truth.add(np.array([(rid, now, k, *rec) for k, rec in enumerate(records)],
                                     dtype=HIT_DTYPE))
        self.stats.reads_served += 1
        self.stats.bytes_served += take
        self.stats.hits_served += len(records)
        return data + fill

    # -- the protocol --------------------------------------------------------------------------

    def process(self, data: bytes) -> bytes:
        """The board's reply to ``data`` (see the module doc)."""
        now = self.clock()
        self.stats.bytes_in += len(data)
        self._pull(now)
        out = bytearray()
        before = self._parser.skipped
        for request, chunk, offset in self._parser.feed(data):
            if request.write:
                self.stats.requests += offset == 0
                self._write(request, chunk, offset, now)
                continue
            self.stats.requests += 1
            out += self._read(request, now)
        self.stats.filler_bytes += self._parser.skipped - before
        return bytes(out)

    def _write(self, request: Request, chunk: bytes, offset: int, now: int) -> None:
        if not request.increment:
            register = BY_ADDRESS.get(request.address)
            if register is not None and register.access is Access.WFIFO and \
                    register.name.endswith("_MOSI") and register.name.startswith("LAYER_"):
                self._mosi(int(register.name[6]), chunk)
                return
            if register is not None and register.access is Access.RW and register.width == 1:
                # A stream into one byte register (shift-register bit banging): last one stays.
                if register.name == "LAYERS_SR_OUT":
                    self._sr.feed(chunk[:-1])
                self._write_byte(request.address, chunk[-1], now)
                return
            for byte in chunk:
                self._write_byte(request.address, byte, now)
            return
        mask = 0xFFFF if request.extended else 0xFF
        for i, byte in enumerate(chunk):
            self._write_byte((request.address + offset + i) & mask, byte, now)

    def _read(self, request: Request, now: int) -> bytes:
        if not request.increment and request.address == READOUT:
            return self._read_fifo(request.length, now)
        if request.address == READ_SIZE and request.increment:
            self.stats.read_size_polls += 1
        out = bytearray()
        cache: dict[str, int] = {}
        for address in request.addresses():
            register = BY_ADDRESS.get(address)
            if register is None or register.access is Access.WFIFO:
                self.stats.undecoded_reads += 1
                return bytes(out)  # no read decoder: no byte, the host waits (spec §1.3)
            if register.access is Access.RFIFO:
                out += self._read_fifo(1, now) if address == READOUT else b"\xff"
                continue
            if register.name not in cache:
                cache[register.name] = self._read_value(register, now)
            out.append((cache[register.name] >> (8 * (address - register.address))) & 0xFF)
        return bytes(out)

    # -- truth ------------------------------------------------------------------------------

    @property
    def fifo_level(self) -> int:
        return len(self._fifo)

    def truth(self) -> np.ndarray:
        """Every hit served so far (:data:`~astropix_hil.astep_fmt.HIT_DTYPE`; only for a board
        made with ``truth=True``), ``readout_id`` = the board's read that carried it (non-empty
        reads of 0xA3 from 0), ``timestamp`` = board clock (ns) at that read."""
        return self._truth.hits()

    def write_truth_csv(self, output: str | os.PathLike | TextIO,
                        header: dict | None = None) -> int:
        """Write :meth:`truth` as CSV (``apx-hil convert``'s A-STEP columns); return the count."""
        hits = self.truth()
        if isinstance(output, str | os.PathLike):
            with open(output, "w", encoding="utf-8", newline="") as stream:
                return write_astep_csv(stream, [hits], header)
        return write_astep_csv(output, [hits], header)

    def close_truth(self) -> int:
        """End a streamed truth (flush, and close the file the board opened); return the
        truth's hit count."""
        self._truth.close()
        return self._truth.count


__all__ = ["FIRST_BIG_ENDIAN_VERSION", "AstepBoard", "AstepBoardStats"]
