"""Stripe's Search Query Language (https://docs.stripe.com/search#search-query-language).

A query is up to 10 clauses joined by `AND` or by `OR` (not both). A clause is
`field:value` (exact match), `field~value` (substring, at least 3 characters), `field>value`,
`field<value`, `field>=value`, `field<=value` (numbers and timestamps), with an optional leading
`-` for negation. Metadata is addressed as `metadata['key']`. String values are quoted with single
or double quotes; numbers are bare; `null` matches a missing value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import StripeError

# Query fields per resource, with their types (docs.stripe.com/search#query-fields-for-...).
FIELDS: dict[str, dict[str, str]] = {
    "customers": {
        "created": "number",
        "email": "token",
        "metadata": "metadata",
        "name": "string",
        "phone": "string",
    },
    "products": {
        "active": "boolean",
        "description": "string",
        "metadata": "metadata",
        "name": "string",
        "shippable": "boolean",
        "url": "string",
    },
    "prices": {
        "active": "boolean",
        "currency": "string",
        "lookup_key": "string",
        "metadata": "metadata",
        "product": "string",
        "type": "string",
    },
    "subscriptions": {"created": "number", "metadata": "metadata", "status": "string"},
    "invoices": {
        "created": "number",
        "currency": "string",
        "customer": "string",
        "metadata": "metadata",
        "number": "string",
        "receipt_number": "string",
        "status": "string",
        "subscription": "string",
        "total": "number",
    },
}

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<neg>-)?
        (?P<field>metadata\[\s*(?P<mq>['"])(?P<mkey>.*?)(?P=mq)\s*\]|[a-z_][a-z_0-9.]*)
        \s*(?P<op>>=|<=|:|~|>|<)\s*
        (?:(?P<q>['"])(?P<sval>(?:\\.|(?!(?P=q)).)*)(?P=q)|(?P<bare>[^\s'"()]+))
    )""",
    re.VERBOSE,
)
_JOIN = re.compile(r"\s+(AND|OR)\s+")


@dataclass
class Clause:
    field: str
    metadata_key: str | None
    op: str
    value: str | None  # None for the bare word null
    quoted: bool
    negated: bool


def _error(message: str) -> StripeError:
    return StripeError(400, message, param="query")


def parse(query: str, resource: str) -> tuple[str, list[Clause]]:
    fields = FIELDS[resource]
    text = query.strip()
    if not text:
        raise _error("The query is empty. Provide a search query, for example email:'jenny@example.com'.")
    clauses: list[Clause] = []
    joiners: set[str] = set()
    pos = 0
    while True:
        m = _TOKEN.match(text, pos)
        if not m:
            raise _error(
                f"We were unable to parse your search query. Try checking the syntax near `{text[pos:]}`."
            )
        field = "metadata" if m.group("mkey") is not None else m.group("field")
        if field not in fields:
            raise _error(
                f"Field `{field}` is an unsupported search field for resource `{resource}`. "
                f"See https://stripe.com/docs/search#query-fields-for-{resource.replace('_', '-')} "
                "for a list of supported fields."
            )
        if field == "metadata" and m.group("mkey") is None:
            raise _error("Metadata must be queried by key, for example metadata['key']:'value'.")
        bare = m.group("bare")
        sval = m.group("sval")
        if bare is not None and bare == "null":
            value, quoted = None, False
        elif sval is not None:
            value, quoted = sval.replace("\\'", "'").replace('\\"', '"'), True
        else:
            value, quoted = bare, False
        op = m.group("op")
        kind = fields[field]
        if op in (">", "<", ">=", "<=") and kind != "number":
            raise _error(f"Field `{field}` does not support the comparison operator `{op}`.")
        if op == "~" and (value is None or len(value) < 3):
            raise _error("Substring matching (`~`) requires at least 3 characters.")
        if kind in ("string", "token", "metadata") and value is not None and not quoted:
            raise _error(f"The value for `{field}` must be quoted, for example {field}:'value'.")
        clauses.append(Clause(field, m.group("mkey"), op, value, quoted, bool(m.group("neg"))))
        pos = m.end()
        if pos >= len(text.rstrip()):
            break
        j = _JOIN.match(text, pos)
        if not j:
            raise _error(
                f"We were unable to parse your search query. Try checking the syntax near `{text[pos:]}`."
            )
        joiners.add(j.group(1))
        pos = j.end()
    if len(joiners) > 1:
        raise _error("Search queries cannot combine `AND` and `OR`; use one of them throughout.")
    if len(clauses) > 10:
        raise _error("Search queries are limited to 10 clauses.")
    return (joiners.pop() if joiners else "AND"), clauses


def _number(value: str | None):
    try:
        return float(value) if value is not None else None
    except ValueError:
        raise _error(f"`{value}` is not a number.") from None


def _clause_matches(obj: dict, c: Clause, kind: str) -> bool:
    actual = (obj.get("metadata") or {}).get(c.metadata_key) if c.field == "metadata" else obj.get(c.field)
    if c.value is None:
        return actual in (None, "")
    if actual is None:
        return False
    if kind == "number":
        left, right = float(actual), _number(c.value)
        return {
            ":": left == right,
            ">": left > right,
            "<": left < right,
            ">=": left >= right,
            "<=": left <= right,
            "~": str(c.value) in str(actual),
        }[c.op]
    if kind == "boolean":
        return str(actual).lower() == str(c.value).lower()
    actual_s = str(actual)
    if c.op == "~":
        return c.value.lower() in actual_s.lower()
    if kind == "metadata":
        return actual_s == c.value
    return actual_s.lower() == c.value.lower()


def matches(obj: dict, joiner: str, clauses: list[Clause], resource: str) -> bool:
    fields = FIELDS[resource]
    results = []
    for c in clauses:
        hit = _clause_matches(obj, c, fields[c.field])
        results.append(not hit if c.negated else hit)
    return all(results) if joiner == "AND" else any(results)
