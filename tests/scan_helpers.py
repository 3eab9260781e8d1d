"""Synthetic scan runs with known per-pixel thresholds and noise (fixed seeds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import erf

from astropix_hil.bulk import words_from_fields
from astropix_hil.fileio import ApxWriter
from astropix_hil.fmt import HIT_DTYPE, IDLE_BYTE, AstroPix4Readout
from astropix_hil.scan import ScanDefinition

IDLE = bytes([IDLE_BYTE]) * 2


def truth_pixels(rng: np.random.Generator, count: int, chips=(0, 1)) -> np.ndarray:
    """``count`` distinct pixels with a threshold and a noise each."""
    table = np.zeros(count, dtype=[("chip_id", "u1"), ("row", "u1"), ("column", "u1"),
                                   ("threshold", "f8"), ("noise", "f8")])
    flat = rng.choice(len(chips) * 32 * 16, size=count, replace=False)
    table["chip_id"] = np.asarray(chips)[flat // (32 * 16)]
    table["row"], table["column"] = (flat % (32 * 16)) // 16, flat % 16
    table["threshold"] = rng.uniform(120, 280, count)
    table["noise"] = rng.uniform(5, 20, count)
    return table


def write_scan(path: Path, definition: ScanDefinition, truth: np.ndarray,
               rng: np.random.Generator) -> None:
    """One readout per injected pulse, holding a hit of every pixel that fired on it."""
    x = np.asarray(definition.values)
    rising = definition.kind == "injection"
    with ApxWriter(path, {"scan": definition.to_header()}) as writer:
        for step, value in enumerate(x):
            z = (value - truth["threshold"]) / (np.sqrt(2) * truth["noise"])
            p = 0.5 * (1 + erf(z)) if rising else 0.5 * (1 - erf(z))
            fired = rng.random((definition.pulses, len(truth))) < p
            for pulse in range(definition.pulses):
                pixels = truth[fired[pulse]]
                hits = np.zeros(len(pixels), dtype=HIT_DTYPE)
                hits["chip_id"], hits["row"], hits["column"] = (
                    pixels["chip_id"], pixels["row"], pixels["column"])
                hits["payload"] = 7
                hits["ts_coarse1"], hits["ts_coarse2"] = 100, 140
                words = words_from_fields(hits)
                data = b"".join(bytes(w) + IDLE for w in words)
                readout_id = definition.first_readout_id(step) + pulse
                writer.write(AstroPix4Readout(data, readout_id,
                                              timestamp=step * 10**9 + pulse * 10**6))
