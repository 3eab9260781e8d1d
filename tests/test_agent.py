"""The bench command agent: its wire format, its server and client on loopback, its command."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from astropix_hil import agent
from astropix_hil.agent import (
    AgentClient,
    AgentServer,
    FrameBuffer,
    decode_frame,
    encode_frame,
    load_token,
    parse_listen,
    proof,
    session_key,
)
from astropix_hil.errors import AgentAuthError, AgentError, AgentProtocolError

TOKEN = b"0123456789abcdef0123456789abcdef"


# ------------------------------------------------------------------------------------------
# Pure protocol


def test_frame_round_trip_with_key() -> None:
    key = session_key(TOKEN, b"s" * 16, b"c" * 16)
    frame = encode_frame({"op": "ping", "n": 1}, key, agent.TO_SERVER, 7)
    buf = FrameBuffer()
    buf.feed(frame[:5])
    assert buf.next() is None
    buf.feed(frame[5:])
    mac, body = buf.next()
    assert decode_frame(mac, body, key, agent.TO_SERVER, 7) == {"op": "ping", "n": 1}
    assert buf.next() is None


def test_altered_replayed_or_reflected_frames_fail_their_hmac() -> None:
    key = session_key(TOKEN, b"s" * 16, b"c" * 16)
    frame = encode_frame({"op": "spawn", "argv": ["true"]}, key, agent.TO_SERVER, 3)
    buf = FrameBuffer()
    buf.feed(frame)
    mac, body = buf.next()
    with pytest.raises(AgentAuthError):  # altered
        decode_frame(mac, body.replace(b"true", b"rm -"), key, agent.TO_SERVER, 3)
    with pytest.raises(AgentAuthError):  # replayed at another position
        decode_frame(mac, body, key, agent.TO_SERVER, 4)
    with pytest.raises(AgentAuthError):  # reflected back to its sender
        decode_frame(mac, body, key, agent.TO_CLIENT, 3)
    with pytest.raises(AgentAuthError):  # another session
        decode_frame(mac, body, session_key(TOKEN, b"x" * 16, b"c" * 16), agent.TO_SERVER, 3)


def test_frame_buffer_refuses_absurd_lengths() -> None:
    buf = FrameBuffer()
    buf.feed(agent.LENGTH.pack(agent.MAC_SIZE + agent.MAX_BODY + 1))
    with pytest.raises(AgentProtocolError, match="out of range"):
        buf.next()


def test_frame_body_must_be_a_json_object() -> None:
    with pytest.raises(AgentProtocolError, match="not UTF-8 JSON"):
        decode_frame(bytes(32), b"\xff{")
    with pytest.raises(AgentProtocolError, match="not a JSON object"):
        decode_frame(bytes(32), b"[1]")


def test_proofs_depend_on_role_token_and_both_nonces() -> None:
    base = proof(TOKEN, b"client", b"s" * 16, b"c" * 16)
    assert base != proof(TOKEN, b"server", b"s" * 16, b"c" * 16)
    assert base != proof(TOKEN[::-1], b"client", b"s" * 16, b"c" * 16)
    assert base != proof(TOKEN, b"client", b"t" * 16, b"c" * 16)
    assert base != proof(TOKEN, b"client", b"s" * 16, b"d" * 16)


@pytest.mark.parametrize(("text", "expected"), [
    ("198.18.0.10:7700", ("198.18.0.10", 7700)),
    ("[::1]:0", ("::1", 0)),
    ("127.0.0.1:65535", ("127.0.0.1", 65535)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("0.0.0.0:7700", "every interface"),
    ("[::]:7700", "every interface"),
    ("7700", "not ADDR:PORT"),
    ("bench-pc:7700", "not an IP address"),
    ("10.0.0.1:http", "not a number"),
    ("10.0.0.1:70000", "out of range"),
])
def test_parse_listen_refuses(text: str, message: str) -> None:
    with pytest.raises(AgentError, match=message):
        parse_listen(text)


def _token_file(tmp_path, content: bytes = TOKEN + b"\n", mode: int = 0o600) -> str:
    path = tmp_path / "token"
    path.write_bytes(content)
    path.chmod(mode)
    return str(path)


def test_load_token_strips_whitespace(tmp_path) -> None:
    assert load_token(_token_file(tmp_path)) == TOKEN


def test_load_token_refuses_a_file_others_can_read(tmp_path) -> None:
    with pytest.raises(AgentError, match=r"accessible by others \(mode 0644\); chmod 600"):
        load_token(_token_file(tmp_path, mode=0o644))


def test_load_token_refuses_short_or_missing_tokens(tmp_path) -> None:
    with pytest.raises(AgentError, match="holds 5 bytes; at least 16"):
        load_token(_token_file(tmp_path, b"short"))
    with pytest.raises(AgentError, match="cannot read token file"):
        load_token(str(tmp_path / "absent"))


# ------------------------------------------------------------------------------------------
# Server and client on loopback


@pytest.fixture
def server(tmp_path):
    srv = AgentServer(("127.0.0.1", 0), TOKEN, str(tmp_path), max_procs=4)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        srv.cleanup()
        thread.join(10)


@pytest.fixture
def client(server):
    with AgentClient(server.server_address, TOKEN, timeout=10) as c:
        yield c


def test_ping_names_the_agent(client, server, tmp_path) -> None:
    reply = client.ping()
    assert reply["pid"] == os.getpid()
    assert reply["workdir"] == str(tmp_path)


def test_run_returns_status_and_output(client) -> None:
    result = client.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10)
    assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")


def test_run_feeds_input(client) -> None:
    assert client.run(["cat"], timeout=10, input=b"\x00\x01abc").stdout == b"\x00\x01abc"


def test_run_kills_a_command_that_outlives_its_timeout(client) -> None:
    start = time.monotonic()
    result = client.run(["sleep", "30"], timeout=0.5)
    assert result.returncode is None
    assert time.monotonic() - start < 10


def test_spawned_process_is_polled_signalled_and_reaped(client) -> None:
    ident = client.spawn(["sh", "-c", "echo started; exec sleep 30"])
    assert client.poll(ident) is None
    assert client.wait(ident, 0.2) is None
    deadline = time.monotonic() + 10
    while client.output(ident) != b"started\n" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.output(ident) == b"started\n"
    client.signal(ident, signal.SIGTERM)
    assert client.wait(ident, 10) == -signal.SIGTERM


def test_signal_reaches_the_whole_process_group(client, tmp_path) -> None:
    # The shell forks a child: killing only the shell would leave the child running.
    ident = client.spawn(["sh", "-c", "sleep 30 & echo $! > child.pid; wait"])
    pid_file = tmp_path / "child.pid"
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    child = int(pid_file.read_text())
    client.signal(ident, signal.SIGKILL)
    assert client.wait(ident, 10) == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{child}") and _state(child) != "Z":
        assert time.monotonic() < deadline, "the forked child survived"
        time.sleep(0.02)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_files_larger_than_a_chunk_go_both_ways(client, tmp_path) -> None:
    data = os.urandom(agent.CHUNK * 2 + 12345)
    client.write_file("sub/dir/data.bin", data)
    assert (tmp_path / "sub/dir/data.bin").read_bytes() == data
    assert client.read_file(str(tmp_path / "sub/dir/data.bin")) == data
    client.remove("sub")
    assert not (tmp_path / "sub").exists()


def test_errors_name_the_agent_and_the_operation(client) -> None:
    with pytest.raises(AgentError, match=r"agent at 127\.0\.0\.1:\d+: read_file: No such file"):
        client.read_file("absent.bin")
    with pytest.raises(AgentError, match="spawn: No such file or directory"):
        client.spawn(["/nonexistent/program"])
    with pytest.raises(AgentError, match="no process with id 999"):
        client.poll(999)
    with pytest.raises(AgentError, match="unknown operation 'format_disk'"):
        client.call("format_disk")


def test_allow_list_limits_programs(tmp_path) -> None:
    srv = AgentServer(("127.0.0.1", 0), TOKEN, str(tmp_path), allow=["true"])
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        with AgentClient(srv.server_address, TOKEN) as c:
            assert c.run(["true"]).returncode == 0
            assert c.run(["/bin/true"]).returncode == 0
            with pytest.raises(AgentError, match=r"program 'sh' \(/\S+\) is not allowed here"):
                c.run(["sh", "-c", "true"])
    finally:
        srv.shutdown()
        srv.server_close()


def test_max_procs_bounds_running_processes(client) -> None:
    for _ in range(4):
        client.spawn(["sleep", "30"])
    with pytest.raises(AgentError, match=r"4 processes already run \(--max-procs 4\)"):
        client.spawn(["sleep", "30"])
    assert client.cleanup() == 4
    client.spawn(["true"])


def test_cleanup_kills_what_the_agent_started(client) -> None:
    idents = [client.spawn(["sleep", "30"]) for _ in range(2)]
    assert client.cleanup() == 2
    assert all(client.poll(i) == -signal.SIGKILL for i in idents)


def test_cleanup_spares_other_clients_processes_unless_asked(server, client) -> None:
    with AgentClient(server.server_address, TOKEN) as other:
        theirs = other.spawn(["sleep", "30"])
        mine = client.spawn(["sleep", "30"])
        assert client.cleanup() == 1
        assert client.poll(mine) == -signal.SIGKILL
        assert other.poll(theirs) is None
        assert client.cleanup(everyone=True) == 1
        assert other.poll(theirs) == -signal.SIGKILL


def test_wrong_token_is_refused_and_counted(server) -> None:
    with pytest.raises(AgentAuthError, match="authentication failed"):
        AgentClient(server.server_address, TOKEN[::-1]).ping()
    assert server.auth_failures == 1


def _impostor(session_token: bytes, server_proof: bytes) -> tuple[socket.socket, threading.Thread]:
    """An agent that answers the handshake with ``server_proof``, its frames authenticated
    under the session key of ``session_token``; it serves one connection until closed."""
    impostor = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = impostor.accept()
        with conn:
            channel = agent._Channel(conn, agent.TO_CLIENT, agent.TO_SERVER)
            nonce = os.urandom(16)
            channel.send({"agent": "apx-hil", "protocol": agent.PROTOCOL,
                          "nonce": nonce.hex()})
            hello = channel.receive(5)
            channel.key = session_key(session_token, nonce, bytes.fromhex(hello["nonce"]))
            channel.send({"ok": True, "proof": server_proof.hex()})
            conn.settimeout(10)
            with contextlib.suppress(OSError):
                while conn.recv(1024):  # until the client hangs up
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return impostor, thread


@pytest.mark.parametrize("session_token", [b"guessed-token-guessed", TOKEN],
                         ids=["wrong-session-key", "right-session-key"])
def test_client_refuses_an_agent_that_does_not_prove_the_token(session_token) -> None:
    # An impostor cannot know the token: its proof is wrong. Even with frames that pass the
    # session key's HMAC (as if the key had leaked), the missing proof alone must stop the
    # client before it sends any request.
    impostor, thread = _impostor(session_token, bytes(32))
    try:
        with pytest.raises(AgentAuthError, match="did not prove the token"
                           if session_token == TOKEN else "HMAC does not match"):
            AgentClient(impostor.getsockname(), TOKEN, timeout=5).ping()
    finally:
        thread.join(10)
        impostor.close()


def test_server_drops_a_connection_with_a_forged_frame(server) -> None:
    with socket.create_connection(server.server_address, timeout=5) as sock:
        channel = agent._Channel(sock, agent.TO_SERVER, agent.TO_CLIENT)
        hello = channel.receive(5)
        server_nonce, client_nonce = bytes.fromhex(hello["nonce"]), os.urandom(16)
        channel.send({"nonce": client_nonce.hex(),
                      "proof": proof(TOKEN, b"client", server_nonce, client_nonce).hex()})
        channel.key = session_key(TOKEN, server_nonce, client_nonce)
        assert channel.receive(5)["ok"] is True
        channel.in_seq = 1
        # A frame under a wrong key, as an attacker injecting into the session would send.
        sock.sendall(encode_frame({"op": "run", "argv": ["true"]}, b"k" * 32,
                                  agent.TO_SERVER, 0))
        sock.settimeout(5)
        assert sock.recv(1024) == b""  # closed without an answer
    assert server.children == {}


def test_agent_listens_only_on_its_address(tmp_path) -> None:
    srv = AgentServer(("127.0.0.2", 0), TOKEN, str(tmp_path))
    try:
        port = srv.server_address[1]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        srv.server_close()


# ------------------------------------------------------------------------------------------
# The command


def _agent_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "astropix_hil.cli.agent", *args]


def test_command_refuses_a_wildcard_address(tmp_path) -> None:
    done = subprocess.run(_agent_cmd("--listen", "0.0.0.0:7700", "--token-file",
                                     _token_file(tmp_path)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "refusing to listen on 0.0.0.0 (every interface)" in done.stderr


def test_command_serves_until_sigterm_then_kills_its_processes(tmp_path) -> None:
    proc = subprocess.Popen(_agent_cmd("--listen", "127.0.0.1:0", "--token-file",
                                       _token_file(tmp_path), "--workdir", str(tmp_path)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:")
        with AgentClient(line.split()[-1], TOKEN) as c:
            reply = c.call("spawn", argv=["sleep", "60"])
            ident, pid = reply["id"], reply["pid"]
            assert c.poll(ident) is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert "stopped (1 processes killed, 0 failed logins)" in proc.stderr.read()
        assert not os.path.exists(f"/proc/{pid}") or _state(pid) in ("Z", "gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_main_runs_the_agent_command(tmp_path, monkeypatch) -> None:
    from astropix_hil import cli

    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "agent")
                        if "agent" not in cli.COMMANDS else cli.COMMANDS)
    assert cli.main(["agent", "--listen", "0.0.0.0:1", "--token-file",
                     _token_file(tmp_path)]) == 1
