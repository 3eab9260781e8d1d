"""The pixel front end of the configured chip: per-pixel threshold and noise, the s-curve of
injected pulses, and noise hits. Numbers no public source gives are options with documented
defaults (docs/emulator.rst, "Assumptions").

A pixel (row, col) whose comparator is enabled fires on an injected pulse of amplitude A (mV,
the ``vinj`` DAC) with probability ``Phi((gain * A - T_pix) / sigma_pix)``, where
``T_pix = T + offset_pix + tdac_shift`` is its threshold: T the voltage card's threshold
(DAC 7 - DAC 3), offset_pix drawn once per pixel (normal, ``threshold_spread_mv``),
``tdac_shift = -26 mV * VPDAC * TDAC / VNCOMP`` (the chip designer's draft formula; none with
the team's VPDAC = 0), sigma_pix its noise (normal around ``noise_mv``). Noise hits come at
``noise_rate_hz * exp(-T_pix^2 / (2 sigma_pix^2))`` per enabled pixel (Rice's rate of
threshold crossings of Gaussian noise), so they fall steeply with the threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple, TextIO

import numpy as np

from ..errors import EmulatorConfigError
from .sources import INJECTION_TOT, SourceHits, TotDistribution

#: The v4 pixel array (16 columns x 13 rows).
ROWS = 13
COLUMNS = 16
#: Defaults (assumptions, see the module doc).
THRESHOLD_SPREAD_MV = 10.0
NOISE_MV = 5.0
NOISE_SPREAD_MV = 0.5
NOISE_RATE_HZ = 1.0e5
INJECTION_GAIN = 1.0
TDAC_MV = 26.0
NOISE_TOT = TotDistribution("exponential", 5.0)
PIXEL_TABLE_DTYPE = np.dtype([("row", "u1"), ("column", "u1"), ("threshold_offset_mv", "f8"),
                              ("noise_mv", "f8")])


class ChipState(NamedTuple):
    """What the front end needs of the active configuration (all (rows, cols) arrays)."""

    comparator: np.ndarray  # bool: comparator enabled
    injection: np.ndarray  # bool: injection reaches the pixel
    hit_buffer: np.ndarray  # bool: hit buffer enabled (TDAC SRAM)
    tdac: np.ndarray  # int 0-7
    threshold_mv: float  # voltage card DAC 7 - DAC 3
    vinj_mv: float  # injection amplitude
    vpdac: int = 0
    vncomp: int = 1

    @classmethod
    def off(cls, rows: int = ROWS, cols: int = COLUMNS) -> ChipState:
        """Nothing enabled (the chip before its first configuration)."""
        z = np.zeros((rows, cols), dtype=bool)
        return cls(z, z, ~z, np.zeros((rows, cols), dtype=np.int64), 200.0, 0.0)

    @property
    def live(self) -> np.ndarray:
        """Pixels that can report a hit."""
        return self.comparator & self.hit_buffer


@dataclass(frozen=True)
class PixelModel:
    """Per-pixel thresholds and noise drawn from ``seed`` (see the module doc)."""

    seed: int = 0
    rows: int = ROWS
    cols: int = COLUMNS
    threshold_spread_mv: float = THRESHOLD_SPREAD_MV
    noise_mv: float = NOISE_MV
    noise_spread_mv: float = NOISE_SPREAD_MV
    noise_rate_hz: float = NOISE_RATE_HZ
    injection_gain: float = INJECTION_GAIN
    injection_tot: TotDistribution = INJECTION_TOT
    noise_tot: TotDistribution = NOISE_TOT
    _offset: np.ndarray = field(init=False, repr=False, compare=False)
    _noise: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("threshold_spread_mv", "noise_mv", "noise_spread_mv", "noise_rate_hz",
                     "injection_gain"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise EmulatorConfigError(f"{name}={value!r}: must be a finite number >= 0")
        if self.noise_mv <= 0:
            raise EmulatorConfigError(f"noise_mv={self.noise_mv}: must be > 0")
        rng = np.random.default_rng(np.random.SeedSequence([int(self.seed), 0x5C0])
                                    .generate_state(4))
        shape = (self.rows, self.cols)
        offset = rng.normal(0.0, self.threshold_spread_mv, shape)
        noise = np.maximum(rng.normal(self.noise_mv, self.noise_spread_mv, shape),
                           self.noise_mv / 10)
        object.__setattr__(self, "_offset", offset)
        object.__setattr__(self, "_noise", noise)

    # -- the truth ---------------------------------------------------------------------

    @property
    def threshold_offset_mv(self) -> np.ndarray:
        """Each pixel's threshold offset from the set threshold, mV (rows, cols)."""
        return self._offset.copy()

    @property
    def pixel_noise_mv(self) -> np.ndarray:
        """Each pixel's noise sigma, mV (rows, cols)."""
        return self._noise.copy()

    def thresholds_mv(self, state: ChipState) -> np.ndarray:
        """Each pixel's effective threshold under ``state``, mV."""
        shift = -TDAC_MV * state.vpdac * state.tdac / max(state.vncomp, 1)
        return state.threshold_mv + self._offset + shift

    def threshold_mv(self, row: int, col: int, set_mv: float) -> float:
        """Pixel (row, col)'s threshold when the card sets ``set_mv`` (TDAC without effect)."""
        return float(set_mv + self._offset[row, col])

    def fire_probability(self, row: int, col: int, set_mv: float, vinj_mv: float) -> float:
        """Probability that one injected pulse of ``vinj_mv`` fires pixel (row, col)."""
        x = (self.injection_gain * vinj_mv - self.threshold_mv(row, col, set_mv))
        return 0.5 * math.erfc(-x / (self._noise[row, col] * math.sqrt(2)))

    def table(self) -> np.ndarray:
        """Per-pixel truth: row, column, threshold offset (mV), noise sigma (mV)."""
        out = np.zeros(self.rows * self.cols, dtype=PIXEL_TABLE_DTYPE)
        rr, cc = np.divmod(np.arange(self.rows * self.cols), self.cols)
        out["row"], out["column"] = rr, cc
        out["threshold_offset_mv"] = self._offset.reshape(-1)
        out["noise_mv"] = self._noise.reshape(-1)
        return out

    def write_table(self, stream: TextIO) -> int:
        """:meth:`table` as CSV (header line first); return the number of pixels."""
        table = self.table()
        stream.write("row,column,threshold_offset_mv,noise_mv\n")
        for rec in table:
            stream.write(f"{rec['row']},{rec['column']},{rec['threshold_offset_mv']:.6f},"
                         f"{rec['noise_mv']:.6f}\n")
        return len(table)

    # -- hits ------------------------------------------------------------------------------

    def noise_rates(self, state: ChipState) -> np.ndarray:
        """Noise hits per second of each pixel under ``state`` (0 where it cannot fire)."""
        thr = np.maximum(self.thresholds_mv(state), 0.0)
        rate = self.noise_rate_hz * np.exp(-(thr ** 2) / (2 * self._noise ** 2))
        return np.where(state.live, rate, 0.0)

    def sample(self, rng: np.random.Generator, state: ChipState, pulses_ns: np.ndarray,
               t0_ns: int, t1_ns: int) -> SourceHits:
        """Hits in ``[t0_ns, t1_ns)``: injected pulses at ``pulses_ns`` and noise."""
        thr = self.thresholds_mv(state)
        inj = state.injection & state.live
        rows, cols = np.nonzero(inj)
        pulses = np.asarray(pulses_ns, dtype=np.int64)
        times, rr, cc, tots = [], [], [], []
        if rows.size and pulses.size:
            x = (self.injection_gain * state.vinj_mv - thr[rows, cols]) / self._noise[rows, cols]
            p = 0.5 * _erfc(-x / math.sqrt(2))
            fired = rng.random((pulses.size, rows.size)) < p
            k, j = np.nonzero(fired)
            times.append(pulses[k])
            rr.append(rows[j])
            cc.append(cols[j])
            tots.append(self.injection_tot.sample_ticks(rng, k.size))
        rates = self.noise_rates(state)
        span = (t1_ns - t0_ns) / 1e9
        counts = rng.poisson(rates * span) if span > 0 else np.zeros_like(rates, dtype=int)
        if counts.any():
            nr, nc = np.nonzero(counts)
            n = counts[nr, nc]
            times.append(rng.integers(t0_ns, max(t1_ns, t0_ns + 1), int(n.sum())))
            rr.append(np.repeat(nr, n))
            cc.append(np.repeat(nc, n))
            tots.append(self.noise_tot.sample_ticks(rng, int(n.sum())))
        if not times:
            empty = np.empty(0, dtype=np.int64)
            return SourceHits(empty, empty, empty, empty)
        t = np.concatenate(times).astype(np.int64)
        order = np.argsort(t, kind="stable")
        return SourceHits(t[order], np.concatenate(rr)[order].astype(np.int64),
                          np.concatenate(cc)[order].astype(np.int64),
                          np.concatenate(tots)[order].astype(np.int64))


_erfc = np.vectorize(math.erfc, otypes=[float])
