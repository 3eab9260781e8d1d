"""Parsing JSON text that came from someone else (a datagram, a network peer) within bounds.

:func:`json.loads` recurses once per nesting level: a few kilobytes of ``[[[[...`` raise
:class:`RecursionError` (or exhaust the stack) instead of a clean error, and ``NaN``,
``Infinity`` and ``-Infinity``, which are not JSON, come back as floats that slip past
numeric range checks (``nan > cap`` is false). :func:`loads_bounded` checks the size and the
nesting depth before parsing (one linear scan, no recursion) and refuses those constants.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: Deepest nesting of arrays and objects accepted by default.
MAX_DEPTH = 64
#: Largest text accepted by default (bytes or characters).
MAX_SIZE = 1 << 20

# Strings (with their escapes) and the brackets outside them, in order.
_TOKENS = re.compile(rb'"(?:[^"\\]+|\\.)*"?|[\[\]{}]', re.DOTALL)


class JsonLimitError(ValueError):
    """JSON text that is malformed, too large, too deep, or holds a non-finite number."""


def nesting_depth(text: bytes | str, stop: int | None = None) -> int:
    """The deepest nesting of arrays and objects in ``text`` (brackets inside strings do not
    count); malformed text gives a depth all the same, the parser refuses it later. With
    ``stop``, the scan ends as soon as the depth exceeds it."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if stop is not None and data.count(b"[") + data.count(b"{") <= stop:
        return 0  # cannot be deeper than the brackets it holds: no need to scan
    depth = deepest = 0
    for match in _TOKENS.finditer(data):
        first = data[match.start()]
        if first == 0x5B or first == 0x7B:  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop is not None and deepest > stop:
                    break
        elif first == 0x5D or first == 0x7D:  # ] }
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise JsonLimitError(f"{name} is not a JSON number")


def loads_bounded(text: bytes | str, *, max_depth: int = MAX_DEPTH,
                  max_size: int = MAX_SIZE, finite: bool = True) -> Any:
    """``json.loads(text)`` for untrusted text: raise :class:`JsonLimitError` (one line, no
    traceback-worthy recursion) when it is longer than ``max_size``, nested deeper than
    ``max_depth``, not UTF-8 JSON, or (with ``finite``) holds ``NaN``/``Infinity``."""
    if len(text) > max_size:
        raise JsonLimitError(f"{len(text)} bytes of JSON, more than {max_size}")
    if nesting_depth(text, stop=max_depth) > max_depth:
        raise JsonLimitError(f"JSON nested more than {max_depth} deep")
    try:
        if isinstance(text, bytes | bytearray | memoryview):
            text = bytes(text).decode("utf-8")
        return json.loads(text, parse_constant=_no_constant if finite else None)
    except UnicodeDecodeError as exc:
        raise JsonLimitError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise JsonLimitError(f"not JSON: {exc}") from None
    except RecursionError:  # a stack already deep when called: still one clean error
        raise JsonLimitError("JSON nested too deep to parse") from None


__all__ = ["MAX_DEPTH", "MAX_SIZE", "JsonLimitError", "loads_bounded", "nesting_depth"]
