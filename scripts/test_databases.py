"""Build the test suite's databases once per `make test`, instead of once per pytest pass.

- PostgreSQL: a template database migrated by a plain `manage.py migrate` (the real migration
  history, checked on PostgreSQL here), cloned into the PostgreSQL pass's test database
  (`CREATE DATABASE ... TEMPLATE`, a file copy of a second or two). The reliability drill clones
  the same template, so the history runs once, not twice.
- SQLite: the SQLite pass's test database is a file built by `migrate_demo`, the demo's own migrate
  (dj-stripe's tables from its models; the platform's migrations replayed), as the demo builds its
  database, without dj-stripe's minutes-long history on SQLite.

pytest then runs with --reuse-db against these (conftest.py points the SQLite pass at the file).
Usage: scripts/test_databases.py postgres | sqlite PATH
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import _common as common  # noqa: E402

TEMPLATE_DB = "billing_template"


def postgres() -> None:
    import psycopg

    base = os.environ["DATABASE_URL"]
    template_url = common.bench_database_url(TEMPLATE_DB)
    template = urllib.parse.urlsplit(template_url).path.lstrip("/")
    test_db = "test_" + urllib.parse.urlsplit(base).path.lstrip("/")
    with psycopg.connect(common.with_db_name(base, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{test_db}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{test_db}" TEMPLATE "{template}"')
    common.log(f"test database {test_db}: cloned from {template}")


def sqlite(path: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(target.name + "*"):
        stale.unlink()
    started = time.monotonic()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{target.resolve()}",
        "DJANGO_DEBUG": "1",
        "DJANGO_SETTINGS_MODULE": "billing_platform.settings",
    }
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate_demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"migrate_demo failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    common.log(f"test database {target}: built in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    if sys.argv[1:2] == ["postgres"]:
        postgres()
    elif sys.argv[1:2] == ["sqlite"] and len(sys.argv) == 3:
        sqlite(sys.argv[2])
    else:
        sys.exit("usage: scripts/test_databases.py postgres | sqlite PATH")
