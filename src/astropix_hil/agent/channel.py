"""One agent connection's I/O: framed, authenticated messages over a socket."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from .protocol import FrameBuffer, decode_frame, encode_frame

log = logging.getLogger(__name__)


class _Channel:
    """A socket with the framing, sequence numbers and session key of one side."""

    def __init__(self, sock: socket.socket, out_direction: bytes, in_direction: bytes) -> None:
        self.sock = sock
        self.out_direction = out_direction
        self.in_direction = in_direction
        self.key: bytes | None = None
        self.out_seq = 0
        self.in_seq = 0
        self.buffer = FrameBuffer()

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(encode_frame(message, self.key, self.out_direction, self.out_seq))
        if self.key is not None:
            self.out_seq += 1

    def receive(self, timeout: float | None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            frame = self.buffer.next()
            if frame is not None:
                message = decode_frame(*frame, self.key, self.in_direction, self.in_seq)
                if self.key is not None:
                    self.in_seq += 1
                return message
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no complete frame in time")
                self.sock.settimeout(left)
            else:
                self.sock.settimeout(None)
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionResetError("connection closed")
            self.buffer.feed(data)
