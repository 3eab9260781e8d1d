"""See the data: accumulated hit maps, ToT and rate histograms of a run, live or from a file.

:class:`Accumulator` holds the numbers (numpy only); :mod:`.figures` draws them with matplotlib
(the ``[plot]`` extra), :mod:`.report` writes an HTML report, :mod:`.live` runs ``apx-hil
monitor``, :mod:`.textmap` prints a hit map for a terminal.
"""

from __future__ import annotations

from ..errors import MissingExtraError
from .accumulator import Accumulator, accumulate_file


def require(module: str, extra: str) -> None:
    """Import ``module`` or raise :class:`MissingExtraError` naming the extra to install."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(f"{module} is not installed: pip install "
                                f"'astropix-hil[{extra}]'") from None


__all__ = ["Accumulator", "MissingExtraError", "accumulate_file", "require"]
