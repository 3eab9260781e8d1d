"""Taking a scan through a Nexys board link (the thin I/O shell of ``apx-hil scan injection``
and ``apx-hil scan threshold``).

Each step configures the chip (:func:`~astropix_hil.chipconfig.configure.configure`: the read
FIFO is reset and flushed before the pattern generator starts, so a step holds only its own
hits), then reads the FIFO as the DAQ does until the step is over:

* with injection, once the generator's last pulse is ``TAIL_NS`` past (its settings give the
  time of every pulse after its start) and the board says the FIFO is empty and the chip holds
  no more hits (the interrupt register ``0x46``);
* counting noise (no injection), the FIFO is reset again after the configuration and read for
  ``time_s``; then the chip is held in reset (it sends nothing more) and the FIFO drained the
  same way: the count covers exactly the window.

The step's time is counted from a status read after the last write (writes get no reply, and
a board behind a busy pty may take them late).

Readouts get the ids of their step (``k * readout_id_stride`` upwards, docs/format.rst).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..boards.nexys.protocol import SpiConfig
from ..bulk import decode_readouts
from ..chipconfig.configure import configure
from ..chipconfig.model import ChipConfiguration
from ..chipconfig.patgen import PatternGenerator
from ..chipconfig.sequence import CHIP_RESET, REG_CHIP_CONFIG
from ..errors import ApxHilError
from ..fileio import ApxWriter
from ..fmt import AstroPix4Readout
from .definition import ScanDefinition

#: Board register of the chip's interrupt: 0x00 while the chip holds hits for the FIFO.
REG_INTERRUPT = 0x46
#: Time after the last injected pulse before a step may end (the hit's TOT, ~235 us, and its
#: way through the chip's output): 2 ms.
TAIL_NS = 2_000_000
#: A step whose FIFO is not drained this long after its end fails (a board that floods).
DRAIN_TIMEOUT_NS = 10_000_000_000
#: Poll interval while the FIFO is empty, s.
IDLE_SLEEP_S = 0.0005


class ScanError(ApxHilError):
    """A scan step could not be completed."""


@dataclass
class StepResult:
    """What one step took: its index and value, readouts, and hits per selected pixel."""

    index: int
    value: float
    readouts: int
    hits: dict[tuple[int, int, int], int]
    #: Hits of pixels that were not selected (e.g. noise of another enabled pixel).
    other_hits: int = 0


@dataclass
class ScanPlan:
    """What to scan: ``kind`` ``injection`` (``values`` are amplitudes) or ``threshold``
    (``values`` are thresholds; ``vinj_mv`` set: inject, None: count noise for ``time_s``)."""

    kind: str
    values: Sequence[float]
    pixels: Sequence[tuple[int, int]]
    pulses: int = 100
    period_ms: float = 1.0
    threshold_mv: float | None = None
    vinj_mv: float | None = None
    time_s: float = 1.0
    settings: dict = field(default_factory=dict)

    @property
    def injects(self) -> bool:
        return self.kind == "injection" or self.vinj_mv is not None


def scan_config(config: ChipConfiguration, pixels: Sequence[tuple[int, int]],
                inject: bool) -> ChipConfiguration:
    """``config`` with only the comparators of ``pixels`` enabled and, with ``inject``, their
    injection bits set (the chip injects into the cross product of their rows and columns;
    only the selected pixels' comparators report)."""
    out = config.copy()
    out.disable_all_pixels()
    for row, col in pixels:
        out.enable_pixel(row, col)
        if inject:
            out.enable_injection(row, col)
    return out


def applied_values(plan: ScanPlan, config: ChipConfiguration) -> tuple[float, ...]:
    """The values the chip will hold at each step: injection amplitudes are rounded to the
    ``vinj`` DAC's code (1.76 mV steps), as the chip is given them."""
    if plan.kind != "injection":
        return tuple(float(v) for v in plan.values)
    probe = config.copy()
    out = []
    for value in plan.values:
        probe.set_injection_amplitude(value)
        out.append(float(probe.injection_amplitude_mv))
    return tuple(out)


def definition_of(plan: ScanPlan, config: ChipConfiguration) -> ScanDefinition:
    """The header's scan definition (chip 0: a Nexys board carries one chip)."""
    parameter = "injection_amplitude" if plan.kind == "injection" else "threshold"
    vinj_applied = None
    if plan.vinj_mv is not None:  # what the vinj DAC's code gives, as for injection values
        probe = config.copy()
        probe.set_injection_amplitude(plan.vinj_mv)
        vinj_applied = float(probe.injection_amplitude_mv)
    settings = {"requested_values": [float(v) for v in plan.values],
                "threshold_mv": plan.threshold_mv, "vinj_mv": plan.vinj_mv,
                "vinj_applied_mv": vinj_applied,
                "period_ms": plan.period_ms if plan.injects else None,
                "time_s": None if plan.injects else plan.time_s, **plan.settings}
    return ScanDefinition(plan.kind, parameter, "mV", applied_values(plan, config),
                          plan.pulses if plan.injects else None,
                          tuple((0, r, c) for r, c in plan.pixels), settings=settings)


def last_pulse_ns(generator: PatternGenerator) -> int:
    """Time of the generator's last rising edge after its start (it must stop by itself)."""
    if not generator.cycle:
        raise ValueError("an endless pattern generator has no last pulse")
    end = (generator.initdelay + 1 + generator.cycle * generator.set_ticks) * generator.tick_ns
    return int(generator.rising_edges_ns(0, end + 1)[-1])


def run_scan(link, config: ChipConfiguration, plan: ScanPlan, writer: ApxWriter,
             definition: ScanDefinition, *,
             on_step: Callable[[StepResult], None] | None = None,
             clock: Callable[[], int] = time.monotonic_ns,
             sleep: Callable[[float], None] = time.sleep) -> list[StepResult]:
    """Take every step of ``plan`` through ``link`` (a NexysLink) into ``writer``, whose
    header holds ``definition``; ``clock`` (ns) and ``sleep`` pace it (tests pass a virtual
    board's clock)."""
    base = scan_config(config, plan.pixels, plan.injects)
    selected = [(0, r, c) for r, c in plan.pixels]
    results = []
    for index, value in enumerate(plan.values):
        if plan.kind == "injection":
            threshold, vinj = plan.threshold_mv, value
        else:
            threshold, vinj = value, plan.vinj_mv
        if plan.injects:
            report = configure(link, base, threshold_mv=threshold, inject=tuple(plan.pixels[0]),
                               vinj_mv=vinj, period_ms=plan.period_ms, pulses=plan.pulses,
                               sleep=sleep)
            length = last_pulse_ns(report.options.generator) + TAIL_NS
        else:
            configure(link, base, threshold_mv=threshold, sleep=sleep)
            link.reset_fifos()  # the noise window starts now
            length = int(plan.time_s * 1e9)
        # Writes get no reply: a round trip makes sure the board has taken them all (over a
        # busy pty it may be well behind), so the step's time is counted from after its start.
        link.read_status()
        end = clock() + length
        readouts = _take_step(link, writer, definition, index, end, clock, sleep,
                              hold_chip=not plan.injects)
        results.append(_count(index, definition.values[index], readouts, selected))
        if on_step is not None:
            on_step(results[-1])
    return results


def _take_step(link, writer: ApxWriter, definition: ScanDefinition, index: int, end: int,
               clock: Callable[[], int], sleep: Callable[[float], None],
               hold_chip: bool = False) -> list[AstroPix4Readout]:
    first = definition.first_readout_id(index)
    readouts: list[AstroPix4Readout] = []
    held = False
    while True:
        data = link.poll_readout()
        if data is not None:
            if len(readouts) >= definition.readout_id_stride:
                raise ScanError(f"step {index}: more than {definition.readout_id_stride} "
                                f"readouts")
            readout = AstroPix4Readout(data, first + len(readouts))
            writer.write(readout)
            readouts.append(readout)
            continue
        now = clock()
        if now < end:
            sleep(min(IDLE_SLEEP_S, (end - now) / 1e9))
        elif hold_chip and not held:
            # The noise window ends: the chip held in reset sends nothing more, so the FIFO
            # drains and the hits counted are exactly the window's.
            link.write_register(REG_CHIP_CONFIG, CHIP_RESET)
            held = True
        elif (link.read_status() & SpiConfig.READ_FIFO_EMPTY
              and link.read_register(REG_INTERRUPT)[0] & 1):
            if held:  # released as the start-up sequence expects to find it
                link.write_register(REG_CHIP_CONFIG, 0)
            return readouts
        elif now > end + DRAIN_TIMEOUT_NS:
            raise ScanError(f"step {index}: the board kept sending hits "
                            f"{DRAIN_TIMEOUT_NS / 1e9:g} s after the step's end")
        else:
            sleep(IDLE_SLEEP_S)


def _count(index: int, value: float, readouts: list[AstroPix4Readout],
           selected: list[tuple[int, int, int]]) -> StepResult:
    hits = dict.fromkeys(selected, 0)
    other = 0
    if readouts:
        decoded = decode_readouts(readouts).hits
        keys, counts = np.unique(np.stack([decoded["chip_id"], decoded["row"],
                                           decoded["column"]], axis=1), axis=0,
                                 return_counts=True) if len(decoded) else ([], [])
        for key, count in zip(keys, counts, strict=True):
            pixel = tuple(int(v) for v in key)
            if pixel in hits:
                hits[pixel] += int(count)
            else:
                other += int(count)
    return StepResult(index, value, len(readouts), hits, other)
