"""The local stand-ins of what a Supabase project has (local/supabase_platform.sql) behave as Supabase's
where our code depends on it: realtime.messages partitioned by day, realtime.send adding an `id`, the
grants, and the API roles' statement timeouts, applied by the PostgREST stand-in as PostgREST does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from conftest import SERVICE_KEY
from postgrest_standin import PostgrestStandin


def test_realtime_messages_is_partitioned_by_day_with_todays_partition(db: Any) -> None:
    row = db.execute(
        "select p.partstrat, pg_get_partkeydef(p.partrelid) as key from pg_partitioned_table p"
        " where p.partrelid = 'realtime.messages'::regclass"
    ).fetchone()
    assert row == {"partstrat": "r", "key": "RANGE (inserted_at)"}
    db.execute("select realtime.send('{\"a\": 1}', 'probe', 'account:x', true)")
    where = db.execute("select tableoid::regclass::text as t from realtime.messages where event = 'probe'").fetchone()
    assert where["t"] == f"realtime.messages_{datetime.now(UTC):%Y_%m_%d}"


def test_realtime_send_adds_the_message_id_to_a_payload_without_one(db: Any) -> None:
    db.execute("select realtime.send('{\"a\": 1}', 'without', 't', true)")
    db.execute("select realtime.send('{\"id\": 7}', 'with', 't', true)")
    rows = {r["event"]: r for r in db.execute("select id, event, payload from realtime.messages").fetchall()}
    assert rows["without"]["payload"] == {"a": 1, "id": str(rows["without"]["id"])}
    assert rows["with"]["payload"] == {"id": 7}


@pytest.mark.parametrize("role", ["anon", "authenticated", "service_role"])
def test_the_api_roles_have_supabases_grants_on_realtime_messages(db: Any, role: str) -> None:
    for privilege in ("select", "insert", "update"):
        row = db.execute("select has_table_privilege(%s, 'realtime.messages', %s) as ok", (role, privilege))
        assert row.fetchone()["ok"], privilege
    assert db.execute("select has_function_privilege(%s, 'realtime.topic()', 'execute') as ok", (role,)).fetchone()[
        "ok"
    ]


def test_the_api_roles_have_supabases_statement_timeouts(db: Any) -> None:
    rows = db.execute(
        "select r.rolname, s.setconfig from pg_db_role_setting s join pg_roles r on r.oid = s.setrole"
        " where r.rolname in ('anon', 'authenticated', 'authenticator')"
    ).fetchall()
    assert {r["rolname"]: r["setconfig"] for r in rows} == {
        "anon": ["statement_timeout=3s"],
        "authenticated": ["statement_timeout=8s"],
        "authenticator": ["statement_timeout=8s"],
    }


@pytest.fixture
def timeout_probe(db: Any) -> Iterator[None]:
    db.execute(
        "create function public.test_statement_timeout() returns text language sql stable"
        " as $$ select current_setting('statement_timeout') $$"
    )
    db.execute("grant execute on function public.test_statement_timeout() to anon, authenticated, service_role")
    yield
    db.execute("drop function public.test_statement_timeout()")


@pytest.mark.parametrize(("role", "timeout"), [("anon", "3s"), ("authenticated", "8s"), ("service_role", "8s")])
@pytest.mark.usefixtures("timeout_probe")
def test_the_postgrest_standin_applies_the_roles_statement_timeout(database_url: str, role: str, timeout: str) -> None:
    with PostgrestStandin(database_url, SERVICE_KEY, role=role) as standin:
        reply = httpx.post(
            standin.url + "/rest/v1/rpc/test_statement_timeout",
            content="{}",
            headers={
                "apikey": SERVICE_KEY,
                "Authorization": f"Bearer {SERVICE_KEY}",
                "Content-Type": "application/json",
            },
        )
    assert (reply.status_code, json.loads(reply.text)) == (200, timeout)


def test_an_older_local_databases_plain_realtime_messages_becomes_partitioned_keeping_its_policies() -> None:
    import psycopg
    from conftest import embedded_postgres

    from local import database

    with embedded_postgres() as server, psycopg.connect(server.get_uri(), autocommit=True) as conn:
        database.migrate(server.get_uri())
        # What the previous stand-in made: one plain table, with the policy the migrations put on it.
        conn.execute("drop table realtime.messages cascade")
        conn.execute(
            "create table realtime.messages (topic text not null, extension text not null, payload jsonb,"
            " event text, private boolean default false, updated_at timestamp not null default now(),"
            " inserted_at timestamp not null default now(), id uuid not null default gen_random_uuid(),"
            " primary key (id, inserted_at));"
            "create policy probe on realtime.messages for select to authenticated using (topic = 'x')"
        )
        database.migrate(server.get_uri())
        kind = conn.execute("select relkind from pg_class where oid = 'realtime.messages'::regclass").fetchone()
        policies = conn.execute("select policyname from pg_policies where tablename = 'messages'").fetchall()
    assert kind == ("p",)
    assert policies == [("probe",)]
