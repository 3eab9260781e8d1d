"""The agent itself: a threaded TCP server on one address that runs the requested
operations for authenticated clients."""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
import shutil
import signal
import socket
import socketserver
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..errors import AgentError, AgentProtocolError
from .channel import _Channel
from .protocol import (
    CHUNK,
    MAX_RUN,
    MAX_WAIT,
    MIN_TOKEN,
    NONCE_SIZE,
    PROTOCOL,
    TO_CLIENT,
    TO_SERVER,
    _b64,
    _describe,
    _unb64,
    proof,
    session_key,
)

log = logging.getLogger(__name__)


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


