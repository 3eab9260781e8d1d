"""S-curve fits: per pixel, an error function fitted to the hit fraction versus the scanned
parameter, giving the pixel's threshold (the 50 % point) and noise (the Gaussian width).

The fit is a weighted least-squares fit (scipy's ``curve_fit``) with binomial errors: first
with the errors of the measured fractions (Laplace-smoothed so that 0 and 1 keep a finite
error), then again with the errors the first fit predicts, which removes the bias the measured
errors give near 0 and 1. ``threshold_error`` and ``noise_error`` are the fit's 1-sigma
uncertainties.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import numpy as np

from ..errors import MissingExtraError
from .counts import ScanCounts

#: Columns of the fit table, in order.
FIT_DTYPE = np.dtype([
    ("chip_id", "u1"), ("row", "u1"), ("column", "u1"),
    ("threshold", "f8"), ("threshold_error", "f8"), ("noise", "f8"), ("noise_error", "f8"),
    ("chi2_ndf", "f8"), ("status", "U12"),
])
#: Fit status values: ``ok``; ``no_hits`` (never fired); ``always_on`` (fired at every step);
#: ``outside`` (the 50 % point lies outside the scanned range); ``failed`` (no convergence).
STATUSES = ("ok", "no_hits", "always_on", "outside", "failed")
_SQRT2 = math.sqrt(2.0)
#: Fits per pixel: the first with measured errors, then with the errors the fit predicts.
_PASSES = 4


def _scipy():
    try:
        from scipy.optimize import curve_fit
        from scipy.special import erf
    except ImportError:
        raise MissingExtraError("scipy is not installed: pip install "
                                "'astropix-hil[analysis]'") from None
    return curve_fit, erf


def scurve(x: np.ndarray, threshold: float, noise: float, rising: bool = True) -> np.ndarray:
    """Probability of a hit at ``x``: a Gaussian CDF (rising) or its complement (falling)."""
    _, erf = _scipy()
    z = (np.asarray(x, dtype=np.float64) - threshold) / (_SQRT2 * noise)
    return 0.5 * (1.0 + erf(z)) if rising else 0.5 * (1.0 - erf(z))


class PixelFit(NamedTuple):
    threshold: float
    threshold_error: float
    noise: float
    noise_error: float
    chi2_ndf: float
    status: str


def fit_scurve(values: np.ndarray, hits: np.ndarray, pulses: int,
               rising: bool = True) -> PixelFit:
    """Fit one pixel: ``hits[i]`` of ``pulses`` at ``values[i]``."""
    curve_fit, _ = _scipy()
    x = np.asarray(values, dtype=np.float64)
    k = np.clip(np.asarray(hits, dtype=np.float64), 0, pulses)
    nan = float("nan")
    if not k.any():
        return PixelFit(nan, nan, nan, nan, nan, "no_hits")
    if (k >= pulses).all():
        return PixelFit(nan, nan, nan, nan, nan, "always_on")
    frac = k / pulses
    span = float(x.max() - x.min()) or 1.0
    step = float(np.min(np.diff(np.unique(x)))) if np.unique(x).size > 1 else span
    order = np.argsort(x if rising else -x)
    ordered_x, ordered_f = x[order], frac[order]
    guess_t = float(ordered_x[np.argmax(ordered_f >= 0.5)]) if (ordered_f >= 0.5).any() \
        else float(ordered_x[-1])
    middle = (ordered_f > 0.16) & (ordered_f < 0.84)
    guess_n = max(float(np.ptp(ordered_x[middle])) / 2 if middle.sum() > 1 else step, step / 2)

    def model(xv, t, n):
        return scurve(xv, t, n, rising)

    bounds = ([x.min() - span, step * 1e-3], [x.max() + span, span * 10])
    p0 = [float(np.clip(guess_t, bounds[0][0], bounds[1][0])),
          float(np.clip(guess_n, bounds[0][1], bounds[1][1]))]
    smoothed = (k + 1) / (pulses + 2)
    sigma = np.sqrt(smoothed * (1 - smoothed) / pulses)
    try:
        for _ in range(_PASSES):
            params, cov = curve_fit(model, x, frac, p0=p0, sigma=sigma, absolute_sigma=True,
                                    bounds=bounds)
            p0 = params
            predicted = np.clip(model(x, *params), 0.5 / pulses, 1 - 0.5 / pulses)
            sigma = np.sqrt(predicted * (1 - predicted) / pulses)
    except (RuntimeError, ValueError):
        return PixelFit(nan, nan, nan, nan, nan, "failed")
    errors = np.sqrt(np.diag(cov))
    if not np.all(np.isfinite(errors)):
        return PixelFit(float(params[0]), nan, float(params[1]), nan, nan, "failed")
    # chi2 over the steps on the rise (the plateaus' errors are floored, they would dilute it).
    predicted = model(x, *params)
    rise = (predicted > 0.5 / pulses) & (predicted < 1 - 0.5 / pulses)
    ndf = max(int(rise.sum()) - 2, 1)
    chi2 = float(np.sum(((frac - predicted)[rise] / sigma[rise]) ** 2)) / ndf
    status = "ok" if x.min() <= params[0] <= x.max() else "outside"
    return PixelFit(float(params[0]), float(errors[0]), float(params[1]), float(errors[1]),
                    chi2, status)


def fit_scan(counts: ScanCounts) -> np.ndarray:
    """Fit every selected pixel (or every pixel that fired) of a scan; one row per pixel,
    dtype :data:`FIT_DTYPE`, sorted by chip, row, column."""
    definition = counts.definition
    if definition.pulses is None:
        raise ValueError("an s-curve fit needs the pulses per step (an injection count); "
                         "this scan counted noise hits without injection")
    if definition.pixels:
        pixels = sorted(set(definition.pixels))
    else:
        fired = counts.hits.sum(axis=0)
        pixels = [tuple(int(v) for v in p) for p in np.argwhere(fired)]
    values = np.asarray(definition.values)
    rising = definition.kind == "injection"
    table = np.zeros(len(pixels), dtype=FIT_DTYPE)
    for i, (chip, row, column) in enumerate(pixels):
        fit = fit_scurve(values, counts.hits[:, chip, row, column], definition.pulses, rising)
        table[i] = (chip, row, column, *fit)
    return table


def write_fit_csv(path: str | os.PathLike, table: np.ndarray) -> None:
    """The fit table as CSV (header line of column names; floats as Python's repr)."""
    with open(path, "w", encoding="utf-8", newline="") as stream:
        stream.write(",".join(FIT_DTYPE.names) + "\n")
        for row in table.tolist():
            stream.write(",".join(str(v) for v in row) + "\n")


def read_fit_csv(path: str | os.PathLike) -> np.ndarray:
    """A fit table written by :func:`write_fit_csv`."""
    with open(path, encoding="utf-8") as stream:
        names = stream.readline().strip().split(",")
        if tuple(names) != FIT_DTYPE.names:
            raise ValueError(f"{path}: columns {names} are not {list(FIT_DTYPE.names)}")
        rows = [line.rstrip("\n").split(",") for line in stream if line.strip()]
    table = np.zeros(len(rows), dtype=FIT_DTYPE)
    for i, name in enumerate(FIT_DTYPE.names):
        table[name] = [row[i] for row in rows]
    return table
