"""A local Stripe API server for tests: `StripeServer` (see server.py and README.md here)."""

from .server import Fault, RequestRecord, StripeServer, WebhookDelivery, sign

__all__ = ["Fault", "RequestRecord", "StripeServer", "WebhookDelivery", "sign"]
