"""Hit sources: when hits happen, at which pixel, and how long they stay over threshold.

Every source is a frozen description; :meth:`sample` draws the hits of a time window
``[t0_ns, t1_ns)`` from a numpy ``Generator`` in a fixed number of vectorized calls, so a seed
gives the same hits whatever the window boundaries' callers are (the chip stream always asks
for the same windows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from ..errors import EmulatorConfigError
from .timestamps import MAX_TOT_TICKS, NS_PER_TICK

#: The 5-bit row and column fields address 32 rows and 32 columns.
FIELD_LIMIT = 32
#: Default array: 16 columns as on the chip; 32 rows, every value the 5-bit row field carries
#: (the chip configuration's ``rows: 35`` cannot be addressed by it).
DEFAULT_ROWS = 32
DEFAULT_COLUMNS = 16
#: The real run's injection: row 0, column 9, one pulse every 77.36 ms.
INJECTION_PIXEL = (0, 9)
INJECTION_PERIOD_NS = 77_363_000  # 1 547 260 ticks, the real run's median
INJECTION_JITTER_NS = 25.0  # steps between real pulses spread by 0.72 ticks


class SourceHits(NamedTuple):
    """Hits of one source in one window, in time order."""

    time_ns: np.ndarray
    row: np.ndarray
    column: np.ndarray
    tot_ticks: np.ndarray


TOT_KINDS = ("normal", "uniform", "exponential", "fixed")


@dataclass(frozen=True)
class TotDistribution:
    """Time over threshold in microseconds: ``normal`` (a = mean, b = sigma), ``uniform``
    (a = low, b = high), ``exponential`` (a = mean) or ``fixed`` (a = value).

    Draws are rounded to counter ticks (50 ns) and clipped to what the 17-bit counter can
    carry (0 to 6.55 ms).
    """

    kind: str = "normal"
    a: float = 235.0
    b: float = 18.0

    def __post_init__(self) -> None:
        if self.kind not in TOT_KINDS:
            raise EmulatorConfigError(f"tot: unknown distribution {self.kind!r} "
                                      f"(one of {', '.join(TOT_KINDS)})")
        if not (math.isfinite(self.a) and math.isfinite(self.b)) or self.a < 0 or self.b < 0:
            raise EmulatorConfigError(f"tot: parameters must be finite and >= 0, got "
                                      f"{self.a}, {self.b}")
        if self.kind == "uniform" and self.b < self.a:
            raise EmulatorConfigError(f"tot: uniform high {self.b} is below low {self.a}")

    @classmethod
    def parse(cls, text: str) -> TotDistribution:
        """``KIND:A[,B]`` in microseconds, e.g. ``normal:235,18``, ``uniform:1,300``,
        ``exponential:50``, ``fixed:10``."""
        kind, _, params = text.partition(":")
        try:
            values = [float(v) for v in params.split(",") if v.strip()]
        except ValueError:
            raise EmulatorConfigError(f"tot: {text!r} is not KIND:A[,B] with numbers") from None
        need = 1 if kind in ("exponential", "fixed") else 2
        if len(values) != need:
            raise EmulatorConfigError(f"tot: {kind or text!r} takes {need} number(s) after "
                                      f"':' (e.g. normal:235,18), got {text!r}")
        return cls(kind, *values)

    def __str__(self) -> str:
        if self.kind in ("exponential", "fixed"):
            return f"{self.kind}:{self.a:g}"
        return f"{self.kind}:{self.a:g},{self.b:g}"

    def sample_ticks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` TOT values in counter ticks."""
        if self.kind == "normal":
            us = rng.normal(self.a, self.b, n)
        elif self.kind == "uniform":
            us = rng.uniform(self.a, self.b, n)
        elif self.kind == "exponential":
            us = rng.exponential(self.a, n)
        else:
            us = np.full(n, self.a)
        ticks = np.rint(us * (1000.0 / NS_PER_TICK))
        return np.clip(ticks, 0, MAX_TOT_TICKS).astype(np.int64)


