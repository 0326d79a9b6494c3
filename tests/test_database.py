"""The schema as Supabase will hold it: migrations, access rules, realtime, and one
call per request."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from conftest import ACCOUNT_B, SESSION_ID, embedded_postgres
from psycopg.rows import dict_row

from local import database

TABLES = [
    "accounts",
    "account_members",
    "whatsapp_sessions",
    "contacts",
    "chats",
    "mensajes",
    "whatsapp_pending_message_events",
    "whatsapp_gateway_connections",
]
FUNCTIONS = {
    "whatsapp_lock_session": f"'{SESSION_ID}'",
    "whatsapp_event_time_to_keep": "now(), null",
    "whatsapp_stale_reason": "row(now(), now(), null, now()), now() - interval '1 minute', now()",
    "whatsapp_compared": "now(), 'arrival', now(), 'arrival'",
    "whatsapp_order_after": "null, null, now()",
    "whatsapp_repair_outbound": f"'{SESSION_ID}', '5215500000001'",
    "whatsapp_move_session": f"'{SESSION_ID}', '{ACCOUNT_B}'",
    "whatsapp_message_payload": "null::public.mensajes",
    "whatsapp_batch_items": "'[]', null",
    "whatsapp_ingest_batch": f"'{SESSION_ID}', '[]'",
    "whatsapp_update_session_status": f"'{SESSION_ID}', 'connected', '{{}}'",
    "whatsapp_store_qr": f"'{SESSION_ID}', 'qr', null, now()",
    "whatsapp_ingest_message": f"'{SESSION_ID}', 'm1', '5215512345678', '5215500000001', 'text', 'hi', "
    '\'{"type": "text", "text": "hi"}\', now()',
    "whatsapp_status_rank": "'read'",
    "whatsapp_message_lock": f"'{SESSION_ID}', 'm1'",
    "whatsapp_apply_to_message": "0, 'status', '{\"status\": \"read\"}', now()",
    "whatsapp_message_event": f"'{SESSION_ID}', 'm1', 'status', '{{\"status\": \"read\"}}'",
    "whatsapp_apply_gateway_events": "'evolution', 'demo-a', '[]'",
    "whatsapp_session_connection": f"'{SESSION_ID}'",
    "whatsapp_add_gateway_connection": "gen_random_uuid(), 'waha', 'test', null, 'https://waha.example'",
    "whatsapp_media_dispatch": "10, 300",
    "whatsapp_media_claim": "0, 60",
    "whatsapp_media_finish": "0, gen_random_uuid(), 'failed', '{}', 'test'",
}


def test_migrations_apply_once_and_are_recorded_like_the_supabase_cli(database_url: str, db: Any) -> None:
    assert database.migrate(database_url) == []
    versions = db.execute("select version from supabase_migrations.schema_migrations").fetchall()
    assert [row["version"] for row in versions] == [
        p.stem.split("_")[0] for p in sorted(database.MIGRATIONS.glob("*.sql"))
    ]


def test_a_second_start_keeps_what_the_migrations_revoked_from_the_api_roles(database_url: str, db: Any) -> None:
    # make run applies the platform stand-ins on every start: Supabase's default privileges are
    # set once, or a restart would grant every later sequence to anon again (20261206000000 revokes it).
    database.migrate(database_url)
    with db.transaction(force_rollback=True):
        db.execute("create sequence public.a_sequence_after_a_restart")
        granted = db.execute(
            "select has_sequence_privilege(r, 'public.a_sequence_after_a_restart', 'USAGE, UPDATE') as g"
            " from unnest(array['anon', 'authenticated']) as r"
        ).fetchall()
    assert [row["g"] for row in granted] == [False, False]


def test_migrations_apply_to_postgres_16_too() -> None:
    # Supabase runs 15 and 17; the embedded server offers 16 and 18, and the
    # rest of the suite runs on 18.
    with embedded_postgres(version=16) as server:
        applied = database.migrate(server.get_uri(), seed=True)
        with psycopg.connect(server.get_uri()) as conn:
            assert conn.info.server_version // 10000 == 16
    assert applied == [p.name for p in sorted(database.MIGRATIONS.glob("*.sql"))]


def test_row_level_security_is_on_for_every_table(db: Any) -> None:
    rows = db.execute(
        "select relname, relrowsecurity from pg_class where relnamespace = 'public'::regnamespace and relkind = 'r'"
    ).fetchall()
    assert {row["relname"]: row["relrowsecurity"] for row in rows} == dict.fromkeys(TABLES, True)


@pytest.mark.parametrize("table", TABLES)
def test_anon_cannot_read_any_table(db: Any, table: str) -> None:
    with db.transaction(force_rollback=True), pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("set local role anon")
        db.execute(f"select * from public.{table}")


@pytest.mark.parametrize("role", ["anon", "authenticated"])
@pytest.mark.parametrize("function", FUNCTIONS)
def test_api_roles_cannot_execute_any_function(db: Any, role: str, function: str) -> None:
    with db.transaction(force_rollback=True), pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute(f"set local role {role}")
        db.execute(f"select public.{function}({FUNCTIONS[function]})")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_service_role_executes_every_function(db: Any, function: str) -> None:
    with db.transaction(force_rollback=True):
        db.execute("set local role service_role")
        row = db.execute(f"select public.{function}({FUNCTIONS[function]}) as r").fetchone()
    assert row is None or row["r"] is not None  # a set-returning function may return no row


def test_every_function_is_in_the_access_checks_above(db: Any) -> None:
    rows = db.execute(
        "select proname from pg_proc where pronamespace = 'public'::regnamespace and proname like 'whatsapp%'"
        " and prorettype <> 'trigger'::regtype"
    ).fetchall()
    assert {row["proname"] for row in rows} == set(FUNCTIONS)


def test_no_table_is_published_to_postgres_changes_broadcast_replaces_it(db: Any) -> None:
    rows = db.execute("select tablename from pg_publication_tables where pubname = 'supabase_realtime'").fetchall()
    assert [row["tablename"] for row in rows] == []


def test_contact_and_chat_ids_are_bigints(db: Any) -> None:
    rows = db.execute(
        "select table_name, data_type from information_schema.columns"
        " where table_schema = 'public' and column_name = 'id' and table_name in ('contacts', 'chats', 'mensajes')"
    ).fetchall()
    assert {row["data_type"] for row in rows} == {"bigint"}


def test_a_value_breaking_a_check_leaves_nothing_half_written(db: Any) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(
            f"select public.whatsapp_ingest_message('{SESSION_ID}', 'm1', '5215512345678', '5215500000001',"
            " 'hologram', null, '{}', now())"
        )
    assert db.execute("select count(*) as n from public.contacts").fetchone()["n"] == 0
    assert db.execute("select count(*) as n from public.chats").fetchone()["n"] == 0


# ---------------------------------------------------------------------------
# Upgrades: every migration applies on a database holding data of the ones before
# ---------------------------------------------------------------------------

FIRST = "20261128000000"
PENDING_SESSION = "7c1e2d3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"


def store_the_first_migrations_way(conn: Any) -> None:
    """Sessions, shared contacts and messages, written by the first migration's own functions."""
    conn.execute("insert into public.whatsapp_sessions (id, own_wa_id) values (%s, '5215500000001')", (SESSION_ID,))
    conn.execute("insert into public.whatsapp_sessions (id) values (%s)", (PENDING_SESSION,))
    for session, qr_at in ((SESSION_ID, "2026-11-28T04:00:00Z"), (PENDING_SESSION, "2026-11-28T04:10:00Z")):
        conn.execute("select public.whatsapp_store_qr(%s, '2@old', null, %s)", (session, qr_at))
    # The first migration left the QR on a session that connected afterwards.
    conn.execute(
        "select public.whatsapp_update_session_status(%s, 'connected', '{\"last_seen\": \"2026-11-28T04:20:00Z\"}',"
        " '2026-11-28T04:20:00Z')",
        (SESSION_ID,),
    )
    for session in (SESSION_ID, PENDING_SESSION):  # one contact shared by both sessions
        for n in range(3):
            conn.execute(
                "select public.whatsapp_ingest_message(%s, %s, '5215512345678', '5215500000001', 'text', 'hola',"
                ' \'{"type": "text", "text": "hola"}\', \'2026-11-28T04:30:00Z\')',
                (session, f"old-{n}"),
            )


