"""Stripe's form encoding: `a[b]=c`, `a[0][b]=c` and `a[]=c` bracket syntax, both ways.

Stripe's v1 API takes `application/x-www-form-urlencoded` bodies (and query strings for GET and
DELETE) whose keys carry nesting in square brackets. stripe-python writes lists as `key[0]`,
`key[1]`, ... (see `stripe._encode._api_encode`); curl users often write `key[]`. Both are read here.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote

from .errors import StripeError

# Keys below which digit-only sub-keys stay dictionary keys instead of becoming list positions.
_MAP_PARENTS = frozenset({"metadata", "payload"})


def split_key(key: str) -> list[str]:
    """`a[b][0][]` -> ["a", "b", "0", ""]; a key without brackets is a single part."""
    start = key.find("[")
    if start <= 0 or not key.endswith("]"):
        return [key]
    parts = [key[:start]]
    rest = key[start:]
    while rest:
        if not rest.startswith("["):
            return [key]
        end = rest.find("]")
        if end < 0:
            return [key]
        parts.append(rest[1:end])
        rest = rest[end + 1 :]
    return parts


def _conflict(path: list[str]) -> StripeError:
    name = path[0] + "".join(f"[{p}]" for p in path[1:])
    return StripeError(400, f"Invalid hash: {name} was given both a value and nested keys.", param=name)


def _insert(container: dict, parts: list[str], value: str, path: list[str]) -> None:
    head = parts[0]
    if len(parts) == 1:
        if head in container and isinstance(container[head], (dict, list)):
            raise _conflict(path)
        container[head] = value
        return
    nxt = parts[1]
    if nxt == "":  # append syntax: a[]=x or a[][b]=x
        current = container.setdefault(head, [])
        if not isinstance(current, list):
            raise _conflict(path)
        if len(parts) == 2:
            current.append(value)
            return
        # a[][b]=1&a[][c]=2 fills one element until a key repeats (Rack's rule).
        if not current or not isinstance(current[-1], dict) or parts[2] in current[-1]:
            current.append({})
        _insert(current[-1], parts[2:], value, path)
        return
    current = container.setdefault(head, {})
    if not isinstance(current, dict):
        raise _conflict(path)
    _insert(current, parts[1:], value, path)


def _listify(value, parent: str | None = None):
    if isinstance(value, list):
        return [_listify(v) for v in value]
    if not isinstance(value, dict):
        return value
    converted = {k: _listify(v, k) for k, v in value.items()}
    if converted and parent not in _MAP_PARENTS and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def parse_form(text: str) -> dict:
    """Parse a form body or query string into nested dicts and lists of strings."""
    root: dict = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        parts = split_key(key)
        _insert(root, parts, value, parts)
    return _listify(root)


def encode_form(params: dict) -> str:
    """The inverse of `parse_form`, with stripe-python's conventions (lists as `key[0]`)."""
    pairs: list[tuple[str, str]] = []

    def walk(prefix: str, value) -> None:
        if value is None:
            return
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}[{k}]" if prefix else str(k), v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}[{i}]", v)
        elif isinstance(value, bool):
            pairs.append((prefix, "true" if value else "false"))
        else:
            pairs.append((prefix, str(value)))

    walk("", params)
    return "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in pairs)
