import pytest

from apigateway.tests.support import eager_celery, usage_plans_start


@pytest.fixture
def usage_plans(aws, aws_proxy, monkeypatch, settings):
    """API Gateway (moto behind the proxy) with FREE_10K and METERED, named in the settings; tasks
    queued after commit run in this process."""
    with eager_celery():
        yield usage_plans_start(aws_proxy=aws_proxy, monkeypatch=monkeypatch, settings=settings)


@pytest.fixture
def placed(usage_plans, django_capture_on_commit_callbacks):
    """Gives a function: run `call()` and then what it queued after commit (the placement task)."""

    def run(call):
        with django_capture_on_commit_callbacks(execute=True):
            return call()

    return run
