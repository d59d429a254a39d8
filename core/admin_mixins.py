"""Admin building blocks every app's admin may use."""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib import admin
from django.core.exceptions import FieldDoesNotExist
from django.db import models

from core.money import format_quantity, plain_decimal


class PlainNumberInput(forms.NumberInput):
    """A number input showing a Decimal as plain text: "0", not the "0E-12" str() gives a zero read
    from a 12-place column; "12.5", not "12.500000000000"."""

    def format_value(self, value):
        if isinstance(value, Decimal):
            return plain_decimal(value)
        return super().format_value(value)


def decimal_column(model, name: str):
    """A list column showing the model's Decimal field `name` with its significant decimals only;
    any other column name is returned as it is."""
    try:
        field = model._meta.get_field(name)
    except (FieldDoesNotExist, TypeError):
        return name
    if not isinstance(field, models.DecimalField):
        return name

    @admin.display(description=field.verbose_name, ordering=name)
    def column(obj):
        value = getattr(obj, name)
        return None if value is None else format_quantity(value)

    column.__name__ = name
    return column


PLAIN = "__plain"  # suffix of the read-only stand-in of a Decimal field on a view-only page


class PlainDecimalsMixin:
    """Decimal fields as an operator reads them, never in exponent notation and with their significant
    decimals only: in list columns and on view-only pages ("12.5" for 12.500000000000) and in form
    inputs ("0" for 0E-12)."""

    formfield_overrides = {models.DecimalField: {"widget": PlainNumberInput}}

    def get_list_display(self, request):
        return [decimal_column(self.model, name) for name in super().get_list_display(request)]

    def get_fieldsets(self, request, obj=None):
        # A view-only page shows every field read-only through display_for_field, which pads a
        # Decimal to its column's places: each Decimal field is shown by its stand-in instead.
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return fieldsets

        def plain(name):
            if isinstance(name, list | tuple):
                return type(name)(plain(item) for item in name)
            return name + PLAIN if decimal_column(self.model, name) is not name else name

        return [(title, {**options, "fields": plain(options["fields"])}) for title, options in fieldsets]

    def get_readonly_fields(self, request, obj=None):
        # The same stand-ins, read-only: a form must never be asked for a field named `x__plain`.
        # A view-only inline builds its form from the fieldsets above, less its read-only fields, so
        # every Decimal field's stand-in is read-only there, declared read-only or not.
        readonly = super().get_readonly_fields(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return readonly
        plain = [
            name + PLAIN if isinstance(name, str) and decimal_column(self.model, name) is not name else name
            for name in readonly
        ]
        if isinstance(self, admin.options.InlineModelAdmin):
            decimals = (f.name + PLAIN for f in self.model._meta.fields if isinstance(f, models.DecimalField))
            plain += [name for name in decimals if name not in plain]
        return plain

    def __getattr__(self, name):
        if not name.endswith(PLAIN):
            raise AttributeError(name)
        column = decimal_column(self.model, name.removesuffix(PLAIN))
        if isinstance(column, str):
            raise AttributeError(name)
        return column


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


class ReadOnlyAdmin(PlainDecimalsMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    pass
