"""Model validation of rows built from outside input (commands, services called by admin views).

`row_validate` runs the model's full_clean() (max_length, max_digits/decimal_places, choices,
validators, uniqueness) and refuses what Django's model validation lets through but the database or
the JSON encoder will not hold: NUL characters and unpaired surrogates in text. Services call it
before saving, so a value that does not fit is a ValidationError naming the field, never a row
SQLite stores but cannot read back or a DataError from PostgreSQL.
"""

from django.core.exceptions import ValidationError
from django.db import models

from billing_platform.json_input import text_problem


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def validation_error_message(exc: ValidationError) -> str:
    """'field: message; other: message' (or the messages of a non-field error), on one line."""
    if hasattr(exc, "error_dict"):
        return one_line(
            "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
        )
    return one_line(" ".join(exc.messages))


def row_validate(instance: models.Model, *, exclude: list[str] | None = None) -> None:
    errors: dict = {}
    try:
        instance.full_clean(exclude=exclude)
    except ValidationError as exc:
        errors = exc.update_error_dict(errors)
    for field in instance._meta.concrete_fields:
        if not isinstance(field, models.CharField | models.TextField) or field.name in (exclude or ()):
            continue
        value = getattr(instance, field.attname)
        if isinstance(value, str) and (problem := text_problem(value)) is not None:
            errors.setdefault(field.name, []).append(ValidationError(problem))
    if errors:
        raise ValidationError(errors)
