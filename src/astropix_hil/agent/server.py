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
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..errors import AgentError, AgentProtocolError
from .channel import _Channel
from .policy import (
    check_env,
    confined_path,
    fd_path,
    finite_number,
    is_inside,
    open_beneath,
    resolve_allow,
    resolve_program,
)
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

    ``allow`` limits the programs it starts (names or paths, compared with ``argv[0]`` once
    both are resolved to their executable); None allows any, as SSH would. With ``allow``, a
    client may only set the environment variables of :data:`~.policy.SAFE_ENV`. At most
    ``max_procs`` processes run at once. Process output goes to files in ``workdir``; file
    operations and working directories are confined to it (symlinks are followed, and what
    resolves outside is refused).

    A client must prove the token within ``auth_timeout`` seconds of connecting; at most
    :attr:`max_unauthenticated_per_peer` connections per address (and
    :attr:`max_unauthenticated` in all) may be waiting to do so, so silent connections cannot
    lock the real client out.
    """

    daemon_threads = True
    allow_reuse_address = True
    #: Authenticated connections served at once.
    max_connections = 16
    #: Connections that have not proved the token yet, per peer address and in all.
    max_unauthenticated_per_peer = 4
    max_unauthenticated = 32
    #: A connected client that sends nothing for this long is dropped.
    idle_timeout = 3600.0

    def __init__(self, address: tuple[str, int], token: bytes, workdir: str, *,
                 allow: Sequence[str] | None = None, max_procs: int = 64,
                 auth_timeout: float = 5.0) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        if len(token) < MIN_TOKEN:
            raise AgentError(f"token of {len(token)} bytes; at least {MIN_TOKEN} are needed")
        self.token = token
        self.workdir = os.path.realpath(workdir)
        #: The resolved executables allowed, or None for any.
        self.allow = None if allow is None else resolve_allow(allow)
        self.max_procs = max_procs
        self.handshake_timeout = auth_timeout
        self.children: dict[int, _Child] = {}
        self.lock = threading.Lock()
        # Held from the process count check until the new process is in the table.
        self._spawn_lock = threading.Lock()
        self._next_id = 1
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._unauthenticated: dict[str, int] = {}
        #: Connections refused because the client could not prove the token.
        self.auth_failures = 0
        super().__init__(address, _Handler)

    # Process table -------------------------------------------------------------------

    def _path(self, path: Any) -> str:
        return confined_path(self.workdir, path)

    def _check_open(self, fd: int, path: str) -> None:
        """The file really opened is inside the work directory (a component may have been
        swapped for a symlink since :meth:`_path` resolved it)."""
        if not is_inside(self.workdir, fd_path(fd)):
            raise AgentError(f"path {path!r} resolves outside the work directory "
                             f"{self.workdir}")

    def pre_auth(self, peer: str, delta: int) -> bool:
        """Count a connection of ``peer`` that has not authenticated yet (``delta`` 1) or
        has stopped being one (-1); False when there is no room for another."""
        with self.lock:
            count = self._unauthenticated.get(peer, 0)
            if delta > 0 and (count >= self.max_unauthenticated_per_peer or sum(
                    self._unauthenticated.values()) >= self.max_unauthenticated):
                return False
            count += delta
            if count > 0:
                self._unauthenticated[peer] = count
            else:
                self._unauthenticated.pop(peer, None)
            return True

    def _child(self, ident: Any) -> _Child:
        with self.lock:
            child = self.children.get(ident) if isinstance(ident, int) else None
        if child is None:
            raise AgentError(f"no process with id {ident!r}")
        return child

    def spawn(self, argv: Any, env: Any = None, cwd: Any = None,
              stdin: bytes | None = None, owner: Any = None) -> int:
        if (not isinstance(argv, list) or not argv
                or not all(isinstance(a, str) and "\0" not in a for a in argv)):
            raise AgentProtocolError("argv must be a non-empty list of strings")
        if env is not None and not (isinstance(env, dict) and all(
                isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
            raise AgentProtocolError("env must map strings to strings")
        workdir = self._path(cwd) if cwd else self.workdir
        if cwd and not os.path.isdir(workdir):
            raise AgentError(f"cwd {cwd!r} is not a directory")
        executable = None
        if self.allow is not None:
            executable = resolve_program(argv[0], workdir)
            if executable not in self.allow:
                raise AgentError(f"program {argv[0]!r} ({executable or 'not found'}) is not "
                                 f"allowed here (--allow {', '.join(sorted(self.allow))})")
            if env:
                check_env(env)
        # One lock from the count to the table: concurrent spawns cannot pass max_procs.
        with self._spawn_lock:
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
                    argv, executable=executable,
                    stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                    stdout=fout, stderr=ferr, cwd=workdir,
                    env=None if env is None else {**os.environ, **env},
                    start_new_session=True)
            with self.lock:
                self.children[ident] = _Child(popen, list(argv), out, err,
                                              owner if isinstance(owner, str) else None)
        if stdin is not None:
            # A writer thread: a child that does not read its input must not block the agent.
            threading.Thread(target=_feed, args=(popen, stdin), daemon=True).start()
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

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Whatever escapes a connection's handler is one log line, never a traceback."""
        exc = sys.exc_info()[1]
        log.error("%s: dropped: %s: %s", _peer(client_address), type(exc).__name__, exc)

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
        timeout = min(max(finite_number(req.get("timeout", 0), "timeout"), 0.0), MAX_WAIT)
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
        # Checked before anything starts: a bad timeout must not leave a process behind.
        finite_number(req.get("timeout", MAX_RUN), "timeout")
        stdin = _unb64(req["input"]) if req.get("input") is not None else None
        ident = self.spawn(req.get("argv"), req.get("env"), req.get("cwd"), stdin,
                           req.get("owner"))
        child = self._child(ident)
        timeout = min(max(finite_number(req.get("timeout", MAX_RUN), "timeout"), 0.0), MAX_RUN)
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
        path = self._path(req.get("path"))
        return _read_chunk(path, req.get("offset", 0), lambda fd: self._check_open(fd, path))

    def _op_write_file(self, req: dict[str, Any]) -> dict[str, Any]:
        path = self._path(req.get("path"))
        data = _unb64(req.get("data"))
        # Component by component, no symlink followed: a directory swapped for a symlink since
        # the path was resolved cannot make us create anything outside the work directory.
        fd = open_beneath(self.workdir, path, os.O_WRONLY | os.O_CREAT
                          | (os.O_APPEND if req.get("append") else 0), make_dirs=True)
        with os.fdopen(fd, "wb") as stream:
            self._check_open(fd, path)
            if not req.get("append"):
                stream.truncate(0)
            stream.write(data)
            stream.flush()
            return {"size": os.fstat(fd).st_size}

    def _op_remove(self, req: dict[str, Any]) -> dict[str, Any]:
        path = self._path(req.get("path"))  # what it names must be inside, a link's target too
        given = os.path.join(self.workdir, req["path"])
        if os.path.islink(given):
            # A symlink (to something inside): remove the link, not what it points to.
            parent = os.path.realpath(os.path.dirname(given))
            if parent != self.workdir and not is_inside(self.workdir, parent):
                raise AgentError(f"path {req['path']!r} is outside the work directory")
            os.unlink(os.path.join(parent, os.path.basename(given)))
            return {}
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)  # never follows symlinks inside the tree
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


