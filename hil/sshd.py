"""Real OpenSSH servers for the suite's own bench-mode tests: one ``sshd`` per network
namespace, with its own config file, host key and authorized key, all made fresh in a
temporary directory for the run (never committed) and removed with it.

:class:`SshServers` starts them (``/usr/sbin/sshd -f CONFIG -D -e`` inside each namespace) and
gives, for each host, the ``ssh`` command line a bench config's ``access: {ssh: ...}`` takes:
key-based, host keys checked against a known-hosts file of the run, no prompts, and one
multiplexed connection per host (``ControlMaster``), as a bench user would set up. Nothing of
the user's own SSH setup (``~/.ssh``, ``/etc/ssh/ssh_config``) is read or changed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile

from .errors import TopologyError
from .runners import LocalProc, netns_runner
from .topology import wait_for

SSHD = "/usr/sbin/sshd"
#: sshd refuses to start without its privilege separation directory.
PRIVSEP_DIR = "/run/sshd"

SSHD_CONFIG = """\
# apx-hil HIL suite: an sshd of one test run, in one network namespace.
ListenAddress {address}:{port}
HostKey {host_key}
AuthorizedKeysFile {authorized_keys}
PidFile {pidfile}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The keys live in the run's temporary directory, not in a home directory.
StrictModes no
MaxSessions 64
MaxStartups 64
LogLevel INFO
"""


def missing_tools(which=shutil.which) -> list[str]:
    """The OpenSSH programs this machine lacks (``sshd`` is looked for in /usr/sbin too)."""
    missing = []
    if not (which("sshd") or os.access(SSHD, os.X_OK)):
        missing.append("sshd (openssh-server)")
    for tool in ("ssh", "ssh-keygen"):
        if not which(tool):
            missing.append(f"{tool} (openssh-client)")
    return missing


def _keygen(path: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "apx-hil-run", "-f",
                    path], check=True, capture_output=True, timeout=30,
                   stdin=subprocess.DEVNULL)
    with open(path + ".pub", encoding="ascii") as stream:
        return stream.read().strip()


class SshServers:
    """sshd in namespaces, reachable at one address each; :meth:`close` stops them and
    removes the keys."""

    def __init__(self, user: str = "root", port: int = 22) -> None:
        missing = missing_tools()
        if missing:
            raise TopologyError(f"cannot start the lab's SSH servers: missing "
                                f"{', '.join(missing)} (Debian: apt-get install "
                                f"openssh-server openssh-client; .ci/run does this)")
        self.user = user
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="apx-hil-ssh.")
        # Short: a ControlPath must fit in a unix socket address.
        self.control_dir = tempfile.mkdtemp(prefix="apxssh.")
        self.client_key = os.path.join(self.dir, "client_key")
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        self.authorized_keys = os.path.join(self.dir, "authorized_keys")
        self._procs: list[LocalProc] = []
        self._made_privsep = False
        self.addresses: dict[str, str] = {}
        self.namespaces: dict[str, str] = {}
        try:
            with open(self.authorized_keys, "w", encoding="ascii") as stream:
                stream.write(_keygen(self.client_key) + "\n")
            if not os.path.isdir(PRIVSEP_DIR):
                os.makedirs(PRIVSEP_DIR, mode=0o755)
                self._made_privsep = True
        except BaseException:
            self.close()
            raise

    def start(self, name: str, namespace: str, address: str, timeout: float = 20.0) -> None:
        """Start an sshd for host ``name`` in ``namespace``, listening on ``address``; return
        once it listens."""
        host_key = os.path.join(self.dir, f"host_key_{name}")
        public = _keygen(host_key)
        config = os.path.join(self.dir, f"sshd_config_{name}")
        with open(config, "w", encoding="ascii") as stream:
            stream.write(SSHD_CONFIG.format(address=address, port=self.port,
                                            host_key=host_key,
                                            authorized_keys=self.authorized_keys,
                                            pidfile=os.path.join(self.dir, f"sshd_{name}.pid")))
        with open(self.known_hosts, "a", encoding="ascii") as stream:
            where = address if self.port == 22 else f"[{address}]:{self.port}"
            stream.write(f"{where} {public}\n")
        proc = netns_runner(namespace, self.dir).spawn([SSHD, "-f", config, "-D", "-e"],
                                                       f"sshd-{name}")
        self._procs.append(proc)

        def listening() -> bool:
            if proc.poll() is not None:
                raise TopologyError(f"sshd for {name} in {namespace} exited {proc.poll()}: "
                                    f"{proc.stderr().strip()[-1500:]}")
            return "Server listening on" in proc.stderr()
        wait_for(listening, f"sshd for {name} listening on {address}", timeout)
        self.addresses[name] = address
        self.namespaces[name] = namespace

    def command(self, name: str) -> list[str]:
        """The ``ssh`` command that runs one shell line on host ``name``."""
        return ["ssh", "-F", "none", "-i", self.client_key, "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "ConnectTimeout=10",
                "-o", "ControlMaster=auto", "-o", f"ControlPath={self.control_dir}/%C",
                "-o", "ControlPersist=120", "-o", "LogLevel=ERROR", "-p", str(self.port),
                f"{self.user}@{self.addresses[name]}"]

    def stop_masters(self) -> None:
        """End the multiplexing masters the ``ssh`` clients started (``ssh -O exit``)."""
        for name in self.addresses:
            command = self.command(name)
            with contextlib.suppress(Exception):
                subprocess.run([*command[:-1], "-O", "exit", command[-1]], capture_output=True,
                               timeout=10, stdin=subprocess.DEVNULL)

    def close(self) -> None:
        for proc in reversed(self._procs):
            with contextlib.suppress(Exception):
                proc.kill()
        self._procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.control_dir, ignore_errors=True)
        if self._made_privsep:
            with contextlib.suppress(OSError):
                os.rmdir(PRIVSEP_DIR)
            self._made_privsep = False
