"""The event types the platform sends to the SaaS's own webhook endpoints, each with what it means.

An endpoint subscribes to some of them, or to all (`ALL_EVENTS`, "*": every type, including types
added later). docs/integrations.md ("Outgoing webhooks") lists them with their data.
"""

from __future__ import annotations

ALL_EVENTS = "*"

EVENT_TYPES: dict[str, str] = {
    "tenant.created": "A tenant was created.",
    "tenant.updated": "A tenant's name, free allowance or other details changed.",
    "tenant.suspended": "A tenant was suspended: its API keys are refused.",
    "tenant.reactivated": "A suspended tenant was reactivated.",
    "tenant.plan_changed": "A tenant moved between the free and the metered plan.",
    "usage.threshold_crossed": "A tenant's usage of a meter crossed a configured threshold this period.",
    "payment.succeeded": "A tenant's invoice or payment was paid.",
    "payment.failed": "A tenant's invoice payment or payment intent failed.",
    "payment.action_required": "A tenant's payment needs the customer's action (e.g. 3-D Secure).",
    "subscription.created": "A tenant's Stripe subscription was created.",
    "subscription.updated": "A tenant's Stripe subscription changed.",
    "subscription.canceled": "A tenant's subscription was canceled by the customer or an operator.",
    "subscription.expired": "A tenant's subscription ended by non-payment or at the end of its period.",
    "budget.alert": "An AWS cost budget crossed one of its thresholds.",
}


def event_types_validate(types) -> list[str]:
    """The subscribed types, in order and without repeats; ValueError naming any unknown type.

    `["*"]` subscribes to every type. At least one type is required.
    """
    if isinstance(types, str) or not isinstance(types, list | tuple):
        raise ValueError("Give a list of event types.")
    cleaned: list[str] = []
    for name in types:
        if not isinstance(name, str):
            raise ValueError("Each event type is a string.")
        name = name.strip()
        if name != ALL_EVENTS and name not in EVENT_TYPES:
            shown = name if len(name) <= 32 else name[:32] + "…"
            raise ValueError(f"Unknown event type {shown!r}; known: {', '.join(EVENT_TYPES)}, or '*'.")
        if name not in cleaned:
            cleaned.append(name)
    if not cleaned:
        raise ValueError("Subscribe to at least one event type (or '*' for all).")
    if ALL_EVENTS in cleaned:
        return [ALL_EVENTS]
    return cleaned
