from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class ConsoleConfig(AppConfig):
    """The operator console: the roof, which may import every app and which no app imports."""

    default = True
    name = "console"
    verbose_name = "Operator console"


class ConsoleAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the console's site as `admin.site`, so every app's `@admin.register`
    lands on it (HackSoft's Django-Styleguide-Example, custom_admin/apps.py)."""

    default = False  # "console" alone names ConsoleConfig
    default_site = "console.sites.ConsoleAdminSite"
