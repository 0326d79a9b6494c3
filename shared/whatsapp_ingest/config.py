"""The one place configuration is read from the environment.

Read once per container (the result is cached): a Lambda's environment does
not change between invocations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache


class ConfigError(RuntimeError):
    """The environment does not say which database to use."""


@dataclass(frozen=True)
class Settings:
    supabase_url: str | None
    supabase_key: str | None
    database_url: str | None
    #: Connect and read timeout of every database call, below the Lambda timeout.
    db_timeout_seconds: float
    #: HTTP keep-alive of the Supabase client. Longer than httpx's 5 s default so a
    #: warm container reuses its TLS connection across the gaps between requests.
    http_keepalive_seconds: float


def _optional(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


@cache
def settings() -> Settings:
    """Settings of this container; `settings.cache_clear()` re-reads them (tests)."""
    return Settings(
        supabase_url=_optional("SUPABASE_URL"),
        supabase_key=_optional("SUPABASE_SERVICE_ROLE_KEY"),
        database_url=_optional("DATABASE_URL"),
        db_timeout_seconds=float(os.environ.get("DB_TIMEOUT_SECONDS", "5")),
        http_keepalive_seconds=float(os.environ.get("HTTP_KEEPALIVE_SECONDS", "300")),
    )
