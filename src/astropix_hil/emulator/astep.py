"""AstroPix v4 chips on A-STEP layers: when each hit happens, on which chip, and its fields.

:class:`AstepChips` stands for 1-3 layers of 1-4 daisy-chained AstroPix v4 chips. It produces
hits in time order (Poisson at ``rate`` Hz over all chips, uniform over layers, chips and
pixels), with the chip's own timestamps (the 17-bit, 20 MHz Gray counter of both edges, a
negedge bit and a TDC field) and the anomalies asked for. The chip id a frame carries is not
its own: the board assigns it by the routing frame (:mod:`astropix_hil.boards.astep.board`),
which also encodes the frames (natural byte order) and stamps them with the FPGA timestamp.

Anomalies (probability per hit, ``kind=p`` pairs):

* ``stall``: the hit's layer stops delivering for ``stall_ms`` (its hits wait in the chip);
* ``burst``: ``burst_hits`` more hits arrive at the same instant (fills the readout FIFO);
* ``wrong_length``: the frame's header says 4 payload bytes (not 7) and only 4 follow;
* ``stray_byte``: the chip sends one stray byte (not idle, low bits not 7) before the frame,
  followed by as many idle bytes as the stray "header" asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import EmulatorConfigError

ANOMALIES = ("stall", "burst", "wrong_length", "stray_byte")
#: Chip counter frequency (Hz) and rollover of the 17-bit counter.
CHIP_CLOCK_HZ = 20_000_000
CHIP_ROLLOVER = 1 << 17
#: Kinds of frames a hit becomes.
NORMAL, WRONG_LENGTH, STRAY = 0, 1, 2

EVENT_DTYPE = np.dtype([
    ("time_ns", "i8"), ("deliver_ns", "i8"), ("layer", "u1"), ("position", "u1"),
    ("row", "u1"), ("column", "u1"), ("ts_neg1", "u1"), ("ts_coarse1", "u2"),
    ("ts_fine1", "u1"), ("ts_tdc1", "u1"), ("ts_neg2", "u1"), ("ts_coarse2", "u2"),
    ("ts_fine2", "u1"), ("ts_tdc2", "u1"), ("kind", "u1"), ("stray", "u1"),
])


@dataclass
class AstepChipsConfig:
    """Options of :class:`AstepChips` (strings accepted by :meth:`from_strings`)."""

    layers: int = 1
    chips: int = 1
    rate: float = 1000.0
    #: ToT range of a hit in chip clock ticks (20 MHz).
    tot_min: int = 20
    tot_max: int = 400
    anomalies: dict[str, float] = field(default_factory=dict)
    stall_ms: float = 20.0
    burst_hits: int = 1500

    def check(self) -> None:
        if not 1 <= self.layers <= 3:
            raise EmulatorConfigError(f"layers={self.layers}: must be 1..3")
        if not 1 <= self.chips <= 4:
            raise EmulatorConfigError(f"chips={self.chips}: must be 1..4 per layer")
        if self.rate < 0:
            raise EmulatorConfigError(f"rate={self.rate}: must be >= 0")
        if not 0 < self.tot_min <= self.tot_max < CHIP_ROLLOVER // 2:
            raise EmulatorConfigError("tot_min/tot_max: need 0 < tot_min <= tot_max < 65536")
        for kind, p in self.anomalies.items():
            if kind not in ANOMALIES:
                raise EmulatorConfigError(f"anomaly {kind!r} is not one of {ANOMALIES}")
            if not 0 <= p <= 1:
                raise EmulatorConfigError(f"anomaly {kind}={p}: probability not in 0..1")

    @classmethod
    def from_strings(cls, options: dict[str, str]) -> AstepChipsConfig:
        """A config from ``key=value`` strings; ``anomalies`` is ``kind=p,kind=p`` (or
        ``kind`` alone for p = 0.01)."""
        kinds = {"layers": int, "chips": int, "rate": float, "tot_min": int, "tot_max": int,
                 "stall_ms": float, "burst_hits": int}
        values: dict = {}
        for key, text in options.items():
            if key == "anomalies":
                values[key] = parse_anomalies(str(text))
            elif key in kinds:
                try:
                    values[key] = kinds[key](float(text)) if kinds[key] is int else \
                        float(text)
                except ValueError:
                    raise EmulatorConfigError(f"{key}={text!r}: not a number") from None
            else:
                raise EmulatorConfigError(f"unknown A-STEP emulator option {key!r} "
                                          f"(known: {sorted([*kinds, 'anomalies'])})")
        config = cls(**values)
        config.check()
        return config


def parse_anomalies(text: str) -> dict[str, float]:
    """``"stray_byte=0.01,stall"`` -> ``{"stray_byte": 0.01, "stall": 0.01}``."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        kind, _, p = part.partition("=")
        try:
            out[kind] = float(p) if p else 0.01
        except ValueError:
            raise EmulatorConfigError(f"anomaly {part!r}: probability not a number") from None
    return out


