"""``.apx`` files: read and write readouts, and decode whole files to hit arrays.

Layout (the AstroPix team's format, kept byte for byte): ASCII ``%APXDF``, header length
``<u32``, a UTF-8 JSON object (``"readout_uid": 4000`` for AstroPix4, any run metadata beside
it), then serialized readouts back to back (see :mod:`astropix_hil.fmt`).

A file that ends inside its last readout (a DAQ killed mid-write) still delivers every complete
readout before it, with a :class:`~astropix_hil.errors.TruncatedFileWarning`. Damaged bytes
inside the readouts (a wrong length, a broken magic, garbage) are skipped up to the next valid
readout header (see :mod:`astropix_hil.framescan`), with a
:class:`~astropix_hil.errors.DamagedFileWarning` naming the byte offset and count; a
:class:`ReadReport` passed to the readers counts them. A bad file header raises a
:class:`~astropix_hil.errors.FormatError` naming the file and byte offset.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from .astep_fmt import ASTEP_UID, AstepReadout
from .bulk import BulkHits, Frames, ReadoutBlock, decode_frames
from .errors import (
    BadHeaderError,
    BadMagicError,
    DamagedFileWarning,
    LengthMismatchError,
    TruncatedError,
    TruncatedFileWarning,
)
from .fmt import ASTROPIX4_UID, HIT_DTYPE, READOUT_HEADER, AstroPix4Readout, parse_readout
from .framescan import scan_readouts

MAGIC = b"%APXDF"
_HEADER_LENGTH = struct.Struct("<I")
READOUT_UID_KEY = "readout_uid"
#: Readout classes by the uid their files carry.
READOUT_CLASSES: dict[int, type[AstroPix4Readout]] = {ASTROPIX4_UID: AstroPix4Readout}
# Other readout types (decoded by their own modules; the framing here is the same).
READOUT_CLASSES[ASTEP_UID] = AstepReadout  # type: ignore[assignment]
_CHUNK = 4 << 20
#: Damaged regions a :class:`ReadReport` lists one by one (and warns about); more are counted.
MAX_LISTED_DAMAGE = 20


@dataclass
class ReadReport:
    """What reading a file skipped: damaged regions and an incomplete last readout."""

    #: (byte offset, length) of the first :data:`MAX_LISTED_DAMAGE` damaged regions.
    damaged: list[tuple[int, int]] = field(default_factory=list)
    damaged_regions: int = 0
    damaged_bytes: int = 0
    #: Bytes of an incomplete last readout, and its offset (None if the file ends cleanly).
    truncated_bytes: int = 0
    truncated_at: int | None = None

    def add_damage(self, path: str, offset: int, length: int) -> None:
        """Count a damaged region, and warn about it (the first few only)."""
        self.damaged_regions += 1
        self.damaged_bytes += length
        if len(self.damaged) < MAX_LISTED_DAMAGE:
            self.damaged.append((offset, length))
            more = (" (further damaged regions are counted, not listed)"
                    if len(self.damaged) == MAX_LISTED_DAMAGE else "")
            warnings.warn(DamagedFileWarning(
                f"{path}: {length} damaged bytes skipped at byte offset {offset}; reading "
                f"resumed at the next valid readout header{more}", path, offset, length),
                stacklevel=4)

    def add_truncation(self, path: str, offset: int, length: int) -> None:
        """Note the incomplete last readout, and warn about it."""
        self.truncated_bytes = length
        self.truncated_at = offset
        warnings.warn(TruncatedFileWarning(
            f"{path}: file ends inside a readout at byte offset {offset} "
            f"({length} bytes of it); the readouts before it were read"), stacklevel=4)


def encode_header(header: Mapping[str, Any] | None) -> bytes:
    """The file header bytes (magic, length, JSON) for run metadata ``header``.

    ``readout_uid`` comes first and defaults to AstroPix4's (4000).
    """
    content: dict[str, Any] = {READOUT_UID_KEY: ASTROPIX4_UID}
    if header:
        content.update(header)
    uid = content[READOUT_UID_KEY]
    if type(uid) is not int or uid not in READOUT_CLASSES:
        raise ValueError(f"readout_uid {content[READOUT_UID_KEY]!r} is not a known readout "
                         f"class (known: {sorted(READOUT_CLASSES)})")
    text = json.dumps(content).encode("utf-8")
    return MAGIC + _HEADER_LENGTH.pack(len(text)) + text


def decode_header(prefix: bytes, path: str | None = None) -> tuple[dict[str, Any], int]:
    """Parse the file header at the start of ``prefix``; return it and the offset after it.

    Raises a :class:`~astropix_hil.errors.FormatError` subclass that names what is wrong.
    """
    if prefix[:len(MAGIC)] != MAGIC:
        raise BadMagicError(f"not an .apx file: starts with {prefix[:len(MAGIC)]!r}, "
                            f"expected {MAGIC!r}", path, 0)
    length_at = len(MAGIC)
    if len(prefix) < length_at + _HEADER_LENGTH.size:
        raise TruncatedError("file ends inside the header length field", path, length_at)
    (length,) = _HEADER_LENGTH.unpack_from(prefix, length_at)
    text_at = length_at + _HEADER_LENGTH.size
    if text_at + length > len(prefix):
        raise LengthMismatchError(f"header length field says {length} bytes, only "
                                  f"{len(prefix) - text_at} follow", path, length_at)
    try:
        header = json.loads(prefix[text_at:text_at + length].decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        # ValueError: not UTF-8, not JSON, or a number too long; RecursionError: nested deep.
        what = "nested too deep" if isinstance(exc, RecursionError) else exc
        raise BadHeaderError(f"header is not UTF-8 JSON: {what}", path, text_at) from None
    if not isinstance(header, dict):
        raise BadHeaderError(f"header is a JSON {type(header).__name__}, not an object",
                             path, text_at)
    uid = header.get(READOUT_UID_KEY)
    # Only an integer names a readout class (a list is not even hashable).
    if type(uid) is not int or uid not in READOUT_CLASSES:
        raise BadHeaderError(f"header readout_uid {uid!r} is not a known readout class "
                             f"(known: {sorted(READOUT_CLASSES)})", path, text_at)
    return header, text_at + length


def _read_header(stream: BinaryIO, path: str) -> tuple[dict[str, Any], int]:
    prefix = stream.read(len(MAGIC) + _HEADER_LENGTH.size)
    if len(prefix) == len(MAGIC) + _HEADER_LENGTH.size and prefix.startswith(MAGIC):
        (length,) = _HEADER_LENGTH.unpack_from(prefix, len(MAGIC))
        prefix += stream.read(length)
    return decode_header(prefix, path)


class ApxReader:
    """Iterates the readouts of an ``.apx`` file; ``header`` is its JSON header (a dict)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._file: BinaryIO = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        try:
            self.header, self.data_offset = _read_header(self._file, self.path)
        except BaseException:
            self._file.close()
            raise
        self.readout_class = READOUT_CLASSES[self.header[READOUT_UID_KEY]]
        #: Bytes of an incomplete last readout (0 until the end of a truncated file is reached).
        self.truncated_bytes = 0
        #: Damaged bytes skipped (counted when the iteration ends).
        self.skipped_bytes = 0
        #: Everything skipped by the last iteration.
        self.report = ReadReport()

    def __iter__(self) -> Iterator[AstroPix4Readout]:
        self.report = ReadReport()
        for window, frames, _ in iter_frame_chunks(self.path, _CHUNK, self.report):
            data = window.tobytes()
            # Decoding any readout of the chunk decodes them all in bulk (once).
            block = ReadoutBlock(np.frombuffer(data, dtype=np.uint8), frames.starts,
                                 frames.ends)
            readouts = self.readout_class._parsed_block(
                data, frames.starts.tolist(), frames.ends.tolist(),
                frames.readout_ids.tolist(), frames.timestamps.tolist(), block)
            # Hand each readout over without keeping it: a caller that drops readouts as it
            # goes must not have the whole chunk's readouts and hits kept alive (the garbage
            # collector would go over them again and again).
            readouts.reverse()
            pop = readouts.pop
            while readouts:
                yield pop()
        self.truncated_bytes = self.report.truncated_bytes
        self.skipped_bytes = self.report.damaged_bytes

    def read_hits(self) -> np.ndarray:
        """Decode the whole file in bulk (see :func:`read_hits`)."""
        return read_hits(self.path)

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> ApxReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class ApxWriter:
    """Writes readouts to a new ``.apx`` file after a header holding ``header``'s metadata.

    Readouts are buffered in memory; :meth:`flush` hands them to the operating system (after
    that, killing the process loses nothing) and :meth:`sync` also waits until they are on the
    disk. If the operating system refuses a write (disk full, I/O error), :meth:`flush` raises
    and keeps every byte it could not write, so a later flush retries without loss or
    duplication. The DAQ decides how often to flush and sync.

    If bytes are still unwritten when the file is closed, :meth:`close` cuts the file after its
    last whole readout (a refused write may have left part of one) and raises: the file then
    holds exactly :attr:`readouts_flushed` readouts. If even the header cannot be written, the
    constructor removes the file it created and raises.
    """

    def __init__(self, path: str | os.PathLike, header: Mapping[str, Any] | None = None) -> None:
        self.path = os.fspath(path)
        head = encode_header(header)
        self.header: dict[str, Any] = json.loads(head[len(MAGIC) + _HEADER_LENGTH.size:])
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._pending = bytearray(head)
        #: Bytes handed to the operating system so far.
        self.bytes_flushed = 0
        #: Readouts given to :meth:`write` (flushed or not).
        self.readouts_written = 0
        #: Readouts whose bytes were all handed to the operating system.
        self.readouts_flushed = 0
        self._ends: deque[tuple[int, int]] = deque()  # (byte end, readout count) not flushed
        self.bytes_written = len(head)
        #: File offset after the last whole readout (or the header) handed to the OS.
        self.whole_end = 0
        self._ends.append((len(head), 0))
        try:
            self.flush()
        except BaseException as exc:
            # Not even the header fits: leave no empty or headless file behind.
            os.close(self._fd)
            self._fd = None
            try:
                os.unlink(self.path)
            except OSError:
                pass
            if isinstance(exc, OSError) and exc.filename is None:
                raise OSError(exc.errno, exc.strerror, self.path) from exc
            raise

    def write(self, readout: AstroPix4Readout | bytes) -> int:
        """Buffer a readout, or bytes holding whole serialized readouts (e.g. a slice of another
        file's body); return the byte count. Bytes that are not whole readouts raise a
        :class:`~astropix_hil.errors.FormatError` and nothing is written."""
        if isinstance(readout, bytes | bytearray | memoryview):
            data = bytes(readout)
            ends = _readout_ends(data)
        else:
            data = readout.to_bytes()
            ends = [len(data)]
        base = self.bytes_written
        self._pending += data
        self.bytes_written += len(data)
        for end in ends:
            self.readouts_written += 1
            self._ends.append((base + end, self.readouts_written))
        return len(data)

    @property
    def pending_bytes(self) -> int:
        """Bytes written but not yet handed to the operating system."""
        return len(self._pending)

    def flush(self) -> None:
        """Hand every buffered byte to the operating system.

        Raises :class:`OSError` if it refuses; the bytes not written stay buffered.
        """
        if self._fd is None:
            raise ValueError(f"{self.path}: write to a closed file")
        while self._pending:
            # The bytearray itself is passed: no view of it outlives a failed write.
            done = os.write(self._fd, self._pending)
            del self._pending[:done]
            self.bytes_flushed += done
            while self._ends and self._ends[0][0] <= self.bytes_flushed:
                self.whole_end, self.readouts_flushed = self._ends.popleft()

    def sync(self) -> None:
        """Flush, and wait until the file's bytes are on the disk."""
        self.flush()
        os.fsync(self._fd)

    def fileno(self) -> int:
        """The file descriptor (raises ValueError once closed)."""
        if self._fd is None:
            raise ValueError(f"{self.path}: the file is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        """True once the file is closed."""
        return self._fd is None

    def close(self) -> None:
        """Flush and close the file (closing even if the flush fails).

        If the flush fails, the file is cut after its last whole readout before the error
        is raised, so that it holds exactly :attr:`readouts_flushed` readouts.
        """
        if self._fd is None:
            return
        try:
            self.flush()
        except OSError:
            if self.bytes_flushed > self.whole_end:
                try:
                    os.ftruncate(self._fd, self.whole_end)  # shrinking needs no free space
                except OSError:
                    pass
                else:
                    self.bytes_flushed = self.whole_end
            raise
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ApxWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _readout_ends(data: bytes) -> list[int]:
    """End offsets of the serialized readouts that make up ``data`` exactly."""
    ends, offset = [], 0
    while offset < len(data):
        _, offset = parse_readout(data, offset)
        ends.append(offset)
    return ends


def apx_open(path: str | os.PathLike, mode: str = "rb",
             header: Mapping[str, Any] | None = None) -> ApxReader | ApxWriter:
    """Open an ``.apx`` file: ``"rb"`` iterates its readouts, ``"wb"`` writes them.

    Use it as a context manager. In write mode ``header`` is the run metadata to store in the
    JSON header beside ``readout_uid``.
    """
    if mode == "rb":
        if header is not None:
            raise ValueError("a header is only given when writing (mode 'wb')")
        return ApxReader(path)
    if mode == "wb":
        return ApxWriter(path, header)
    raise ValueError(f"mode must be 'rb' or 'wb', not {mode!r}")


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of an ``.apx`` file."""
    with open(path, "rb") as stream:
        return _read_header(stream, os.fspath(path))[0]


class FrameChunk(NamedTuple):
    """A run of whole readouts of a file, located in place (see :func:`iter_frame_chunks`)."""

    #: The file's bytes from ``offset`` on (memory-mapped); readouts are ``frames`` within it.
    window: np.ndarray
    frames: Frames
    #: File offset of ``window[0]``.
    offset: int


def iter_frame_chunks(path: str | os.PathLike, chunk_bytes: int = 4 << 20,
                      report: ReadReport | None = None) -> Iterator[FrameChunk]:
    """The readouts of an ``.apx`` file, a few MB at a time, located in a memory map (no
    copy, no per-readout Python work).

    Damaged regions are skipped with a :class:`~astropix_hil.errors.DamagedFileWarning` each;
    a truncated last readout ends the iteration with a
    :class:`~astropix_hil.errors.TruncatedFileWarning`; ``report`` (if given) counts both.
    """
    path = os.fspath(path)
    report = ReadReport() if report is None else report
    with open(path, "rb") as stream:
        _, offset = _read_header(stream, path)
        size = os.fstat(stream.fileno()).st_size
    if size <= offset:
        return
    mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=(size,))
    want = chunk_bytes
    pending: list[int] | None = None  # a damaged region that may go on in the next window
    while offset < size:
        stop = min(size, offset + want)
        window = mapped[offset:stop]
        scan = scan_readouts(window, stop == size)
        for start, length in scan.damaged:
            start += offset
            if pending is not None and pending[0] + pending[1] == start:
                pending[1] += length
                continue
            if pending is not None:
                report.add_damage(path, *pending)
            pending = [start, length]
        # A region reaching the end of what was consumed may go on in the next window.
        if pending is not None and pending[0] + pending[1] != offset + scan.consumed:
            report.add_damage(path, *pending)
            pending = None
        if len(scan.heads):
            frames = Frames(scan.starts, scan.ends, scan.readout_ids, scan.timestamps,
                            scan.consumed)
            yield FrameChunk(window[:scan.consumed], frames, offset)
        if scan.truncated:
            report.add_truncation(path, offset + scan.consumed, scan.truncated)
            break
        if scan.consumed == 0:
            if stop == size:
                break
            want *= 2  # a readout larger than the window
            continue
        offset += scan.consumed
        want = chunk_bytes
    if pending is not None:
        report.add_damage(path, *pending)