@dataclass(frozen=True)
class PixelMap:
    """Which pixel a hit lands on.

    Uniform over ``rows`` x ``cols`` by default; with ``hot`` entries ``(row, col, weight)``
    each listed pixel weighs ``weight`` and every other ``base`` (``base=0``: only the listed
    pixels fire); with ``fixed=(row, col)`` always that pixel.
    """

    rows: int = DEFAULT_ROWS
    cols: int = DEFAULT_COLUMNS
    hot: tuple[tuple[int, int, float], ...] = ()
    base: float = 1.0
    fixed: tuple[int, int] | None = None
    _cdf: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, value in (("rows", self.rows), ("cols", self.cols)):
            if not 1 <= value <= FIELD_LIMIT:
                raise EmulatorConfigError(f"{name}={value}: the 5-bit {name[:-1]} field holds "
                                          f"1 to {FIELD_LIMIT} {name}")
        pixels = list(self.hot) + ([(*self.fixed, 1.0)] if self.fixed is not None else [])
        for row, col, weight in pixels:
            if not (0 <= row < self.rows and 0 <= col < self.cols):
                raise EmulatorConfigError(f"pixel ({row}, {col}) is outside the {self.rows} "
                                          f"rows x {self.cols} columns array")
            if not weight >= 0:
                raise EmulatorConfigError(f"pixel ({row}, {col}) weight {weight} is not >= 0")
        if self.base < 0:
            raise EmulatorConfigError(f"hot pixel base weight {self.base} is not >= 0")
        if self.hot and self.fixed is None:
            weights = np.full(self.rows * self.cols, float(self.base))
            for row, col, weight in self.hot:
                weights[row * self.cols + col] = weight
            total = weights.sum()
            if total <= 0:
                raise EmulatorConfigError("hot pixel map: every pixel has weight 0")
            cdf = np.cumsum(weights / total)
            cdf[-1] = 1.0
            object.__setattr__(self, "_cdf", cdf)

    @classmethod
    def from_weights(cls, weights: np.ndarray) -> PixelMap:
        """A map from a full ``(rows, cols)`` array of weights."""
        weights = np.asarray(weights, dtype=float)
        if weights.ndim != 2:
            raise EmulatorConfigError(f"pixel weights must be a 2-D (rows, cols) array, got "
                                      f"shape {weights.shape}")
        rows, cols = weights.shape
        hot = tuple((int(r), int(c), float(weights[r, c]))
                    for r, c in zip(*np.nonzero(weights), strict=True))
        return cls(rows, cols, hot=hot, base=0.0)

    @classmethod
    def parse_hot(cls, text: str, rows: int = DEFAULT_ROWS,
                  cols: int = DEFAULT_COLUMNS) -> PixelMap:
        """``ROW,COL:WEIGHT;ROW,COL:WEIGHT...`` over a uniform base of weight 1."""
        hot = []
        for item in filter(None, (part.strip() for part in text.split(";"))):
            where, _, weight = item.partition(":")
            try:
                row, col = (int(v) for v in where.split(","))
                hot.append((row, col, float(weight) if weight else 1.0))
            except ValueError:
                raise EmulatorConfigError(f"hot pixels: {item!r} is not ROW,COL:WEIGHT") from None
        return cls(rows, cols, hot=tuple(hot))

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and columns of ``n`` hits."""
        if self.fixed is not None:
            return (np.full(n, self.fixed[0], dtype=np.int64),
                    np.full(n, self.fixed[1], dtype=np.int64))
        if self._cdf is not None:
            index = np.searchsorted(self._cdf, rng.random(n), side="right")
            index = np.minimum(index, self.rows * self.cols - 1)
        else:
            index = rng.integers(0, self.rows * self.cols, n)
        return index // self.cols, index % self.cols


#: Default TOT of the injection pulses (the real run: median 235 us, most within 200-270 us).
INJECTION_TOT = TotDistribution("normal", 235.0, 18.0)
#: Default TOT of Poisson hits.
POISSON_TOT = TotDistribution("exponential", 50.0)


class HitSource(Protocol):
    """What the chip model needs from a source of hits."""

    def sample(self, rng: np.random.Generator, t0_ns: int, t1_ns: int) -> SourceHits:
        """The hits in ``[t0_ns, t1_ns)``, in time order."""

    def mean_rate(self) -> float:
        """Mean hits per second."""


#: Slowest non-zero rate: below it a run of readouts would take years of chip time.
MIN_RATE_HZ = 1e-3


def _check_rate(rate_hz: float) -> None:
    if not (math.isfinite(rate_hz) and (rate_hz == 0 or rate_hz >= MIN_RATE_HZ)):
        raise EmulatorConfigError(f"rate={rate_hz!r}: must be 0 or a finite number of Hz "
                                  f">= {MIN_RATE_HZ:g}")


@dataclass(frozen=True)
class PoissonSource:
    """Hits at random times, ``rate_hz`` on average, pixel from ``pixels``, TOT from ``tot``."""

    rate_hz: float = 1000.0
    pixels: PixelMap = field(default_factory=PixelMap)
    tot: TotDistribution = field(default_factory=lambda: POISSON_TOT)

    def __post_init__(self) -> None:
        _check_rate(self.rate_hz)

    def mean_rate(self) -> float:
        return self.rate_hz

    def sample(self, rng: np.random.Generator, t0_ns: int, t1_ns: int) -> SourceHits:
        span_s = (t1_ns - t0_ns) / 1e9
        lam = self.rate_hz * span_s
        # Arrivals are memoryless: the window's hits are exponential gaps counted from t0.
        chunks = []
        reach = 0.0
        draw = int(lam + 6 * math.sqrt(lam) + 16)
        while reach < span_s and self.rate_hz > 0:
            gaps = rng.exponential(1.0 / self.rate_hz, draw)
            times = reach + np.cumsum(gaps)
            chunks.append(times)
            reach = float(times[-1])
        times = np.concatenate(chunks) if chunks else np.empty(0)
        times = times[times < span_s]
        n = len(times)
        time_ns = t0_ns + (times * 1e9).astype(np.int64)
        np.minimum(time_ns, t1_ns - 1, out=time_ns)
        row, col = self.pixels.sample(rng, n)
        return SourceHits(time_ns, row, col, self.tot.sample_ticks(rng, n))


@dataclass(frozen=True)
class InjectionSource:
    """A charge-injection pulse train at one pixel: a pulse every ``period_ns`` from
    ``phase_ns``, each moved by a normal jitter of ``jitter_ns`` (as in the real threshold
    scans: row 0, column 9, 77.36 ms, TOT about 235 us)."""

    period_ns: int = INJECTION_PERIOD_NS
    pixel: tuple[int, int] = INJECTION_PIXEL
    jitter_ns: float = INJECTION_JITTER_NS
    phase_ns: int = 0
    tot: TotDistribution = field(default_factory=lambda: INJECTION_TOT)
    rows: int = DEFAULT_ROWS
    cols: int = DEFAULT_COLUMNS

    def __post_init__(self) -> None:
        if not 1 <= self.period_ns <= 1e9 / MIN_RATE_HZ:
            raise EmulatorConfigError(f"injection period {self.period_ns} ns is not 1 ns to "
                                      f"{1 / MIN_RATE_HZ:g} s")
        if not (math.isfinite(self.jitter_ns) and self.jitter_ns >= 0):
            raise EmulatorConfigError(f"injection jitter {self.jitter_ns} ns is not >= 0")
        PixelMap(self.rows, self.cols, fixed=self.pixel)  # validates the pixel

    def mean_rate(self) -> float:
        return 1e9 / self.period_ns

    def sample(self, rng: np.random.Generator, t0_ns: int, t1_ns: int) -> SourceHits:
        first = -(-(t0_ns - self.phase_ns) // self.period_ns)
        last = -(-(t1_ns - self.phase_ns) // self.period_ns)
        k = np.arange(max(first, 0), max(last, 0), dtype=np.int64)
        time_ns = self.phase_ns + k * self.period_ns
        if self.jitter_ns > 0 and k.size:
            # Jitter stays within the pulse's own window so windows never overlap.
            jitter = np.rint(rng.normal(0.0, self.jitter_ns, k.size)).astype(np.int64)
            time_ns = np.clip(time_ns + jitter, t0_ns, t1_ns - 1)
            time_ns = np.maximum.accumulate(time_ns)
        n = k.size
        return SourceHits(time_ns, np.full(n, self.pixel[0], dtype=np.int64),
                          np.full(n, self.pixel[1], dtype=np.int64), self.tot.sample_ticks(rng, n))
