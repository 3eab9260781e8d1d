"""A small command agent for bench hosts: start processes, signal them, move files.

The HIL suite drives programs on the machines of a bench. Where SSH is not available (or not
wanted), ``apx-hil agent --listen ADDR:PORT --token-file FILE`` runs on each host and the
suite's :class:`AgentClient` talks to it. The agent listens only on the one address it is
given (never on every interface) and serves only clients that prove they hold the same token.

Modules: :mod:`.protocol` (the wire format as pure functions), :mod:`.channel` (one
connection's framed messages), :mod:`.server` (the agent), :mod:`.client` (the suite's side).

Wire format (pure functions in :mod:`.protocol`, sockets in :class:`AgentServer` and
:class:`AgentClient`):
each frame is a 4-byte big-endian length, a 32-byte HMAC-SHA256 and a UTF-8 JSON object. The
connection opens with a handshake in which both sides prove knowledge of the token over fresh
nonces (the token itself never crosses the wire); every later frame carries an HMAC under a
session key derived from the token and both nonces, over its direction, a per-direction
sequence number and its body, so frames cannot be forged, altered, replayed or reordered.
The payload is not encrypted: a bench network is trusted not to read it, not to write it.

Requests are ``{"op": NAME, ...}``; replies ``{"ok": true, ...}`` or ``{"ok": false,
"error": MESSAGE}``. Operations: ``ping``, ``spawn``, ``poll``, ``wait``, ``signal``,
``output``, ``run``, ``read_file``, ``write_file``, ``remove``, ``cleanup``.
"""

from .channel import _Channel  # noqa: F401 - for tests of the wire protocol
from .client import AgentClient, RunResult
from .protocol import (
    CHUNK,
    LENGTH,
    MAC_SIZE,
    MAX_BODY,
    MAX_RUN,
    MAX_WAIT,
    MIN_TOKEN,
    NONCE_SIZE,
    PROTOCOL,
    TO_CLIENT,
    TO_SERVER,
    FrameBuffer,
    decode_frame,
    encode_frame,
    fingerprint,
    load_token,
    parse_listen,
    proof,
    session_key,
)
from .server import AgentServer

__all__ = [
    "CHUNK",
    "LENGTH",
    "MAC_SIZE",
    "MAX_BODY",
    "MAX_RUN",
    "MAX_WAIT",
    "MIN_TOKEN",
    "NONCE_SIZE",
    "PROTOCOL",
    "TO_CLIENT",
    "TO_SERVER",
    "AgentClient",
    "AgentServer",
    "FrameBuffer",
    "RunResult",
    "decode_frame",
    "encode_frame",
    "fingerprint",
    "load_token",
    "parse_listen",
    "proof",
    "session_key",
]