class HitChunk(NamedTuple):
    """Hits of a run of consecutive readouts of a file (see :func:`iter_hit_chunks`)."""

    hits: np.ndarray
    status: np.ndarray
    readout_ids: np.ndarray
    timestamps: np.ndarray
    data_bytes: int
    #: File offset just past the bytes this chunk covers (for progress).
    file_offset: int = 0


def iter_hit_chunks(path: str | os.PathLike, chunk_bytes: int = 4 << 20,
                    report: ReadReport | None = None) -> Iterator[HitChunk]:
    """Decode an ``.apx`` file in bulk, a few MB of readouts at a time.

    Extra bytes are passed from readout to readout across chunks, exactly as the per-object
    path does. Damage and truncation are skipped and reported as by :func:`iter_frame_chunks`.
    """
    extra: bytes | None = None
    for window, frames, offset in iter_frame_chunks(path, chunk_bytes, report):
        result: BulkHits = decode_frames(window, frames.starts, frames.ends,
                                         frames.readout_ids, frames.timestamps, extra)
        extra = result.extra_bytes
        yield HitChunk(result.hits, result.status, frames.readout_ids, frames.timestamps,
                       int(np.sum(frames.ends - frames.starts)), offset + len(window))


def read_hits(path: str | os.PathLike, chunk_bytes: int = 4 << 20,
              report: ReadReport | None = None) -> np.ndarray:
    """Decode every hit of an ``.apx`` file into one array of dtype
    :data:`~astropix_hil.fmt.HIT_DTYPE` (columns as :data:`~astropix_hil.fmt.HIT_COLUMNS`).

    The fast path: agrees hit for hit with decoding the readouts one by one while passing each
    readout's extra bytes to the next. The file is decoded ``chunk_bytes`` at a time and the
    chunks joined once at the end (a file of one chunk is not copied).
    """
    chunks = [chunk.hits for chunk in iter_hit_chunks(path, chunk_bytes, report)]
    if len(chunks) == 1:
        return chunks[0]
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=HIT_DTYPE)


def write_apx(path: str | os.PathLike, readouts: Iterator[AstroPix4Readout] | list,
              header: Mapping[str, Any] | None = None) -> int:
    """Write readouts to a new ``.apx`` file; return how many were written."""
    with ApxWriter(path, header) as writer:
        for readout in readouts:
            writer.write(readout)
        return writer.readouts_written


__all__ = [
    "MAGIC",
    "READOUT_HEADER",
    "ApxReader",
    "ApxWriter",
    "FrameChunk",
    "HitChunk",
    "ReadReport",
    "apx_open",
    "decode_header",
    "encode_header",
    "iter_frame_chunks",
    "iter_hit_chunks",
    "read_header",
    "read_hits",
    "write_apx",
]
