"""``apxemu://``: a virtual AstroPix4 board in this process, as a pyserial port.

URL: ``apxemu://?seed=1&rate=1000[&option=value...]``. Board options (seed, rate, ...) go to
:meth:`astropix_hil.boards.nexys.board.VirtualBoard.from_options`. The board keeps no truth
unless asked: ``truth=PATH`` streams it to a new CSV file (closed with the port; an existing
file is refused), ``keep_truth=1`` keeps it in memory (``port.board.truth()``, for tests).
The link fault options are those of :mod:`.emulated`.
"""

from __future__ import annotations

from typing import Any

from . import emulated
from .emulated import FAULTS  # noqa: F401 - part of this scheme's interface

SCHEME = "apxemu"


def parse_url(url: str) -> tuple[dict[str, str], dict[str, int]]:
    """Board options and fault options of an ``apxemu://`` URL."""
    return emulated.parse_url(url, SCHEME)


class Serial(emulated.EmulatedPort):
    """pyserial port whose other end is a :class:`~astropix_hil.boards.nexys.board.VirtualBoard`."""

    SCHEME = SCHEME

    def board_class(self) -> Any:
        from ..boards.nexys.board import VirtualBoard

        return VirtualBoard
