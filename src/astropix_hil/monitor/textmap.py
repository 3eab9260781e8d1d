"""A hit map as text, for a terminal (``apx-hil info --pixels``)."""

from __future__ import annotations

import numpy as np

#: From few to many hits (log scale); a pixel without hits is shown as :data:`EMPTY`.
RAMP = ".:-=+*#%@"
EMPTY = "·"


def text_hitmap(counts: np.ndarray) -> list[str]:
    """Lines drawing ``counts[row, column]``: row 0 at the bottom (as the plots), one
    character per pixel, ``·`` for none and :data:`RAMP` on a log scale up to the maximum.

    Only rows and columns up to the last one with a hit are drawn (at least 1).
    """
    counts = np.asarray(counts)
    rows = max(int(np.flatnonzero(counts.any(axis=1)).max(initial=0)) + 1, 1)
    columns = max(int(np.flatnonzero(counts.any(axis=0)).max(initial=0)) + 1, 1)
    counts = counts[:rows, :columns]
    top = int(counts.max())
    level = np.full(counts.shape, len(RAMP) - 1, dtype=np.intp)
    if top > 1:  # one hit is the first character, the maximum the last
        scaled = np.log(np.maximum(counts, 1)) / np.log(top) * (len(RAMP) - 1)
        level = np.rint(scaled).astype(np.intp).clip(0, len(RAMP) - 1)
    ramp = np.array(list(RAMP))
    cells = np.where(counts > 0, ramp[level], EMPTY)
    lines = [f"{row:>3} {''.join(cells[row])}" for row in range(rows - 1, -1, -1)]
    tens = "".join(str(c // 10) if c % 10 == 0 else " " for c in range(columns))
    lines.append("    " + tens.rstrip() if columns > 10 else "")
    lines.append("    " + "".join(str(c % 10) for c in range(columns)))
    return [line for line in lines if line]


def text_hitmaps(hitmap: np.ndarray, chips: list[int]) -> list[str]:
    """One block per chip: a title line (hits, busiest pixel, scale) and its map."""
    lines: list[str] = []
    for chip in chips:
        counts = hitmap[chip]
        row, column = np.unravel_index(int(np.argmax(counts)), counts.shape)
        lines.append(f"chip {chip}: {int(counts.sum())} hits in {int(np.count_nonzero(counts))}"
                     f" pixels, busiest row {row} column {column} ({int(counts.max())}); "
                     f"{EMPTY} none, {RAMP[0]} few ... {RAMP[-1]} most (log scale)")
        lines += text_hitmap(counts)
    return lines or ["no hits"]
