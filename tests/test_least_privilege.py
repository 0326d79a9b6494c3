"""The deployed functions' database login can do only its job: execute the ingest
entry points (SECURITY DEFINER, owned by a NOLOGIN role, search_path pinned), and
read or write no table directly."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from conftest import SESSION_ID, call_handler, load_event, use_backend
from test_database import FUNCTIONS, TABLES

from whatsapp_ingest.store import get_store

#: The functions the login may execute, called as tests/test_database.py calls every function.
ENTRY_POINTS = {
    name: FUNCTIONS[name]
    for name in (
        "whatsapp_update_session_status",
        "whatsapp_store_qr",
        "whatsapp_ingest_message",
        "whatsapp_ingest_batch",
        "whatsapp_message_event",
        "whatsapp_apply_gateway_events",
        "whatsapp_session_connection",
        "whatsapp_media_dispatch",
        "whatsapp_media_claim",
        "whatsapp_media_finish",
    )
}


def as_login(db: Any) -> Any:
    db.execute("set local role whatsapp_ingest")
    return db


@pytest.mark.parametrize("function", ENTRY_POINTS)
def test_the_login_executes_each_entry_point(db: Any, function: str) -> None:
    with db.transaction(force_rollback=True):
        result = as_login(db).execute(f"select public.{function}({ENTRY_POINTS[function]}) as r").fetchone()["r"]
    assert result is not None


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize(
    "statement",
    ["select * from public.{t}", "delete from public.{t}", "update public.{t} set created_at = now()"],
)
def test_the_login_can_read_or_write_no_table(db: Any, table: str, statement: str) -> None:
    with db.transaction(force_rollback=True), pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_login(db).execute(statement.format(t=table))


@pytest.mark.parametrize(
    "call",
    [
        f"public.whatsapp_repair_outbound('{SESSION_ID}', '5215500000001')",
        f"public.whatsapp_lock_session('{SESSION_ID}')",
        f"public.whatsapp_move_session('{SESSION_ID}', gen_random_uuid())",
        "public.whatsapp_batch_items('[]', null)",
        "public.whatsapp_add_gateway_connection(gen_random_uuid(), 'waha', 'x', null, 'https://waha.example')",
    ],
)
def test_the_login_cannot_call_the_helpers(db: Any, call: str) -> None:
    with db.transaction(force_rollback=True), pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_login(db).execute(f"select {call}")


def test_entry_points_are_security_definer_owned_by_a_nologin_role_with_a_pinned_search_path(db: Any) -> None:
    rows = db.execute(
        "select p.proname, p.prosecdef, r.rolname, r.rolcanlogin, p.proconfig from pg_proc p"
        " join pg_roles r on r.oid = p.proowner where p.proname = any(%s)",
        (list(ENTRY_POINTS),),
    ).fetchall()
    assert {row["proname"] for row in rows} == set(ENTRY_POINTS)
    for row in rows:
        assert (row["prosecdef"], row["rolname"], row["rolcanlogin"]) == (True, "whatsapp_ingest_owner", False)
        assert row["proconfig"] == ['search_path=""']


def test_the_service_works_end_to_end_logged_in_as_the_login(
    handlers: Any, database_url: str, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The embedded server's superuser takes the role at connect: what a password login would be.
    separator = "&" if "?" in database_url else "?"
    use_backend(monkeypatch, {"DATABASE_URL": f"{database_url}{separator}options={quote('-c role=whatsapp_ingest')}"})

    names = ("status_update/valid", "qr_update/valid", "messages_received/text", "messages_batch/valid")
    for name in (*names, "message_event/status_read"):
        assert call_handler(handlers, load_event(name)).status == 200, name
    assert db.execute("select count(*) as n from public.mensajes").fetchone()["n"] == 4
    connection = get_store()._local.conn  # type: ignore[attr-defined]
    assert connection.execute("select current_user").fetchone()[0] == "whatsapp_ingest"


def test_the_direct_postgres_path_asks_libpq_to_verify_the_servers_certificate(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Over this test's Unix socket libpq uses no TLS; what is checked is that the setting reaches libpq.
    use_backend(
        monkeypatch,
        {"DATABASE_URL": database_url, "DATABASE_SSLMODE": "verify-full", "DATABASE_SSLROOTCERT": "system"},
    )
    connection = get_store()._connect()  # type: ignore[attr-defined]
    try:
        assert connection.info.get_parameters()["sslmode"] == "verify-full"
        assert connection.info.get_parameters()["sslrootcert"] == "system"
    finally:
        connection.close()


def test_a_sslmode_in_the_database_url_wins(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    separator = "&" if "?" in database_url else "?"
    use_backend(
        monkeypatch, {"DATABASE_URL": f"{database_url}{separator}sslmode=disable", "DATABASE_SSLMODE": "require"}
    )
    connection = get_store()._connect()  # type: ignore[attr-defined]
    try:
        assert connection.info.get_parameters()["sslmode"] == "disable"
    finally:
        connection.close()


def test_the_owner_role_cannot_create_objects(db: Any) -> None:
    row = db.execute("select has_schema_privilege('whatsapp_ingest_owner', 'public', 'create') as c").fetchone()
    assert row["c"] is False
