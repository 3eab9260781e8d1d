"""A small command agent for bench hosts: start processes, signal them, move files.

The HIL suite drives programs on the machines of a bench. Where SSH is not available (or not
wanted), ``apx-hil agent --listen ADDR:PORT --token-file FILE`` runs on each host and the
suite's :class:`AgentClient` talks to it. The agent listens only on the one address it is
given (never on every interface) and serves only clients that prove they hold the same token.

Wire format (pure functions below, sockets in :class:`AgentServer` and :class:`AgentClient`):
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

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import socketserver
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import __version__
from .errors import AgentAuthError, AgentError, AgentProtocolError

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
_NO_MAC = bytes(MAC_SIZE)
TO_SERVER = b"C"
TO_CLIENT = b"S"


# ------------------------------------------------------------------------------------------
# Pure protocol functions


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
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
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
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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

    The agent must listen on one address of the bench network, never on every interface.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise AgentError(f"listen address {text!r} is not ADDR:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise AgentError(f"listen address {host!r} is not an IP address") from None
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


# ------------------------------------------------------------------------------------------
# One connection's I/O


class _Channel:
    """A socket with the framing, sequence numbers and session key of one side."""

    def __init__(self, sock: socket.socket, out_direction: bytes, in_direction: bytes) -> None:
        self.sock = sock
        self.out_direction = out_direction
        self.in_direction = in_direction
        self.key: bytes | None = None
        self.out_seq = 0
        self.in_seq = 0
        self.buffer = FrameBuffer()

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(encode_frame(message, self.key, self.out_direction, self.out_seq))
        if self.key is not None:
            self.out_seq += 1

    def receive(self, timeout: float | None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            frame = self.buffer.next()
            if frame is not None:
                message = decode_frame(*frame, self.key, self.in_direction, self.in_seq)
                if self.key is not None:
                    self.in_seq += 1
                return message
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no complete frame in time")
                self.sock.settimeout(left)
            else:
                self.sock.settimeout(None)
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionResetError("connection closed")
            self.buffer.feed(data)


# ------------------------------------------------------------------------------------------
# Server


@dataclass
class _Child:
    popen: subprocess.Popen
    argv: list[str]
    stdout: str
    stderr: str
    #: The client session that started it (``cleanup`` of that session kills it).
    owner: str | None = None


class AgentServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """The agent: serves authenticated clients on one address.

    ``allow`` limits the programs it starts (basename or path of ``argv[0]``); None allows
    any, as SSH would. At most ``max_procs`` processes run at once. Process output goes to
    files in ``workdir``; relative paths in file operations are taken from there too.
    """

    daemon_threads = True
    allow_reuse_address = True
    #: Connections served at once; more wait in the listen backlog.
    max_connections = 16
    handshake_timeout = 10.0
    #: A connected client that sends nothing for this long is dropped.
    idle_timeout = 3600.0

    def __init__(self, address: tuple[str, int], token: bytes, workdir: str, *,
                 allow: Sequence[str] | None = None, max_procs: int = 64) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        if len(token) < MIN_TOKEN:
            raise AgentError(f"token of {len(token)} bytes; at least {MIN_TOKEN} are needed")
        self.token = token
        self.workdir = workdir
        self.allow = None if allow is None else frozenset(allow)
        self.max_procs = max_procs
        self.children: dict[int, _Child] = {}
        self.lock = threading.Lock()
        self._next_id = 1
        self._slots = threading.BoundedSemaphore(self.max_connections)
        #: Connections refused because the client could not prove the token.
        self.auth_failures = 0
        super().__init__(address, _Handler)

    # Process table -------------------------------------------------------------------

    def _path(self, path: Any) -> str:
        if not isinstance(path, str) or not path:
            raise AgentProtocolError("path must be a non-empty string")
        return os.path.join(self.workdir, os.path.expanduser(path))

    def _child(self, ident: Any) -> _Child:
        with self.lock:
            child = self.children.get(ident) if isinstance(ident, int) else None
        if child is None:
            raise AgentError(f"no process with id {ident!r}")
        return child

    def spawn(self, argv: Any, env: Any = None, cwd: Any = None,
              stdin: bytes | None = None, owner: Any = None) -> int:
        if (not isinstance(argv, list) or not argv
                or not all(isinstance(a, str) for a in argv)):
            raise AgentProtocolError("argv must be a non-empty list of strings")
        if self.allow is not None and argv[0] not in self.allow \
                and os.path.basename(argv[0]) not in self.allow:
            raise AgentError(f"program {argv[0]!r} is not allowed here (--allow "
                             f"{', '.join(sorted(self.allow))})")
        if env is not None and not (isinstance(env, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
            raise AgentProtocolError("env must map strings to strings")
        with self.lock:
            live = sum(1 for c in self.children.values() if c.popen.poll() is None)
            if live >= self.max_procs:
                raise AgentError(f"{live} processes already run (--max-procs "
                                 f"{self.max_procs})")
            self._forget_ended()
            ident = self._next_id
            self._next_id += 1
        out = os.path.join(self.workdir, f"proc-{ident}.out")
        err = os.path.join(self.workdir, f"proc-{ident}.err")
        with open(out, "wb") as fout, open(err, "wb") as ferr:
            popen = subprocess.Popen(
                argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=fout, stderr=ferr, cwd=self._path(cwd) if cwd else self.workdir,
                env=None if env is None else {**os.environ, **env}, start_new_session=True)
        if stdin is not None:
            # A writer thread: a child that does not read its input must not block the agent.
            threading.Thread(target=_feed, args=(popen, stdin), daemon=True).start()
        with self.lock:
            self.children[ident] = _Child(popen, list(argv), out, err,
                                          owner if isinstance(owner, str) else None)
        log.info("started %d (pid %d): %s", ident, popen.pid, " ".join(argv))
        return ident

    def _forget_ended(self, keep: int = 256) -> None:
        ended = [i for i, c in self.children.items() if c.popen.poll() is not None]
        for ident in ended[:max(0, len(ended) - keep)]:
            child = self.children.pop(ident)
            for path in (child.stdout, child.stderr):
                with contextlib.suppress(OSError):
                    os.unlink(path)

    def signal_child(self, ident: Any, sig: Any) -> None:
        child = self._child(ident)
        if not isinstance(sig, int) or sig not in signal.valid_signals():
            raise AgentProtocolError(f"bad signal {sig!r}")
        if child.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.popen.pid, sig)

    def cleanup(self, owner: str | None = None) -> int:
        """Kill every process this agent started (for session ``owner`` only, if given) that
        still runs; return how many."""
        with self.lock:
            live = [c for c in self.children.values() if c.popen.poll() is None
                    and (owner is None or c.owner == owner)]
        for child in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.popen.pid, signal.SIGKILL)
        for child in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.popen.wait(5)
        return len(live)

    # Requests -------------------------------------------------------------------------

    def handle_request_message(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        handler = getattr(self, f"_op_{op}", None) if isinstance(op, str) else None
        if handler is None:
            raise AgentProtocolError(f"unknown operation {op!r}")
        return handler(req)

    def _op_ping(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"version": __version__, "pid": os.getpid(), "workdir": self.workdir}

    def _op_spawn(self, req: dict[str, Any]) -> dict[str, Any]:
        stdin = _unb64(req["input"]) if req.get("input") is not None else None
        ident = self.spawn(req.get("argv"), req.get("env"), req.get("cwd"), stdin,
                           req.get("owner"))
        return {"id": ident, "pid": self._child(ident).popen.pid}

    def _op_poll(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"returncode": self._child(req.get("id")).popen.poll()}

    def _op_wait(self, req: dict[str, Any]) -> dict[str, Any]:
        child = self._child(req.get("id"))
        timeout = min(max(float(req.get("timeout", 0)), 0.0), MAX_WAIT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.popen.wait(timeout)
        return {"returncode": child.popen.poll()}

    def _op_signal(self, req: dict[str, Any]) -> dict[str, Any]:
        self.signal_child(req.get("id"), req.get("signal"))
        return {}

    def _op_output(self, req: dict[str, Any]) -> dict[str, Any]:
        child = self._child(req.get("id"))
        stream = req.get("stream")
        if stream not in ("stdout", "stderr"):
            raise AgentProtocolError(f"stream must be stdout or stderr, not {stream!r}")
        return _read_chunk(getattr(child, stream), req.get("offset", 0))

    def _op_run(self, req: dict[str, Any]) -> dict[str, Any]:
        stdin = _unb64(req["input"]) if req.get("input") is not None else None
        ident = self.spawn(req.get("argv"), req.get("env"), req.get("cwd"), stdin,
                           req.get("owner"))
        child = self._child(ident)
        timeout = min(max(float(req.get("timeout", MAX_RUN)), 0.0), MAX_RUN)
        try:
            child.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.popen.pid, signal.SIGKILL)
            child.popen.wait(5)
            return {"returncode": None}
        return {"returncode": child.popen.returncode,
                "stdout": _read_chunk(child.stdout, 0)["data"],
                "stderr": _read_chunk(child.stderr, 0)["data"]}

    def _op_read_file(self, req: dict[str, Any]) -> dict[str, Any]:
        return _read_chunk(self._path(req.get("path")), req.get("offset", 0))

    def _op_write_file(self, req: dict[str, Any]) -> dict[str, Any]:
        path = self._path(req.get("path"))
        data = _unb64(req.get("data"))
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "ab" if req.get("append") else "wb") as stream:
            stream.write(data)
        return {"size": os.path.getsize(path)}

    def _op_remove(self, req: dict[str, Any]) -> dict[str, Any]:
        path = self._path(req.get("path"))
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
        return {}

    def _op_cleanup(self, req: dict[str, Any]) -> dict[str, Any]:
        owner = req.get("owner")
        return {"killed": self.cleanup(owner if isinstance(owner, str) else None)}


def _feed(popen: subprocess.Popen, data: bytes) -> None:
    assert popen.stdin is not None
    with contextlib.suppress(OSError):
        popen.stdin.write(data)
    with contextlib.suppress(OSError):
        popen.stdin.close()


def _read_chunk(path: str, offset: Any) -> dict[str, Any]:
    if not isinstance(offset, int) or offset < 0:
        raise AgentProtocolError(f"bad offset {offset!r}")
    with open(path, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        stream.seek(offset)
        data = stream.read(CHUNK)
    return {"data": _b64(data), "size": size}


class _Handler(socketserver.BaseRequestHandler):
    server: AgentServer

    def handle(self) -> None:
        if not self.server._slots.acquire(blocking=False):
            log.warning("%s: too many connections, refused", self.client_address)
            return
        try:
            self._serve()
        except (OSError, TimeoutError, AgentError) as exc:
            log.info("%s: connection ended: %s", self.client_address, exc)
        finally:
            self.server._slots.release()

    def _serve(self) -> None:
        server = self.server
        channel = _Channel(self.request, TO_CLIENT, TO_SERVER)
        server_nonce = secrets.token_bytes(NONCE_SIZE)
        channel.send({"agent": "apx-hil", "protocol": PROTOCOL, "nonce": server_nonce.hex()})
        hello = channel.receive(server.handshake_timeout)
        try:
            client_nonce = bytes.fromhex(hello["nonce"])
            client_proof = bytes.fromhex(hello["proof"])
        except (KeyError, TypeError, ValueError):
            raise AgentProtocolError("bad handshake from client") from None
        if len(client_nonce) != NONCE_SIZE or not hmac.compare_digest(
                client_proof, proof(server.token, b"client", server_nonce, client_nonce)):
            with server.lock:
                server.auth_failures += 1
            log.warning("%s: client failed to prove the token", self.client_address)
            channel.send({"ok": False, "error": "authentication failed"})
            return
        channel.key = session_key(server.token, server_nonce, client_nonce)
        channel.send({"ok": True, "proof": proof(server.token, b"server", server_nonce,
                                                 client_nonce).hex()})
        while True:
            try:
                req = channel.receive(server.idle_timeout)
            except ConnectionResetError:
                return
            try:
                reply = {"ok": True, **server.handle_request_message(req)}
            except (AgentError, OSError, KeyError, TypeError, ValueError) as exc:
                reply = {"ok": False, "error": f"{req.get('op')}: {_describe(exc)}"}
            channel.send(reply)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


# ------------------------------------------------------------------------------------------
# Client


@dataclass
class RunResult:
    """What :meth:`AgentClient.run` returns; ``returncode`` is None when it timed out."""

    returncode: int | None
    stdout: bytes
    stderr: bytes


class AgentClient:
    """Talks to one ``apx-hil agent``. Every call is bounded by ``timeout`` seconds (plus the
    wait it asks for). Thread-safe: calls are serialized on one connection."""

    def __init__(self, address: str | tuple[str, int], token: bytes,
                 timeout: float = 20.0) -> None:
        self.address = parse_listen(address) if isinstance(address, str) else address
        self.name = f"agent at {self.address[0]}:{self.address[1]}"
        self.timeout = timeout
        self._token = token
        self._lock = threading.Lock()
        self._channel: _Channel | None = None
        #: Marks the processes this client starts, so that :meth:`cleanup` kills only those.
        self.session = secrets.token_hex(8)

    def _connect(self) -> _Channel:
        try:
            sock = socket.create_connection(self.address, timeout=self.timeout)
        except OSError as exc:
            raise AgentError(f"{self.name}: cannot connect: {_describe(exc)}") from None
        channel = _Channel(sock, TO_SERVER, TO_CLIENT)
        try:
            hello = channel.receive(self.timeout)
            if hello.get("agent") != "apx-hil" or hello.get("protocol") != PROTOCOL:
                raise AgentProtocolError(f"{self.name}: not an apx-hil agent of protocol "
                                         f"{PROTOCOL}: {hello!r:.200}")
            server_nonce = bytes.fromhex(hello["nonce"])
            client_nonce = secrets.token_bytes(NONCE_SIZE)
            channel.send({"nonce": client_nonce.hex(), "proof": proof(
                self._token, b"client", server_nonce, client_nonce).hex()})
            channel.key = session_key(self._token, server_nonce, client_nonce)
            # The agent's answer to a wrong proof is not under the session key.
            mac, body = self._frame(channel)
            if mac == _NO_MAC:
                answer = decode_frame(mac, body)
                raise AgentAuthError(f"{self.name}: {answer.get('error', 'refused')} "
                                     "(different token?)")
            answer = decode_frame(mac, body, channel.key, TO_CLIENT, 0)
            channel.in_seq = 1
            if not hmac.compare_digest(bytes.fromhex(str(answer.get("proof", ""))), proof(
                    self._token, b"server", server_nonce, client_nonce)):
                raise AgentAuthError(f"{self.name}: the agent did not prove the token")
        except (OSError, TimeoutError, KeyError, ValueError) as exc:
            sock.close()
            raise AgentProtocolError(f"{self.name}: handshake failed: {_describe(exc)}") \
                from None
        except AgentError:
            sock.close()
            raise
        return channel

    def _frame(self, channel: _Channel) -> tuple[bytes, bytes]:
        deadline = time.monotonic() + self.timeout
        while True:
            frame = channel.buffer.next()
            if frame is not None:
                return frame
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer to the handshake")
            channel.sock.settimeout(left)
            data = channel.sock.recv(1 << 16)
            if not data:
                raise ConnectionResetError("connection closed by the agent")
            channel.buffer.feed(data)

    def call(self, op: str, extra_time: float = 0.0, **fields: Any) -> dict[str, Any]:
        """Send one request and return the reply; raise :class:`AgentError` on failure."""
        with self._lock:
            if self._channel is None:
                self._channel = self._connect()
            channel = self._channel
            try:
                channel.send({"op": op, **fields})
                reply = channel.receive(self.timeout + extra_time)
            except (OSError, TimeoutError) as exc:
                self._drop()
                raise AgentError(f"{self.name}: {op}: {_describe(exc)}") from None
            except AgentError:
                self._drop()
                raise
        if not reply.get("ok"):
            raise AgentError(f"{self.name}: {reply.get('error', 'failed')}")
        return reply

    def _drop(self) -> None:
        if self._channel is not None:
            with contextlib.suppress(OSError):
                self._channel.sock.close()
            self._channel = None

    def ping(self) -> dict[str, Any]:
        return self.call("ping")

    def spawn(self, argv: Sequence[str], env: dict[str, str] | None = None,
              cwd: str | None = None, input: bytes | None = None) -> int:
        """Start ``argv`` on the agent's host; return its id for the other calls."""
        return int(self.call("spawn", argv=list(argv), env=env, cwd=cwd, owner=self.session,
                             input=None if input is None else _b64(input))["id"])

    def poll(self, ident: int) -> int | None:
        return self.call("poll", id=ident)["returncode"]

    def wait(self, ident: int, timeout: float) -> int | None:
        """Exit status after at most ``timeout`` seconds (capped by the agent), or None."""
        return self.call("wait", extra_time=timeout, id=ident, timeout=timeout)["returncode"]

    def signal(self, ident: int, sig: int) -> None:
        self.call("signal", id=ident, signal=int(sig))

    def output(self, ident: int, stream: str = "stdout") -> bytes:
        """Everything the process wrote on ``stream`` so far."""
        return self._chunks("output", id=ident, stream=stream)

    def run(self, argv: Sequence[str], timeout: float = 60.0,
            input: bytes | None = None) -> RunResult:
        """Run ``argv`` to completion (killed after ``timeout`` seconds)."""
        reply = self.call("run", extra_time=timeout, argv=list(argv), timeout=timeout,
                          owner=self.session, input=None if input is None else _b64(input))
        if reply["returncode"] is None:
            return RunResult(None, b"", b"")
        return RunResult(reply["returncode"], _unb64(reply["stdout"]), _unb64(reply["stderr"]))

    def read_file(self, path: str) -> bytes:
        """The whole file (read in chunks)."""
        return self._chunks("read_file", path=path)

    def _chunks(self, op: str, **fields: Any) -> bytes:
        out = bytearray()
        # Bounded: a file that keeps growing is read up to the size seen at the first reply.
        size = None
        while size is None or len(out) < size:
            reply = self.call(op, offset=len(out), **fields)
            data = _unb64(reply["data"])
            size = reply["size"] if size is None else size
            if not data:
                break
            out += data
        return bytes(out)

    def write_file(self, path: str, data: bytes) -> None:
        view = memoryview(data)
        self.call("write_file", path=path, data=_b64(view[:CHUNK]), append=False)
        for start in range(CHUNK, len(data), CHUNK):
            self.call("write_file", path=path, data=_b64(view[start:start + CHUNK]),
                      append=True)

    def remove(self, path: str) -> None:
        self.call("remove", path=path)

    def cleanup(self, everyone: bool = False) -> int:
        """Kill the processes this client started that still run (``everyone``: all the
        agent started, whoever asked); return how many."""
        return int(self.call("cleanup", owner=None if everyone else self.session)["killed"])

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fingerprint(token: bytes) -> str:
    """A short, non-secret name of a token (to tell two token files apart in logs)."""
    return hashlib.sha256(b"apx-hil agent token\0" + token).hexdigest()[:12]
