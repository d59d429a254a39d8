"""Settings for the benchmarks' gunicorn: the product's, plus a bare endpoint (bench/bare_urls.py).

Used by bench/ingest_single.py with DJANGO_SETTINGS_MODULE=bench.settings and /work/main on
PYTHONPATH; never by the product.
"""

from billing_platform.settings import *  # noqa: F403

ROOT_URLCONF = "bench.bare_urls"
