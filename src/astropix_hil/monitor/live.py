"""``apx-hil monitor``'s engine: a feed decodes and accumulates, the main thread plots.

A feed (:class:`NetworkFeed` on multicast, run by ``apx-hil monitor`` in a process of its own
through :class:`ProcessFeed`; :class:`FileFeed` replaying a file) decodes readouts in bulk and
adds them to an :class:`~astropix_hil.monitor.Accumulator`; the main thread only ever draws
:meth:`~astropix_hil.monitor.Accumulator.snapshot` copies, about twice a second, so drawing
never slows the receiving down.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import warnings
from collections.abc import Callable

import numpy as np

from ..bulk import decode_frames
from ..errors import ApxHilError, TruncatedFileWarning
from ..fileio import iter_hit_chunks, read_header
from ..framing import ReadoutBatch
from ..sock import MulticastReceiver
from .accumulator import Accumulator

#: Longest a feed waits before looking at its stop flag (s).
_TICK = 0.1
#: How often a network feed copies the receiver's statistics into the accumulator (s).
_STATS_INTERVAL = 0.2
#: Readouts decoded at once at most when merging the batches waiting at the socket.
_MERGE_READOUTS = 20_000
#: Bytes of a file decoded per step when replaying at a given speed (keeps pacing smooth).
_PACED_CHUNK = 256 << 10


class Feed(threading.Thread):
    """A thread adding readouts to an accumulator until :meth:`stop` or its source ends."""

    def __init__(self, acc: Accumulator) -> None:
        super().__init__(daemon=True, name=type(self).__name__)
        self.acc = acc
        self._stop_event = threading.Event()
        #: The exception that ended the feed, if any (the caller reports it).
        self.error: BaseException | None = None
        #: Set when the source has nothing more (end of file).
        self.exhausted = threading.Event()
        #: Monotonic time of the last data seen.
        self.last_data = time.monotonic()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        try:
            self.feed()
        except BaseException as exc:  # reported by the main thread, one line
            self.error = exc
        finally:
            self.exhausted.set()

    def feed(self) -> None:
        raise NotImplementedError


class NetworkFeed(Feed):
    """Receive multicast readouts (framed or legacy), decode them per stream, accumulate."""

    def __init__(self, acc: Accumulator, receiver: MulticastReceiver) -> None:
        super().__init__(acc)
        self.receiver = receiver
        self._extra: dict[str, bytes | None] = {}
        acc.source = f"{receiver.group}:{receiver.port}"

    def feed(self) -> None:
        self._loop(lambda: self._stop_event.is_set(), _TICK)
        self._settle()

    def serve(self, conn) -> None:
        """Receive until ``conn`` says ``stop``, answering each ``snapshot`` request on it with
        the accumulator (then the last state, settled, after ``stop``)."""
        stopped = False

        def requested() -> bool:
            nonlocal stopped
            while conn.poll():
                if conn.recv() == "stop":
                    stopped = True
                    return True
                self.acc.set_receiver(self.receiver.stats.as_dict())
                conn.send(("snapshot", self.acc))
            return stopped

        self._loop(requested, 0.02)
        self._settle()
        conn.send(("snapshot", self.acc))

    def _loop(self, stop: Callable[[], bool], tick: float) -> None:
        receiver = self.receiver
        heard = receiver.stats.datagrams
        published = 0.0
        while not stop():
            try:
                self._add_all(receiver.receive_batch(timeout=tick))
            except TimeoutError:
                pass
            now = time.monotonic()
            if receiver.stats.datagrams != heard:
                heard, self.last_data = receiver.stats.datagrams, now
            if now - published >= _STATS_INTERVAL:
                self.acc.set_receiver(receiver.stats.as_dict())
                published = now

    def _settle(self) -> None:
        receiver = self.receiver
        receiver.finish()  # settle the accounting: open gaps are lost, held readouts delivered
        while True:
            try:
                self._add(receiver.receive_batch(timeout=0))
            except TimeoutError:
                break
        self.acc.set_receiver(receiver.stats.as_dict())

    def _add_all(self, first: ReadoutBatch) -> None:
        """Add ``first`` and every batch already waiting, each stream's consecutive batches
        decoded as one: numpy's cost per call, not per readout, dominates small batches (a
        datagram's worth), so this is what keeps up with high rates."""
        run = [first]
        count = first.count
        while count < _MERGE_READOUTS:
            try:
                batch = self.receiver.receive_batch(timeout=0)
            except TimeoutError:
                break
            if batch.stream != run[-1].stream or not batch.contiguous:
                self._add(_merged(run))
                run, count = [], 0
            run.append(batch)
            count += batch.count
        self._add(_merged(run))

    def _add(self, batch: ReadoutBatch) -> None:
        frames = batch.frames()
        extra = self._extra.get(batch.stream) if batch.contiguous else None
        result = decode_frames(np.frombuffer(batch.data, dtype=np.uint8), frames.starts,
                               frames.ends, frames.readout_ids, frames.timestamps, extra)
        self._extra[batch.stream] = result.extra_bytes
        self.acc.add(result.hits, result.status, frames.readout_ids, frames.timestamps)


