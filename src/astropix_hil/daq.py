"""The DAQ runner: poll the board, stamp readouts, write them to ``.apx`` and multicast them.

One loop, one thread: poll the board through a
:class:`~astropix_hil.boards.link.BoardLink`; stamp
each readout with a run-local id (consecutive from 0) and the host time in ns; append it to the
run file; hand it to the multicast sender. The file is the priority:

* readouts are taken in batches (until the board is empty, or :data:`BATCH_READOUTS`); each
  batch is handed to the operating system (one ``os.write``: safe from a crash or SIGKILL of
  the DAQ) before any readout of it goes to the sender, so a monitor never holds a readout the
  file could lose; the file reaches the disk (safe from power loss) at least every
  ``sync_interval`` seconds;
* a refused write (disk full, I/O error) is counted and retried with nothing lost, up to a
  bounded backlog; readouts wait for the file before they are multicast. A run that ends with
  readouts the disk never took ends with an error naming the file and the errno, and a file
  cut after its last whole readout (``written`` readouts exactly);
* the sender never blocks the loop and never raises into it: datagrams it could not send are
  counted by the sender and reported.

The progress callback gets a :class:`Progress` snapshot every ``progress_interval``; the
``written`` count in it only ever covers readouts already handed to the operating system.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from . import __version__
from .boards.link import BoardLink
from .bulk import decode_readouts
from .errors import ApxHilError
from .fileio import ApxWriter
from .fmt import AstroPix4Readout

log = logging.getLogger(__name__)

#: Seconds between hand-overs of readouts to the hit-counting thread (small batches keep the
#: count current and the last batch of a run short).
HIT_COUNT_INTERVAL = 0.2
#: Most readouts taken from the board before they are written and multicast (a batch also
#: ends when the board has nothing more). One ``os.write`` per batch costs nothing next to
#: the link; larger batches send in bursts that measurably slowed the pty link (the monitor
#: woke up all at once while the DAQ waited for the board).
BATCH_READOUTS = 8
#: Seconds between retries while the disk refuses writes (at most; ``sync_interval`` if less).
DISK_RETRY_INTERVAL = 0.1


class ReadoutSender(Protocol):
    """What the DAQ needs of a multicast sender (:class:`astropix_hil.sock.MulticastSender`)."""

    def send_readout(self, readout: AstroPix4Readout) -> Any: ...
    def close(self) -> None: ...


class DiskBacklogError(ApxHilError, OSError):
    """The run file refused writes for so long that the unwritten backlog hit its bound."""

    #: Bytes waiting for the disk when the run stopped.
    pending: int = 0


def describe_os_error(exc: OSError) -> str:
    """``ENOSPC (errno 28): No space left on device``: the errno by name and number."""
    if exc.errno is None:
        return str(exc)
    name = errno.errorcode.get(exc.errno, "errno")
    return f"{name} (errno {exc.errno}): {exc.strerror or os.strerror(exc.errno)}"


@dataclass
class Progress:
    """A snapshot of the run, as the progress line shows it."""

    elapsed_s: float
    readouts: int
    hits: int
    data_bytes: int
    #: Readouts handed to the operating system (they survive a crash of the DAQ).
    written: int
    readouts_per_s: float
    hits_per_s: float
    mb_per_s: float
    disk_errors: int
    pending_bytes: int
    #: False once readouts were left out of the hit count to keep the DAQ at full speed
    #: (``apx-hil info`` counts a file's hits exactly).
    hits_exact: bool = True
    readouts_uncounted: int = 0
    sender: dict[str, Any] = field(default_factory=dict)
    link: dict[str, Any] = field(default_factory=dict)
    #: Seconds spent in each stage: link (polls and reads), file, multicast, idle (sleeping
    #: after empty polls) in the loop; hits (decoding for the progress line) beside it.
    stage_s: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        """One human line."""
        dropped = self.sender.get("datagrams_failed", 0)
        hits = (f"hits {self.hits} ({self.hits_per_s:.0f}/s)" if self.hits_exact else
                f"hits >= {self.hits} (counted in {self.readouts - self.readouts_uncounted} "
                f"readouts)")
        return (f"{self.elapsed_s:7.1f} s  readouts {self.readouts} "
                f"({self.readouts_per_s:.0f}/s)  {hits}  "
                f"data {self.data_bytes / 1e6:.2f} MB ({self.mb_per_s:.2f} MB/s)  "
                f"written {self.written}  send drops {dropped}  "
                f"disk errors {self.disk_errors}  link resyncs {self.link.get('resyncs', 0)}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DaqOptions:
    """How long to run and how often to make data durable and report."""

    readouts: int | None = None
    duration: float | None = None
    #: Longest time written readouts wait before they are synced to the disk, in seconds.
    sync_interval: float = 1.0
    progress_interval: float = 1.0
    #: Sleep after an empty poll, so an idle board does not cost a core.
    idle_sleep: float = 0.0005
    #: Unwritten bytes tolerated while the disk refuses writes before the run stops.
    max_backlog_bytes: int = 256 << 20
    #: Decode hits for the progress line (bulk decoder, once per progress interval).
    count_hits: bool = True
    #: Seconds the sender keeps sending heartbeats after the run, before it ends the stream.
    linger: float = 0.0
    #: Share of the run's time the hit counting may take. It shares the interpreter with the
    #: loop, so when the data rate would make it cost more, batches are skipped (the count
    #: becomes a lower bound, and says so) rather than slowing the DAQ down.
    hit_budget: float = 0.2


@dataclass
class DaqResult:
    """How a run ended."""

    progress: Progress
    stopped_by: str
    error: str | None = None


def run_header(port: str, options: Mapping[str, Any],
               configuration: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON header of a run: start time, options, chip configuration, software version."""
    now = time.time_ns()
    header: dict[str, Any] = {
        "start_time_ns": now,
        "start_time_utc": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now / 1e9))
        + f".{now % 1_000_000_000 // 1000:06d}Z",
        "software": {"name": "astropix-hil", "version": __version__},
        "host": socket.gethostname(),
        "port": port,
        "args": dict(options),
    }
    if configuration is not None:
        header["configuration"] = dict(configuration)
    return header


