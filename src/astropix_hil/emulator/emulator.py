"""The emulator: readouts with their ground truth, in bulk or one by one.

:class:`Emulator` runs a :class:`~.chipstream.ChipStream` through the bulk DAQ's read model
(:mod:`.readouts`) and hands out :class:`EmulatedRun` batches: the readouts' bytes, ids and
host timestamps, and the truth, the hits an honest decoder reports
(:func:`astropix_hil.fmt.decode_stream`, :func:`astropix_hil.bulk.decode_readouts`) with every
field, readout_id and decoding_order included.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TextIO

import numpy as np

from ..errors import EmulatorConfigError
from ..fileio import ApxWriter
from ..fmt import HIT_DTYPE, PADDING_BYTE, READOUT_HEADER, READOUT_MAGIC, AstroPix4Readout
from ..hitcsv import format_rows, write_hits_csv
from .chipstream import ChipStream
from .config import EmulatorConfig
from .layout import Fate, Layout
from .readouts import NS_PER_READ_BYTE, Reads, cut_reads, place_hits, truth_records

#: Every hit sent and what became of it: ``sent_in`` is the readout holding its first byte,
#: ``readout_id``/``decoding_order`` where the decoder reports it (-1: it does not, or only in
#: a readout after the last one emitted).
GENERATED_DTYPE = np.dtype([
    ("time_ns", "i8"), ("chip_id", "u1"), ("row", "u1"), ("column", "u1"), ("tot_us", "f8"),
    ("fate", "u1"), ("applied", "u1"), ("sent_in", "i8"), ("readout_id", "i8"),
    ("decoding_order", "i8"),
])

_HEADER_DTYPE = np.dtype([("magic", "S3"), ("readout_id", "<u4"), ("timestamp", "<u8"),
                          ("length", "<u4")])
assert _HEADER_DTYPE.itemsize == READOUT_HEADER.size


@dataclass
class EmulatedRun:
    """Consecutive emulated readouts and their truth.

    Readout ``i`` is the read ``data[starts[i]:ends[i]]`` (without the ``0xff`` padding that
    fills it to ``read_size`` bytes on the link), with ``readout_ids[i]`` and host
    ``timestamps[i]`` (ns since the epoch). :attr:`truth` holds the hits an honest decoder
    reports, as records of :data:`~astropix_hil.fmt.HIT_DTYPE` whose ``timestamp`` is the
    readout's host timestamp (as ``apx-hil convert`` writes it); :attr:`generated` every hit
    sent in these readouts (:data:`GENERATED_DTYPE`): its chip time, :class:`~.layout.Fate`,
    applied anomalies (:class:`~.layout.Applied`), the readout holding its first byte and
    where it is reported.
    """

    data: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    readout_ids: np.ndarray
    timestamps: np.ndarray
    read_size: int
    truth: np.ndarray
    generated: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    @classmethod
    def empty(cls, read_size: int) -> EmulatedRun:
        i8 = np.empty(0, dtype=np.int64)
        return cls(np.empty(0, dtype=np.uint8), i8, i8, np.empty(0, dtype=np.uint32),
                   np.empty(0, dtype=np.uint64), read_size, np.empty(0, dtype=HIT_DTYPE),
                   np.empty(0, dtype=GENERATED_DTYPE))

    @classmethod
    def concat(cls, runs: list[EmulatedRun], read_size: int) -> EmulatedRun:
        """One run from consecutive runs."""
        if not runs:
            return cls.empty(read_size)
        sizes = np.cumsum([0] + [len(run.data) for run in runs[:-1]])
        return cls(np.concatenate([run.data for run in runs]),
                   np.concatenate([run.starts + off for run, off in zip(runs, sizes, strict=True)]),
                   np.concatenate([run.ends + off for run, off in zip(runs, sizes, strict=True)]),
                   np.concatenate([run.readout_ids for run in runs]),
                   np.concatenate([run.timestamps for run in runs]), read_size,
                   np.concatenate([run.truth for run in runs]),
                   np.concatenate([run.generated for run in runs]))

    def read(self, i: int) -> bytes:
        """Readout ``i`` as the board sends it: ``read_size`` bytes, ``0xff`` padded."""
        data = self.data[self.starts[i]:self.ends[i]].tobytes()
        return data + bytes([PADDING_BYTE]) * (self.read_size - len(data))

    def readout(self, i: int) -> AstroPix4Readout:
        """Readout ``i`` as the DAQ stores it (trailing padding stripped)."""
        return AstroPix4Readout(self.data[self.starts[i]:self.ends[i]].tobytes(),
                                int(self.readout_ids[i]), int(self.timestamps[i]))

    def readouts(self) -> list[AstroPix4Readout]:
        """Every readout (see :meth:`readout`)."""
        return [self.readout(i) for i in range(len(self))]

    def stripped_ends(self) -> np.ndarray:
        """End of each readout's data once trailing ``0xff`` are stripped, as the DAQ does."""
        ends = self.ends.copy()
        # Only a split hit's head can end a read with 0xff; it has at most 6 of them.
        live = np.flatnonzero(ends > self.starts)
        while live.size:
            live = live[self.data[ends[live] - 1] == PADDING_BYTE]
            ends[live] -= 1
            live = live[ends[live] > self.starts[live]]
        return ends

    def serialized(self) -> bytes:
        """The readouts as ``.apx`` files hold them, back to back."""
        n = len(self)
        if n == 0:
            return b""
        ends = self.stripped_ends()
        heads = np.empty(n, dtype=_HEADER_DTYPE)
        heads["magic"] = READOUT_MAGIC
        heads["readout_id"] = self.readout_ids
        heads["timestamp"] = self.timestamps
        heads["length"] = ends - self.starts
        head_bytes = memoryview(heads.tobytes())
        data = memoryview(np.ascontiguousarray(self.data))
        size = READOUT_HEADER.size
        # One slice per readout (not per hit): join copies each byte once.
        parts = []
        for i, (start, end) in enumerate(zip(self.starts.tolist(), ends.tolist(), strict=True)):
            parts.append(head_bytes[i * size:(i + 1) * size])
            parts.append(data[start:end])
        return b"".join(parts)

    def write_apx(self, writer: ApxWriter) -> int:
        """Append the readouts to an open :class:`~astropix_hil.fileio.ApxWriter`; return
        the bytes written."""
        blob = memoryview(self.serialized())
        sizes = READOUT_HEADER.size + self.stripped_ends() - self.starts
        written = at = 0
        # One write per readout keeps the writer's readout accounting (flushed, synced) exact.
        for size in sizes.tolist():
            written += writer.write(blob[at:at + size])
            at += size
        return written

    def write_truth_csv(self, stream: TextIO, header: Mapping[str, Any] | None = None) -> int:
        """Write the truth as ``apx-hil convert`` writes a decoded file; return the hit count."""
        return write_hits_csv(stream, [self.truth], header)


