"""Shared keys: HMAC-SHA256 authentication of datagrams, key files and key ids."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import KeyFileError

MIN_KEY_SIZE = 16


@dataclass(frozen=True)
class TransportKey:
    """A shared HMAC-SHA256 key and its 32-bit id (carried in each datagram header)."""

    secret: bytes
    key_id: int

    @classmethod
    def from_secret(cls, secret: bytes) -> TransportKey:
        """A key whose id is derived from the secret, so both ends agree without configuring it."""
        if len(secret) < MIN_KEY_SIZE:
            raise KeyFileError(f"a key must be at least {MIN_KEY_SIZE} bytes, got {len(secret)}")
        digest = hashlib.sha256(b"astropix-hil key id\0" + secret).digest()
        # 0 means "no key" in the header.
        return cls(bytes(secret), int.from_bytes(digest[:4], "little") or 1)

    def __repr__(self) -> str:  # never print the secret
        return f"TransportKey(key_id=0x{self.key_id:08x})"


def load_key(path: str | os.PathLike) -> TransportKey:
    """Read a shared key from a file: its bytes, leading and trailing whitespace removed
    (so ``openssl rand -hex 32 > KEY`` makes a good key file)."""
    try:
        with open(path, "rb") as stream:
            secret = stream.read().strip()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {os.fspath(path)}: {exc.strerror}") from None
    try:
        return TransportKey.from_secret(secret)
    except KeyFileError as exc:
        raise KeyFileError(f"{os.fspath(path)}: {exc}") from None


def _keyring(keys: TransportKey | Iterable[TransportKey] | None) -> dict[int, bytes] | None:
    if keys is None:
        return None
    if isinstance(keys, TransportKey):
        keys = [keys]
    ring = {key.key_id: key.secret for key in keys}
    return ring or None
