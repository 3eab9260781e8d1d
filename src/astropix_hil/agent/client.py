"""The HIL suite's side of the agent: connect, prove the token, request operations."""

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import AgentAuthError, AgentError, AgentProtocolError
from .channel import _Channel
from .protocol import (
    _NO_MAC,
    CHUNK,
    NONCE_SIZE,
    PROTOCOL,
    TO_CLIENT,
    TO_SERVER,
    _b64,
    _describe,
    _unb64,
    decode_frame,
    parse_listen,
    proof,
    session_key,
)

log = logging.getLogger(__name__)


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
            input: bytes | None = None, env: dict[str, str] | None = None,
            cwd: str | None = None) -> RunResult:
        """Run ``argv`` to completion (killed after ``timeout`` seconds)."""
        reply = self.call("run", extra_time=timeout, argv=list(argv), timeout=timeout,
                          env=env, cwd=cwd, owner=self.session,
                          input=None if input is None else _b64(input))
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
