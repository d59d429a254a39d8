"""What every page's header says about Stripe (templates/admin/base_site.html)."""

from stripe_sync.client import stripe_configured, stripe_is_local_sandbox, stripe_mode


def stripe_status(request) -> dict:
    return {
        "stripe_mode": stripe_mode(),
        "stripe_sandbox": stripe_configured() and stripe_is_local_sandbox(),
        "stripe_configured": stripe_configured(),
    }
