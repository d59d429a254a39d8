"""django-environ's `Env`, remembering every variable the settings read (for `show_config`)."""

from dataclasses import dataclass
from typing import Any

import environ


@dataclass(frozen=True)
class EnvRead:
    name: str
    value: Any
    from_environment: bool


class RecordingEnv(environ.Env):
    def __init__(self, **scheme):
        super().__init__(**scheme)
        self.reads: dict[str, EnvRead] = {}

    def get_value(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
        value = super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        self.reads[var] = EnvRead(name=var, value=value, from_environment=var in self.ENVIRON)
        return value