class DaqRun:
    """One DAQ run over ``link`` into ``writer`` (and ``sender``, if given)."""

    def __init__(self, link: BoardLink, writer: ApxWriter, sender: ReadoutSender | None = None,
                 options: DaqOptions | None = None, *,
                 on_progress: Callable[[Progress], None] | None = None,
                 clock_ns: Callable[[], int] = time.time_ns,
                 make_readout: Callable[[bytes, int, int], Any] = AstroPix4Readout,
                 count_hits: Callable[[list], int] | None = None) -> None:
        self.link = link
        # The board profile's readout type and hit counter (default: AstroPix4 on Nexys).
        self.make_readout = make_readout
        self.count_batch = count_hits
        self.writer = writer
        self.sender = sender
        self.options = options or DaqOptions()
        self.on_progress = on_progress
        self.clock_ns = clock_ns
        self.stop_event = threading.Event()
        self.readouts = 0
        self.hits = 0
        self.data_bytes = 0
        self.disk_errors = 0
        self._start = time.monotonic()
        self._batch: list[AstroPix4Readout] = []
        self._counter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hit-counter")
        self._counting: Future | None = None
        self._chained = True
        self.readouts_uncounted = 0
        self.stage_s = dict.fromkeys(("link", "file", "multicast", "hits", "idle"), 0.0)
        self._extra: bytes | None = None
        self._last_progress = (self._start, 0, 0, 0)
        # Readouts given to the writer but not yet to the sender (the file goes first).
        self._unsent: deque[AstroPix4Readout] = deque()
        self._sent = 0  # readouts handed to the sender
        self._disk_error: OSError | None = None  # the last refusal, while it lasts
        self._retry_at = 0.0

    def stop(self) -> None:
        """Ask the loop to end after the readout in hand (safe from a signal handler)."""
        self.stop_event.set()

    def run(self) -> DaqResult:
        """Run until the readout count or duration is reached, :meth:`stop`, or a link error.

        Always leaves the run file flushed and closed and the sender closed. A link error ends
        the run: it is returned in :attr:`DaqResult.error` (and logged), never swallowed.
        """
        opts = self.options
        self._start = now = time.monotonic()
        self._last_progress = (now, 0, 0, 0)
        next_sync = now + opts.sync_interval
        next_progress = now + opts.progress_interval
        next_count = now + HIT_COUNT_INTERVAL
        deadline = None if opts.duration is None else now + opts.duration
        stopped_by, error = "stop", None
        backlog: int | None = None
        try:
            # A board holding its SPI readout in reset (the Nexys after power-up) sends nothing.
            self.link.enable_readout()
            while not self.stop_event.is_set():
                if opts.readouts is not None and self.readouts >= opts.readouts:
                    stopped_by = "readouts"
                    break
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    stopped_by = "duration"
                    break
                if now >= next_sync:
                    self._sync()
                    next_sync = now + opts.sync_interval
                if now >= next_count:
                    self._count_hits()
                    next_count = now + HIT_COUNT_INTERVAL
                if now >= next_progress:
                    self._report()
                    next_progress = now + opts.progress_interval
                before = time.perf_counter()
                wanted = None if opts.readouts is None else opts.readouts - self.readouts
                data = self.link.poll_readout(wanted)
                after = time.perf_counter()
                self.stage_s["link"] += after - before
                if data is None:
                    self._release()
                    if opts.idle_sleep:
                        time.sleep(opts.idle_sleep)
                        self.stage_s["idle"] += time.perf_counter() - after
                    continue
                self._take(data, after)
                if len(self._unsent) >= BATCH_READOUTS:
                    self._release()
        except DiskBacklogError as exc:
            stopped_by, error = "error", str(exc)
            backlog = exc.pending
        except ApxHilError as exc:
            stopped_by, error = "error", str(exc)
            log.error("DAQ stopped: %s", exc)
        finally:
            final_error = self._finish()
        if final_error is not None:
            # It holds the final count: it replaces the error that stopped the run, if any.
            error = final_error + ("" if backlog is None else
                                   f" (the run stopped when {backlog} bytes were waiting)")
        return DaqResult(self._progress(), stopped_by, error)

    def _take(self, data: bytes, start: float) -> None:
        readout = self.make_readout(data, self.readouts, self.clock_ns())
        self.writer.write(readout)
        self._unsent.append(readout)
        self.stage_s["file"] += time.perf_counter() - start
        if self.options.count_hits:
            self._batch.append(readout)
        self.readouts += 1
        self.data_bytes += len(readout.data())

    def _release(self, force: bool = False) -> None:
        """Hand the batch to the operating system, then multicast what the file holds.

        While the disk refuses writes, retries wait :data:`DISK_RETRY_INTERVAL` (unless
        ``force``) and nothing new is multicast; past ``max_backlog_bytes`` unwritten the run
        stops with :class:`DiskBacklogError`.
        """
        start = time.perf_counter()
        writer = self.writer
        if writer.pending_bytes and (force or self._disk_error is None
                                     or time.monotonic() >= self._retry_at):
            try:
                writer.flush()
            except OSError as exc:
                self._refused(exc)
            else:
                if self._disk_error is not None:
                    log.warning("%s: the disk takes writes again; nothing was lost",
                                writer.path)
                    self._disk_error = None
        written = time.perf_counter()
        self.stage_s["file"] += written - start
        # Only readouts the file holds go out: a killed DAQ loses nothing a monitor saw.
        flushed, unsent = writer.readouts_flushed, self._unsent
        if self.sender is None:
            self._sent = flushed
            unsent.clear()
        else:
            while unsent and self._sent < flushed:
                self.sender.send_readout(unsent.popleft())
                self._sent += 1
            self.stage_s["multicast"] += time.perf_counter() - written
        if self._disk_error is not None and writer.pending_bytes > self.options.max_backlog_bytes:
            error = DiskBacklogError(
                f"{writer.path}: the disk refused writes ({describe_os_error(self._disk_error)}) "
                f"until {writer.pending_bytes} bytes were pending; {flushed} readouts written")
            error.pending = writer.pending_bytes
            raise error

    def _refused(self, exc: OSError) -> None:
        self.disk_errors += 1
        if self._disk_error is None:
            log.warning("%s: write refused (%s); readouts are kept in memory (up to %d "
                        "bytes) and retried", self.writer.path, describe_os_error(exc),
                        self.options.max_backlog_bytes)
        self._disk_error = exc
        self._retry_at = time.monotonic() + min(DISK_RETRY_INTERVAL, self.options.sync_interval)

    def _sync(self) -> None:
        self._release()
        if self._disk_error is not None:
            return  # retried by _release; fsync has nothing new to make durable
        start = time.perf_counter()
        try:
            os.fsync(self.writer.fileno())
        except OSError as exc:
            self._refused(exc)
        finally:
            self.stage_s["file"] += time.perf_counter() - start

    def _count_hits(self, final: bool = False) -> None:
        """Hand the readouts taken since the last call to the hit-counting thread.

        Decoding runs beside the loop, in order, passing extra bytes from batch to batch; the
        progress line shows the hits counted so far. It shares the interpreter with the loop,
        so a batch is skipped (and the count marked inexact) when the counter is still busy or
        over its time budget; the last batch of the run is always counted.
        """
        if self._batch:
            busy = self._counting is not None and not self._counting.done()
            over = self.stage_s["hits"] > self.options.hit_budget * (
                time.monotonic() - self._start)
            if not final and (busy or over):
                self.readouts_uncounted += len(self._batch)
                self._chained = False  # the next batch cannot use this one's extra bytes
            else:
                self._counting = self._counter.submit(self._decode_batch, self._batch,
                                                      self._chained)
                self._chained = True
            self._batch = []
        if final:
            self._counter.shutdown(wait=True)

    def _decode_batch(self, batch: list[AstroPix4Readout], chained: bool) -> None:
        start = time.perf_counter()
        if self.count_batch is not None:
            self.hits += self.count_batch(batch)
            self.stage_s["hits"] += time.perf_counter() - start
            return
        result = decode_readouts(batch, self._extra if chained else None)
        self._extra = result.extra_bytes
        self.hits += len(result.hits)
        self.stage_s["hits"] += time.perf_counter() - start

    def _progress(self) -> Progress:
        now = time.monotonic()
        since, readouts, hits, data = self._last_progress
        span = max(now - since, 1e-9)
        sender = self.sender.stats.as_dict() if hasattr(self.sender, "stats") else {}
        return Progress(
            elapsed_s=now - self._start, readouts=self.readouts, hits=self.hits,
            data_bytes=self.data_bytes, written=self.writer.readouts_flushed,
            readouts_per_s=(self.readouts - readouts) / span,
            hits_per_s=(self.hits - hits) / span,
            mb_per_s=(self.data_bytes - data) / span / 1e6,
            disk_errors=self.disk_errors, pending_bytes=self.writer.pending_bytes,
            hits_exact=self.options.count_hits and self.readouts_uncounted == 0,
            readouts_uncounted=(self.readouts_uncounted if self.options.count_hits
                                else self.readouts),
            sender=sender, link=self.link.stats.as_dict(),
            stage_s={name: round(seconds, 6) for name, seconds in self.stage_s.items()})

    def _report(self) -> None:
        # "written" only counts readouts handed to the OS: those of the batches released.
        progress = self._progress()
        self._last_progress = (time.monotonic(), self.readouts, self.hits, self.data_bytes)
        if self.on_progress is not None:
            self.on_progress(progress)

    def _finish(self) -> str | None:
        """Store what is left, close everything; the error if the file could not take it all."""
        # Readouts the link already took from the board are data: store them too.
        for data in self.link.take_pending():
            self._take(data, time.perf_counter())
        self._count_hits(final=True)
        writer, error = self.writer, None
        try:
            try:
                self._release(force=True)
            except DiskBacklogError:
                pass  # reported below, with the final count
            try:
                if self._disk_error is None:
                    writer.sync()
            except OSError as exc:
                self._refused(exc)
        finally:
            try:
                writer.close()
            except OSError as exc:
                if self._disk_error is None:
                    self._refused(exc)
            self._unsent.clear()  # never multicast what the file does not hold
            if self._disk_error is not None:
                unwritten = self.readouts - writer.readouts_flushed
                error = (f"{writer.path}: write failed: {describe_os_error(self._disk_error)}; "
                         f"{writer.readouts_flushed} readouts written, {unwritten} not written")
            self.link.close()
            if self.sender is not None:
                if self.options.linger > 0:
                    time.sleep(self.options.linger)  # its timer keeps the heartbeats going
                self.sender.close()
        if self.on_progress is not None:
            self.on_progress(self._progress())
        return error
