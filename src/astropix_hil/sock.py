"""Multicast sender and receiver: thin socket shells around :mod:`astropix_hil.framing`.

The first lines of each class are those of the AstroPix team's ``astropix_analysis.sock``::

    sender = MulticastSender(group="239.1.1.1", port=5007)
    sender.send_readout(readout)
    receiver = MulticastReceiver(AstroPix4Readout, group="239.1.1.1", port=5007)
    readout = receiver.receive()

The sender never blocks and never raises for network trouble: its socket is non-blocking and
a datagram the kernel refuses (no route, ENOBUFS, EAGAIN, a firewall) is counted in
:attr:`MulticastSender.stats` and dropped; its sequence number is used all the same, so
receivers count it lost. Flush deadlines and heartbeats run on a small daemon thread (or, with
``timer=False``, whenever the owner calls :meth:`MulticastSender.poll`).

Several receivers may share a host and port: each socket sets ``SO_REUSEADDR`` and binds to the
group address, and Linux hands every multicast datagram to every such socket. ``SO_REUSEPORT``
is not used: it is meant to spread datagrams over the sockets of a group, the opposite of what
monitors want.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from .errors import TransportError
from .fmt import AstroPix4Readout, parse_readout
from .framing import (
    DEFAULT_FLUSH_DELAY,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_DATAGRAM,
    FrameDecoder,
    FrameEncoder,
    Kind,
    ReadoutBatch,
    ReceiverStats,
    TransportKey,
    load_key,
    split_readouts,
)

log = logging.getLogger(__name__)

DEFAULT_GROUP = "239.1.1.1"
DEFAULT_PORT = 5007
DEFAULT_TTL = 1
#: Receive buffer asked for by default (the kernel caps it at net.core.rmem_max).
DEFAULT_RCVBUF = 8 << 20
# Linux socket options Python does not name.
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_SLOT = 65536  # room for any UDP datagram
_SIOCGIFADDR = 0x8915


def resolve_interface(interface: str | None) -> tuple[str, int]:
    """(address, interface index) for an interface given by IPv4 address or by name."""
    if interface is None:
        return "0.0.0.0", 0
    try:
        socket.inet_aton(interface)
    except OSError:
        try:
            index = socket.if_nametoindex(interface)
        except OSError:
            raise TransportError(f"no network interface named {interface!r}") from None
        return _interface_address(interface), index
    return interface, 0


def _interface_address(name: str) -> str:
    """The interface's IPv4 address (the source of what we send), or 0.0.0.0 if none."""
    request = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            reply = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
        except OSError:
            return "0.0.0.0"
    return socket.inet_ntoa(reply[20:24])


def _mreqn(group: str, interface: str | None) -> bytes:
    address, index = resolve_interface(interface)
    return struct.pack("4s4si", socket.inet_aton(group), socket.inet_aton(address), index)


def _join(sock: socket.socket, group: str, interface: str | None) -> list[str]:
    """Join ``group`` on ``interface``, or on every interface when None; return their names.

    A monitor with no interface given listens everywhere (loopback included), so it hears a DAQ
    on this host as well as one on the network, whichever interface the DAQ sends on.
    """
    if interface is not None:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, _mreqn(group, interface))
        return [interface]
    joined, errors = [], []
    for index, name in socket.if_nameindex():
        mreqn = struct.pack("4s4si", socket.inet_aton(group), bytes(4), index)
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        except OSError as exc:  # down, no IPv4, no multicast: not a place to listen
            errors.append(f"{name}: {exc.strerror}")
            continue
        joined.append(name)
    if not joined:
        raise TransportError(f"cannot join {group} on any interface ({'; '.join(errors)})")
    return joined


def _check_group(group: str) -> None:
    try:
        first = socket.inet_aton(group)[0]
    except OSError:
        raise TransportError(f"{group!r} is not an IPv4 address") from None
    if not 224 <= first <= 239:
        raise TransportError(f"{group} is not a multicast group (224.0.0.0/4)")


