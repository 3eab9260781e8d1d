"""Reading YAML files (chip configurations, bench configurations) with clear errors.

PyYAML is an optional extra (``yaml``); only the commands that read YAML need it.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import ApxHilError


class YamlFileError(ApxHilError):
    """A YAML file that cannot be read: PyYAML missing, file unreadable, or not YAML."""


def read_yaml(path: str | os.PathLike, what: str = "YAML file") -> Any:
    """The content of the YAML file at ``path`` (``what`` names it in error messages)."""
    try:
        import yaml
    except ImportError:
        raise YamlFileError(f"reading a {what} needs PyYAML: "
                            f"pip install 'astropix-hil[yaml]'") from None
    try:
        with open(path, encoding="utf-8") as stream:
            return yaml.safe_load(stream)
    except OSError as exc:
        raise YamlFileError(f"cannot read {what} {os.fspath(path)}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise YamlFileError(f"{os.fspath(path)}: not valid YAML: {exc}") from None
