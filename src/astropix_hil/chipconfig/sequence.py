"""The team's v4 start-up sequence (spec §7, ``beam_test.py``) as data: a pure function of the
configuration and options returning the ordered register accesses.

:func:`startup_sequence` gives :class:`Write`, :class:`Read` (with the value a freshly reset
board returns, and which bits of it the firmware lets us check), :class:`Wait` and
:class:`Flush` (read the status; if data, read 2048 bytes of the FIFO and discard them) steps.
Write values are what the team's software sends against a freshly reset board; the read-only
status bits they carry are ignored by the firmware, so the same bytes are right for any board.
The I/O shell that plays it on a link is :mod:`astropix_hil.chipconfig.configure`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..boards.nexys.protocol import write_request
from .model import ChipConfiguration
from .patgen import PatternGenerator, start_writes
from .streams import (
    CHIP_RESET,
    REG_CHIP_CONFIG,
    config_request,
    tdac_request,
    voltage_request,
)

REG_TEST_IO = 0x09
REG_SPI_CONFIG = 0x15
REG_SPI_CLKDIV = 0x16
REG_SPI_WRITE = 0x17
REG_SR_READBACK_CONFIG = 0x3D
#: Status after power-up with empty FIFOs, and the bits a write keeps (b7, b6, b3, b0).
SPI_STATUS_POWER_UP = 0x92
SPI_STORED_BITS = 0xC9
SPI_MODULE_RESET = 0x80
SPI_WRITE_FIFO_RESET = 0x01
SPI_READ_FIFO_RESET = 0x08
SPI_WRITE_FIFO_EMPTY = 0x02
SR_READBACK_POWER_UP = 0x12
#: SPI clock divider the v4 software writes (1.2195 MHz).
SPI_CLOCK_DIVIDER = 40
#: The routing frame ``send_routing_cmd`` queues (0x20, bit-reversed, then 7 zeros).
ROUTING_FRAME = bytes([0x04, 0, 0, 0, 0, 0, 0, 0])
#: How long the chip reset is held, s.
CHIP_RESET_HOLD_S = 0.1


@dataclass(frozen=True)
class Write:
    """Write ``data`` to ``register`` (one request)."""

    register: int
    data: bytes
    what: str = ""

    def request(self) -> bytes:
        return write_request(self.register, self.data)


@dataclass(frozen=True)
class Read:
    """Read one byte of ``register``; a fresh board returns ``expect``; ``mask`` selects the
    bits the firmware lets us verify (0: nothing to verify)."""

    register: int
    expect: int = 0
    mask: int = 0
    what: str = ""


@dataclass(frozen=True)
class Wait:
    """Hold the current state for ``seconds``."""

    seconds: float
    what: str = ""


@dataclass(frozen=True)
class Flush:
    """``dump_fpga``: read the status; if the read FIFO holds data, read 2048 bytes of it."""

    what: str = "discard what the read FIFO holds"


Step = Write | Read | Wait | Flush


@dataclass
class StartupOptions:
    """What ``beam_test.py -i ROW COL -v VINJ -t THR`` adds to the YAML file."""

    threshold_mv: float | None = None
    inject: tuple[int, int] | None = None
    vinj_mv: float | None = None
    generator: PatternGenerator = field(default_factory=PatternGenerator)
    ampout_col: int = 0
    tdac_rows: tuple[int, ...] = (0,)


def _w(register: int, value: int, what: str = "") -> Write:
    return Write(register, bytes([value]), what)


def spi_reset_readout(status: int) -> list[Step]:
    """``spi_reset_fpga_readout``: pulse the write- then the read-FIFO reset (read-modify-
    write of 0x15; ``status`` is what a fresh board would read)."""
    return [
        Read(REG_SPI_CONFIG, status, SPI_STORED_BITS, "SPI status"),
        _w(REG_SPI_CONFIG, status | SPI_WRITE_FIFO_RESET, "write-FIFO reset on"),
        Read(REG_SPI_CONFIG, status | SPI_WRITE_FIFO_RESET, SPI_STORED_BITS),
        _w(REG_SPI_CONFIG, (status | SPI_WRITE_FIFO_RESET) & ~SPI_WRITE_FIFO_RESET,
           "write-FIFO reset off"),
        Read(REG_SPI_CONFIG, status, SPI_STORED_BITS),
        _w(REG_SPI_CONFIG, status | SPI_READ_FIFO_RESET, "read-FIFO reset on"),
        Read(REG_SPI_CONFIG, status | SPI_READ_FIFO_RESET, SPI_STORED_BITS),
        _w(REG_SPI_CONFIG, (status | SPI_READ_FIFO_RESET) & ~SPI_READ_FIFO_RESET,
           "read-FIFO reset off"),
    ]


def chip_configuration(config: ChipConfiguration) -> list[Step]:
    """``asic_update``: chip reset (~100 ms), then the main configuration request."""
    req = config_request(config)
    return [Read(REG_CHIP_CONFIG, 0x00, 0xFF, "shift-register pins"),
            _w(REG_CHIP_CONFIG, CHIP_RESET, "chip reset on"),
            Wait(CHIP_RESET_HOLD_S, "chip reset held"),
            Read(REG_CHIP_CONFIG, CHIP_RESET, 0xFF),
            _w(REG_CHIP_CONFIG, 0x00, "chip reset off"),
            Write(REG_CHIP_CONFIG, req[4:], f"configuration, {config.nbits} bits")]


def injected_configuration(config: ChipConfiguration,
                           options: StartupOptions) -> tuple[ChipConfiguration,
                                                             ChipConfiguration]:
    """The configuration as first sent (AmpOut, injection bits) and as finally sent
    (plus the injected pixel's comparator and the ``vinj`` amplitude, and the threshold)."""
    first = config.copy()
    first.enable_ampout(options.ampout_col)
    if options.inject is not None:
        first.enable_injection(*options.inject)
    if options.threshold_mv is not None:
        first.set_threshold(options.threshold_mv)
    final = first.copy()
    if options.inject is not None:
        final.enable_pixel(*options.inject)
        if options.vinj_mv is not None:
            final.set_injection_amplitude(options.vinj_mv)
    return first, final


def startup_sequence(config: ChipConfiguration,
                     options: StartupOptions | None = None) -> list[Step]:
    """The register accesses of ``beam_test.py`` (spec §7, steps 1-15) for ``config``: the
    first configuration carries AmpOut on ``ampout_col`` and the injection bits, the second
    also the injected pixel's comparator and ``vinj``; TDAC rows ``tdac_rows``; with
    ``inject``, the pattern generator started last."""
    options = options or StartupOptions()
    first, final = injected_configuration(config, options)
    steps: list[Step] = [_w(REG_TEST_IO, 0x55, "test write"), Read(REG_TEST_IO, 0x00, 0)]
    first_reset = spi_reset_readout(SPI_STATUS_POWER_UP)
    # Its first status read depends on what ran before (a fresh board reads 0x92): not checked.
    first_reset[0] = Read(REG_SPI_CONFIG, SPI_STATUS_POWER_UP, 0, "SPI status")
    steps += first_reset
    steps += [Read(REG_SR_READBACK_CONFIG, SR_READBACK_POWER_UP, 0x81, "SR readback config"),
              _w(REG_SR_READBACK_CONFIG, SR_READBACK_POWER_UP | 0x01, "SR readback reset on"),
              Read(REG_SR_READBACK_CONFIG, SR_READBACK_POWER_UP | 0x01, 0x81),
              _w(REG_SR_READBACK_CONFIG, SR_READBACK_POWER_UP, "SR readback reset off")]
    steps += chip_configuration(first)
    steps.append(Write(0x0C, voltage_request(final)[4:],
                       f"voltage card, threshold {final.threshold_mv:.1f} mV"))
    released = SPI_STATUS_POWER_UP & ~SPI_MODULE_RESET
    steps += [Read(REG_SPI_CONFIG, SPI_STATUS_POWER_UP, SPI_STORED_BITS),
              _w(REG_SPI_CONFIG, released, "SPI master released")]
    steps += spi_reset_readout(released)
    steps += [_w(REG_SPI_CLKDIV, SPI_CLOCK_DIVIDER, "SPI clock divider 40"),
              Read(REG_SPI_CLKDIV, SPI_CLOCK_DIVIDER, 0xFF),
              Read(REG_SPI_CONFIG, released, SPI_STORED_BITS | SPI_WRITE_FIFO_EMPTY,
                   "SPI write FIFO empty"),
              Read(REG_SPI_CONFIG, released, SPI_STORED_BITS, "SPI write FIFO not full"),
              Write(REG_SPI_WRITE, ROUTING_FRAME, "routing frame")]
    steps += chip_configuration(final)
    for row in options.tdac_rows:
        steps.append(Write(REG_CHIP_CONFIG, tdac_request(final, row)[4:], f"TDAC row {row}"))
    steps.append(Flush())
    if options.inject is not None:
        # Step 16 (a second dump after the log header) is left to the caller: it would
        # discard the first injections, which a DAQ wants to record.
        steps += [_w(reg, value) for reg, value in start_writes(options.generator)]
    return steps


def writes_of(steps: list[Step]) -> bytes:
    """The write requests of ``steps``, concatenated (what the host sends, reads apart)."""
    return b"".join(step.request() for step in steps if isinstance(step, Write))


def final_configuration(config: ChipConfiguration,
                        options: StartupOptions | None = None) -> ChipConfiguration:
    """The configuration the sequence leaves in the chip."""
    return injected_configuration(config, options or StartupOptions())[1]