class EmulatedReadout(NamedTuple):
    """One readout and the hits an honest decoder reports in it."""

    readout: AstroPix4Readout
    truth: np.ndarray
    #: The ``read_size`` bytes the board sent (data then ``0xff`` padding).
    read: bytes


class Emulator:
    """Emulated AstroPix4 readouts with ground truth, deterministic for ``seed``.

    ``Emulator(EmulatorConfig.build(mode="poisson", rate=1e4), seed=1).generate(readouts=100)``
    gives 100 readouts and their truth; :meth:`stream` gives them one by one; :meth:`runs`
    batch by batch (what ``apx-hil emulate`` writes).
    """

    def __init__(self, config: EmulatorConfig | None = None, seed: int = 0) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.seed = int(seed)

    @classmethod
    def from_options(cls, seed: int | str = 0, **options: Any) -> Emulator:
        """An emulator from :meth:`EmulatorConfig.build` options (strings allowed)."""
        return cls(EmulatorConfig.from_strings(options), int(seed))

    def runs(self, readouts: int | None = None,
             duration: float | None = None) -> Iterator[EmulatedRun]:
        """Batches of consecutive readouts, until ``readouts`` readouts or the polls of the
        first ``duration`` seconds of chip time (endless if neither is given)."""
        if readouts is not None and readouts < 0:
            raise EmulatorConfigError(f"readouts={readouts}: not >= 0")
        if duration is not None and not duration >= 0:
            raise EmulatorConfigError(f"duration={duration}: not >= 0")
        if readouts is not None and duration is None and self.config.mean_rate() == 0:
            raise EmulatorConfigError("rate 0: the chips make no hits, so no readouts")
        # Checked above, before the first batch is asked for (a caller may open files then).
        return self._runs(readouts, duration)

    def _runs(self, readouts: int | None, duration: float | None) -> Iterator[EmulatedRun]:
        config = self.config
        stream = ChipStream(config, self.seed)
        last_poll = None if duration is None else int(duration * 1e9) // config.poll_interval_ns
        emitted = 0
        while readouts is None or emitted < readouts:
            layout, t0, _ = stream.next_layout()
            if last_poll is not None and t0 // config.poll_interval_ns >= last_poll:
                return
            reads = cut_reads(layout, config.poll_interval_ns, config.read_size)
            keep = len(reads.starts)
            if last_poll is not None:
                keep = int(np.searchsorted(reads.polls, last_poll, side="left"))
            if readouts is not None:
                keep = min(keep, readouts - emitted)
            run = self._run(layout, reads, keep, emitted)
            emitted += len(run)
            if len(run) or len(run.generated):
                yield run

    def generate(self, readouts: int | None = None, duration: float | None = None) -> EmulatedRun:
        """``readouts`` readouts, or those of ``duration`` seconds, in one :class:`EmulatedRun`."""
        if readouts is None and duration is None:
            raise EmulatorConfigError("give readouts=N or duration=S")
        return EmulatedRun.concat(list(self.runs(readouts, duration)), self.config.read_size)

    def stream(self, readouts: int | None = None,
               duration: float | None = None) -> Iterator[EmulatedReadout]:
        """Readouts one by one with their truth (generated in batches underneath)."""
        for run in self.runs(readouts, duration):
            bounds = np.searchsorted(run.truth["readout_id"], run.readout_ids, side="left")
            bounds = np.append(bounds, len(run.truth))
            for i in range(len(run)):
                yield EmulatedReadout(run.readout(i), run.truth[bounds[i]:bounds[i + 1]],
                                      run.read(i))

    def _run(self, layout: Layout, reads: Reads, keep: int, first_id: int) -> EmulatedRun:
        config = self.config
        ids = np.arange(first_id, first_id + len(reads.starts), dtype=np.int64)
        host = (config.start_ns + (reads.polls + 1) * config.poll_interval_ns
                + reads.rank * (config.read_size * NS_PER_READ_BYTE))
        host = np.maximum.accumulate(host) if host.size else host
        placement = place_hits(layout, reads.ends[:keep])
        truth = truth_records(layout, placement, ids.astype(np.uint32), host.astype(np.uint64))
        end = int(reads.ends[keep - 1]) if keep else 0
        sent = int(np.searchsorted(layout.hit_pos, end, side="left"))
        generated = np.empty(sent, dtype=GENERATED_DTYPE)
        for name in ("chip_id", "row", "column", "tot_us"):
            generated[name] = layout.hits[name][:sent]
        generated["time_ns"] = layout.hit_time[:sent]
        generated["fate"] = layout.hit_fate[:sent]
        generated["applied"] = layout.hit_applied[:sent]
        generated["sent_in"] = first_id + np.searchsorted(reads.ends[:keep],
                                                          layout.hit_pos[:sent], side="right")
        generated["readout_id"] = np.where(placement.read[:sent] >= 0,
                                           first_id + placement.read[:sent], -1)
        generated["decoding_order"] = placement.order[:sent]
        return EmulatedRun(layout.buf[:end], reads.starts[:keep], reads.ends[:keep],
                           ids[:keep].astype(np.uint32), host[:keep].astype(np.uint64),
                           config.read_size, truth, generated)


