"""Where a board keeps the truth of the reads it serves: nowhere (the default, so that a long
run costs no memory), in memory (for tests that compare it as an array), or streamed to a CSV
file read by read (flat memory at any run length).

The CSV has the columns of ``apx-hil convert`` for the board's hits (AstroPix4's by default,
:mod:`astropix_hil.hitcsv`; a board of another chip gives its dtype and row formatter), without
a ``#`` header line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TextIO

import numpy as np

from ..errors import EmulatorError
from ..fmt import HIT_DTYPE
from ..hitcsv import format_rows

#: What a board can be asked to do with its truth: None or False (nothing), True (memory), a
#: path or an open text stream (CSV, streamed).
TruthTarget = bool | str | os.PathLike | TextIO | None


class TruthStore:
    """The truth of the reads served so far, kept as ``target`` says (see :data:`TruthTarget`)."""

    def __init__(self, target: TruthTarget = None, *, dtype: np.dtype = HIT_DTYPE,
                 rows: Callable[[np.ndarray], str] = format_rows) -> None:
        self.in_memory = target is True
        self.dtype = dtype
        self._rows = rows
        self._chunks: list[np.ndarray] = []
        self._stream: TextIO | None = None
        self._owned = False
        #: Hits added so far, whatever the target.
        self.count = 0
        if isinstance(target, str | os.PathLike):
            self._stream = open(target, "w", encoding="utf-8", newline="")  # noqa: SIM115
            self._owned = True
        elif target is not None and not isinstance(target, bool):
            self._stream = target
        if self._stream is not None:
            self._stream.write(",".join(dtype.names or ()) + "\n")

    @property
    def kept(self) -> bool:
        """True if the truth goes anywhere."""
        return self.in_memory or self._stream is not None

    def add(self, hits: np.ndarray) -> None:
        """The truth of one read."""
        self.count += len(hits)
        if self.in_memory:
            self._chunks.append(hits)
        elif self._stream is not None and len(hits):
            self._stream.write(self._rows(hits))

    def hits(self) -> np.ndarray:
        """Every hit added, in order (only when kept in memory)."""
        if not self.in_memory:
            raise EmulatorError("the board keeps no truth in memory: make it with truth=True "
                                "(or stream the truth to a file)")
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0].copy() if self._chunks else np.empty(0, dtype=self.dtype)

    def close(self) -> None:
        """Flush the stream (and close it if this store opened it)."""
        if self._stream is None:
            return
        if self._owned:
            self._stream.close()
        else:
            self._stream.flush()
        self._stream = None


__all__ = ["TruthStore", "TruthTarget"]