class AstepChips:
    """The hits of every chip of every layer, window by window, for a seed."""

    def __init__(self, config: AstepChipsConfig, seed: int = 0) -> None:
        config.check()
        self.config = config
        self.rng = np.random.default_rng(seed)
        self._t = 0
        self._stall_until = [0] * config.layers
        self.hits_made = 0

    def take_until(self, t_ns: int) -> np.ndarray:
        """Hits that happen in ``[previous call, t_ns)``, as :data:`EVENT_DTYPE` records in time
        order (``deliver_ns`` later than ``time_ns`` for hits held back by a stall)."""
        start, self._t = self._t, max(self._t, t_ns)
        cfg, rng = self.config, self.rng
        span = self._t - start
        n = int(rng.poisson(cfg.rate * span / 1e9)) if span > 0 and cfg.rate > 0 else 0
        times = np.sort(rng.integers(start, self._t, n)) if n else np.empty(0, np.int64)
        p_burst = cfg.anomalies.get("burst", 0.0)
        if n and p_burst:
            bursts = times[rng.random(n) < p_burst]
            if bursts.size:
                times = np.sort(np.concatenate([times, np.repeat(bursts, cfg.burst_hits)]))
        return self._make(times)

    def _make(self, times: np.ndarray) -> np.ndarray:
        cfg, rng = self.config, self.rng
        n = times.size
        ev = np.zeros(n, dtype=EVENT_DTYPE)
        if n == 0:
            return ev
        self.hits_made += n
        ev["time_ns"] = times
        ev["layer"] = rng.integers(0, cfg.layers, n)
        ev["position"] = rng.integers(0, cfg.chips, n)
        ev["row"] = rng.integers(0, 32, n)
        ev["column"] = rng.integers(0, 32, n)
        start = (times * CHIP_CLOCK_HZ // 1_000_000_000) % CHIP_ROLLOVER
        stop = (start + rng.integers(cfg.tot_min, cfg.tot_max + 1, n)) % CHIP_ROLLOVER
        for i, counter in ((1, start), (2, stop)):
            gray = counter ^ (counter >> 1)  # Gray code (fmt.binary_to_gray, vectorised)
            ev[f"ts_coarse{i}"] = gray >> 3
            ev[f"ts_fine{i}"] = gray & 7
            ev[f"ts_neg{i}"] = rng.integers(0, 2, n)
            ev[f"ts_tdc{i}"] = rng.integers(0, 32, n)
        kind = np.full(n, NORMAL, dtype=np.uint8)
        p_wrong = cfg.anomalies.get("wrong_length", 0.0)
        p_stray = cfg.anomalies.get("stray_byte", 0.0)
        if p_wrong:
            kind[rng.random(n) < p_wrong] = WRONG_LENGTH
        if p_stray:
            kind[(rng.random(n) < p_stray) & (kind == NORMAL)] = STRAY
        ev["kind"] = kind
        # A stray byte: any value but the idle byte 0x3d whose low bits are not 7.
        stray = rng.integers(0, 32, n) << 3 | rng.integers(0, 7, n)
        ev["stray"] = np.where(stray == 0x3D, 0x3E, stray)
        deliver = times.copy()
        p_stall = cfg.anomalies.get("stall", 0.0)
        stall_ns = int(cfg.stall_ms * 1e6)
        stalls = rng.random(n) < p_stall if p_stall else np.zeros(n, bool)
        for i in range(n):
            layer = ev["layer"][i]
            if stalls[i]:
                self._stall_until[layer] = max(self._stall_until[layer], times[i] + stall_ns)
            deliver[i] = max(times[i], self._stall_until[layer])
        ev["deliver_ns"] = deliver
        return ev


__all__ = ["ANOMALIES", "EVENT_DTYPE", "AstepChips", "AstepChipsConfig", "parse_anomalies"]
