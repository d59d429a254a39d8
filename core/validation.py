"""Model validation of rows built from outside input (commands, services called by admin views).

`row_validate` runs the model's full_clean() (max_length, max_digits/decimal_places, choices,
validators, uniqueness) and refuses what Django's model validation lets through but the database or
the JSON encoder will not hold: NUL characters and unpaired surrogates in text. Services call it
before saving, so a value that does not fit is a ValidationError naming the field, never a row
SQLite stores but cannot read back or a DataError from PostgreSQL.

SQLite keeps a decimal column as a floating-point number: a value of more than 15 significant digits
comes back rounded (99999999999999.999999 as 100000000000000) and Django then fails to read the row.
On SQLite such values are refused too.
"""

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import connections, models, router

from core.json_input import text_problem

SQLITE_DECIMAL_DIGITS = 15


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def validation_error_message(exc: ValidationError) -> str:
    """'field: message; other: message' (or the messages of a non-field error), on one line."""
    if hasattr(exc, "error_dict"):
        return one_line(
            "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
        )
    return one_line(" ".join(exc.messages))


def _sqlite_rounds(value) -> bool:
    return (
        isinstance(value, Decimal)
        and value.is_finite()
        and len(value.normalize().as_tuple().digits) > SQLITE_DECIMAL_DIGITS
    )


def row_validate(instance: models.Model, *, exclude: list[str] | None = None) -> None:
    errors: dict = {}
    try:
        instance.full_clean(exclude=exclude)
    except ValidationError as exc:
        errors = exc.update_error_dict(errors)
    on_sqlite = connections[router.db_for_write(type(instance))].vendor == "sqlite"
    for field in instance._meta.concrete_fields:
        if field.name in (exclude or ()) or field.name in errors:
            continue
        value = getattr(instance, field.attname)
        if isinstance(field, models.CharField | models.TextField):
            if isinstance(value, str) and (problem := text_problem(value)) is not None:
                errors.setdefault(field.name, []).append(ValidationError(problem))
        elif isinstance(field, models.DecimalField) and on_sqlite and _sqlite_rounds(value):
            errors.setdefault(field.name, []).append(
                ValidationError(
                    f"Ensure that there are no more than {SQLITE_DECIMAL_DIGITS} significant digits "
                    "(this SQLite database stores decimals as floating point)."
                )
            )
    if errors:
        raise ValidationError(errors)
