"""The configured chip: an AstroPix4 that obeys its configuration.

:class:`ConfiguredChip` is what the virtual board drives: it decodes the board's chip-facing
registers (:mod:`.bitbang`) into its active configuration, voltage-card threshold and
injection pattern, and turns the front end's hits (:mod:`.pixels`) into the byte layout the
read FIFO takes (the same :class:`~.layout.Layout` as the free-running
:class:`~.chipstream.ChipStream`). Before its first configuration no comparator is enabled:
the chip sends nothing.

:class:`ConfiguredSource` is the same model with a fixed configuration, as a hit source of the
bulk emulator (``apx-hil emulate --config``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..chipconfig.model import (
    BASELINE_DAC,
    THRESHOLD_DAC,
    VDAC_DOC_STEPS,
    VDAC_FULL_SCALE_V,
    ChipConfiguration,
)
from ..chipconfig.patgen import PatternGenerator
from ..chipconfig.yamlio import NONE_CONFIG, load_bundled
from ..fmt import CLOCK_CYCLES_PER_US, HIT_DTYPE
from .bitbang import PatternGeneratorState, ShiftRegisterDecoder, VoltageCardDecoder
from .config import Anomalies, EmulatorConfig
from .layout import Layout, lay_out
from .pixels import COLUMNS, ROWS, ChipState, PixelModel
from .sources import SourceHits
from .timestamps import edges

REG_CHIP_CONFIG = 0x00
REG_VOLTAGE_BOARD = 0x0C
PATTERN_REGISTERS = range(0x02, 0x08)


def internal_threshold_mv(config: ChipConfiguration) -> float:
    """thpix - blpix of the chip's own VDACs, mV (the threshold without a voltage card)."""
    v = config.vdacs
    steps = v.get("thpix", 0) - v.get("blpix", 0)
    return steps * VDAC_FULL_SCALE_V * 1000.0 / VDAC_DOC_STEPS


def state_of(config: ChipConfiguration | None, tdac: np.ndarray, hit_buffer: np.ndarray,
             card: list[float] | None) -> ChipState:
    """The front end's view of a configuration (None: the chip before configuration)."""
    if config is None:
        return ChipState.off()
    comparator = np.zeros((ROWS, COLUMNS), dtype=bool)
    injection = np.zeros((ROWS, COLUMNS), dtype=bool)
    for r in range(ROWS):
        for c in range(min(COLUMNS, len(config.columns))):
            comparator[r, c] = config.comparator_enabled(r, c)
            injection[r, c] = config.injection_enabled(r, c)
    if card is not None:
        threshold = (card[THRESHOLD_DAC] - card[BASELINE_DAC]) * 1000.0
    else:
        threshold = internal_threshold_mv(config)
    return ChipState(comparator, injection, hit_buffer, tdac, threshold,
                     config.injection_amplitude_mv, config.idacs.get("vpdac", 0),
                     config.idacs.get("vncomp", 1))


def apply_tdac_row(image: int, tdac: np.ndarray, hit_buffer: np.ndarray) -> None:
    """Write a TDAC row image into the rows whose enable bit is set (group g = column g:
    bit 5g row enable of row g, 5g+1 hit-buffer disable, 5g+2..4 TDAC[0..2])."""
    groups = [(image >> (5 * g)) & 0x1F for g in range(16)]
    rows = [g for g, bits in enumerate(groups) if bits & 1 and g < tdac.shape[0]]
    for r in rows:
        for c, bits in enumerate(groups[:tdac.shape[1]]):
            hit_buffer[r, c] = not bits >> 1 & 1
            tdac[r, c] = bits >> 2 & 0x7


def hit_records(sampled: SourceHits, counter_phase: int, chip_id: int = 0) -> np.ndarray:
    """Hit records of one chip's hits (as the free-running stream makes them)."""
    lead, trail = edges(sampled.time_ns, sampled.tot_ticks, counter_phase)
    hits = np.zeros(len(sampled.time_ns), dtype=HIT_DTYPE)
    hits["chip_id"] = chip_id
    hits["payload"] = 7
    hits["row"] = sampled.row
    hits["column"] = sampled.column
    hits["ts_coarse1"] = lead.coarse
    hits["ts_fine1"] = lead.fine
    hits["ts_coarse2"] = trail.coarse
    hits["ts_fine2"] = trail.fine
    hits["ts_dec1"] = lead.ticks
    hits["ts_dec2"] = lead.ticks + sampled.tot_ticks
    hits["tot_us"] = sampled.tot_ticks / CLOCK_CYCLES_PER_US
    return hits


