"""The host drivers: a local shell command standing in for ssh, and the apx-hil agent.

Every runner must start a process, signal the process itself (not only a local client), stop
it for good, run a command to completion and move files: the same operations the cases use.
"""

from __future__ import annotations

import signal
import threading

import pytest

from astropix_hil.agent import AgentServer

from .errors import HilError, HilTimeout
from .runners import AgentRunner, LocalRunner, SshRunner, first_line

TOKEN = b"0123456789abcdef0123456789abcdef"


@pytest.fixture(params=["local", "ssh", "agent"])
def runner(request, tmp_path):
    if request.param == "local":
        yield LocalRunner(str(tmp_path))
    elif request.param == "ssh":
        # `sh -c LINE` does what `ssh HOST LINE` does, on this machine.
        yield SshRunner(["sh", "-c"], str(tmp_path / "remote"), str(tmp_path))
    else:
        server = AgentServer(("127.0.0.1", 0), TOKEN, str(tmp_path))
        thread = threading.Thread(target=server.serve_forever,
                                  kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        agent = AgentRunner(f"127.0.0.1:{server.server_address[1]}", TOKEN)
        try:
            yield agent
        finally:
            agent.close()
            server.shutdown()
            server.server_close()
            thread.join(10)


def test_run_returns_status_and_output(runner) -> None:
    done = runner.run(["sh", "-c", "echo 'a b'; echo oops >&2; exit 4"])
    assert (done.returncode, done.stdout, done.stderr) == (4, b"a b\n", b"oops\n")
    with pytest.raises(HilError, match=r"hostX: sh -c .* exited 4: oops"):
        done.check("hostX")


def test_run_is_bounded(runner) -> None:
    with pytest.raises(HilTimeout):
        runner.run(["sleep", "30"], timeout=0.5)


def test_quoting_survives_the_shell_line(runner) -> None:
    odd = "it's a \"test\" $HOME `x` ; done"
    assert runner.run(["printf", "%s", odd]).stdout.decode() == odd


def test_files_round_trip(runner, tmp_path) -> None:
    path = str(tmp_path / "sub" / "f.bin")
    data = bytes(range(256)) * 100
    runner.write_file(path, data)
    assert runner.read_file(path) == data


def test_process_signal_reaches_the_process(runner) -> None:
    proc = runner.spawn(["sh", "-c", "trap 'echo got TERM; exit 7' TERM; echo ready; "
                                     "while :; do sleep 0.05; done"], "trap")
    assert first_line(proc, 20) == "ready"
    assert proc.poll() is None
    with pytest.raises(HilTimeout):
        proc.wait(0.2)
    proc.signal(signal.SIGTERM)
    assert proc.wait(20) == 7
    assert "got TERM" in proc.stdout()
    proc.signal(signal.SIGTERM)  # ended: a no-op


def test_kill_ends_a_process_that_ignores_sigterm(runner) -> None:
    proc = runner.spawn(["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"],
                        "stubborn")
    assert first_line(proc, 20) == "ready"
    proc.signal(signal.SIGTERM)
    with pytest.raises(HilTimeout):
        proc.wait(0.3)
    proc.kill()
    assert proc.poll() is not None
    proc.kill()  # idempotent


def test_a_process_killed_by_a_signal_reports_it(runner) -> None:
    # Over ssh the client exits 255 whatever the signal: the runner must still say SIGKILL.
    proc = runner.spawn(["sh", "-c", "echo ready; while :; do sleep 0.05; done"], "victim")
    assert first_line(proc, 20) == "ready"
    proc.signal(signal.SIGKILL)
    assert proc.wait(20) == -signal.SIGKILL
    exits = runner.spawn(["sh", "-c", "exit 137"], "exits-137")
    assert exits.wait(20) == 137


def test_first_line_reports_an_early_exit(runner) -> None:
    proc = runner.spawn(["sh", "-c", "echo broken >&2; exit 3"], "early")
    with pytest.raises(HilError, match="exited 3 before printing a line: broken"):
        first_line(proc, 20)
