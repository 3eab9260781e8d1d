"""A disk that fills up on cue, for the files of one directory: deterministic, no root needed.

:class:`FullDisk` stands in for :func:`os.write`: writes to files under ``root`` succeed until
``capacity`` bytes were written to them in all, the write that crosses it is cut short (as the
kernel does), and every later one raises ``ENOSPC``; :meth:`FullDisk.free` makes room again.
Writes to any other file descriptor go to the real :func:`os.write`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class FullDisk:
    def __init__(self, root: str | os.PathLike, capacity: int) -> None:
        self.root = str(Path(root).resolve())
        self.capacity = capacity
        self.used = 0
        self.refusals = 0
        self._real_write = os.write

    def _ours(self, fd: int) -> bool:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return False
        return target.startswith(self.root + os.sep)

    def free(self, nbytes: int) -> None:
        """Make room for ``nbytes`` more."""
        self.capacity += nbytes

    def __call__(self, fd: int, data) -> int:
        if not self._ours(fd):
            return self._real_write(fd, data)
        room = self.capacity - self.used
        if room <= 0:
            self.refusals += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done = self._real_write(fd, bytes(memoryview(data)[:room]))
        self.used += done
        return done
