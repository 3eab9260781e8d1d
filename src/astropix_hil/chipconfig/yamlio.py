"""The team's v4 YAML files <-> :class:`~.model.ChipConfiguration` (spec §4.1).

:func:`from_mapping` and :func:`to_mapping` are pure; :func:`load_config` reads a file and
:func:`load_default` the bundled configuration (package data).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from typing import Any

from ..yamlfile import read_yaml
from .model import (
    TDAC_DEFAULT_ROW,
    TDAC_ROW_BITS,
    VOLTAGE_CARD_DEFAULT,
    VOLTAGE_CARD_SLOT,
    ChipConfigError,
    ChipConfiguration,
    Field,
    VoltageCard,
)

CHIP_KEY = "astropix4"
#: Bundled configurations (package data, our own files in the team's schema).
DEFAULT_CONFIG = "default_v4.yml"
NONE_CONFIG = "config_v4_none.yml"
#: Rows the team's v4 files write TDAC images for when a file has none (spec §4.5).
DEFAULT_TDAC_ROWS = 13


def _field(where: str, item: Any) -> Field:
    if not (isinstance(item, list | tuple) and len(item) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
        raise ChipConfigError(f"{where}: expected [width, value] integers, got {item!r}")
    try:
        return Field(int(item[0]), int(item[1]))
    except ChipConfigError as exc:
        raise ChipConfigError(f"{where}: {exc}") from None


def from_mapping(content: Any, where: str = "configuration") -> ChipConfiguration:
    """A configuration from the parsed YAML content (``{'astropix4': {...}}``)."""
    if not isinstance(content, Mapping) or CHIP_KEY not in content:
        raise ChipConfigError(f"{where}: no top-level '{CHIP_KEY}' key (not a v4 chip "
                              f"configuration)")
    chip = content[CHIP_KEY]
    if not isinstance(chip, Mapping) or not isinstance(chip.get("config"), Mapping):
        raise ChipConfigError(f"{where}: '{CHIP_KEY}.config' is missing or not a mapping")
    groups: dict[str, dict[str, Field]] = {}
    for group, fields in chip["config"].items():
        if not isinstance(fields, Mapping):
            raise ChipConfigError(f"{where}: config.{group} is not a mapping of fields")
        groups[str(group)] = {str(name): _field(f"{where}: config.{group}.{name}", item)
                              for name, item in fields.items()}
    rows: dict[int, int] = {}
    tdac = chip.get("tdac_config")
    if tdac is None:
        rows = dict.fromkeys(range(DEFAULT_TDAC_ROWS), TDAC_DEFAULT_ROW)
    elif isinstance(tdac, Mapping):
        for name, item in tdac.items():
            if not (isinstance(name, str) and name.startswith("row") and name[3:].isdigit()):
                raise ChipConfigError(f"{where}: tdac_config.{name}: expected row<N>")
            value = _field(f"{where}: tdac_config.{name}", item)
            if value.width != TDAC_ROW_BITS:
                raise ChipConfigError(f"{where}: tdac_config.{name}: a row image has "
                                      f"{TDAC_ROW_BITS} bits, not {value.width}")
            rows[int(name[3:])] = value.value
    else:
        raise ChipConfigError(f"{where}: tdac_config is not a mapping")
    card = VoltageCard(VOLTAGE_CARD_SLOT, list(VOLTAGE_CARD_DEFAULT))
    inj_slot = 3
    cards = chip.get("configcards") or {}
    if isinstance(cards, Mapping) and isinstance(cards.get("voltagecard"), Mapping):
        vc = cards["voltagecard"]
        try:
            card = VoltageCard(int(vc.get("pos", VOLTAGE_CARD_SLOT)),
                               [float(v) for v in vc.get("dacs", VOLTAGE_CARD_DEFAULT)])
        except (TypeError, ValueError):
            raise ChipConfigError(f"{where}: configcards.voltagecard: pos must be an integer "
                                  f"and dacs a list of volts") from None
    if isinstance(cards, Mapping) and isinstance(cards.get("injectioncard"), Mapping):
        inj_slot = int(cards["injectioncard"].get("pos", 3))
    geometry = chip.get("geometry") or {}
    try:
        geom = (int(geometry.get("cols", 16)), int(geometry.get("rows", 35)))
    except (TypeError, ValueError, AttributeError):
        raise ChipConfigError(f"{where}: geometry.cols/rows must be integers") from None
    return ChipConfiguration(groups, rows, card, inj_slot, geom, CHIP_KEY)


def to_mapping(config: ChipConfiguration) -> dict[str, Any]:
    """The YAML content of ``config`` in the team's schema (JSON-able: stored in headers)."""
    return {CHIP_KEY: {
        "geometry": {"cols": config.geometry[0], "rows": config.geometry[1]},
        "configcards": {"voltagecard": {"pos": config.voltage_card.slot,
                                        "dacs": list(config.voltage_card.dacs)},
                        "injectioncard": {"pos": config.injection_card_slot}},
        "config": {g: {n: [f.width, f.value] for n, f in fields.items()}
                   for g, fields in config.groups.items()},
        "tdac_config": {f"row{r}": [TDAC_ROW_BITS, v] for r, v in config.tdac_rows.items()},
    }}


def load_config(path: str | os.PathLike) -> ChipConfiguration:
    """Read a v4 YAML configuration file (one clear error naming the problem if it is not)."""
    return from_mapping(read_yaml(path, "chip configuration"), os.fspath(path))


def load_bundled(name: str = DEFAULT_CONFIG) -> ChipConfiguration:
    """A configuration shipped with the package: ``default_v4.yml`` (the DAQ's default:
    injection into row 0, column 9) or ``config_v4_none.yml`` (every comparator off)."""
    ref = resources.files(__package__).joinpath("data", name)
    with resources.as_file(ref) as path:
        return load_config(path)


def load_default() -> ChipConfiguration:
    """The DAQ's default configuration (:data:`DEFAULT_CONFIG`)."""
    return load_bundled(DEFAULT_CONFIG)