def _merged(run: list[ReadoutBatch]) -> ReadoutBatch:
    """Consecutive batches of one stream as one batch."""
    if len(run) == 1:
        return run[0]
    first = run[0]
    return ReadoutBatch(first.stream, first.source, b"".join(b.data for b in run),
                        sum(b.count for b in run), first.first_readout, first.contiguous)


class ProcessFeed(Feed):
    """A :class:`NetworkFeed` in a process of its own, so that drawing (which holds this
    process's interpreter lock for long stretches) never delays receiving; this thread fetches
    a copy of its accumulator every :data:`_STATS_INTERVAL` seconds."""

    def __init__(self, acc: Accumulator, group: str, port: int, interface: str | None,
                 key: str | None, ready_timeout: float = 60.0) -> None:
        super().__init__(acc)
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_receive_process,
                                        args=(child, group, port, interface, key),
                                        name="apx-hil monitor receiver", daemon=True)
        self._process.start()
        child.close()
        # The socket is joined before this returns: nothing sent from now on is missed.
        if not self._conn.poll(ready_timeout):
            self._process.kill()
            raise ApxHilError(f"the receiving process did not start within {ready_timeout} s")
        self._take(self._conn.recv())
        self._datagrams = 0

    def _take(self, message: tuple) -> Accumulator | None:
        kind, value = message
        if kind == "error":
            raise ApxHilError(value)
        if kind == "ready":
            self.acc.source = value
            return None
        return value

    def feed(self) -> None:
        try:
            while not self._stop_event.wait(_STATS_INTERVAL):
                self._refresh("snapshot")
            self._refresh("stop")  # the last state: accounting settled, held readouts in
        finally:
            self._conn.close()
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()

    def _refresh(self, request: str) -> None:
        try:
            self._conn.send(request)
            if not self._conn.poll(60):
                raise ApxHilError("the receiving process stopped answering")
            snapshot = self._take(self._conn.recv())
        except (EOFError, BrokenPipeError, ConnectionResetError):
            raise ApxHilError("the receiving process ended unexpectedly") from None
        if snapshot is None:
            return
        self.acc.replace_with(snapshot)
        datagrams = (snapshot.receiver or {}).get("datagrams", 0)
        if datagrams != self._datagrams:
            self._datagrams, self.last_data = datagrams, time.monotonic()


def _receive_process(conn, group: str, port: int, interface: str | None,
                     key: str | None) -> None:
    """The receiving process: a :class:`NetworkFeed` loop answering snapshot requests."""
    import signal

    # The parent handles Ctrl-C and SIGTERM and tells this process to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        receiver = MulticastReceiver(group=group, port=port, interface=interface, key=key)
    except (ApxHilError, OSError) as exc:
        conn.send(("error", str(exc)))
        return
    acc = Accumulator()
    feed = NetworkFeed(acc, receiver)
    conn.send(("ready", acc.source))
    try:
        feed.serve(conn)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent went away
    except (ApxHilError, OSError) as exc:
        conn.send(("error", str(exc)))
    finally:
        receiver.close()


