"""Emulator configuration: anomalies, the chips of the daisy chain, and the readout model.

:meth:`EmulatorConfig.build` makes a configuration from a few simple options (the ones
``apx-hil emulate`` and the ``apxemu://`` URL take); every option may be given as a string.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..boards.nexys.protocol import READOUT_SIZE
from ..errors import EmulatorConfigError
from .sources import (
    DEFAULT_COLUMNS,
    DEFAULT_ROWS,
    INJECTION_JITTER_NS,
    INJECTION_PIXEL,
    MIN_RATE_HZ,
    POISSON_TOT,
    HitSource,
    InjectionSource,
    PixelMap,
    PoissonSource,
    TotDistribution,
)

#: Anomaly kinds, in the order their random draws are made.
ANOMALY_KINDS = ("no_idle", "split", "truncated", "ff_runs", "start_like")
#: Probability each kind gets from ``--anomalies all``.
DEFAULT_ANOMALY_PROBABILITY = 0.05
MODES = ("injection", "poisson")
#: Frame = 2 idle bytes, the hits, 6 idle bytes (as in the real run).
LEAD_IDLE = 2
TRAIL_IDLE = 6
#: Smallest read size that still holds a frame of two hits and the longest 0xff run.
MIN_READ_SIZE = 32
#: Readout host timestamps start here by default (2025-07-23 07:25:36 UTC, the real run).
DEFAULT_START_NS = 1_753_255_536_000_000_000


@dataclass(frozen=True)
class Anomalies:
    """Probability, per hit, of each anomaly the chip or board produces at high rate.

    * ``no_idle``: the hit follows the previous one with no idle bytes between them;
    * ``split``: the hit is split across two reads (the read ends inside it);
    * ``truncated``: the hit loses its last bytes and the next hit follows directly;
    * ``ff_runs``: a run of ``0xff`` bytes stands between the idle bytes after the hit;
    * ``start_like``: a start-like byte (``0xe0``-``0xfe``) inside the hit word (bytes 4 and/or
      7, set through the TDC fields).

    A probability of 1 forces the anomaly on every hit that can carry it. All zero (the
    default) is clean mode: the real run's layout.
    """

    no_idle: float = 0.0
    split: float = 0.0
    truncated: float = 0.0
    ff_runs: float = 0.0
    start_like: float = 0.0

    def __post_init__(self) -> None:
        for kind in ANOMALY_KINDS:
            p = getattr(self, kind)
            if not (isinstance(p, int | float) and 0.0 <= p <= 1.0):
                raise EmulatorConfigError(f"anomaly {kind}={p!r}: a probability is 0 to 1")

    @property
    def clean(self) -> bool:
        """True when no anomaly can happen."""
        return not any(getattr(self, kind) for kind in ANOMALY_KINDS)

    @classmethod
    def parse(cls, text: str | None) -> Anomalies:
        """Parse ``KIND=P,KIND=P...``; a bare ``KIND`` forces it (P = 1); ``all`` or ``all=P``
        sets every kind (default P 0.05); ``none``, ``clean`` or an empty string: no anomaly.

        Kinds: ``no_idle``, ``split``, ``truncated``, ``ff_runs``, ``start_like``.
        """
        values: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in (text or "").split(","))):
            name, sep, value = item.partition("=")
            name = name.strip().replace("-", "_")
            if name in ("none", "clean") and not sep:
                continue
            if sep:
                try:
                    p = float(value)
                except ValueError:
                    raise EmulatorConfigError(f"anomalies: {item!r}: {value!r} is not a "
                                              f"probability") from None
            else:
                p = DEFAULT_ANOMALY_PROBABILITY if name == "all" else 1.0
            if name == "all":
                values.update(dict.fromkeys(ANOMALY_KINDS, p))
            elif name in ANOMALY_KINDS:
                values[name] = p
            else:
                raise EmulatorConfigError(f"anomalies: unknown kind {name!r} (kinds: "
                                          f"{', '.join(ANOMALY_KINDS)}, all, none)")
        return cls(**values)

    def __str__(self) -> str:
        return ",".join(f"{kind}={getattr(self, kind):g}" for kind in ANOMALY_KINDS
                        if getattr(self, kind)) or "none"


@dataclass(frozen=True)
class ChipConfig:
    """One chip of the daisy chain: its id, where its hits come from, and the fields the
    timestamps do not set (``ts_neg*``: 0, 1 or None for a random bit per hit; ``ts_tdc*``)."""

    chip_id: int = 0
    source: HitSource = field(default_factory=InjectionSource)
    ts_neg1: int | None = None
    ts_neg2: int | None = None
    ts_tdc1: int = 0
    ts_tdc2: int = 0

    def __post_init__(self) -> None:
        # chip_id 31 with payload 7 makes the first wire byte 0xff, which is never a start byte.
        if not 0 <= self.chip_id <= 30:
            raise EmulatorConfigError(f"chip_id={self.chip_id}: must be 0 to 30 (31 would make "
                                      f"the hit's first byte 0xff, not a start byte)")
        for name in ("ts_neg1", "ts_neg2"):
            value = getattr(self, name)
            if value not in (None, 0, 1):
                raise EmulatorConfigError(f"{name}={value!r}: must be 0, 1 or random")
        for name in ("ts_tdc1", "ts_tdc2"):
            value = getattr(self, name)
            if not 0 <= value <= 31:
                raise EmulatorConfigError(f"{name}={value}: the 5-bit TDC field holds 0 to 31")


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything that decides the emulated byte stream, apart from the seed.

    ``read_size``: bytes per read (frames never exceed it); ``poll_interval_ns``: the bulk
    emulator's DAQ polls the FIFO this often; ``counter_phase``: the 17-bit counter's value
    at time 0 (None: drawn from the seed); ``start_ns``: host time of time 0, for readout
    timestamps; ``chunk_hits``: about how many hits are generated per batch.
    """

    chips: tuple[ChipConfig, ...] = (ChipConfig(),)
    anomalies: Anomalies = Anomalies()
    read_size: int = READOUT_SIZE
    poll_interval_ns: int = 1_000_000
    counter_phase: int | None = None
    start_ns: int = DEFAULT_START_NS
    chunk_hits: int = 1 << 16
    max_ff_run: int = 8

    def __post_init__(self) -> None:
        if not self.chips:
            raise EmulatorConfigError("chips: the daisy chain needs at least one chip")
        ids = [chip.chip_id for chip in self.chips]
        if len(set(ids)) != len(ids):
            raise EmulatorConfigError(f"chips: chip ids {ids} are not distinct")
        if self.read_size < MIN_READ_SIZE or self.read_size > 0xFFFF:
            raise EmulatorConfigError(f"read_size={self.read_size}: must be {MIN_READ_SIZE} to "
                                      f"65535 bytes (one request's length field)")
        if self.poll_interval_ns < 1:
            raise EmulatorConfigError(f"poll_interval_ns={self.poll_interval_ns}: not >= 1")
        if self.counter_phase is not None and not 0 <= self.counter_phase < 1 << 17:
            raise EmulatorConfigError(f"counter_phase={self.counter_phase}: a 17-bit value")
        if not 1 <= self.max_ff_run <= 64:
            raise EmulatorConfigError(f"max_ff_run={self.max_ff_run}: must be 1 to 64")
        if self.chunk_hits < 1:
            raise EmulatorConfigError(f"chunk_hits={self.chunk_hits}: not >= 1")

    @property
    def max_frame_hits(self) -> int:
        """Most hits one frame holds, so that a frame always fits in one read."""
        return (self.read_size - LEAD_IDLE - TRAIL_IDLE - self.max_ff_run) // 8

    def mean_rate(self) -> float:
        """Mean hits per second of the whole chain."""
        return sum(chip.source.mean_rate() for chip in self.chips)

    @classmethod
    def build(cls, mode: str = "injection", rate: float | None = None, chips: int = 1,
              chip_ids: Sequence[int] | None = None, rows: int = DEFAULT_ROWS,
              cols: int = DEFAULT_COLUMNS, pixel: tuple[int, int] | None = None,
              hot_pixels: str | None = None, tot: TotDistribution | str | None = None,
              jitter_ns: float = INJECTION_JITTER_NS,
              anomalies: Anomalies | str | None = None, ts_neg1: int | None = None,
              ts_neg2: int | None = None, ts_tdc1: int = 0, ts_tdc2: int = 0,
              read_size: int = READOUT_SIZE, poll_interval_ns: int = 1_000_000,
              counter_phase: int | None = None, start_ns: int = DEFAULT_START_NS,
              chunk_hits: int = 1 << 16) -> EmulatorConfig:
        """A configuration from simple options (all chips alike).

        ``mode="injection"`` (the default, as in the real run): a pulse train at ``pixel``
        (default row 0, column 9), ``rate`` pulses per second (default one per 77.36 ms), TOT
        ``normal:235,18`` us. ``mode="poisson"``: ``rate`` hits per second per chip (default
        1000) over the array (or ``hot_pixels``, see :meth:`PixelMap.parse_hot`, or ``pixel``),
        TOT ``exponential:50`` us. ``chips`` chips get ids 0, 1, ... unless ``chip_ids``.
        """
        if mode not in MODES:
            raise EmulatorConfigError(f"mode={mode!r}: one of {', '.join(MODES)}")
        if isinstance(tot, str):
            tot = TotDistribution.parse(tot)
        if isinstance(anomalies, str) or anomalies is None:
            anomalies = Anomalies.parse(anomalies)
        if chip_ids is None:
            if not 1 <= chips <= 31:
                raise EmulatorConfigError(f"chips={chips}: a chain holds 1 to 31 chips")
            chip_ids = range(chips)
        source: HitSource
        if rate is not None and not (math.isfinite(rate) and rate >= 0):
            raise EmulatorConfigError(f"rate={rate!r}: must be a finite number of Hz >= 0")
        if mode == "injection":
            if rate is not None and rate < MIN_RATE_HZ:
                raise EmulatorConfigError(f"rate={rate:g}: injection needs a pulse rate >= "
                                          f"{MIN_RATE_HZ:g} Hz")
            period = round(1e9 / rate) if rate is not None else None
            kwargs: dict[str, Any] = {"rows": rows, "cols": cols, "jitter_ns": jitter_ns,
                                      "pixel": pixel if pixel is not None else INJECTION_PIXEL}
            if period is not None:
                kwargs["period_ns"] = max(period, 1)
                kwargs["jitter_ns"] = min(jitter_ns, kwargs["period_ns"] / 8)
            if tot is not None:
                kwargs["tot"] = tot
            source = InjectionSource(**kwargs)
        else:
            if pixel is not None:
                pixels = PixelMap(rows, cols, fixed=pixel)
            elif hot_pixels:
                pixels = PixelMap.parse_hot(hot_pixels, rows, cols)
            else:
                pixels = PixelMap(rows, cols)
            source = PoissonSource(1000.0 if rate is None else rate, pixels,
                                   tot if tot is not None else POISSON_TOT)
        chain = tuple(ChipConfig(int(cid), source, ts_neg1, ts_neg2, ts_tdc1, ts_tdc2)
                      for cid in chip_ids)
        return cls(chain, anomalies, read_size, poll_interval_ns, counter_phase, start_ns,
                   chunk_hits)

    @classmethod
    def from_strings(cls, options: Mapping[str, Any]) -> EmulatorConfig:
        """:meth:`build` from options that may be strings (URL queries, command lines).

        Unknown option names and unreadable values raise
        :class:`~astropix_hil.errors.EmulatorConfigError` naming them.
        """
        return cls.build(**parse_options(options))

    def describe(self) -> dict[str, Any]:
        """A JSON-able description, stored in the headers of emulated files."""
        out = asdict(self)
        out["anomalies"] = str(self.anomalies)
        for chip, described in zip(self.chips, out["chips"], strict=True):
            described["source"] = {"kind": type(chip.source).__name__,
                                   **_jsonable(asdict(chip.source))}
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _opt_int(text: Any) -> int | None:
    if text is None or (isinstance(text, str) and text.lower() in ("", "none", "random")):
        return None
    return int(text)


