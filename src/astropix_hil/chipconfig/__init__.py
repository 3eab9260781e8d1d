"""AstroPix4 chip configuration: load the team's v4 YAML files, edit, encode, decode.

* :mod:`.model`: :class:`ChipConfiguration` (fields in shift order, TDAC rows, voltage card)
  and its edits (:meth:`~ChipConfiguration.enable_pixel`,
  :meth:`~ChipConfiguration.enable_injection`, :meth:`~ChipConfiguration.set_threshold`);
* :mod:`.yamlio`: YAML files <-> configurations, the bundled configurations;
* :mod:`.vector`: the 852-bit main vector and the TDAC row vectors, both ways;
* :mod:`.streams`: register-0x00 and voltage-card (0x0C) bit-bang requests;
* :mod:`.patgen`: the injection pattern generator (0x02-0x07);
* :mod:`.sequence`: the team's start-up sequence as data;
* :mod:`.configure`: the thin shell playing it on a board link.
"""

from .model import ChipConfigError, ChipConfiguration, Field, VoltageCard
from .patgen import PatternGenerator
from .sequence import StartupOptions, startup_sequence
from .streams import config_request, tdac_request, voltage_request
from .vector import decode_main_vector, main_vector, tdac_row_vector
from .yamlio import from_mapping, load_bundled, load_config, load_default, to_mapping

__all__ = [
    "ChipConfigError",
    "ChipConfiguration",
    "Field",
    "PatternGenerator",
    "StartupOptions",
    "VoltageCard",
    "config_request",
    "decode_main_vector",
    "from_mapping",
    "load_bundled",
    "load_config",
    "load_default",
    "main_vector",
    "startup_sequence",
    "tdac_request",
    "tdac_row_vector",
    "to_mapping",
    "voltage_request",
]