def _as_key(key: TransportKey | str | os.PathLike | None) -> TransportKey | None:
    if key is None or isinstance(key, TransportKey):
        return key
    return load_key(key)


@dataclass
class SenderStats:
    """A sender's counters (JSON-serializable with :meth:`as_dict`)."""

    stream: str | None = None
    #: Readouts handed to :meth:`MulticastSender.send_readout` / ``send_data``.
    readouts: int = 0
    #: Readouts in datagrams the kernel refused.
    readouts_failed: int = 0
    datagrams_sent: int = 0
    #: Datagrams the kernel refused (dropped; their sequence numbers count as lost downstream).
    datagrams_failed: int = 0
    bytes_sent: int = 0
    heartbeats_sent: int = 0
    #: Refused datagrams by errno name (``EAGAIN``, ``ENOBUFS``, ``ENETUNREACH``, ``EPERM``...).
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The counters as a plain dict."""
        return {**self.__dict__, "errors": dict(self.errors)}


class MulticastSender:
    """Multicasts readouts to ``group``:``port`` with time-to-live ``ttl`` (1: the local
    subnet; more is the user's explicit choice), out of ``interface`` (address or name; None:
    the routing table decides).

    Framed (default): readouts are batched up to ``max_datagram`` bytes, flushed at the latest
    ``flush_delay`` s after the first, fragmented when larger, and a heartbeat carrying
    ``header`` (the run's ``.apx`` header) goes out every ``heartbeat_interval`` s. With
    ``key`` (a :class:`~astropix_hil.framing.TransportKey` or a key file) every datagram is
    authenticated. ``legacy=True`` sends each readout as one bare datagram, exactly as the
    AstroPix tools do (no batching, heartbeat or key).
    """

    def __init__(self, group: str = DEFAULT_GROUP, port: int = DEFAULT_PORT,
                 ttl: int = DEFAULT_TTL, interface: str | None = None, *,
                 legacy: bool = False, header: Mapping[str, Any] | None = None,
                 key: TransportKey | str | os.PathLike | None = None,
                 max_datagram: int = DEFAULT_MAX_DATAGRAM,
                 flush_delay: float = DEFAULT_FLUSH_DELAY,
                 heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
                 loop: bool = True, sndbuf: int | None = None, timer: bool = True,
                 readout_uid: int = AstroPix4Readout.UID,
                 clock: Callable[[], float] = time.monotonic) -> None:
        _check_group(group)
        if not 0 <= ttl <= 255:
            raise ValueError(f"ttl {ttl} is not in 0..255")
        self.group, self.port, self.ttl, self.interface = group, port, ttl, interface
        self.legacy = legacy
        self._clock = clock
        key = _as_key(key)
        if legacy and key is not None:
            raise ValueError("legacy datagrams cannot be authenticated")
        self.stats = SenderStats()
        self._encoder: FrameEncoder | None = None
        if not legacy:
            self._encoder = FrameEncoder(now=clock(), readout_uid=readout_uid,
                                         max_datagram=max_datagram, flush_delay=flush_delay,
                                         heartbeat_interval=heartbeat_interval, header=header,
                                         key=key)
            self.stats.stream = f"{self._encoder.stream_id:016x}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loop))
            if interface is not None:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                _mreqn(group, interface))
            if sndbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        try:
            # Connected, each send skips the address lookup.
            sock.connect((group, port))
            self._send = sock.send
        except OSError as exc:
            log.warning("multicast to %s:%d: %s (sending anyway; refused datagrams are "
                        "counted)", group, port, exc)
            address = (group, port)
            self._send = lambda datagram: sock.sendto(datagram, address)
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._encoder is not None and timer:
            self._thread = threading.Thread(target=self._run_timer, daemon=True,
                                            name=f"apx-sender-{self.stats.stream}")
            self._thread.start()

    @property
    def stream_id(self) -> int | None:
        """The random id of this sender's stream (None in legacy mode)."""
        return None if self._encoder is None else self._encoder.stream_id

    def _transmit(self, datagrams: list[bytes]) -> None:
        stats = self.stats
        for datagram in datagrams:
            try:
                self._send(datagram)
            except OSError as exc:
                self._failed(datagram, exc)
            else:
                stats.datagrams_sent += 1
                stats.bytes_sent += len(datagram)
                if datagram[5] == Kind.HEARTBEAT:
                    stats.heartbeats_sent += 1

    def _failed(self, datagram: bytes, exc: OSError) -> None:
        stats = self.stats
        stats.datagrams_failed += 1
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        if name not in stats.errors:
            log.warning("multicast to %s:%d: %s (counted in sender stats; further %s "
                        "drops are not logged)", self.group, self.port, exc, name)
        stats.errors[name] = stats.errors.get(name, 0) + 1
        if self._encoder is None:
            stats.readouts_failed += 1
        elif datagram[5] == Kind.DATA:
            stats.readouts_failed += _U16.unpack_from(datagram, 38)[0]
        elif datagram[5] == Kind.FRAGMENT:
            stats.readouts_failed += 1  # may count a readout once per refused fragment

    def send_readout(self, readout: AstroPix4Readout) -> None:
        """Send one readout (batched in framed mode, one datagram in legacy mode)."""
        self._check_open()
        self.stats.readouts += 1
        if self._encoder is None:
            self._transmit([readout.to_bytes()])
            return
        with self._lock:
            out = self._encoder.add(readout.to_bytes(), self._clock())
            if out:
                self._transmit(out)

    def send_data(self, data: bytes) -> None:
        """Send bytes. Framed: ``data`` is one or more whole serialized readouts (as
        ``readout.to_bytes()`` or an ``.apx`` body gives), batched like :meth:`send_readout`;
        a :class:`~astropix_hil.errors.FormatError` says where they are not. Legacy: ``data``
        goes out as one datagram, as is."""
        self._check_open()
        if self._encoder is None:
            self.stats.readouts += 1
            self._transmit([bytes(data)])
            return
        spans = split_readouts(data)
        with self._lock:
            out = self._encoder.add_many(data, self._clock(), spans)
            self.stats.readouts += len(spans)
            self._transmit(out)

    def set_header(self, header: Mapping[str, Any] | None) -> None:
        """The run header the heartbeats carry from now on."""
        if self._encoder is not None:
            with self._lock:
                self._encoder.set_header(header)

    def flush(self) -> None:
        """Send the open batch now."""
        self._check_open()
        if self._encoder is not None:
            with self._lock:
                self._transmit(self._encoder.flush(self._clock()))

    def heartbeat(self) -> None:
        """Send a heartbeat now (after the open batch)."""
        self._check_open()
        if self._encoder is not None:
            with self._lock:
                self._transmit(self._encoder.heartbeat(self._clock()))

    def poll(self) -> float | None:
        """Send what is due (expired batch, heartbeat); return when to call again.

        Only needed with ``timer=False``; the timer thread does it otherwise.
        """
        if self._encoder is None or self._closed:
            return None
        with self._lock:
            self._transmit(self._encoder.poll(self._clock()))
            return self._encoder.next_deadline()

    def _run_timer(self) -> None:
        # Wake at least every flush_delay: a batch may open at any time while we sleep.
        step = max(self._encoder.flush_delay, 0.001)
        while not self._stop.is_set():
            try:
                deadline = self.poll()
            except Exception:  # never let the timer die silently
                log.exception("multicast sender timer")
                deadline = None
            if deadline is None:
                return
            self._stop.wait(min(max(deadline - self._clock(), 0.0005), step))

    def close(self) -> None:
        """Send the open batch and the end-of-stream heartbeats, stop the timer, close."""
        if self._closed:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._encoder is not None:
                self._transmit(self._encoder.close(self._clock()))
            self._closed = True
            self._sock.close()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("the multicast sender is closed")

    def __enter__(self) -> MulticastSender:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "legacy" if self.legacy else f"stream {self.stats.stream}"
        return f"MulticastSender({self.group}:{self.port}, ttl={self.ttl}, {mode})"


class MulticastReceiver:
    """Receives the readouts multicast to ``group``:``port`` on ``interface`` (address or
    name; None: every interface, loopback included), framed and legacy alike.

    ``key`` (a :class:`~astropix_hil.framing.TransportKey`, a key file, or several keys):
    accept only datagrams authenticated by it. ``allow``: accept only these sender addresses.
    ``rcvbuf``: socket receive buffer in bytes (as root, beyond ``net.core.rmem_max`` too).
    The other options are those of :class:`~astropix_hil.framing.FrameDecoder`.
    :attr:`stats` counts everything; malformed datagrams never reach :meth:`receive`.
    """

    def __init__(self, readout_class: type[AstroPix4Readout] = AstroPix4Readout,
                 group: str = DEFAULT_GROUP, port: int = DEFAULT_PORT,
                 interface: str | None = None, *,
                 key: TransportKey | str | os.PathLike | Iterable | None = None,
                 allow: Iterable[str] | None = None, rcvbuf: int | None = DEFAULT_RCVBUF,
                 reorder_window: int = 1024, reorder_timeout: float = 0.05,
                 fragment_timeout: float = 1.0, max_batch: int = 512,
                 clock: Callable[[], float] = time.monotonic) -> None:
        _check_group(group)
        self.readout_class = readout_class
        self.group, self.port, self.interface = group, port, interface
        keys: list[TransportKey] | None = None
        if key is not None:
            many = isinstance(key, list | tuple | set)
            keys = [_as_key(k) for k in key] if many else [_as_key(key)]
        allowed = None if allow is None else {socket.gethostbyname(a) for a in allow}
        self._clock = clock
        self._decoder = FrameDecoder(now=clock(), readout_uid=readout_class.uid(), keys=keys,
                                     allow=allowed, reorder_window=reorder_window,
                                     reorder_timeout=reorder_timeout,
                                     fragment_timeout=fragment_timeout)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if rcvbuf is not None:
                _set_rcvbuf(sock, rcvbuf)
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
                self._overflow = True
            except OSError:
                self._overflow = False
            # Bound to the group, the socket gets this group's datagrams only.
            sock.bind((group, port))
            _join(sock, group, interface)
            try:
                sock.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            except OSError:
                pass
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._poller = select.poll()
        self._poller.register(sock.fileno(), select.POLLIN)
        self._buffer = bytearray(max_batch * 2048 + _SLOT)
        self._view = memoryview(self._buffer)
        self._max_batch = max_batch
        self._ancsize = socket.CMSG_SPACE(4)
        self._batch: ReadoutBatch | None = None
        self._offset = 0
        self._taken = 0
        self._closed = False

    @property
    def rcvbuf(self) -> int:
        """The receive buffer size the kernel granted (it doubles the requested size)."""
        return self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    @property
    def stats(self) -> ReceiverStats:
        """Per-stream counters, malformed datagrams by reason, the last run header."""
        return self._decoder.stats

    def fileno(self) -> int:
        """The socket's file descriptor (for select/poll)."""
        return self._sock.fileno()

    def _pump(self, wait: float | None) -> None:
        """Wait up to ``wait`` seconds (None: forever) for datagrams; read and feed what is
        there (at most ``max_batch`` datagrams)."""
        if not self._poller.poll(None if wait is None else max(0, int(wait * 1000 + 0.999))):
            self._decoder.poll(self._clock())
            return
        view, size = self._view, len(self._buffer)
        recv = self._sock.recvmsg_into
        got = []
        pos = 0
        drops = None
        ancsize = self._ancsize
        for _ in range(self._max_batch):
            if pos + _SLOT > size:
                break
            try:
                n, anc, _, address = recv([view[pos:pos + _SLOT]], ancsize, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if anc:
                drops = _U32.unpack_from(anc[0][2])[0]
            got.append((view[pos:pos + n], address))
            pos += n
        if drops is not None:
            self._decoder.stats.socket_drops = drops
        elif self._overflow and self._decoder.stats.socket_drops is None:
            self._decoder.stats.socket_drops = 0
        now = self._clock()
        self._decoder.feed_many(got, now)
        self._decoder.poll(now)

    def receive_batch(self, timeout: float | None = None) -> ReadoutBatch:
        """The next batch of consecutive readouts of one stream (the fast path: decode it with
        :func:`astropix_hil.bulk.decode_frames` over :meth:`ReadoutBatch.frames`); raise
        :class:`TimeoutError` if none comes within ``timeout`` seconds."""
        self._check_open()
        if self._batch is not None:
            # The rest of a batch receive() started.
            batch, offset, taken = self._batch, self._offset, self._taken
            self._batch = None
            if offset:
                return ReadoutBatch(batch.stream, batch.source, batch.data[offset:],
                                    batch.count - taken, batch.first_readout + taken, True)
            return batch
        batches = self._decoder.batches
        deadline = None if timeout is None else self._clock() + timeout
        while not batches:
            now = self._clock()
            wait = None if deadline is None else deadline - now
            if wait is not None and wait <= 0:
                raise TimeoutError(f"no readout within {timeout} s on {self.group}:{self.port}")
            due = self._decoder.next_deadline()
            if due is not None:
                wait = due - now if wait is None else min(wait, due - now)
            self._pump(wait)
        return batches.popleft()

    def take_ready(self) -> list[ReadoutBatch]:
        """Every batch already received and not yet taken, oldest first, without waiting or
        reading the socket (e.g. after :meth:`finish`, before stopping)."""
        self._check_open()
        out = []
        if self._batch is not None:
            out.append(self.receive_batch(0))
        out += self._decoder.take()
        return out

    def receive(self, timeout: float | None = None) -> AstroPix4Readout:
        """The next readout; raise :class:`TimeoutError` if none comes within ``timeout`` s."""
        if self._batch is None:
            self._batch = self.receive_batch(timeout)
            self._offset = self._taken = 0
        batch = self._batch
        readout, self._offset = parse_readout(batch.data, self._offset)
        self._taken += 1
        if self._offset >= len(batch.data):
            self._batch = None
        if self.readout_class is not AstroPix4Readout:
            readout = self.readout_class._parsed(readout.data(), readout.readout_id,
                                                 readout.timestamp)
        return readout

    def __iter__(self) -> Iterator[AstroPix4Readout]:
        while True:
            yield self.receive()

    def settle(self, timeout: float) -> None:
        """Before a receiver stops of its own accord (a count reached): keep reading, for up to
        ``timeout`` seconds, while a stream has announced its end and the rest of it is still
        arriving, so that datagrams in flight are counted as received, not lost."""
        self._check_open()
        deadline = time.monotonic() + timeout
        while self._decoder.awaiting_end():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._pump(left)

    def finish(self) -> None:
        """Settle the accounting now (every open gap is lost); held readouts become
        receivable. :meth:`close` does it too."""
        self._decoder.finish(self._clock())

    def close(self) -> None:
        """Settle the accounting and close the socket."""
        if not self._closed:
            self.finish()
            self._closed = True
            self._sock.close()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("the multicast receiver is closed")

    def __enter__(self) -> MulticastReceiver:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MulticastReceiver({self.readout_class.__name__}, {self.group}:{self.port})"


def _set_rcvbuf(sock: socket.socket, size: int) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    # The kernel doubles the value for bookkeeping; below that, rmem_max capped it.
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < 2 * size:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except PermissionError:
            # Only worth a warning when the size was asked for, not for our default.
            report = log.debug if size == DEFAULT_RCVBUF else log.warning
            report("receive buffer capped by net.core.rmem_max (%d bytes granted, %d asked)",
                   sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), size)


__all__ = [
    "DEFAULT_GROUP",
    "DEFAULT_PORT",
    "DEFAULT_RCVBUF",
    "DEFAULT_TTL",
    "MulticastReceiver",
    "MulticastSender",
    "SenderStats",
    "resolve_interface",
]
