"""supabase/schema.sql is the schema the migrations make today: regenerated, it is unchanged."""

from __future__ import annotations

import difflib

from local.schema import SCHEMA_SQL, generate


def test_schema_sql_is_what_the_migrations_make() -> None:
    current, fresh = SCHEMA_SQL.read_text(), generate()
    diff = "".join(
        list(difflib.unified_diff(current.splitlines(True), fresh.splitlines(True), "schema.sql", "migrated"))[:40]
    )
    assert current == fresh, f"supabase/schema.sql is stale: run `make schema`\n{diff}"


def test_schema_sql_holds_our_policy_on_storage_objects() -> None:
    # Outside public and realtime, yet ours: who reads the media bucket.
    schema = SCHEMA_SQL.read_text()
    assert (
        'CREATE POLICY "members read their accounts\' media" ON storage.objects FOR SELECT TO authenticated' in schema
    )
