from django.apps import AppConfig


class CoreConfig(AppConfig):
    """The ground floor every app may import; it imports no app of the project."""

    name = "core"
    verbose_name = "Platform"
