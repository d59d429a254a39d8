"""The layout holds: `billing_platform` is configuration only, `core` imports no app, no app imports
the console, and the domain apps depend downwards only (tenants <- metering <- stripe_sync <- costwatch).

Read from the source with `ast`, every import statement anywhere in a module (a function-level import
counts too), so a new module is checked without being listed.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Lowest first: an app may import the apps before it, never one after it.
DOMAIN_APPS = ["outbound", "tenants", "metering", "apigateway", "stripe_sync", "costwatch"]
PROJECT_PACKAGES = {"core", "console", "billing_platform", *DOMAIN_APPS}
BILLING_PLATFORM_FILES = {"__init__.py", "settings.py", "urls.py", "celery.py", "wsgi.py", "asgi.py"}

# App tests that still import the console (they run an app's job as an operator job, the console's
# OperatorJob): known, to move into console/tests; a new one fails.
APP_TESTS_IMPORTING_CONSOLE = {
    "metering/tests/test_retention.py",
    "stripe_sync/tests/test_stripe_key.py",
}


def modules(package: str, *, tests: bool) -> list[Path]:
    return sorted(
        path
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts and ("tests" in path.parts) == tests
    )


def project_imports(path: Path) -> set[str]:
    """The project packages `path` imports (top-level name), by any import statement in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & PROJECT_PACKAGES
    return found


def violations(package: str, forbidden: set[str], *, tests: bool = False, allowed=frozenset()) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}"
        for path in modules(package, tests=tests)
        if (bad := project_imports(path) & forbidden) and str(path.relative_to(ROOT)) not in allowed
    ]


def test_billing_platform_holds_only_settings_urls_celery_and_wsgi_asgi():
    entries = {path.name for path in (ROOT / "billing_platform").iterdir() if path.name != "__pycache__"}
    assert entries == BILLING_PLATFORM_FILES


def test_core_imports_no_app_and_not_billing_platform():
    # billing_platform.settings included: core reads settings through django.conf.settings.
    assert len(modules("core", tests=False)) >= 15
    assert violations("core", PROJECT_PACKAGES - {"core"}) == []


@pytest.mark.parametrize("app", DOMAIN_APPS)
def test_a_domain_app_imports_neither_the_console_nor_billing_platform(app):
    assert violations(app, {"console", "billing_platform"}) == []


@pytest.mark.parametrize("app", DOMAIN_APPS)
def test_the_domain_apps_depend_downwards_only(app):
    above = set(DOMAIN_APPS[DOMAIN_APPS.index(app) + 1 :])
    assert violations(app, above) == []
    assert violations(app, above, tests=True) == []


@pytest.mark.parametrize("app", DOMAIN_APPS)
def test_app_tests_do_not_import_the_console(app):
    assert violations(app, {"console"}, tests=True, allowed=APP_TESTS_IMPORTING_CONSOLE) == []


def test_the_known_exceptions_still_exist():
    # When a listed test file stops importing the console, it leaves the list.
    for name in APP_TESTS_IMPORTING_CONSOLE:
        assert "console" in project_imports(ROOT / name), f"{name} no longer imports the console: unlist it"


def test_this_checker_sees_function_level_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import os\n\ndef f():\n    from stripe_sync.client import x\n    import console.models\n"
    )
    assert project_imports(module) == {"stripe_sync", "console"}


def test_every_test_directory_is_in_the_suite():
    """`make test` runs pytest's testpaths: a package whose tests are not listed never runs in CI (the
    outbound app's tests were left out this way for a whole issue)."""
    import tomllib

    testpaths = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["testpaths"]
    )
    with_tests = {
        path.parent.parent.name
        for path in ROOT.glob("*/tests/test_*.py")
        if not path.parent.parent.name.startswith(".")
    }
    with_tests |= {"tests"} if any(ROOT.glob("tests/test_*.py")) else set()
    assert with_tests - testpaths == set()