def test_upgrade_from_the_first_migration_keeps_every_row_in_one_account_and_clears_dead_qrs() -> None:
    with embedded_postgres() as server:
        url = server.get_uri()
        database.migrate(url, until=FIRST)
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            store_the_first_migrations_way(conn)
            before = conn.execute("select id, content, sent_at, session_id from public.mensajes order by id").fetchall()

            applied = database.migrate(url)

            assert applied == [
                p.name for p in sorted(database.MIGRATIONS.glob("*.sql")) if p.stem.split("_")[0] > FIRST
            ]
            after = conn.execute("select id, content, sent_at, session_id from public.mensajes order by id").fetchall()
            assert after == before
            sessions = {
                str(row["id"]): row
                for row in conn.execute("select id, status, qr_code, state_order from public.whatsapp_sessions")
            }
            assert (sessions[SESSION_ID]["status"], sessions[SESSION_ID]["qr_code"]) == ("connected", None)
            assert (sessions[PENDING_SESSION]["status"], sessions[PENDING_SESSION]["qr_code"]) == ("pending", "2@old")
            # The functions work on the old rows: a redelivery is still a duplicate, an older QR still stale.
            again = conn.execute(
                "select public.whatsapp_ingest_message(%s, 'old-0', '5215512345678', '5215500000001', 'text', 'hola',"
                " '{}', now()) as r",
                (PENDING_SESSION,),
            ).fetchone()["r"]
            assert again["duplicate"] is True
            older_qr = conn.execute(
                "select public.whatsapp_store_qr(%s, '2@older', null, '2026-11-28T04:05:00Z') as r", (PENDING_SESSION,)
            ).fetchone()["r"]
            assert older_qr["stale"] is True

            # Every row in the one default account, nothing lost.
            default = conn.execute("select id from public.accounts where name = 'Default account'").fetchone()["id"]
            for table, rows in {"whatsapp_sessions": 2, "contacts": 1, "chats": 2, "mensajes": 6}.items():
                by_account = conn.execute(f"select account_id, count(*) as n from public.{table} group by 1").fetchall()
                assert by_account == [{"account_id": default, "n": rows}], table

            # Moving a session to another account splits the contact it shared.
            other = conn.execute("insert into public.accounts (name) values ('Acme') returning id").fetchone()["id"]
            moved = conn.execute(
                "select public.whatsapp_move_session(%s, %s) as r", (PENDING_SESSION, other)
            ).fetchone()["r"]
            assert (moved["chats"], moved["messages"]) == (1, 3)
            contacts = conn.execute("select account_id, wa_id from public.contacts order by account_id").fetchall()
            assert sorted((row["account_id"], row["wa_id"]) for row in contacts) == sorted(
                [(default, "5215512345678"), (other, "5215512345678")]
            )
            mixed = conn.execute(
                "select count(*) as n from public.mensajes m join public.contacts c on c.id = m.contact_id"
                " join public.chats ch on ch.id = m.chat_id"
                " where m.account_id <> c.account_id or m.account_id <> ch.account_id"
            ).fetchone()["n"]
            assert mixed == 0


def test_a_migration_waiting_on_a_busy_table_gives_up_and_applies_nothing() -> None:
    # A long transaction holding whatsapp_sessions: the migration stops after its lock_timeout
    # instead of queueing every request behind its own lock, and leaves nothing half-applied.
    with embedded_postgres() as server:
        url = server.get_uri()
        database.migrate(url, until="20261206020000")
        with psycopg.connect(url) as busy:
            busy.execute("lock table public.whatsapp_sessions in row exclusive mode")
            with pytest.raises(psycopg.errors.LockNotAvailable):
                database.migrate(url)
        with psycopg.connect(url, row_factory=dict_row) as conn:
            checks = conn.execute(
                "select conname from pg_constraint where conname = 'whatsapp_sessions_gateway_connection_gateway_check'"
            ).fetchall()
            versions = [r["version"] for r in conn.execute("select version from supabase_migrations.schema_migrations")]
        assert checks == [] and max(versions) == "20261206020000"
        assert database.migrate(url) == ["20261206030000_session_connection_needs_gateway.sql"]