def _read_chunk(path: str, offset: Any, check: Any = None) -> dict[str, Any]:
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise AgentProtocolError(f"bad offset {offset!r}")
    with open(path, "rb") as stream:
        if check is not None:
            check(stream.fileno())
        size = os.fstat(stream.fileno()).st_size
        stream.seek(offset)
        data = stream.read(CHUNK)
    return {"data": _b64(data), "size": size}


class _Handler(socketserver.BaseRequestHandler):
    server: AgentServer

    def handle(self) -> None:
        server = self.server
        peer = self.client_address[0]
        where = _peer(self.client_address)
        if not server.pre_auth(peer, 1):
            log.warning("%s: too many connections waiting to authenticate, refused", where)
            return
        counted = True  # among the unauthenticated
        try:
            channel = self._handshake()
            server.pre_auth(peer, -1)
            counted = False
            if channel is None:
                return
            if not server._slots.acquire(blocking=False):
                log.warning("%s: too many clients, refused", where)
                return
            try:
                self._serve(channel)
            finally:
                server._slots.release()
        except (OSError, TimeoutError, AgentError) as exc:
            stage = "handshake failed" if counted else "connection ended"
            log.warning("%s: %s: %s", where, stage, _describe(exc))
        except Exception as exc:  # one line, never a traceback, whatever the peer sent
            log.error("%s: dropped: %s: %s", where, type(exc).__name__, exc)
        finally:
            if counted:
                server.pre_auth(peer, -1)

    def _handshake(self) -> _Channel | None:
        """Both sides prove the token within the server's deadline; the authenticated
        channel, or None if the client failed."""
        server = self.server
        channel = _Channel(self.request, TO_CLIENT, TO_SERVER)
        server_nonce = secrets.token_bytes(NONCE_SIZE)
        # The whole handshake, sending included, must end by the deadline.
        self.request.settimeout(server.handshake_timeout)
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
            log.warning("%s: client failed to prove the token", _peer(self.client_address))
            channel.send({"ok": False, "error": "authentication failed"})
            return None
        channel.key = session_key(server.token, server_nonce, client_nonce)
        channel.send({"ok": True, "proof": proof(server.token, b"server", server_nonce,
                                                 client_nonce).hex()})
        return channel

    def _serve(self, channel: _Channel) -> None:
        server = self.server
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


def _peer(address: Any) -> str:
    host, port = address[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


