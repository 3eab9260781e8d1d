"""The numbers behind the monitor's plots, accumulated in numpy (no plotting library needed).

An :class:`Accumulator` takes decoded hits a batch at a time (:meth:`Accumulator.add`, one
numpy operation per histogram, never a Python loop over hits) and holds:

* a hit map per chip id: hits per (row, column), ``hitmap[chip, row, column]``;
* a ToT histogram in whole clock cycles (``ts_dec2 - ts_dec1``), bins of ``tot_bin_cycles``;
* readouts and hits per time bin (readout timestamps, ns), the bin width doubling whenever the
  run outgrows ``max_time_bins`` so memory stays bounded;
* readouts, hits and :class:`~astropix_hil.fmt.Decoding` flag counts; the readout-id
  accounting of a file (lost, duplicated, reordered ids); the receiver's statistics and the
  run header when monitoring the network.

It is safe to feed from one thread while another takes :meth:`snapshot` copies to plot.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import warnings
from typing import Any

import numpy as np

from ..fmt import CLOCK_CYCLES_PER_US, CLOCK_ROLLOVER, FIELD_SHIFTS, Decoding

#: Hit map shape: every value the 5-bit chip id, row and column fields can take.
CHIPS = FIELD_SHIFTS["chip_id"][1] + 1
ROWS = FIELD_SHIFTS["row"][1] + 1
COLUMNS = FIELD_SHIFTS["column"][1] + 1
#: Longest ToT the decoder can produce, in clock cycles (ts_dec2 is unwrapped once).
MAX_TOT_CYCLES = CLOCK_ROLLOVER


class Accumulator:
    """Histograms and counters of a monitored run (see the module docstring)."""

    def __init__(self, tot_bin_cycles: int = int(CLOCK_CYCLES_PER_US),
                 time_bin_s: float = 1.0, max_time_bins: int = 3600) -> None:
        if tot_bin_cycles < 1 or time_bin_s <= 0 or max_time_bins < 2:
            raise ValueError("tot_bin_cycles >= 1, time_bin_s > 0 and max_time_bins >= 2")
        self._lock = threading.Lock()
        self.tot_bin_cycles = int(tot_bin_cycles)
        self.hitmap = np.zeros((CHIPS, ROWS, COLUMNS), dtype=np.int64)
        self.tot = np.zeros(-(-(MAX_TOT_CYCLES + 1) // self.tot_bin_cycles), dtype=np.int64)
        self.time_bin_ns = round(time_bin_s * 1e9)
        self.max_time_bins = int(max_time_bins)
        self.t0_ns: int | None = None
        self.readouts_per_bin = np.zeros(0, dtype=np.int64)
        self.hits_per_bin = np.zeros(0, dtype=np.int64)
        self.readouts = 0
        self.hits = 0
        self.flags = np.zeros(len(Decoding), dtype=np.int64)
        #: Readout-id accounting of a file source (see :meth:`add`).
        self.ids = {"lost": 0, "duplicated": 0, "reordered": 0}
        self._last_id: int | None = None
        self._skipped = 0
        #: Readout-id stride of a scan run (see :mod:`astropix_hil.scan.definition`), if any.
        self.id_stride: int | None = None
        self.header: dict[str, Any] | None = None
        #: A receiver's :meth:`~astropix_hil.framing.ReceiverStats.as_dict`, when live.
        self.receiver: dict[str, Any] | None = None
        #: Where the data came from (a file path or ``group:port``), for the report.
        self.source: str = ""
        #: Problems met on the way that did not stop it (a file truncated in its last readout).
        self.warnings: list[str] = []

    # -- feeding --------------------------------------------------------------------------
    def add(self, hits: np.ndarray, status: np.ndarray, readout_ids: np.ndarray,
            timestamps: np.ndarray, *, count_ids: bool = False) -> None:
        """Add a batch: hits (dtype :data:`~astropix_hil.fmt.HIT_DTYPE`) of readouts with
        these decoding ``status`` masks, ids and timestamps (ns).

        ``count_ids``: account lost, duplicated and reordered readout ids (a file, whose ids
        are consecutive; a network stream has sequence numbers of its own for that).
        """
        status = np.asarray(status, dtype=np.uint8)
        stamps = np.asarray(timestamps, dtype=np.uint64)
        chip = hits["chip_id"].astype(np.intp)
        pixel = (chip * ROWS + hits["row"]) * COLUMNS + hits["column"]
        hitmap = np.bincount(pixel, minlength=self.hitmap.size)
        cycles = hits["ts_dec2"].astype(np.int64) - hits["ts_dec1"]
        tot = np.bincount(np.clip(cycles, 0, MAX_TOT_CYCLES) // self.tot_bin_cycles,
                          minlength=self.tot.size)
        flags = np.array([np.count_nonzero((status >> flag) & 1) for flag in Decoding],
                         dtype=np.int64)
        with self._lock:
            self.hitmap += hitmap.reshape(self.hitmap.shape)
            self.tot += tot
            self.flags += flags
            self.readouts += len(stamps)
            self.hits += len(hits)
            if len(stamps):
                self._add_times(stamps, hits["timestamp"])
            if count_ids and len(readout_ids):
                self._count_ids(np.asarray(readout_ids, dtype=np.int64))

    def _add_times(self, stamps: np.ndarray, hit_stamps: np.ndarray) -> None:
        if self.t0_ns is None:
            self.t0_ns = int(stamps.min())
        r_bin = self._time_bins(stamps)
        h_bin = self._time_bins(hit_stamps)
        top = int(max(r_bin.max(), h_bin.max() if h_bin.size else 0))
        while top >= self.max_time_bins:  # merge pairs of bins: bounded memory, any run length
            self.time_bin_ns *= 2
            self.readouts_per_bin = _merge_pairs(self.readouts_per_bin)
            self.hits_per_bin = _merge_pairs(self.hits_per_bin)
            r_bin //= 2
            h_bin //= 2
            top //= 2
        size = max(top + 1, self.readouts_per_bin.size)
        self.readouts_per_bin = _grown(self.readouts_per_bin, size)
        self.hits_per_bin = _grown(self.hits_per_bin, size)
        self.readouts_per_bin += np.bincount(r_bin, minlength=size)
        self.hits_per_bin += np.bincount(h_bin, minlength=size)

    def _time_bins(self, stamps: np.ndarray) -> np.ndarray:
        # Readouts stamped before the first one (a clock step back) go to the first bin.
        stamps = np.asarray(stamps, dtype=np.uint64)
        t0 = np.uint64(self.t0_ns or 0)
        since = np.where(stamps >= t0, stamps - t0, np.uint64(0))
        return (since // np.uint64(self.time_bin_ns)).astype(np.int64)

    def _count_ids(self, ids: np.ndarray) -> None:
        # Against the highest id so far: a step up by k skips k - 1 ids (lost, for now), the
        # same id again is a duplicate, a lower id arrived late and fills one of those gaps.
        top = self._last_id if self._last_id is not None else int(ids[0]) - 1
        before = np.maximum.accumulate(np.concatenate(([top], ids[:-1])))
        steps = ids - before
        if self.id_stride:  # a scan run: each step's ids start afresh at step * stride
            fresh = (ids // self.id_stride > before // self.id_stride) & (ids > before)
            steps[fresh] = ids[fresh] % self.id_stride + 1
        late = int(np.count_nonzero(steps < 0))
        # Gaps and late arrivals are summed over the run before they are netted, so the
        # result does not depend on how the readouts were batched.
        self._skipped += int(np.clip(steps - 1, 0, None).sum())
        self.ids["reordered"] += late
        self.ids["lost"] = max(self._skipped - self.ids["reordered"], 0)
        self.ids["duplicated"] += int(np.count_nonzero(steps == 0))
        self._last_id = max(int(before[-1]), int(ids[-1]))

    def set_receiver(self, stats: dict[str, Any]) -> None:
        """Record a receiver's statistics (and the run header its heartbeats carried)."""
        with self._lock:
            self.receiver = stats
            if stats.get("run_header") is not None:
                self.header = stats["run_header"]

    # -- reading --------------------------------------------------------------------------
    def snapshot(self) -> Accumulator:
        """A consistent copy to read or plot while this one keeps accumulating."""
        with self._lock:
            other = Accumulator.__new__(Accumulator)  # not copy.copy: that pickles
            other.__dict__.update(self.__dict__)
            other._lock = threading.Lock()
            for name in ("hitmap", "tot", "readouts_per_bin", "hits_per_bin", "flags"):
                setattr(other, name, getattr(self, name).copy())
            other.ids = dict(self.ids)
            other.warnings = list(self.warnings)
            other.receiver = copy.deepcopy(self.receiver)
            return other

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (sent between processes) without its lock, as a consistent copy."""
        state = self.snapshot().__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def replace_with(self, other: Accumulator) -> None:
        """Take every histogram and counter of ``other`` (a newer state of the same run)."""
        state = other.__getstate__()
        with self._lock:
            self.__dict__.update(state)

    @property
    def chips(self) -> list[int]:
        """Chip ids with at least one hit."""
        return [int(c) for c in np.flatnonzero(self.hitmap.sum(axis=(1, 2)))]

    @property
    def tot_edges_us(self) -> np.ndarray:
        """Edges of the ToT histogram bins in µs (``tot[i]`` counts ``edges[i] <= ToT <
        edges[i+1]``)."""
        return np.arange(self.tot.size + 1) * self.tot_bin_cycles / CLOCK_CYCLES_PER_US

    @property
    def time_edges_s(self) -> np.ndarray:
        """Edges of the rate bins, in seconds since the first readout."""
        return np.arange(self.readouts_per_bin.size + 1) * self.time_bin_ns / 1e9

    def rates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bin centres (s), readout rate and hit rate (per second) of each time bin."""
        width = self.time_bin_ns / 1e9
        centres = self.time_edges_s[:-1] + width / 2
        return centres, self.readouts_per_bin / width, self.hits_per_bin / width

    def loss_rows(self) -> list[dict[str, Any]]:
        """One row per stream: received, lost, duplicated, reordered readouts or datagrams.

        Network: the receiver's streams (lost readouts, duplicated and reordered datagrams).
        File: one row, ``file``, from the readout ids.
        """
        if self.receiver is not None:
            rows = []
            for key, s in self.receiver.get("streams", {}).items():
                rows.append({"stream": key, "source": str(s.get("source", "")),
                             "received": s["readouts_received"], "lost": s["readouts_lost"],
                             "duplicated": s["duplicates"], "reordered": s["reordered"],
                             "late": s["late"], "ended": bool(s["ended"])})
            return rows
        return [{"stream": "file", "source": self.source, "received": self.readouts,
                 "lost": self.ids["lost"], "duplicated": self.ids["duplicated"],
                 "reordered": self.ids["reordered"], "late": 0, "ended": True}]

    def flag_counts(self) -> dict[str, int]:
        """Readouts with each decoding flag raised (flags never raised left out)."""
        return {flag.name: int(self.flags[flag]) for flag in Decoding if self.flags[flag]}

    def summary(self) -> dict[str, Any]:
        """The counters as plain JSON-serializable data."""
        receiver = self.receiver or {}
        return {
            "source": self.source,
            "readouts": self.readouts,
            "hits": self.hits,
            "chips": self.chips,
            "decoding_flags": self.flag_counts(),
            "streams": self.loss_rows(),
            "socket_drops": receiver.get("socket_drops"),
            "malformed": receiver.get("totals", {}).get("malformed"),
            "time_span_s": float(self.time_edges_s[-1]),
            "warnings": list(self.warnings),
        }

    # -- saving ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the histograms and counters to an ``.npz`` file (see :meth:`load`)."""
        snap = self.snapshot()
        meta = {"summary": snap.summary(), "header": snap.header, "receiver": snap.receiver,
                "ids": snap.ids, "skipped": snap._skipped, "tot_bin_cycles": snap.tot_bin_cycles,
                "time_bin_ns": snap.time_bin_ns, "t0_ns": snap.t0_ns,
                "max_time_bins": snap.max_time_bins, "source": snap.source,
                "readouts": snap.readouts, "hits": snap.hits}
        with open(path, "wb") as stream:
            np.savez(stream, hitmap=snap.hitmap, tot=snap.tot, flags=snap.flags,
                     readouts_per_bin=snap.readouts_per_bin, hits_per_bin=snap.hits_per_bin,
                     meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Accumulator:
        """An accumulator as :meth:`save` wrote it."""
        with np.load(path) as data:
            meta = json.loads(data["meta"].tobytes().decode())
            acc = cls(tot_bin_cycles=meta["tot_bin_cycles"], max_time_bins=meta["max_time_bins"])
            for name in ("hitmap", "tot", "flags", "readouts_per_bin", "hits_per_bin"):
                setattr(acc, name, data[name].copy())
        acc.time_bin_ns, acc.t0_ns = meta["time_bin_ns"], meta["t0_ns"]
        acc.header, acc.receiver, acc.ids = meta["header"], meta["receiver"], meta["ids"]
        acc._skipped = meta.get("skipped", 0)
        acc.source, acc.readouts, acc.hits = meta["source"], meta["readouts"], meta["hits"]
        return acc


def _merge_pairs(values: np.ndarray) -> np.ndarray:
    if values.size % 2:
        values = np.append(values, 0)
    return values.reshape(-1, 2).sum(axis=1)


def _grown(values: np.ndarray, size: int) -> np.ndarray:
    if values.size >= size:
        return values
    out = np.zeros(size, dtype=values.dtype)
    out[:values.size] = values
    return out


def accumulate_file(path: str | os.PathLike, acc: Accumulator | None = None) -> Accumulator:
    """Decode a whole ``.apx`` file (in bulk) into an accumulator (a new one by default)."""
    from ..errors import TruncatedFileWarning
    from ..fileio import iter_hit_chunks, read_header

    acc = acc if acc is not None else Accumulator()
    acc.header = read_header(path)
    acc.source = os.fspath(path)
    scan = acc.header.get("scan")
    if isinstance(scan, dict) and isinstance(scan.get("readout_id_stride"), int):
        acc.id_stride = scan["readout_id_stride"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TruncatedFileWarning)
        for chunk in iter_hit_chunks(path):
            acc.add(chunk.hits, chunk.status, chunk.readout_ids, chunk.timestamps,
                    count_ids=True)
    acc.warnings += [str(w.message) for w in caught
                     if issubclass(w.category, TruncatedFileWarning)]
    return acc
