"""A bench host's lease file: who runs the suite against the host, and until when.

Run on the host as ``python3 -c "$(cat leasefile.py)" take|renew|release PATH ...`` (the suite
passes this file's source); prints one JSON line. The file holds one JSON object: ``owner``
(user, controller host, pid), ``token`` (a secret of the run that holds it), ``taken`` and
``expires`` (seconds since the epoch). Taking is atomic: a new lease is linked into place
(``link`` fails if the file exists); an expired one is replaced by a rename and read back, so
of two runs taking over the same expired lease, one wins and the other is told who holds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys


def _read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return {"owner": f"unreadable lease file ({exc})", "token": None, "expires": None}


def _write_temp(path: str, record: dict) -> str:
    temp = f"{path}.{record['token'][:12]}.{os.getpid()}"
    with open(temp, "w", encoding="utf-8") as stream:
        json.dump(record, stream)
    return temp


def take(path: str, record: dict, now: float) -> dict:
    """Take the lease for ``record`` unless another run holds it unexpired at ``now``.

    Returns ``{"taken": True, "replaced": OLD or None}`` or ``{"taken": False, "holder":
    CURRENT}``."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    temp = _write_temp(path, record)
    try:
        try:
            os.link(temp, path)
            return {"taken": True, "replaced": None}
        except FileExistsError:
            pass
        current = _read(path)
        expires = (current or {}).get("expires")
        if current is not None and (not isinstance(expires, (int, float)) or expires > now):
            return {"taken": False, "holder": current}
        os.replace(temp, path)
        after = _read(path) or {}
        if after.get("token") != record["token"]:
            return {"taken": False, "holder": after}
        return {"taken": True, "replaced": current}
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def renew(path: str, token: str, expires: float) -> dict:
    """Move the expiry of our lease; ``{"renewed": False, "holder": ...}`` if it is not ours."""
    current = _read(path)
    if current is None or current.get("token") != token:
        return {"renewed": False, "holder": current}
    current["expires"] = expires
    os.replace(_write_temp(path, current), path)
    return {"renewed": True}


def release(path: str, token: str) -> dict:
    """Remove our lease (only ours: a lease taken over from us stays)."""
    current = _read(path)
    if current is None or current.get("token") != token:
        return {"released": False, "holder": current}
    os.unlink(path)
    return {"released": True}


def main(argv: list[str]) -> dict:
    what, path = argv[0], argv[1]
    if what == "take":
        return take(path, json.loads(argv[2]), float(argv[3]))
    if what == "renew":
        return renew(path, argv[2], float(argv[3]))
    if what == "release":
        return release(path, argv[2])
    raise SystemExit(f"leasefile: unknown operation {what!r}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])), flush=True)
