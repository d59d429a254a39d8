from django.apps import AppConfig


class CostwatchConfig(AppConfig):
    name = "costwatch"
    verbose_name = "Cost watch"