class ConfiguredChip:
    """A chip that obeys the configuration the board writes to it (see the module doc).

    ``take_until(t_ns)`` gives the frames of the hits up to chip time ``t_ns``; ``write``
    applies register writes made at a chip time. ``pixels`` is the per-pixel truth.
    """

    def __init__(self, seed: int = 0, pixels: PixelModel | None = None,
                 config: EmulatorConfig | None = None) -> None:
        self.seed = int(seed)
        self.config = config if config is not None else EmulatorConfig()
        self.pixels = pixels if pixels is not None else PixelModel(seed=self.seed)
        rngs = np.random.default_rng(np.random.SeedSequence([self.seed, 0xC41])).spawn(2)
        self._rng, self._layout_rng = rngs
        self.counter_phase = int(self._rng.integers(0, 1 << 17))
        self.shift_register = ShiftRegisterDecoder(load_bundled(NONE_CONFIG))
        self.voltage_card = VoltageCardDecoder()
        self.generator = PatternGeneratorState()
        self.tdac = np.zeros((ROWS, COLUMNS), dtype=np.int64)
        self.hit_buffer = np.ones((ROWS, COLUMNS), dtype=bool)
        self.state = ChipState.off()
        self._t = 0
        self.hits_generated = 0
        self.configurations_loaded = 0

    @property
    def active_config(self) -> ChipConfiguration | None:
        """The latched main configuration (None before the first LOAD)."""
        return self.shift_register.config

    def write(self, register: int, data: bytes, now_ns: int) -> None:
        """Bytes written to a chip-facing board register at chip time ``now_ns``."""
        changed = False
        if register == REG_CHIP_CONFIG:
            for event in self.shift_register.feed(data):
                changed = True
                if event == "load":
                    self.configurations_loaded += 1
                elif event == "tdac" and self.shift_register.tdac_loads:
                    config = self.active_config
                    if config is None or config.digital.get("enRamPCH", 1):
                        apply_tdac_row(self.shift_register.tdac_loads[-1], self.tdac,
                                       self.hit_buffer)
        elif register == REG_VOLTAGE_BOARD:
            changed = self.voltage_card.feed(data)
        elif register in PATTERN_REGISTERS:
            self.generator.feed(register, data, now_ns)
        if changed:
            self.state = state_of(self.active_config, self.tdac, self.hit_buffer,
                                  self.voltage_card.dacs)

    def take_until(self, t_ns: int, *, windows: int | None = None) -> list[Layout]:
        """The frames of the hits in (last call, ``t_ns``] (``windows`` is accepted for the
        board's sake: this chip draws any interval in one go)."""
        t0, self._t = self._t, max(self._t, int(t_ns))
        if self._t <= t0 or self.shift_register.in_reset or self.active_config is None:
            return []
        pulses = self.generator.pulses_ns(t0, self._t)
        sampled = self.pixels.sample(self._rng, self.state, pulses, t0, self._t)
        if not len(sampled.time_ns):
            return []
        self.hits_generated += len(sampled.time_ns)
        hits = hit_records(sampled, self.counter_phase)
        return [lay_out(hits, sampled.time_ns, self._layout_rng, Anomalies(),
                        self.config.max_frame_hits, self.config.max_ff_run)]


    # The board's interface for a chip it feeds while idle or full (see ChipStream).

    def prefetch(self) -> None:
        """Nothing to draw ahead: hits are drawn per interval when asked for."""

    def behind(self, t_ns: int) -> bool:
        """False: :meth:`take_until` always reaches ``t_ns``."""
        return False

    def skip_until(self, t_ns: int) -> tuple[int, int, int]:
        """Take the hits up to ``t_ns`` for a receiver that drops them; their hits, frames and
        bytes (the configured chip fires rarely: drawing them costs little)."""
        layouts = self.take_until(t_ns)
        return (sum(len(layout.hits) for layout in layouts),
                sum(layout.n_frames for layout in layouts),
                sum(layout.nbytes for layout in layouts))


@dataclass(frozen=True)
class ConfiguredSource:
    """The configured chip with a fixed configuration, as a hit source: ``config`` as sent
    (comparators, injection, threshold from its voltage card), injection from ``generator``
    (None: none) started at time 0."""

    config: ChipConfiguration
    generator: PatternGenerator | None = None
    pixels: PixelModel = field(default_factory=PixelModel)

    def _state(self) -> ChipState:
        tdac = np.zeros((ROWS, COLUMNS), dtype=np.int64)
        hit_buffer = np.ones((ROWS, COLUMNS), dtype=bool)
        for image in self.config.tdac_rows.values():
            apply_tdac_row(image, tdac, hit_buffer)
        return state_of(self.config, tdac, hit_buffer, list(self.config.voltage_card.dacs))

    def mean_rate(self) -> float:
        state = self._state()
        noise = float(self.pixels.noise_rates(state).sum())
        if self.generator is None or not self.generator.onchip:
            return noise
        per_pulse = sum(self.pixels.fire_probability(r, c, state.threshold_mv, state.vinj_mv)
                        for r, c in zip(*np.nonzero(state.injection & state.live), strict=True))
        return noise + per_pulse * max(self.generator.pulses, 1) * 1e9 / self.generator.period_ns

    def sample(self, rng: np.random.Generator, t0_ns: int, t1_ns: int) -> SourceHits:
        pulses = np.empty(0, dtype=np.int64)
        if self.generator is not None and self.generator.onchip:
            pulses = np.asarray(self.generator.rising_edges_ns(t0_ns, t1_ns), dtype=np.int64)
        return self.pixels.sample(rng, self._state(), pulses, t0_ns, t1_ns)
