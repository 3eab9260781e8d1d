"""A receiver's statistics, per stream and in total, and the batches of readouts it hands out."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..bulk import Frames, frame_readouts
from ..fmt import AstroPix4Readout, parse_readout
from .datagram import MALFORMED_REASONS


@dataclass
class StreamStats:
    """What a receiver knows about one stream (counters are since the stream was first seen).

    ``datagrams_lost`` counts sequence numbers that never arrived (including datagrams the
    sender failed to send); ``readouts_lost`` the readouts they held, counted exactly from the
    readout sequence numbers. A datagram is counted lost once the hold-back window gives up on
    it, or at :meth:`FrameDecoder.finish`.
    """

    stream: str
    source: str
    legacy: bool = False
    datagrams_received: int = 0
    datagrams_lost: int = 0
    readouts_received: int = 0
    readouts_lost: int = 0
    bytes_received: int = 0
    #: Datagrams dropped because one with the same sequence number was already received.
    duplicates: int = 0
    #: Datagrams that arrived before an earlier one and were held back and delivered in order.
    reordered: int = 0
    #: Datagrams that arrived after their place was given up (counted lost): dropped.
    late: int = 0
    #: Readouts whose fragments never all arrived (counted in readouts_lost too).
    fragments_incomplete: int = 0
    heartbeats: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    #: The receiver joined after the stream had started (earlier datagrams are not lost).
    joined_late: bool = False
    #: Stream id of the earlier stream from the same host this one replaced.
    restart_of: str | None = None
    #: An END heartbeat was received: the sender closed the stream.
    ended: bool = False
    run_header: dict | None = None


_COUNTERS = ("datagrams_received", "datagrams_lost", "readouts_received", "readouts_lost",
             "bytes_received", "duplicates", "reordered", "late", "fragments_incomplete",
             "heartbeats")


@dataclass
class ReceiverStats:
    """A receiver's counters: per stream, malformed datagrams by reason, and totals.

    :meth:`as_dict` gives plain JSON-serializable data.
    """

    #: Every datagram read from the socket, good or not.
    datagrams: int = 0
    malformed: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(MALFORMED_REASONS, 0))
    streams: dict[str, StreamStats] = field(default_factory=dict)
    #: Streams that appeared from a host that already had one (a sender restarted).
    restarts: int = 0
    #: Datagrams carrying an HMAC that were accepted without checking it: this receiver has
    #: no key (a passive monitor), so they may come from anyone.
    unverified: int = 0
    #: Counters of streams dropped from :attr:`streams` to bound memory, summed.
    retired: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    #: The kernel's count of datagrams dropped at this socket (SO_RXQ_OVFL), if known.
    socket_drops: int | None = None
    #: The latest run header received in a heartbeat, and its stream.
    run_header: dict | None = None
    run_header_stream: str | None = None

    def totals(self) -> dict[str, int]:
        """Every per-stream counter summed over all streams."""
        total = dict(self.retired)
        for stream in self.streams.values():
            for name in _COUNTERS:
                total[name] += getattr(stream, name)
        total["malformed"] = sum(self.malformed.values())
        return total

    def as_dict(self) -> dict[str, Any]:
        """The statistics as plain dicts, lists and numbers."""
        return {
            "datagrams": self.datagrams,
            "totals": self.totals(),
            "malformed": dict(self.malformed),
            "restarts": self.restarts,
            "unverified": self.unverified,
            "socket_drops": self.socket_drops,
            "run_header": self.run_header,
            "run_header_stream": self.run_header_stream,
            "streams": {key: {f.name: getattr(s, f.name) for f in fields(s)}
                        for key, s in self.streams.items()},
            "retired": dict(self.retired),
        }


@dataclass
class ReadoutBatch:
    """Consecutive readouts of one stream, as delivered by a receiver."""

    #: Stream key: the stream id in hex, or ``legacy/ADDRESS:PORT`` for legacy datagrams.
    stream: str
    source: tuple
    #: The serialized readouts back to back (as in an ``.apx`` body).
    data: bytes
    count: int
    #: Readout sequence number of the first readout (legacy: its readout_id).
    first_readout: int
    #: The first readout directly follows the last one delivered from this stream (so the
    #: previous readout's extra bytes may be joined with it).
    contiguous: bool

    def frames(self) -> Frames:
        """Where each readout is in :attr:`data` (numpy arrays, see
        :func:`astropix_hil.bulk.frame_readouts`)."""
        return frame_readouts(np.frombuffer(self.data, dtype=np.uint8))

    def readouts(self, readout_class: type[AstroPix4Readout] = AstroPix4Readout) -> list:
        """The readouts as objects."""
        out, offset = [], 0
        while offset < len(self.data):
            readout, offset = parse_readout(self.data, offset)
            if readout_class is not AstroPix4Readout:
                readout = readout_class._parsed(readout.data(), readout.readout_id,
                                                readout.timestamp)
            out.append(readout)
        return out
