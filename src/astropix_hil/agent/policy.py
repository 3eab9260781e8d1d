"""What an authenticated client may touch and run: paths confined to the work directory,
programs matched by their resolved executable, environment variables that cannot change what
gets executed or loaded, and finite numbers.

The token proves who a client is; this module bounds what it can do. With ``--allow`` the
agent is meant to run a few programs and nothing else, so everything that could make an allowed
program run other code (a library preloaded, a module path, a ``PATH`` leading to an uploaded
file, a symlink named like an allowed program) is refused.
"""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import AgentError, AgentProtocolError

#: With an allow list, the only environment variables a client may set (by name): none of
#: them changes which program, library, module or start-up file gets loaded. Every other name
#: (``LD_*``, ``PYTHON*``, ``PATH``, ``HOME``, ``BASH_ENV``, ``ENV``, ``IFS``, ``PERL5LIB``,
#: ``NODE_OPTIONS``, ``GCONV_PATH``, ``LOCPATH``, ``GLIBC_TUNABLES``...) is refused.
SAFE_ENV = re.compile(r"APX_HIL_[A-Z0-9_]+|TZ|LANG|LANGUAGE|LC_(?!PATH$)[A-Z_]+|TERM|COLUMNS"
                      r"|LINES|NO_COLOR")


class PathOutsideError(AgentError):
    """A path that resolves outside the agent's work directory."""


def confined_path(workdir: str, path: Any) -> str:
    """``path`` (relative to ``workdir``, or absolute) resolved with every symlink followed,
    the last component included; raise :class:`PathOutsideError` unless it lies inside
    ``workdir`` (itself already resolved), which it may not be either."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise AgentProtocolError("path must be a non-empty string")
    if path.startswith("~"):
        raise PathOutsideError(f"path {path!r} names a home directory, outside the work "
                               f"directory {workdir} (~ is not expanded)")
    resolved = os.path.realpath(os.path.join(workdir, path))
    if not is_inside(workdir, resolved):
        raise PathOutsideError(f"path {path!r} resolves to {resolved}, outside the work "
                               f"directory {workdir}")
    return resolved


def open_beneath(workdir: str, resolved: str, flags: int, mode: int = 0o644, *,
                 make_dirs: bool = False) -> int:
    """Open ``resolved`` (a path inside ``workdir`` from :func:`confined_path`) one component
    at a time from a descriptor of ``workdir``, following no symlink; with ``make_dirs``,
    missing directories are made on the way.

    A component swapped for a symlink since the path was resolved makes the open fail (raise
    :class:`PathOutsideError`) before anything is created: nothing is made outside, not even
    an empty file.
    """
    relative = os.path.relpath(resolved, workdir)
    if not is_inside(workdir, resolved) or relative.startswith(os.pardir):
        raise PathOutsideError(f"{resolved} is outside the work directory {workdir}")
    *directories, name = relative.split(os.sep)
    at = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for directory in directories:
            if make_dirs:
                try:
                    os.mkdir(directory, 0o755, dir_fd=at)
                except FileExistsError:
                    pass
            inner = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=at)
            os.close(at)
            at = inner
        return os.open(name, flags | os.O_NOFOLLOW, mode, dir_fd=at)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise PathOutsideError(f"{resolved}: a component became a symlink or a file since "
                                   "the path was checked; refused") from None
        raise
    finally:
        os.close(at)


def is_inside(workdir: str, resolved: str) -> bool:
    """True when the resolved path ``resolved`` is strictly inside ``workdir``."""
    return resolved != workdir and os.path.commonpath([workdir, resolved]) == workdir


def fd_path(fd: int) -> str:
    """The path an open file descriptor really names (Linux ``/proc``)."""
    return os.readlink(f"/proc/self/fd/{fd}")


def check_env(env: Mapping[str, str]) -> None:
    """Refuse any variable not matched by :data:`SAFE_ENV` (used when an allow list is set)."""
    bad = sorted(name for name in env if not SAFE_ENV.fullmatch(name))
    if bad:
        raise AgentError(f"environment variable {', '.join(bad)} refused: with --allow, only "
                         "variables that cannot change what runs may be set (APX_HIL_*, TZ, "
                         "LANG, LANGUAGE, LC_*, TERM, COLUMNS, LINES, NO_COLOR)")


def resolve_program(name: str, cwd: str) -> str | None:
    """The executable ``name`` names, all symlinks resolved: a path (relative to ``cwd``), or
    a bare name looked up in the agent's own ``PATH``; None if there is none."""
    if "/" in name:
        found = os.path.join(cwd, name)
        if not (os.path.isfile(found) and os.access(found, os.X_OK)):
            return None
    else:
        found = shutil.which(name)
        if found is None:
            return None
    return os.path.realpath(found)


def resolve_allow(programs: Iterable[str]) -> frozenset[str]:
    """The resolved executables of ``--allow`` entries; raise :class:`AgentError` naming an
    entry that is no program here."""
    out = set()
    for name in programs:
        found = resolve_program(name, os.getcwd())
        if found is None:
            raise AgentError(f"--allow {name}: no such program here")
        out.add(found)
    return frozenset(out)


def finite_number(value: Any, what: str) -> float:
    """``value`` as a float; raise :class:`AgentProtocolError` unless it is a finite JSON
    number (not a bool, not a string such as ``"1e999"``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AgentProtocolError(f"{what} must be a number, not {value!r:.40}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise AgentProtocolError(f"{what} must be a finite number, not {value!r}")
    return number
