"""The request context handlers receive and the route table they register in."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .state import State


@dataclass
class Ctx:
    state: State
    server: Any
    method: str
    path: str
    params: dict
    headers: dict[str, str]  # lower-cased names
    request_id: str
    idempotency_key: str | None
    api_mode: str  # "v1" or "v2"
    token: str
    path_args: dict[str, str] = field(default_factory=dict)

    @property
    def expand(self) -> list[str]:
        value = self.params.get("expand") or []
        return [value] if isinstance(value, str) else list(value)

    def render(self, obj) -> dict:
        return self.state.render(obj, self.expand)

    def request_info(self) -> dict:
        return {"id": self.request_id, "idempotency_key": self.idempotency_key}

    def emit(self, event_type: str, obj: dict, previous: dict | None = None) -> dict:
        return self.state.emit(event_type, obj, previous, self.request_info())

    def now(self) -> int:
        return self.state.now_int()


@dataclass
class Route:
    method: str
    pattern: re.Pattern
    handler: Callable[[Ctx], Any]
    params: str | None  # stripe-python params module used to check the request, if any
    api_mode: str
    name: str


ROUTES: list[Route] = []


def route(method: str, path: str, params: str | None = None) -> Callable:
    """Register a handler. `path` uses `{name}` placeholders; `params` names the stripe-python
    module whose TypedDict describes the request (relative to `stripe.params.`)."""
    regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$"
    api_mode = "v2" if path.startswith("/v2/") else "v1"

    def register(fn: Callable) -> Callable:
        ROUTES.append(
            Route(
                method, re.compile(regex), fn, f"stripe.params.{params}" if params else None, api_mode, path
            )
        )
        return fn

    return register


def match(method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
    """(route, path args, path known for another method). A literal segment wins over a placeholder:
    `POST /v1/invoices/create_preview` is not `POST /v1/invoices/{id}`."""
    known = False
    best: tuple[int, Route, dict[str, str]] | None = None
    for r in ROUTES:
        m = r.pattern.match(path)
        if m:
            if r.method == method and (best is None or len(m.groupdict()) < best[0]):
                best = (len(m.groupdict()), r, m.groupdict())
            known = True
    if best is not None:
        return best[1], best[2], True
    return None, {}, known
