"""Output files of the commands: never overwrite a file without ``--force``, never write over
an input, and never leave half a file behind.

:func:`atomic_output` is what every command that writes a user file uses: the file is written
under a temporary name in the same directory and renamed over ``path`` only once complete, so
a failed or interrupted command leaves the old file (or none) and no partial one.
:func:`check_output` is the refusal part alone, for outputs that must stay in place while they
grow (the DAQ's run file, whose every readout must survive a crash of the DAQ).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from .errors import ApxHilError


class OutputError(ApxHilError):
    """An output that would destroy a file: an existing file without ``--force``, or an input."""


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True if ``a`` and ``b`` name one file (one path, or one inode)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # one inode, whatever the symlinks or hard links
    except OSError:
        return False


def check_output(path: str | os.PathLike, *, force: bool = False,
                 inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Raise :class:`OutputError` if writing ``path`` would destroy a file: when it is one of
    ``inputs`` (the same inode, through symlinks and hard links too), or exists and ``force``
    is false."""
    for source in inputs:
        if same_file(path, source):
            raise OutputError(f"{os.fspath(path)} is the input file {os.fspath(source)}: "
                              f"writing it would destroy it; choose another output")
    if not force and os.path.lexists(path):
        raise OutputError(f"{os.fspath(path)} exists; use --force to overwrite it")


@contextmanager
def atomic_output(path: str | os.PathLike, force: bool = False, *,
                  inputs: Iterable[str | os.PathLike] = ()) -> Iterator[str]:
    """Check ``path`` (:func:`check_output`), then yield a new, empty temporary file's path in
    the same directory to write the output to. On a clean exit it is renamed to ``path``
    (replacing it); on an exception it is removed and ``path`` is left as it was."""
    path = os.fspath(path)
    check_output(path, force=force, inputs=inputs)
    directory, name = os.path.split(path)
    temporary = ""
    for attempt in range(100):
        candidate = os.path.join(directory, f".{name}.{os.getpid()}-{attempt}.part")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"{path}: cannot write here: {exc.strerror}") from None
        temporary = candidate
        break
    else:
        raise OutputError(f"{path}: no free temporary name beside it")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


__all__ = ["OutputError", "atomic_output", "check_output", "same_file"]
