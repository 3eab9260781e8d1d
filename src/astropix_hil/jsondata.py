"""Checking that data read from a user's file (YAML, Python literals) can go into a JSON header.

A file header is JSON; what a chip configuration or a legacy log holds may not be (a YAML date,
a Python set) or may be huge once expanded (YAML aliases: a "billion laughs" file of a few
hundred bytes expands to 10^9 strings). :func:`check_json_data` refuses both before anything is
serialized, in time and memory proportional to the *distinct* objects (shared ones are sized
once), so a hostile file cannot make us expand it.
"""

from __future__ import annotations

import math
from typing import Any

#: Largest JSON text (bytes, estimated) that data read from a user's file may expand to.
MAX_JSON_BYTES = 1 << 20
#: Deepest nesting of lists and mappings (JSON encoders and decoders recurse).
MAX_DEPTH = 64
_SCALARS = (str, int, float, bool, type(None))


class NotJsonDataError(ValueError):
    """Data that cannot be stored as JSON, or that is too large; the message says where."""


def check_json_data(value: Any, max_bytes: int = MAX_JSON_BYTES,
                    max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`NotJsonDataError` unless ``value`` is JSON data (dicts with string, number,
    bool or null keys; lists and tuples; strings, numbers, bools, None) whose JSON text is at
    most about ``max_bytes``, nested at most ``max_depth`` deep. The message names the
    offending item's path (``a.b[3]``)."""
    sizes: dict[int, int] = {}
    # Iterative depth-first walk: a deep value must not exhaust the Python stack.
    stack: list[tuple[Any, str, int, bool]] = [(value, "", 0, False)]
    active: set[int] = set()
    while stack:
        item, where, depth, done = stack.pop()
        if isinstance(item, _SCALARS):
            continue
        key = id(item)
        if done:
            active.discard(key)
            children = item.items() if isinstance(item, dict) else enumerate(item)
            size = 2 + sum(_scalar_size(k) + 2 + _size(v, sizes) for k, v in children)
            if size > max_bytes:
                raise NotJsonDataError(f"{where or 'the data'} is too large: more than "
                                       f"{max_bytes} bytes as JSON")
            sizes[key] = size
            continue
        if key in sizes:
            continue
        if key in active:
            raise NotJsonDataError(f"{where or 'the data'} contains itself")
        if depth >= max_depth:
            raise NotJsonDataError(f"the data is nested more than {max_depth} deep")
        if isinstance(item, dict):
            for k in item:
                if not isinstance(k, _SCALARS):
                    raise NotJsonDataError(f"{where or 'the data'}: key {_show(k)} is a "
                                           f"{type(k).__name__}, not a string")
            children_of = [(v, f"{where}.{k}" if where else str(k)) for k, v in item.items()]
        elif isinstance(item, (list, tuple)):
            children_of = [(v, f"{where}[{i}]") for i, v in enumerate(item)]
        else:
            raise NotJsonDataError(f"{where or 'the data'} is a {type(item).__name__} "
                                   f"({_show(item)}), not a JSON value (quote it as a string)")
        active.add(key)
        stack.append((item, where, depth, True))
        stack.extend((child, path, depth + 1, False) for child, path in reversed(children_of))


def _size(value: Any, sizes: dict[int, int]) -> int:
    return sizes[id(value)] if id(value) in sizes else _scalar_size(value)


def _scalar_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, float) and not math.isfinite(value):
        return 9
    if isinstance(value, int):
        return value.bit_length() // 3 + 2  # at least its decimal digits and a sign
    return 24


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