class FileFeed(Feed):
    """Replay an ``.apx`` file: at ``speed`` times its recorded pace (by the readout
    timestamps), or as fast as it decodes (``speed`` 0)."""

    def __init__(self, acc: Accumulator, path: str, speed: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(acc)
        self.path = path
        self.speed = speed
        self._clock = clock
        acc.header = read_header(path)
        acc.source = os.fspath(path)

    def feed(self) -> None:
        # A file cut inside its last readout still replays; the warning goes to the report.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TruncatedFileWarning)
            try:
                self._replay()
            finally:
                self.acc.warnings += [str(w.message) for w in caught
                                      if issubclass(w.category, TruncatedFileWarning)]

    def _replay(self) -> None:
        if self.speed <= 0:
            for chunk in iter_hit_chunks(self.path):
                if self._stop_event.is_set():
                    return
                self.acc.add(chunk.hits, chunk.status, chunk.readout_ids, chunk.timestamps,
                             count_ids=True)
                self.last_data = time.monotonic()
            return
        start = self._clock()
        t0: int | None = None
        for chunk in iter_hit_chunks(self.path, _PACED_CHUNK):
            stamps = chunk.timestamps.astype(np.float64)
            hit_stamps = chunk.hits["timestamp"].astype(np.float64)
            t0 = float(stamps[0]) if t0 is None else t0
            done = -np.inf
            while True:
                if self._stop_event.is_set():
                    return
                # Everything stamped up to "now" in the file's time is due.
                due = t0 + (self._clock() - start) * self.speed * 1e9
                later = stamps > due
                upto = due if later.any() else np.inf
                r_sel = (stamps > done) & (stamps <= upto)
                h_sel = (hit_stamps > done) & (hit_stamps <= upto)
                if r_sel.any() or h_sel.any():
                    self.acc.add(chunk.hits[h_sel], chunk.status[r_sel],
                                 chunk.readout_ids[r_sel], chunk.timestamps[r_sel],
                                 count_ids=True)
                    self.last_data = time.monotonic()
                done = upto
                if upto == np.inf:
                    break
                wait = (float(stamps[later].min()) - t0) / (self.speed * 1e9) \
                    - (self._clock() - start)
                self._stop_event.wait(min(max(wait, 0.0), _TICK))


#: Seconds from one redraw of the window to the next (at least twice a second).
REFRESH_S = 0.45


class Snapshots:
    """``--png DIR --every S``: numbered PNG snapshots of the whole monitor."""

    PATTERN = "monitor_{:04d}.png"

    def __init__(self, folder: str, every: float, force: bool = False) -> None:
        os.makedirs(folder, exist_ok=True)
        taken = sorted(f for f in os.listdir(folder)
                       if f.startswith("monitor_") and f.endswith(".png"))
        if taken and not force:
            raise FileExistsError(f"{folder} already holds snapshots ({taken[0]}...); use "
                                  "--force to overwrite them")
        self.folder, self.every = folder, every
        self.count = 0
        self.due = time.monotonic() + every
        self.written: list[str] = []

    def write(self, acc: Accumulator) -> str:
        from .figures import monitor_figure, png_bytes

        self.count += 1
        path = os.path.join(self.folder, self.PATTERN.format(self.count))
        with open(path, "wb") as stream:
            stream.write(png_bytes(monitor_figure(acc.snapshot())))
        self.written.append(path)
        return path


def watch(feed: Feed, stop: threading.Event, *, window: bool,
          snapshots: Snapshots | None = None, duration: float | None = None,
          idle_exit: float | None = None) -> str:
    """Run ``feed`` and show or snapshot its accumulator until it ends; return why it ended.

    ``stop`` is set by a signal. A window stays open after a file is replayed, until closed.
    """
    fig = plt = None
    if window:
        import matplotlib.pyplot as plt

        from .figures import MonitorView

        fig = plt.figure("apx-hil monitor", figsize=(14, 8), layout="constrained")
        view = MonitorView(fig)
        plt.show(block=False)
    start = time.monotonic()
    feed.start()
    reason = "stopped"
    try:
        while True:
            now = time.monotonic()
            if stop.is_set():
                reason = "signal"
                break
            if feed.error is not None:
                raise feed.error
            if feed.exhausted.is_set() and not window:
                reason = "end of file"
                break
            if duration is not None and now - start >= duration:
                reason = "duration"
                break
            if idle_exit is not None and now - feed.last_data >= idle_exit:
                reason = "idle"
                break
            if snapshots is not None and now >= snapshots.due:
                snapshots.write(feed.acc)
                snapshots.due = max(snapshots.due + snapshots.every, now)
            if window:
                if not plt.fignum_exists(fig.number):
                    reason = "window closed"
                    break
                view.update(feed.acc.snapshot())
                fig.canvas.draw_idle()
                # The GUI event loop runs (and draws) until the next refresh is due.
                plt.pause(max(REFRESH_S - (time.monotonic() - now), 0.02))
            else:
                wait = REFRESH_S if snapshots is None else min(REFRESH_S, snapshots.due - now)
                stop.wait(max(wait, 0.0))
    finally:
        feed.stop()
        feed.join()
    if feed.error is not None:
        raise feed.error
    if snapshots is not None:
        snapshots.write(feed.acc)
    return reason
