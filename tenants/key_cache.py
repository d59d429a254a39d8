"""A few seconds of per-process memory of API keys by prefix, for authentication.

Looking a key up costs more than a small ingestion request's insert; the hash is still checked on
every request against the cached row. A key revoked or a tenant suspended in another process is
refused within API_KEY_CACHE_SECONDS; in this process at once (the services clear the cache).
"""

import threading
import time

from django.conf import settings

from tenants.models import PLATFORM_KEY_PREFIX, PlatformAPIKey, TenantAPIKey

_lock = threading.Lock()
_keys: dict[str, tuple[float, TenantAPIKey | PlatformAPIKey | None]] = {}


def api_key_lookup(*, prefix: str) -> TenantAPIKey | PlatformAPIKey | None:
    """The tenant key (with its tenant) or platform key (prefix `plat_...`) of this prefix."""
    ttl = settings.API_KEY_CACHE_SECONDS
    now = time.monotonic()
    hit = _keys.get(prefix)
    if hit is not None and now - hit[0] < ttl:
        return hit[1]
    if prefix.startswith(PLATFORM_KEY_PREFIX):
        api_key = PlatformAPIKey.objects.filter(prefix=prefix).first()
    else:
        api_key = TenantAPIKey.objects.select_related("tenant").filter(prefix=prefix).first()
    if ttl > 0 and api_key is not None:
        with _lock:
            if len(_keys) > 10_000:  # bounded: unknown prefixes are never stored, known ones are few
                _keys.clear()
            _keys[prefix] = (now, api_key)
    return api_key


def api_key_cache_clear() -> None:
    with _lock:
        _keys.clear()
