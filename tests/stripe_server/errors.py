"""Stripe's error responses.

v1 errors are `{"error": {"type", "code", "message", "param", "doc_url", "request_log_url"}}`, absent
fields left out; stripe-python picks the exception class from the HTTP status (400/404 ->
InvalidRequestError or IdempotencyError by `type`, 401 AuthenticationError, 402 CardError, 403
PermissionError, 429 RateLimitError, other -> APIError). v2 errors are `{"error": {"type", "code",
"message"}}` and stripe-python also looks at `type` (`idempotency_error`, `rate_limit`,
`temporary_session_expired`).
"""

from __future__ import annotations

DOCS = "https://stripe.com/docs"


class StripeError(Exception):
    """An error answer; raise it from a handler and the server writes Stripe's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self, api_mode: str = "v1", request_id: str | None = None) -> dict:
        if api_mode == "v2":
            error: dict = {"type": self.type, "code": self.code, "message": self.message}
            if self.param:
                error["param"] = self.param
            error.update(self.extra)
            return {"error": {k: v for k, v in error.items() if v is not None}}
        error = {
            "code": self.code,
            "doc_url": f"{DOCS}/error-codes/{self.code.replace('_', '-')}" if self.code else None,
            "message": self.message,
            "param": self.param,
            "request_log_url": (
                f"https://dashboard.stripe.com/test/logs/{request_id}" if request_id else None
            ),
            "type": self.type,
        }
        error.update(self.extra)
        return {"error": {k: v for k, v in error.items() if v is not None}}


def missing(param: str) -> StripeError:
    return StripeError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def unknown(param: str) -> StripeError:
    return StripeError(400, f"Received unknown parameter: {param}", code="parameter_unknown", param=param)


def invalid(param: str, message: str, code: str | None = None) -> StripeError:
    return StripeError(400, message, code=code, param=param)


def invalid_integer(param: str, value) -> StripeError:
    return StripeError(400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=param)


def invalid_choice(param: str, value, choices) -> StripeError:
    choices = [str(c) for c in choices]
    listed = ", ".join(choices[:-1]) + f", or {choices[-1]}" if len(choices) > 2 else " or ".join(choices)
    return StripeError(
        400, f"Invalid {param.split('[')[-1].rstrip(']')}: must be one of {listed}", param=param
    )


def no_such(kind: str, object_id: str, param: str = "id") -> StripeError:
    return StripeError(404, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def no_such_param(kind: str, object_id: str, param: str) -> StripeError:
    """A referenced object that does not exist, named in a body parameter (Stripe answers 400)."""
    return StripeError(400, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def unrecognized_url(method: str, path: str) -> StripeError:
    return StripeError(
        404,
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
        "or we can help at https://support.stripe.com/.",
    )


def rate_limited(api_mode: str = "v1") -> StripeError:
    message = (
        "Request rate limit exceeded. You can learn more about rate limits here "
        "https://stripe.com/docs/rate-limits."
    )
    if api_mode == "v2":
        return StripeError(429, message, type="rate_limit", code="rate_limit")
    return StripeError(429, message, code="rate_limit")


def api_error(status: int = 500) -> StripeError:
    return StripeError(status, "An unknown error occurred", type="api_error")
