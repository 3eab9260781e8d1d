"""``apx-hil agent``: the command agent of a bench host (see :mod:`astropix_hil.agent`)."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading

from ..agent import AgentServer, fingerprint, load_token, parse_listen
from ..errors import AgentError
from .argtypes import positive_float, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "agent", help="serve the HIL suite's commands on a bench host",
        description="Start processes, signal them and move files for the HIL suite, for "
                    "clients holding the shared token. Listens only on the address given; "
                    "runs until SIGTERM or Ctrl-C, then kills the processes it started.")
    parser.add_argument("--listen", required=True, metavar="ADDR:PORT",
                        help="the one address (and port) to listen on; port 0 picks a free "
                             "one (printed on the first stdout line)")
    parser.add_argument("--token-file", required=True, metavar="FILE",
                        help="shared token (at least 16 bytes, e.g. `openssl rand -hex 32`); "
                             "the file must not be accessible by group or others")
    parser.add_argument("--workdir", metavar="DIR",
                        help="directory for process output and relative paths (default: a "
                             "new temporary directory, removed at exit)")
    parser.add_argument("--allow", action="append", metavar="PROGRAM",
                        help="allow only this program (name or path, matched against argv[0] "
                             "once both are resolved to their executable; repeat); clients "
                             "may then set only harmless environment variables (APX_HIL_*, "
                             "TZ, LANG, LC_*, TERM...); default: any program")
    parser.add_argument("--auth-timeout", type=positive_float, default=5.0, metavar="S",
                        help="drop a connection that has not proved the token after S seconds "
                             "(default %(default)s)")
    parser.add_argument("--max-procs", type=positive_int, default=64, metavar="N",
                        help="most processes running at once (default 64)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    address = parse_listen(args.listen)
    token = load_token(args.token_file)
    own_workdir = args.workdir is None
    workdir = tempfile.mkdtemp(prefix="apx-hil-agent.") if own_workdir else args.workdir
    os.makedirs(workdir, exist_ok=True)
    if not 0 < args.auth_timeout <= 600:  # also refuses nan
        raise AgentError(f"--auth-timeout {args.auth_timeout} is not in (0, 600] seconds")
    server = AgentServer(address, token, workdir, allow=args.allow, max_procs=args.max_procs,
                         auth_timeout=args.auth_timeout)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    try:
        thread.start()
        host, port = server.server_address[:2]
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        print(f"listening on {shown}", flush=True)
        print(f"apx-hil agent: workdir {workdir}, token {fingerprint(token)}, programs "
              f"{', '.join(args.allow) if args.allow else 'any'}", file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        server.shutdown()
        server.server_close()
        killed = server.cleanup()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if own_workdir:
            with contextlib.suppress(OSError):
                shutil.rmtree(workdir)
        print(f"apx-hil agent: stopped ({killed} processes killed, "
              f"{server.auth_failures} failed logins)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    # `python -m astropix_hil.cli.agent ...` is `apx-hil agent ...`, also where the command
    # list does not name the agent yet.
    from .. import cli

    if "agent" not in cli.COMMANDS:
        cli.COMMANDS = (*cli.COMMANDS, "agent")
    sys.exit(cli.main(["agent", *sys.argv[1:]]))
