"""Bounded parsing of untrusted JSON: the depth scan agrees with the data, limits refuse."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from astropix_hil.jsontext import JsonLimitError, loads_bounded, nesting_depth

# Strings full of the characters the scan must skip: brackets, quotes, backslashes.
_TEXT = st.text(alphabet=st.sampled_from('[]{}"\\ a\n\u00e9'), max_size=8)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(_TEXT, children, max_size=3),
    max_leaves=30)


def _depth(value) -> int:
    """Nesting depth of a Python value, by its definition."""
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@given(_VALUES, st.booleans())
def test_the_depth_scan_counts_brackets_outside_strings_only(value, as_bytes):
    text = json.dumps(value, ensure_ascii=False)
    assert nesting_depth(text.encode() if as_bytes else text) == _depth(value)
    assert loads_bounded(text, max_depth=max(_depth(value), 1)) == value
    if _depth(value) > 1:
        with pytest.raises(JsonLimitError, match="nested more than"):
            loads_bounded(text, max_depth=_depth(value) - 1)


@pytest.mark.parametrize(("text", "message"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested more than 64 deep"),
    (b'{"a": NaN}', "NaN is not a JSON number"),
    (b"[Infinity]", "Infinity is not a JSON number"),
    (b"\xff", "not UTF-8"),
    (b"{", "not JSON"),
    (b" " * 2000, "more than 1000"),
])
def test_untrusted_json_is_refused_with_one_clean_error(text, message):
    with pytest.raises(JsonLimitError, match=message):
        loads_bounded(text, max_size=1000 if len(text) == 2000 else 1 << 20)


def test_non_finite_constants_may_be_allowed():
    assert math.isnan(loads_bounded('{"a": NaN}', finite=False)["a"])
