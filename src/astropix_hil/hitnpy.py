"""Hit arrays as ``.npy`` files, written a chunk at a time (memory bounded by a chunk).

The file is byte for byte what :func:`numpy.save` writes for the whole array: numpy's header
leaves room for the length to grow, so the header is written first with no rows and rewritten
with the count at the end.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from .fmt import HIT_DTYPE


def _header(count: int, dtype: np.dtype) -> dict:
    return {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False,
            "shape": (count,)}


def write_hits_npy(stream: BinaryIO, chunks: Iterable[np.ndarray],
                   dtype: np.dtype = HIT_DTYPE) -> int:
    """Write hit arrays of ``dtype`` (default :data:`~astropix_hil.fmt.HIT_DTYPE`) as one
    ``.npy`` array; return the hit count. A stream that cannot seek (a pipe) gets the chunks
    joined first."""
    if not stream.seekable():
        hits = np.concatenate([*chunks, np.empty(0, dtype=dtype)])
        np.save(stream, hits)
        return len(hits)
    start = stream.tell()
    npy_format.write_array_header_1_0(stream, _header(0, dtype))
    count = 0
    for hits in chunks:
        stream.write(np.ascontiguousarray(hits, dtype=dtype).tobytes())
        count += len(hits)
    end = stream.tell()
    stream.seek(start)
    npy_format.write_array_header_1_0(stream, _header(count, dtype))
    if stream.tell() != start + (end - start) - count * dtype.itemsize:
        raise AssertionError("the .npy header changed length")  # numpy reserves the room
    stream.seek(end)
    return count
