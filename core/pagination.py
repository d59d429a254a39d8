"""Offset pagination of the API's lists (`?limit=&offset=`, answered as `count`, `next`, `results`),
one implementation for every list."""

from __future__ import annotations

from dataclasses import dataclass

MAX_OFFSET = 2**31 - 1  # an offset query parameter's maximum (what PostgreSQL's OFFSET takes)


@dataclass(frozen=True)
class Page:
    rows: list
    count: int
    next: str | None  # the absolute URL of the next page, None on the last


def offset_page(request, queryset, *, limit: int, offset: int) -> Page:
    """One page of `queryset` (two queries: the count and the rows) and the URL of the next page,
    which keeps the request's other query parameters."""
    count = queryset.count()
    rows = list(queryset[offset : offset + limit])
    next_url = None
    if offset + limit < count:
        params = request.query_params.copy()
        params["offset"] = str(offset + limit)
        params["limit"] = str(limit)
        next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
    return Page(rows=rows, count=count, next=next_url)
