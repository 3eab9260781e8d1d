"""Hits per pixel per step of a scan run (numpy, in bulk)."""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from ..fileio import iter_hit_chunks, read_header
from ..monitor.accumulator import CHIPS, COLUMNS, ROWS
from .definition import ScanDefinition


class ScanCounts(NamedTuple):
    """What a scan run holds: its definition, and ``hits[step, chip, row, column]``."""

    definition: ScanDefinition
    hits: np.ndarray
    #: Readouts of each step (a step with none may have been lost or skipped).
    readouts: np.ndarray
    #: Hits whose readout id is past the last step (not counted in :attr:`hits`).
    outside: int


def count_scan(path: str | os.PathLike) -> ScanCounts:
    """Decode a scan run and count its hits per step and pixel."""
    path = os.fspath(path)
    definition = ScanDefinition.from_header(read_header(path), path)
    steps = len(definition.values)
    hits = np.zeros((steps, CHIPS, ROWS, COLUMNS), dtype=np.int64)
    readouts = np.zeros(steps, dtype=np.int64)
    outside = 0
    for chunk in iter_hit_chunks(path):
        step = definition.step_of(chunk.hits["readout_id"])
        inside = step < steps
        outside += int(np.count_nonzero(~inside))
        h = chunk.hits[inside]
        flat = ((step[inside] * CHIPS + h["chip_id"]) * ROWS + h["row"]) * COLUMNS + h["column"]
        hits += np.bincount(flat, minlength=hits.size).reshape(hits.shape)
        r_step = definition.step_of(chunk.readout_ids)
        readouts += np.bincount(r_step[r_step < steps], minlength=steps)
    return ScanCounts(definition, hits, readouts, outside)
