"""Shared by the monitor tests: emulated runs and histograms computed independently from the
CSV that ``apx-hil convert`` writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from astropix_hil.cli import main
from astropix_hil.hitcsv import read_hits_csv


def emulate(path: Path, *args: str) -> Path:
    assert main(["emulate", "--out", str(path), "--force", *args]) == 0
    return path


def converted_hits(apx: Path, tmp_path: Path) -> np.ndarray:
    csv = tmp_path / f"{apx.stem}-converted.csv"
    assert main(["convert", str(apx), "--format", "csv", "-o", str(csv)]) == 0
    return read_hits_csv(csv)[1]


def hitmap_from_csv(hits: np.ndarray) -> np.ndarray:
    """Hits per (chip, row, column), counted row by row of the CSV."""
    counts = np.zeros((32, 32, 32), dtype=np.int64)
    np.add.at(counts, (hits["chip_id"], hits["row"], hits["column"]), 1)
    return counts


def tot_from_csv(hits: np.ndarray, bins: int) -> np.ndarray:
    """Hits per 1 µs ToT bin from the CSV's tot_us column."""
    return np.histogram(hits["tot_us"], bins=np.arange(bins + 1, dtype=np.float64))[0]
