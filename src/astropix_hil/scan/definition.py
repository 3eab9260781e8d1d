"""How a scan run is stored in one ``.apx`` file.

The JSON header carries the scan definition under the key ``scan`` (:class:`ScanDefinition`):
its kind, the parameter stepped and its values in order, the pulses injected per step, the
pixels selected. Readouts are tagged with their step by their readout id: the readouts of step
``k`` have ids ``k * readout_id_stride`` upwards (``readout_id // readout_id_stride == k``), so a
run stays a plain ``.apx`` file every tool reads, and the step of any readout (or hit: hits
carry their readout's id) is known without an index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import FormatError

#: Header key of the scan definition.
SCAN_KEY = "scan"
#: Kinds of scan: the hit fraction rises with the injection amplitude and falls with the
#: comparator threshold.
KINDS = ("injection", "threshold")
#: Default readout-id stride: a step holds up to 2**20 readouts, a run up to 4096 steps.
DEFAULT_STRIDE = 1 << 20


@dataclass(frozen=True)
class ScanDefinition:
    """A scan as its run's header records it."""

    kind: str
    #: The parameter stepped (e.g. ``injection_amplitude``, ``threshold``) and its unit.
    parameter: str
    unit: str
    #: The value of each step, in the order they were taken.
    values: tuple[float, ...]
    #: Injection pulses per step (the denominator of the hit fraction); None when counting
    #: noise hits without injection.
    pulses: int | None
    #: Selected pixels, each ``(chip_id, row, column)``; empty: every pixel that fired.
    pixels: tuple[tuple[int, int, int], ...] = ()
    readout_id_stride: int = DEFAULT_STRIDE
    #: Anything else the acquisition wants to keep (board settings, chip configuration).
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"scan kind {self.kind!r} is not one of {KINDS}")
        if not self.values:
            raise ValueError("a scan needs at least one step")
        if self.pulses is not None and self.pulses < 1:
            raise ValueError(f"pulses per step must be positive, not {self.pulses}")
        if self.readout_id_stride < 1 or len(self.values) * self.readout_id_stride > 1 << 32:
            raise ValueError("steps x readout_id_stride must fit the 32-bit readout id")

    @classmethod
    def steps(cls, kind: str, parameter: str, unit: str, start: float, stop: float,
              step: float, pulses: int | None, **kwargs: Any) -> ScanDefinition:
        """The scan from ``start`` to ``stop`` (included) by ``step``."""
        if step == 0 or (stop - start) / step < 0:
            raise ValueError(f"cannot step from {start} to {stop} by {step}")
        count = int(np.floor((stop - start) / step + 1e-9)) + 1
        values = tuple(float(v) for v in np.round(start + step * np.arange(count), 12))
        return cls(kind, parameter, unit, values, pulses, **kwargs)

    def first_readout_id(self, step: int) -> int:
        """Readout id of the first readout of step ``step``."""
        return step * self.readout_id_stride

    def step_of(self, readout_ids: np.ndarray) -> np.ndarray:
        """The step index of each readout id."""
        return np.asarray(readout_ids, dtype=np.int64) // self.readout_id_stride

    def to_header(self) -> dict[str, Any]:
        """The ``scan`` entry of the run header (plain JSON)."""
        data = asdict(self)
        data["values"] = list(self.values)
        data["pixels"] = [list(p) for p in self.pixels]
        return data

    @classmethod
    def from_header(cls, header: Mapping[str, Any], path: str | None = None) -> ScanDefinition:
        """The definition in a run header; a :class:`FormatError` if there is none or it is
        not one."""
        entry = header.get(SCAN_KEY)
        if not isinstance(entry, Mapping):
            raise FormatError("not a scan run: the header has no 'scan' definition", path)
        try:
            return cls(kind=entry["kind"], parameter=entry["parameter"], unit=entry["unit"],
                       values=tuple(float(v) for v in entry["values"]),
                       pulses=None if entry.get("pulses") is None else int(entry["pulses"]),
                       pixels=tuple(_pixel(p) for p in entry.get("pixels") or ()),
                       readout_id_stride=int(entry.get("readout_id_stride", DEFAULT_STRIDE)),
                       settings=dict(entry.get("settings") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"bad scan definition in the header: {exc}", path) from None


def _pixel(value: Sequence[int]) -> tuple[int, int, int]:
    chip, row, column = (int(v) for v in value)
    return chip, row, column
