"""Reading YAML files (chip configurations, bench configurations) with clear errors.

PyYAML is an optional extra (``yaml``); only the commands that read YAML need it. What a YAML
file holds ends up in JSON (file headers, heartbeats), so it must be JSON data of a bounded size
(:func:`~astropix_hil.jsondata.check_json_data`): no dates, no alias bombs.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import ApxHilError
from .jsondata import NotJsonDataError, check_json_data


class YamlFileError(ApxHilError):
    """A YAML file that cannot be read: PyYAML missing, file unreadable, or not YAML."""


def read_yaml(path: str | os.PathLike, what: str = "YAML file") -> Any:
    """The content of the YAML file at ``path`` (``what`` names it in error messages), checked
    to be JSON data of a bounded size."""
    try:
        import yaml
    except ImportError:
        raise YamlFileError(f"reading a {what} needs PyYAML: "
                            f"pip install 'astropix-hil[yaml]'") from None
    name = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as stream:
            content = yaml.safe_load(stream)
    except OSError as exc:
        raise YamlFileError(f"cannot read {what} {name}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise YamlFileError(f"{name}: not UTF-8 text (byte {exc.start}): not a {what}") from None
    except yaml.YAMLError as exc:
        raise YamlFileError(f"{name}: not valid YAML: {exc}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        # A value PyYAML cannot construct (an integer of 5000 digits) or nesting too deep.
        raise YamlFileError(f"{name}: unreadable {what}: {type(exc).__name__}: {exc}") from None
    try:
        check_json_data(content)
    except NotJsonDataError as exc:
        raise YamlFileError(f"{name}: {exc}") from None
    return content
