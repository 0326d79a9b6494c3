"""What the API roles (anon, authenticated: the CRM's users) may do to every table, view and
sequence of public, listed whole: a table or sequence added later without deciding its grants
fails here."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

PRIVILEGES_SQL = """
select c.relname as name, r.rolname as role,
       array(select p from unnest(case c.relkind when 'S' then array['USAGE', 'SELECT', 'UPDATE']
                                  else array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE',
                                             'REFERENCES', 'TRIGGER'] end) p
              where case c.relkind when 'S' then has_sequence_privilege(r.oid, c.oid, p)
                    else has_table_privilege(r.oid, c.oid, p) end) as privileges
  from pg_class c cross join pg_roles r
 where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
   and r.rolname in ('anon', 'authenticated')
"""
#: Members read their accounts' rows (row-level security says which); anon nothing; no sequence for either.
EXPECTED = {
    "accounts": ["SELECT"],
    "account_members": ["SELECT"],
    "contacts": ["SELECT"],
    "chats": ["SELECT"],
    "mensajes": ["SELECT"],
    "whatsapp_chat_list": ["SELECT"],
    "whatsapp_sessions": [],  # some columns only, below
    "whatsapp_pending_message_events": [],
    "whatsapp_gateway_connections": [],
    "contacts_id_seq": [],
    "chats_id_seq": [],
    "mensajes_id_seq": [],
    "whatsapp_pending_message_events_id_seq": [],
}
SESSION_COLUMNS = {
    "id", "account_id", "status", "phone_number", "whatsapp_user_id", "last_seen", "qr_code", "qr_url",
    "qr_generated_at", "created_at", "updated_at", "gateway", "gateway_instance", "gateway_connection_id",
}  # fmt: skip


def test_every_table_view_and_sequence_has_exactly_the_listed_privileges(db: Any) -> None:
    rows = db.execute(PRIVILEGES_SQL).fetchall()
    granted = {(row["name"], row["role"]): row["privileges"] for row in rows}
    expected = {(name, "authenticated"): privileges for name, privileges in EXPECTED.items()}
    expected |= {(name, "anon"): [] for name in EXPECTED}
    assert granted == expected


def test_members_read_only_the_sessions_public_columns(db: Any) -> None:
    rows = db.execute(
        "select column_name from information_schema.columns where table_schema = 'public'"
        " and table_name = 'whatsapp_sessions'"
        " and has_column_privilege('authenticated', 'public.whatsapp_sessions', column_name, 'SELECT')"
    ).fetchall()
    assert {row["column_name"] for row in rows} == SESSION_COLUMNS


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_the_api_roles_cannot_move_the_pending_events_sequence(db: Any, role: str) -> None:
    with db.transaction(force_rollback=True), pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute(f"set local role {role}")
        db.execute("select setval('public.whatsapp_pending_message_events_id_seq', 9223372036854775807)")


def test_a_sequence_created_later_is_not_granted_to_the_api_roles(db: Any) -> None:
    with db.transaction(force_rollback=True):
        db.execute("create sequence public.a_later_sequence")
        row = db.execute(
            "select has_sequence_privilege('authenticated', 'public.a_later_sequence', 'USAGE, UPDATE') as a,"
            " has_sequence_privilege('anon', 'public.a_later_sequence', 'USAGE, UPDATE') as b"
        ).fetchone()
    assert (row["a"], row["b"]) == (False, False)
