"""Operator jobs are run records (core.models.RunRecord): the rename of `state` to `status` keeps every
job and its value, on the table the job has had since before the console was an app."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from console.models import OperatorJob

BEFORE, AFTER = ("console", "0002_operator_roles"), ("console", "0003_operator_job_run_record")


def migrate_to(target) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


@pytest.mark.django_db  # PostgreSQL: the schema changes roll back with the test
def test_jobs_recorded_before_the_rename_keep_their_status():
    if connection.vendor != "postgresql":
        pytest.skip("migrates inside the test's transaction, which only PostgreSQL's DDL allows")
    migrate_to(BEFORE)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO billing_platform_operatorjob (kind, params, state, progress, result, error,"
                " task_id, attempts, created_at, updated_at) VALUES"
                " ('budget_check', '{}', 'failed', 'Failed', '{}', 'no costs', '', 1, now(), now()),"
                " ('reconciliation', '{}', 'queued', '', '{}', '', '', 0, now(), now())"
            )
    finally:
        migrate_to(AFTER)

    jobs = {job.kind: job for job in OperatorJob.objects.all()}
    assert (jobs["budget_check"].status, jobs["budget_check"].error) == ("failed", "no costs")
    assert jobs["budget_check"].is_finished
    assert (jobs["reconciliation"].status, jobs["reconciliation"].is_finished) == ("queued", False)
