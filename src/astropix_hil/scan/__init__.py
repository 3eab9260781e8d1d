"""Scans: how a scan run is stored (:mod:`.definition`), hits per pixel per step
(:mod:`.counts`), s-curve fits (:mod:`.fit`, scipy: the ``[analysis]`` extra) and their plots
(:mod:`.plots`, matplotlib: ``[plot]``)."""

from __future__ import annotations

from .counts import ScanCounts, count_scan
from .definition import SCAN_KEY, ScanDefinition

__all__ = ["SCAN_KEY", "ScanCounts", "ScanDefinition", "count_scan"]
