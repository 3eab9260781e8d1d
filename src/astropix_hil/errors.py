"""The package's exception hierarchy.

Every error names what was wrong and where: a file and byte offset, a datagram's source and
reason, a serial port and register. Catch :class:`ApxHilError` to catch them all.
"""

from __future__ import annotations

import os


class ApxHilError(Exception):
    """Root of every error raised by astropix_hil."""


class FormatError(ApxHilError, ValueError):
    """Bytes that do not follow the AstroPix readout or ``.apx`` format.

    ``path`` and ``offset`` locate the problem (either may be ``None`` when the bytes did not
    come from a file); ``reason`` says what was wrong.
    """

    def __init__(self, reason: str, path: str | os.PathLike | None = None,
                 offset: int | None = None) -> None:
        self.reason = reason
        self.path = None if path is None else os.fspath(path)
        self.offset = offset
        where = []
        if self.path is not None:
            where.append(self.path)
        if offset is not None:
            where.append(f"byte offset {offset}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(f"{prefix}{reason}")


class BadMagicError(FormatError):
    """The file does not start with ``%APXDF``."""


class BadHeaderError(FormatError):
    """The JSON file header cannot be read or does not describe AstroPix4 data."""


class BadReadoutHeaderError(FormatError):
    """A serialized readout does not start with ``fe dc ba``."""


class LengthMismatchError(FormatError):
    """A length field disagrees with the bytes that are actually there."""


class TruncatedError(FormatError):
    """The bytes end in the middle of a header or a readout."""


class TruncatedFileWarning(UserWarning):
    """A file ends inside its last readout; the complete readouts before it were delivered."""


class DamagedFileWarning(UserWarning):
    """Damaged bytes inside a file were skipped; reading went on at the next valid readout
    header. ``path``, ``offset`` and ``length`` say where and how much."""

    def __init__(self, message: str, path: str | None = None, offset: int = 0,
                 length: int = 0) -> None:
        super().__init__(message)
        self.path = path
        self.offset = offset
        self.length = length


class LinkError(ApxHilError, OSError):
    """The board link failed: timeout, short or garbled reply, port gone."""


class LinkTimeoutError(LinkError, TimeoutError):
    """The board did not answer within the link's timeout."""


class TransportError(ApxHilError):
    """The multicast transport was misused or misconfigured (bad key file, closed sender)."""


class KeyFileError(TransportError):
    """A transport key file cannot be read or holds no usable key."""


class DatagramError(TransportError, ValueError):
    """A datagram that does not follow the transport format.

    ``reason`` is the name of the receiver counter it is counted under (``bad_magic``,
    ``truncated``, ...), ``source`` the sender address if known; the message says what was wrong.
    """

    def __init__(self, reason: str, detail: str, source: object = None) -> None:
        self.reason = reason
        self.detail = detail
        self.source = source
        where = f"datagram from {source}: " if source is not None else "datagram: "
        super().__init__(f"{where}{reason}: {detail}")


class AgentError(ApxHilError):
    """The ``apx-hil agent`` (or a client of it) failed: names the agent's address and the
    operation."""


class AgentAuthError(AgentError):
    """A peer of the agent protocol did not prove the shared token, or a frame failed its HMAC."""


class AgentProtocolError(AgentError):
    """Bytes on an agent connection that do not follow the agent protocol."""


class EmulatorError(ApxHilError):
    """The chip emulator or the virtual board was misused."""


class EmulatorConfigError(EmulatorError, ValueError):
    """An emulator option that cannot be used; the message names the option and the value."""


class MissingExtraError(ApxHilError, ImportError):
    """An optional dependency (a pip extra of astropix-hil, e.g. ``[plot]``) is not installed."""
