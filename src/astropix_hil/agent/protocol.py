"""The agent's wire format as pure functions: frames, HMACs, the handshake's proofs and
session key, listen addresses and token files."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import stat
import struct
from typing import Any

from ..errors import AgentAuthError, AgentError, AgentProtocolError
from ..jsontext import JsonLimitError, loads_bounded

log = logging.getLogger(__name__)

PROTOCOL = 1
#: length of the rest of the frame, big-endian.
LENGTH = struct.Struct(">I")
MAC_SIZE = 32
#: Largest frame body (JSON); file contents travel in chunks well below it.
MAX_BODY = 8 << 20
#: Largest chunk of a file or of a process's output per request.
CHUNK = 2 << 20
MIN_TOKEN = 16
#: Longest a ``wait`` request may block the agent, and a ``run`` may take.
MAX_WAIT = 60.0
MAX_RUN = 600.0
NONCE_SIZE = 16
#: Deepest nesting of a frame's JSON (requests and replies need 2).
MAX_DEPTH = 16
_NO_MAC = bytes(MAC_SIZE)
TO_SERVER = b"C"
TO_CLIENT = b"S"


def proof(token: bytes, role: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """What ``role`` (``b"client"`` or ``b"server"``) sends to prove it holds ``token``."""
    return hmac.digest(token, b"apx-hil agent " + role + b"\0" + server_nonce + client_nonce,
                       "sha256")


def session_key(token: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """The key that authenticates every frame after the handshake."""
    return proof(token, b"session", server_nonce, client_nonce)


def encode_frame(message: dict[str, Any], key: bytes | None = None, direction: bytes = b"",
                 seq: int = 0) -> bytes:
    """One frame holding ``message``; authenticated when ``key`` is given."""
    try:
        body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except ValueError as exc:  # NaN or Infinity: not JSON, and the other side refuses them
        raise AgentProtocolError(f"cannot send {exc}") from None
    if len(body) > MAX_BODY:
        raise AgentProtocolError(f"frame body of {len(body)} bytes exceeds {MAX_BODY}")
    mac = _NO_MAC if key is None else _mac(key, direction, seq, body)
    return LENGTH.pack(MAC_SIZE + len(body)) + mac + body


def _mac(key: bytes, direction: bytes, seq: int, body: bytes) -> bytes:
    return hmac.digest(key, direction + seq.to_bytes(8, "big") + body, "sha256")


def decode_frame(mac: bytes, body: bytes, key: bytes | None = None, direction: bytes = b"",
                 seq: int = 0) -> dict[str, Any]:
    """The message of a frame; with ``key``, check its HMAC for ``direction`` and ``seq``."""
    if key is not None and not hmac.compare_digest(mac, _mac(key, direction, seq, body)):
        raise AgentAuthError("frame HMAC does not match (altered, replayed or another token)")
    try:
        # Bounded depth (a deep frame must not recurse the parser to death) and finite
        # numbers only (a NaN timeout passes every range check).
        message = loads_bounded(body, max_depth=MAX_DEPTH, max_size=MAX_BODY)
    except JsonLimitError as exc:
        raise AgentProtocolError(f"frame body is not UTF-8 JSON: {exc}") from None
    if not isinstance(message, dict):
        raise AgentProtocolError("frame body is not a JSON object")
    return message


class FrameBuffer:
    """Bytes in, ``(mac, body)`` pairs out: the receiving half of the framing."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next(self) -> tuple[bytes, bytes] | None:
        """The next complete frame, or None until more bytes arrive."""
        if len(self._buf) < LENGTH.size:
            return None
        (size,) = LENGTH.unpack_from(self._buf)
        if not MAC_SIZE <= size <= MAC_SIZE + MAX_BODY:
            raise AgentProtocolError(f"frame length {size} out of range")
        end = LENGTH.size + size
        if len(self._buf) < end:
            return None
        frame = bytes(self._buf[LENGTH.size:end])
        del self._buf[:end]
        return frame[:MAC_SIZE], frame[MAC_SIZE:]


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` (``[ADDR]:PORT`` for IPv6) as a socket address; refuse wildcards.

    The agent must listen on one address of the bench network, never on every interface. An
    IPv4-mapped IPv6 address (``::ffff:A.B.C.D``) is taken as the IPv4 address it maps, so
    ``[::ffff:0.0.0.0]`` is refused like ``0.0.0.0``.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise AgentError(f"listen address {text!r} is not ADDR:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise AgentError(f"listen address {host!r} is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified:
        raise AgentError(f"refusing to listen on {host} (every interface): give the one "
                         "address of the bench network the agent should answer on")
    try:
        port = int(port_text)
    except ValueError:
        raise AgentError(f"listen port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise AgentError(f"listen port {port} out of range")
    return str(address), port


def load_token(path: str | os.PathLike) -> bytes:
    """The shared token in ``path`` (whitespace stripped); the file must be private."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as stream:
            mode = os.fstat(stream.fileno()).st_mode
            token = stream.read().strip()
    except OSError as exc:
        raise AgentError(f"cannot read token file {name}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AgentError(f"token file {name} is accessible by others (mode "
                         f"{stat.S_IMODE(mode):04o}); chmod 600 {name}")
    if len(token) < MIN_TOKEN:
        raise AgentError(f"token file {name} holds {len(token)} bytes; at least {MIN_TOKEN} "
                         "are needed (e.g. openssl rand -hex 32)")
    return token


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise AgentProtocolError("expected base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise AgentProtocolError("bad base64 data") from None


def fingerprint(token: bytes) -> str:
    """A short, non-secret name of a token (to tell two token files apart in logs)."""
    return hashlib.sha256(b"apx-hil agent token\0" + token).hexdigest()[:12]

def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__
