"""The bench agent as a security boundary: a real ``apx-hil agent`` process on 127.0.0.1,
attacked by a client that holds the token (paths, programs, environment, numbers, process
limit) and by peers that do not (silent connections, deep frames, wildcard addresses)."""

from __future__ import annotations

import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from astropix_hil import agent
from astropix_hil.agent import AgentClient, proof, session_key
from astropix_hil.agent.policy import confined_path, open_beneath
from astropix_hil.errors import AgentError, AgentProtocolError

TOKEN = b"0123456789abcdef0123456789abcdef"


class AgentProcess:
    """``apx-hil agent`` running on 127.0.0.1 with a token file and a work directory."""

    def __init__(self, root, *args: str) -> None:
        self.workdir = root / "work"
        self.workdir.mkdir()
        token = root / "token"
        token.write_bytes(TOKEN + b"\n")
        token.chmod(0o600)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "astropix_hil", "agent", "--listen", "127.0.0.1:0",
             "--token-file", str(token), "--workdir", str(self.workdir), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Ready when it names its address (the first stdout line, printed once listening).
        line = self.proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:"), (line, self.stop())
        self.address = ("127.0.0.1", int(line.rsplit(":", 1)[1]))
        self.stderr = ""

    def client(self, timeout: float = 10.0) -> AgentClient:
        return AgentClient(self.address, TOKEN, timeout=timeout)

    def stop(self) -> str:
        """Stop it (SIGTERM); return what it wrote on stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, self.stderr = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, self.stderr = self.proc.communicate(timeout=10)
        return self.stderr


@pytest.fixture
def start_agent(tmp_path) -> Iterator:
    started: list[AgentProcess] = []

    def start(*args: str) -> AgentProcess:
        root = tmp_path / f"agent{len(started)}"
        root.mkdir()
        started.append(AgentProcess(root, *args))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()


# -- paths ----------------------------------------------------------------------------------


def test_file_operations_refuse_every_path_that_resolves_outside_the_workdir(start_agent,
                                                                            tmp_path):
    agent_proc = start_agent()
    work = agent_proc.workdir
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret"
    secret.write_bytes(b"do not touch")
    (work / "link-out").symlink_to(secret)  # a final symlink component pointing out
    (work / "dir-out").symlink_to(outside)  # a symlinked directory in the middle
    (work / "sub").mkdir()
    home = os.path.expanduser("~")
    escapes = [str(secret), "../../outside/secret", "sub/../../../outside/secret",
               "link-out", "dir-out/secret", "dir-out/new", "~/apx-hil-agent-test",
               f"{home}/apx-hil-agent-test", "/etc/passwd", ".", str(work)]
    with agent_proc.client() as c:
        for path in escapes:
            with pytest.raises(AgentError, match="outside the work directory"):
                c.read_file(path)
            with pytest.raises(AgentError, match="outside the work directory"):
                c.write_file(path, b"overwritten")
            with pytest.raises(AgentError, match="outside the work directory"):
                c.remove(path)
        with pytest.raises(AgentError, match="outside the work directory"):
            c.spawn(["true"], cwd="dir-out")
        # Inside, relative and absolute paths work, and links that stay inside too.
        c.write_file("sub/data.bin", b"inside")
        (work / "link-in").symlink_to(work / "sub" / "data.bin")
        assert c.read_file(str(work / "sub" / "data.bin")) == b"inside"
        assert c.read_file("link-in") == b"inside"
        c.remove("link-in")  # the link goes, not the file it points to
        assert not os.path.lexists(work / "link-in")
        assert (work / "sub" / "data.bin").read_bytes() == b"inside"
        c.remove("sub")
    assert secret.read_bytes() == b"do not touch"
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert not os.path.lexists(os.path.join(home, "apx-hil-agent-test"))
    assert (work / "link-out").is_symlink() and (work / "dir-out").is_symlink()


def test_a_directory_swapped_for_a_symlink_after_the_check_creates_nothing_outside(tmp_path):
    # The race of a client that swaps a checked directory for a symlink before the write
    # opens its file, played in order: the path is resolved, then the swap, then the open.
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    (work / "sub").mkdir()
    resolved = confined_path(str(work), "sub/deeper/new.bin")
    (work / "sub").rmdir()
    (work / "sub").symlink_to(outside)
    with pytest.raises(AgentError, match="became a symlink"):
        open_beneath(str(work), resolved, os.O_WRONLY | os.O_CREAT, make_dirs=True)
    assert list(outside.iterdir()) == []  # not even an empty file or directory
    # Unswapped, the same call makes the missing directories and the file, inside.
    (work / "sub").unlink()
    os.close(open_beneath(str(work), resolved, os.O_WRONLY | os.O_CREAT, make_dirs=True))
    assert (work / "sub" / "deeper" / "new.bin").is_file()
    with pytest.raises(AgentError, match="outside the work directory"):
        open_beneath(str(work), str(outside / "x"), os.O_WRONLY | os.O_CREAT)


# -- programs and environment ---------------------------------------------------------------


def test_with_an_allow_list_the_environment_cannot_change_what_runs(start_agent, tmp_path):
    agent_proc = start_agent("--allow", "true", "--allow", "env")
    marker = tmp_path / "ran"
    with agent_proc.client() as c:
        c.write_file("true", f"#!/bin/sh\ntouch {marker}\n".encode())
        os.chmod(agent_proc.workdir / "true", 0o755)
        for env in ({"PATH": str(agent_proc.workdir)}, {"LD_PRELOAD": "./evil.so"},
                    {"PYTHONPATH": "."}, {"BASH_ENV": "./true"}, {"HOME": "."},
                    {"IFS": "/"}, {"ENV": "./true"}, {"GLIBC_TUNABLES": "x"}):
            with pytest.raises(AgentError, match=f"environment variable {next(iter(env))} "
                                                 "refused"):
                c.run(["true"], env=env)
        # Harmless variables pass through.
        result = c.run(["env"], env={"TZ": "UTC", "LC_ALL": "C", "APX_HIL_X": "1"})
        assert result.returncode == 0 and b"APX_HIL_X=1\n" in result.stdout
    assert not marker.exists()


def test_the_allow_list_matches_resolved_executables_not_names(start_agent, tmp_path):
    agent_proc = start_agent("--allow", "true")
    work = agent_proc.workdir
    marker = tmp_path / "ran"
    (work / "bin").mkdir()
    script = work / "bin" / "true"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    (work / "link").mkdir()
    (work / "link" / "true").symlink_to("/bin/sh")
    with agent_proc.client() as c:
        for argv in (["./bin/true"], [str(script)], ["link/true", "-c", f"touch {marker}"]):
            with pytest.raises(AgentError, match="is not allowed here"):
                c.run(argv)
        assert c.run(["true"]).returncode == 0
        assert c.run(["/bin/true"]).returncode == 0  # the same executable by another name
    assert not marker.exists()


# -- numbers --------------------------------------------------------------------------------


def _session(address) -> tuple[socket.socket, agent._Channel]:
    """A raw authenticated connection (the handshake done by hand)."""
    sock = socket.create_connection(address, timeout=10)
    channel = agent._Channel(sock, agent.TO_SERVER, agent.TO_CLIENT)
    hello = channel.receive(10)
    server_nonce, client_nonce = bytes.fromhex(hello["nonce"]), os.urandom(16)
    channel.send({"nonce": client_nonce.hex(),
                  "proof": proof(TOKEN, b"client", server_nonce, client_nonce).hex()})
    channel.key = session_key(TOKEN, server_nonce, client_nonce)
    assert channel.receive(10)["ok"] is True
    channel.in_seq = 1
    return sock, channel


def _send_raw(sock: socket.socket, channel: agent._Channel, body: bytes) -> dict:
    """Send ``body`` as is (any JSON text) in a correctly authenticated frame; the reply."""
    mac = hmac.digest(channel.key, agent.TO_SERVER + channel.out_seq.to_bytes(8, "big") + body,
                      "sha256")
    sock.sendall(agent.LENGTH.pack(agent.MAC_SIZE + len(body)) + mac + body)
    channel.out_seq += 1
    return channel.receive(10)


@pytest.mark.parametrize("number", ["1e999", "-1e999", '"1e999"', '"nan"', "true", "null"])
def test_timeouts_that_are_not_finite_numbers_are_refused(start_agent, number):
    agent_proc = start_agent()
    sock, channel = _session(agent_proc.address)
    with sock:
        ident = _send_raw(sock, channel, b'{"op":"spawn","argv":["sleep","30"]}')["id"]
        started = time.monotonic()
        reply = _send_raw(sock, channel,
                          f'{{"op":"wait","id":{ident},"timeout":{number}}}'.encode())
        assert reply["ok"] is False and "timeout must be a" in reply["error"]
        assert time.monotonic() - started < 5  # it did not wait (a NaN wait is forever)
        reply = _send_raw(sock, channel,
                          f'{{"op":"run","argv":["sleep","30"],"timeout":{number}}}'.encode())
        assert reply["ok"] is False and "timeout must be a" in reply["error"]
        reply = _send_raw(sock, channel, b'{"op":"poll","id":2}')
        assert reply["ok"] is False and "no process with id 2" in reply["error"]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_a_frame_holding_nan_or_infinity_is_refused(start_agent, number):
    # Not JSON at all: the frame is a protocol error and the connection ends, nothing runs.
    agent_proc = start_agent()
    sock, channel = _session(agent_proc.address)
    with sock:
        body = f'{{"op":"run","argv":["sleep","30"],"timeout":{number}}}'.encode()
        with pytest.raises(ConnectionResetError):
            _send_raw(sock, channel, body)
    with agent_proc.client() as c, pytest.raises(AgentError, match="no process with id 1"):
        c.poll(1)
    assert f"{number} is not a JSON number" in agent_proc.stop()


def test_non_finite_numbers_are_refused_anywhere_in_a_frame():
    with pytest.raises(AgentProtocolError, match="NaN is not a JSON number"):
        agent.decode_frame(bytes(32), b'{"op":"ping","x":[1,NaN]}')
    with pytest.raises(AgentProtocolError, match="cannot send"):
        agent.encode_frame({"op": "wait", "timeout": float("inf")})


# -- process limit --------------------------------------------------------------------------


def test_max_procs_holds_when_clients_spawn_at_the_same_moment(start_agent):
    agent_proc = start_agent("--max-procs", "2")
    clients = [agent_proc.client() for _ in range(12)]
    for c in clients:
        c.ping()  # connected and authenticated before the race starts
    barrier = threading.Barrier(len(clients))
    results: list[bool] = []

    def spawn(c: AgentClient) -> None:
        barrier.wait(10)
        try:
            c.spawn(["sleep", "30"])
            results.append(True)
        except AgentError:
            results.append(False)

    threads = [threading.Thread(target=spawn, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        assert sorted(results) == [False] * 10 + [True] * 2
    finally:
        clients[0].cleanup(everyone=True)
        for c in clients:
            c.close()


# -- peers without the token ----------------------------------------------------------------


def _silent(address, source: str) -> socket.socket:
    sock = socket.create_connection(address, timeout=10, source_address=(source, 0))
    return sock


def test_silent_connections_neither_lock_out_the_client_nor_stay(start_agent):
    agent_proc = start_agent("--auth-timeout", "1")
    silent = [_silent(agent_proc.address, "127.0.0.2") for _ in range(16)]
    try:
        with agent_proc.client(timeout=5) as c:
            assert c.ping()["ok"]
        # The connections beyond the per-peer limit were closed at once, the others once the
        # deadline passed: each ends (EOF) after at most the hello frame.
        for sock in silent:
            sock.settimeout(10)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            assert len(data) < 200
    finally:
        for sock in silent:
            sock.close()
    stderr = agent_proc.stop()
    assert "too many connections waiting to authenticate" in stderr
    assert "Traceback" not in stderr


def test_a_connection_that_does_not_authenticate_in_time_is_dropped(start_agent):
    agent_proc = start_agent("--auth-timeout", "0.5")
    with socket.create_connection(agent_proc.address, timeout=5) as sock:
        channel = agent._Channel(sock, agent.TO_SERVER, agent.TO_CLIENT)
        assert channel.receive(5)["agent"] == "apx-hil"
        sock.sendall(b"\x00\x00")  # a slow drip does not extend the deadline
        assert sock.recv(1024) == b""  # closed well before this socket's 5 s timeout


def test_a_deeply_nested_frame_before_authentication_is_one_log_line(start_agent):
    agent_proc = start_agent()
    body = b"[" * 100_000 + b"]" * 100_000
    with socket.create_connection(agent_proc.address, timeout=10) as sock:
        agent._Channel(sock, agent.TO_SERVER, agent.TO_CLIENT).receive(10)
        sock.sendall(agent.LENGTH.pack(agent.MAC_SIZE + len(body)) + bytes(32) + body)
        assert sock.recv(1024) == b""
    with agent_proc.client() as c:  # still serving
        assert c.ping()["ok"]
    stderr = agent_proc.stop()
    assert "Traceback" not in stderr and "RecursionError" not in stderr
    (line,) = [x for x in stderr.splitlines() if "nested more than" in x]
    assert "127.0.0.1:" in line and "handshake failed" in line


@pytest.mark.parametrize("address", ["0.0.0.0", "[::]", "[::ffff:0.0.0.0]", "[::ffff:0:0]",
                                     "[0:0:0:0:0:ffff:0:0]", "[::0.0.0.0]", "[0::0]"])
def test_the_agent_refuses_every_spelling_of_every_interface(tmp_path, address):
    token = tmp_path / "token"
    token.write_bytes(TOKEN)
    token.chmod(0o600)
    done = subprocess.run([sys.executable, "-m", "astropix_hil", "agent", "--listen",
                           f"{address}:0", "--token-file", str(token)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert "(every interface)" in line


def test_ipv4_mapped_addresses_are_taken_as_ipv4():
    assert agent.parse_listen("[::ffff:127.0.0.1]:7700") == ("127.0.0.1", 7700)
    assert agent.parse_listen("[::ffff:c612:a]:1") == ("198.18.0.10", 1)


def test_requests_are_plain_json(start_agent):
    # Sanity of the raw helpers above: a well-formed request through them is served.
    agent_proc = start_agent()
    sock, channel = _session(agent_proc.address)
    with sock:
        assert _send_raw(sock, channel, json.dumps({"op": "ping"}).encode())["ok"] is True
