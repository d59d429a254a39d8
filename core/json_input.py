"""Checks of decoded JSON from outside that the database, the JSON renderer or Python itself would
trip over later: NUL characters (PostgreSQL's text and jsonb refuse them), unpaired surrogates
(`"\\ud800"` decodes to a str that cannot be encoded as UTF-8), non-finite numbers (`1e400` decodes
to inf, which is not JSON) and deep nesting (recursion in encoders and walkers).

`json_problem` walks iteratively, so it never recurses itself, and returns the first problem as a
message (None when the value is fine). `text_problem` checks one string.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal

import msgspec

# Unpaired surrogates (json.loads lets "\ud800" through) and NUL.
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why a string from outside cannot be stored, or None."""
    match = _BAD_TEXT.search(value)
    if match is None:
        return None
    if match.group() == "\x00":
        return "must not contain NUL characters (\\u0000)"
    return "must not contain unpaired surrogates (\\ud800-\\udfff): it must be valid Unicode text"


def _nodes(value):
    """Every value inside a decoded JSON value with its depth (the value itself is 1), without
    recursion; a consumer that stops early leaves the rest unvisited."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        yield item, depth
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def json_problem(value, *, max_depth: int) -> str | None:
    """Why a decoded JSON value cannot be stored, or None. Depth 1 is the value itself; each object
    or array adds a level."""
    for item, depth in _nodes(value):
        if isinstance(item, str):
            if (problem := text_problem(item)) is not None:
                return problem
        elif isinstance(item, (float, Decimal)):
            if not (item.is_finite() if isinstance(item, Decimal) else math.isfinite(item)):
                return "must not hold infinite or NaN numbers"
        elif isinstance(item, (dict, list)):
            if depth > max_depth:
                return f"is nested more than {max_depth} levels deep"
            if isinstance(item, dict):
                for key in item:
                    if (problem := text_problem(key)) is not None:
                        return f"has a key that {problem}"
    return None


def printable(text: str, limit: int = 100) -> str:
    """`text` safe to echo in an error body: repr() when it holds anything a JSON encoder to UTF-8
    or a log line would choke on, else as is."""
    text = text[:limit]
    if _BAD_TEXT.search(text) or not text.isprintable():
        return repr(text)
    return text


def nesting_exceeds(value, max_depth: int) -> bool:
    """Whether a decoded JSON value has objects or arrays more than `max_depth` levels deep."""
    return any(isinstance(item, (dict, list)) and depth > max_depth for item, depth in _nodes(value))


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a number")


def json_loads_exact(text: str | bytes):
    """JSON as usage input is read: numbers with a point as exact Decimals, NaN and Infinity refused
    (ValueError). A body nested beyond the decoder's recursion raises RecursionError."""
    return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)


# msgspec's decoder (C, about 4x json.loads with Decimals on an ingestion batch); a JSON number with a
# point or an exponent comes to float_hook as its text, so it is the same exact Decimal.
_fast_decode = msgspec.json.Decoder(float_hook=Decimal).decode


def json_loads_exact_fast(body: bytes):
    """json_loads_exact(body), faster for the bodies that are plain UTF-8 JSON.

    msgspec refuses some bodies that json.loads accepts (a UTF-8 BOM, UTF-16, NaN, unpaired
    surrogates such as `"\\ud800"`, which the checks above answer per field) and words its errors
    differently; on any refusal the body goes through json_loads_exact, so the result, or the
    error and its message, is exactly json_loads_exact's. Where msgspec accepts, it decodes what
    json_loads_exact would: the same dicts (the last of repeated keys wins), lists, str, int of any
    size, Decimal, bool and None (metering/tests/test_json_fast.py compares both).
    """
    try:
        return _fast_decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeError, ValueError):
        return json_loads_exact(body)
