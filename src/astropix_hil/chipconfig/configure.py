"""The thin shell that plays the start-up sequence
(:mod:`~astropix_hil.chipconfig.sequence`) on a board link and checks what the firmware lets
it read back.

:func:`configure` is the public entry point (``apx-hil configure``, ``apx-hil daq``, and scans:
call it again with another threshold, amplitude or pulse count).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..boards.nexys.link import NexysLink
from ..boards.nexys.protocol import READOUT_SIZE, Register, SpiConfig
from ..errors import ApxHilError
from .model import ChipConfiguration
from .patgen import PatternGenerator
from .sequence import (
    Flush,
    Read,
    StartupOptions,
    Step,
    Wait,
    Write,
    final_configuration,
    startup_sequence,
)


class ConfigureError(ApxHilError):
    """The board did not read back what the start-up sequence wrote."""


@dataclass
class ConfigureReport:
    """What :func:`configure` did: the configuration left in the chip and the traffic."""

    config: ChipConfiguration
    options: StartupOptions
    writes: int = 0
    bytes_written: int = 0
    reads: int = 0
    bytes_flushed: int = 0
    mismatches: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """A JSON-able summary (printed by the commands, stored in run headers)."""
        o = self.options
        gen = o.generator
        out = {"threshold_mv": round(self.config.threshold_mv, 3),
               "vinj_mv": round(self.config.injection_amplitude_mv, 3),
               "inject": list(o.inject) if o.inject else None,
               "writes": self.writes, "bytes_written": self.bytes_written,
               "reads_verified": self.reads, "readback_ok": not self.mismatches}
        if o.inject:
            out["injection"] = {"period_ms": gen.period_ns / 1e6, "pulses": gen.cycle,
                                "pulses_per_set": gen.pulses}
        return out


def run_steps(link: NexysLink, steps: list[Step], report: ConfigureReport,
              sleep: Callable[[float], None] = time.sleep) -> None:
    """Send ``steps`` in order; record read-back mismatches in ``report``."""
    for step in steps:
        if isinstance(step, Write):
            link.write_registers(step.register, step.data)
            report.writes += 1
            report.bytes_written += len(step.data) + 4
        elif isinstance(step, Read):
            value = link.read_register(step.register)[0]
            if step.mask:
                report.reads += 1
                if (value ^ step.expect) & step.mask:
                    report.mismatches.append(
                        f"register 0x{step.register:02x} read 0x{value:02x}, expected "
                        f"0x{step.expect:02x} in bits 0x{step.mask:02x}"
                        + (f" ({step.what})" if step.what else ""))
        elif isinstance(step, Wait):
            sleep(step.seconds)
        elif isinstance(step, Flush) and not link.read_status() & SpiConfig.READ_FIFO_EMPTY:
            report.bytes_flushed += len(link.read_register(Register.SPI_READ_FIFO,
                                                           READOUT_SIZE).rstrip(b"\xff"))


def configure(link: NexysLink, config: ChipConfiguration, *, threshold_mv: float | None = None,
              inject: tuple[int, int] | None = None, vinj_mv: float | None = None,
              period_ms: float | None = None, pulses: int = 0,
              sleep: Callable[[float], None] = time.sleep, strict: bool = True
              ) -> ConfigureReport:
    """Configure the chip behind ``link`` as ``beam_test.py`` does (spec §7): SPI reset and
    enable, chip reset, configuration, voltage card (``threshold_mv`` above the baseline),
    TDAC row 0, and with ``inject=(row, col)`` injection of ``vinj_mv`` every ``period_ms``
    (default: the team's 77.36 ms), ``pulses`` times (0: forever).

    Raises :class:`ConfigureError` if a register does not read back what was written
    (unless ``strict`` is False: then the report lists the mismatches)."""
    generator = (PatternGenerator.for_period(period_ms, cycle=pulses) if period_ms is not None
                 else PatternGenerator(cycle=pulses))
    options = StartupOptions(threshold_mv=threshold_mv, inject=inject, vinj_mv=vinj_mv,
                             generator=generator)
    steps = startup_sequence(config, options)
    report = ConfigureReport(final_configuration(config, options), options)
    run_steps(link, steps, report, sleep)
    if strict and report.mismatches:
        raise ConfigureError(f"{link.name}: the board did not read back what was written: "
                             + "; ".join(report.mismatches[:3]))
    return report