class RunSummary(NamedTuple):
    """What :func:`write_run` wrote, and what became of the hits generated."""

    readouts: int
    #: Hits in the truth (reported by an honest decoder).
    hits: int
    #: Hits sent (their first byte in a readout written).
    generated: int
    truncated: int
    split_lost: int
    #: Split hits whose head ends the last readout written (their tail was not emitted).
    not_emitted: int


def write_run(path: str | os.PathLike, runs: Iterable[EmulatedRun],
              header: Mapping[str, Any] | None = None,
              truth: TextIO | None = None) -> RunSummary:
    """Write emulated runs to a new ``.apx`` (and their truth as CSV to ``truth``, with the
    file's header as its ``#`` line, exactly as ``apx-hil convert`` would write it)."""
    readouts = hits = generated = truncated = lost = pending = 0
    with ApxWriter(path, header) as writer:
        if truth is not None:
            write_hits_csv(truth, [], writer.header)
        for run in runs:
            run.write_apx(writer)
            if truth is not None:
                truth.write(format_rows(run.truth))
            readouts += len(run)
            hits += len(run.truth)
            fate = run.generated["fate"]
            generated += len(fate)
            truncated += int((fate == Fate.TRUNCATED).sum())
            lost += int((fate == Fate.SPLIT_LOST).sum())
            reportable = (fate == Fate.COMPLETE) | (fate == Fate.SPLIT_JOINED)
            pending += int((reportable & (run.generated["readout_id"] < 0)).sum())
    return RunSummary(readouts, hits, generated, truncated, lost, pending)
