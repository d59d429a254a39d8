"""OpenAPI pieces shared by the API's operations: the one error shape (a component, added by
SPECTACULAR_SETTINGS["APPEND_COMPONENTS"]) and the responses that reference it. No Django imports
at module level: settings import it."""

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every 4xx and 5xx answer of the API.",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "description": "Machine-readable: invalid, throttled, ..."},
                "message": {"type": "string", "description": "What went wrong, for a person."},
                "fields": {
                    "type": "object",
                    "description": "Only for code `invalid`: each field's problems as a list of messages "
                    "(a batch of events: `events` maps each bad event's index to its fields).",
                },
            },
        }
    },
}
ERROR_DESCRIPTIONS = {
    400: "The request is invalid (see `fields`), or its body is not JSON or nested too deeply.",
    401: "No API key, or one that is malformed, wrong, expired or revoked.",
    403: "The key's tenant is suspended, or the key may not call this endpoint (a tenant key where a "
    "platform key is needed, a platform key without the scope).",
    404: "No such endpoint.",
    409: "The request conflicts with the current state.",
    413: "The body is too large.",
    415: "The body is not application/json.",
    429: "Too many requests for this key; see Retry-After.",
    502: "Stripe refused the request or did not answer.",
    503: "Stripe is not configured or billing is not set up.",
}


def error_responses(*statuses: int) -> dict:
    """drf-spectacular `responses` entries for the given error statuses, all in the error shape."""
    from drf_spectacular.utils import OpenApiResponse

    return {
        status: OpenApiResponse(
            response={"$ref": "#/components/schemas/Error"}, description=ERROR_DESCRIPTIONS[status]
        )
        for status in statuses
    }
