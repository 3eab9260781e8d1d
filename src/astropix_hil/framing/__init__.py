"""The multicast datagram format, as pure functions and small state objects (no sockets).

Every datagram starts with a fixed 52-byte header (:data:`HEADER`, byte table in
``docs/transport.rst``): magic ``APXM``, version, kind, flags, a random 64-bit stream id per
sender start, a datagram sequence number and a readout sequence number. Three kinds:

* ``DATA``: one or more whole serialized readouts (:data:`~astropix_hil.fmt.READOUT_HEADER`
  and data, exactly the bytes of an ``.apx`` file body), batched up to a payload limit;
* ``FRAGMENT``: a slice of one serialized readout larger than the payload limit;
* ``HEARTBEAT``: the sender's last sequence number, its heartbeat interval and the run header
  (the ``.apx`` JSON header), sent periodically, also when idle, and at the end of a stream.

With a shared key every datagram ends with an HMAC-SHA256 over header and payload.

:class:`FrameEncoder` is a sender's state: batching, flush deadline, fragmentation, heartbeats.
:class:`FrameDecoder` is a receiver's state: it validates datagrams (counting malformed ones by
reason, never raising), puts each stream back in order with a bounded hold-back window,
reassembles fragments, counts lost, duplicated and late datagrams and readouts exactly, and
hands out :class:`ReadoutBatch` objects. Both take the time as an argument, so tests drive them
with a fake clock. Bare serialized readouts (the AstroPix tools' legacy datagrams) are accepted
beside framed ones. :mod:`astropix_hil.sock` wraps both around sockets.

Modules: :mod:`.datagram` (the header, single datagrams), :mod:`.keys` (HMAC keys),
:mod:`.encoder` (sender state), :mod:`.stats` (receiver counters and batches),
:mod:`.decoder` (receiver state). Everything public is importable from here.
"""


from .datagram import (
    DEFAULT_FLUSH_DELAY,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_DATAGRAM,
    END_HEARTBEATS,
    HEADER,
    HEARTBEAT,
    JOIN_MARGIN,
    MAC_SIZE,
    MAGIC,
    MALFORMED_REASONS,
    MAX_HEADER_DEPTH,
    MAX_HEADER_SIZE,
    VERSION,
    Datagram,
    Flag,
    Kind,
    check_data_payload,
    check_data_payloads,
    encode_datagram,
    heartbeat_payload,
    is_legacy,
    parse_datagram,
    split_readouts,
)
from .decoder import FrameDecoder
from .encoder import FrameEncoder, legacy_datagrams
from .keys import TransportKey, load_key
from .stats import ReadoutBatch, ReceiverStats, StreamStats

__all__ = [
    "DEFAULT_FLUSH_DELAY",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_MAX_DATAGRAM",
    "END_HEARTBEATS",
    "HEADER",
    "HEARTBEAT",
    "JOIN_MARGIN",
    "MAC_SIZE",
    "MAGIC",
    "MALFORMED_REASONS",
    "MAX_HEADER_DEPTH",
    "MAX_HEADER_SIZE",
    "VERSION",
    "Datagram",
    "Flag",
    "FrameDecoder",
    "FrameEncoder",
    "Kind",
    "ReadoutBatch",
    "ReceiverStats",
    "StreamStats",
    "TransportKey",
    "check_data_payload",
    "check_data_payloads",
    "encode_datagram",
    "heartbeat_payload",
    "is_legacy",
    "legacy_datagrams",
    "load_key",
    "parse_datagram",
    "split_readouts",
]