def _pair(text: Any) -> tuple[int, int]:
    if isinstance(text, str):
        parts = text.replace(":", ",").split(",")
        if len(parts) != 2:
            raise ValueError(f"{text!r} is not ROW,COL")
        return int(parts[0]), int(parts[1])
    row, col = text
    return int(row), int(col)


def _ids(text: Any) -> tuple[int, ...]:
    if isinstance(text, str):
        return tuple(int(v) for v in text.split(",") if v.strip())
    return tuple(int(v) for v in text)


def _float(text: Any) -> float:
    return float(text)


def _int(text: Any) -> int:
    if isinstance(text, str):
        value = float(text)
        if not value.is_integer():
            raise ValueError(f"{text!r} is not an integer")
        return int(value)
    return int(text)


#: How each :meth:`EmulatorConfig.build` option is read from a string.
OPTION_PARSERS: dict[str, Any] = {
    "mode": str, "rate": _float, "chips": _int, "chip_ids": _ids, "rows": _int, "cols": _int,
    "pixel": _pair, "hot_pixels": str, "tot": str, "jitter_ns": _float, "anomalies": str,
    "ts_neg1": _opt_int, "ts_neg2": _opt_int, "ts_tdc1": _int, "ts_tdc2": _int,
    "read_size": _int, "poll_interval_ns": _int, "counter_phase": _opt_int,
    "start_ns": _int, "chunk_hits": _int,
}


def parse_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Typed :meth:`EmulatorConfig.build` keyword arguments from options that may be strings."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        parser = OPTION_PARSERS.get(name)
        if parser is None:
            raise EmulatorConfigError(f"unknown emulator option {name!r} (known: "
                                      f"{', '.join(sorted(OPTION_PARSERS))})")
        if value is None or not isinstance(value, str):
            out[name] = value
            continue
        try:
            out[name] = parser(value)
        except (TypeError, ValueError) as exc:
            raise EmulatorConfigError(f"emulator option {name}={value!r}: {exc}") from None
    return out


__all__ = [
    "ANOMALY_KINDS",
    "OPTION_PARSERS",
    "Anomalies",
    "ChipConfig",
    "EmulatorConfig",
    "parse_options",
]
