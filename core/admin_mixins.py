"""Admin building blocks every app's admin may use."""

from __future__ import annotations

from django.contrib import admin


class ReadOnlyAdminMixin:
    """Rows that the platform writes (ingestion, aggregation, reporting, runs, Stripe's mirror):
    operators look, never add, change or delete. Actions that declare their own permission
    (resend, cancel at Stripe, re-sync) still run for those who hold it."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    pass
