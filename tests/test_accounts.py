"""The CRM's users see their own accounts' WhatsApp data, live, and nothing else:
accounts, row-level access as the real roles with JWT claims set the way
PostgREST sets them, Realtime Broadcast on private account topics, push names."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from conftest import ACCOUNT_A, ACCOUNT_B, MEMBER_A, MEMBER_B, SESSION_B, SESSION_ID, Invoke, event_body, request

OUTSIDER = "c3c3c3c3-0000-4000-8000-00000000000c"  # a user of the project, member of no account
PHONE = "5215512345678"  # talks to both accounts
TABLES = ["accounts", "account_members", "whatsapp_sessions", "contacts", "chats", "mensajes", "whatsapp_chat_list"]
SESSION_COLUMNS = "id, account_id, status, phone_number, whatsapp_user_id, last_seen, qr_code, qr_url, updated_at"


def ingest(db: Any, session_id: str, message_id: str, sender: str = PHONE, **extra: Any) -> dict[str, Any]:
    """Store a message through the ingest function, as the service does."""
    own = "5215500000001" if session_id == SESSION_ID else "5215500000002"
    row = db.execute(
        "select public.whatsapp_ingest_message(p_session_id => %s, p_message_id => %s, p_from => %s, p_to => %s,"
        " p_message_type => 'text', p_body => %s, p_content => %s, p_sent_at => %s, p_from_me => %s,"
        " p_push_name => %s) as r",
        (
            session_id,
            message_id,
            sender,
            own if sender != own else PHONE,
            extra.get("body", f"texto {message_id}"),
            json.dumps({"type": "text", "text": extra.get("body", "x")}),
            extra.get("sent_at", "2026-12-01T10:00:00Z"),
            extra.get("from_me"),
            extra.get("push_name"),
        ),
    ).fetchone()
    result: dict[str, Any] = row["r"]
    return result


@pytest.fixture
def both_accounts(db: Any) -> Any:
    """The same phone writes to account A's session and to account B's."""
    db.execute("insert into auth.users (id) values (%s) on conflict do nothing", (OUTSIDER,))
    ingest(db, SESSION_ID, "a-1")
    ingest(db, SESSION_ID, "a-2")
    ingest(db, SESSION_B, "b-1")
    return db


@contextmanager
def as_user(db: Any, user_id: str | None) -> Iterator[Any]:
    """Queries as PostgREST runs them: role from the JWT, claims in request.jwt.claims; rolled back."""
    role = "authenticated" if user_id else "anon"
    claims = {"sub": user_id, "role": role} if user_id else {"role": role}
    with db.transaction(force_rollback=True):
        db.execute(f"set local role {role}")
        db.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        yield db


def visible_accounts(db: Any, table: str) -> set[str]:
    column = "id" if table == "accounts" else "account_id"
    return {str(row["a"]) for row in db.execute(f"select {column} as a from public.{table}").fetchall()}


# ---------------------------------------------------------------------------
# Row-level access
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize(
    ("user", "sees"), [(MEMBER_A, {ACCOUNT_A}), (MEMBER_B, {ACCOUNT_B}), (OUTSIDER, set())], ids=["A", "B", "none"]
)
def test_a_member_reads_their_accounts_rows_and_nothing_else(
    both_accounts: Any, table: str, user: str, sees: set[str]
) -> None:
    if table == "whatsapp_sessions":
        with as_user(both_accounts, user):
            rows = both_accounts.execute(f"select {SESSION_COLUMNS} from public.whatsapp_sessions").fetchall()
        assert {str(row["account_id"]) for row in rows} == sees
        return
    with as_user(both_accounts, user):
        assert visible_accounts(both_accounts, table) == sees


@pytest.mark.parametrize("table", TABLES)
def test_anon_reads_nothing(both_accounts: Any, table: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege), as_user(both_accounts, None):
        both_accounts.execute(f"select * from public.{table}")


@pytest.mark.parametrize("column", ["auth_folder_path", "server_port", "own_wa_id", "state_order", "qr_close_order"])
def test_the_orchestrators_internals_are_not_readable_by_members(db: Any, column: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege), as_user(db, MEMBER_A):
        db.execute(f"select {column} from public.whatsapp_sessions")


def test_select_star_on_sessions_is_refused_so_the_crm_names_its_columns(db: Any) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege), as_user(db, MEMBER_A):
        db.execute("select * from public.whatsapp_sessions")


@pytest.mark.parametrize(
    "statement",
    [
        "insert into public.accounts (name) values ('mine')",
        f"update public.whatsapp_sessions set status = 'connected' where id = '{SESSION_ID}'",
        "delete from public.mensajes",
        "delete from public.contacts",
        f"insert into public.account_members (account_id, user_id) values ('{ACCOUNT_B}', '{MEMBER_A}')",
    ],
)
def test_members_cannot_write_only_the_service_role_does(both_accounts: Any, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege), as_user(both_accounts, MEMBER_A):
        both_accounts.execute(statement)


def test_the_chat_list_shows_each_chat_with_its_last_message_under_the_members_rights(both_accounts: Any) -> None:
    ingest(both_accounts, SESSION_ID, "a-3", body="la última", sent_at="2026-12-01T11:00:00Z")
    with as_user(both_accounts, MEMBER_A):
        rows = both_accounts.execute("select wa_id, last_preview, account_id from public.whatsapp_chat_list").fetchall()
    assert [(row["wa_id"], row["last_preview"], str(row["account_id"])) for row in rows] == [
        (PHONE, "la última", ACCOUNT_A)
    ]


# ---------------------------------------------------------------------------
# Accounts keep their data apart
# ---------------------------------------------------------------------------


def test_the_same_phone_in_two_accounts_is_two_contacts(both_accounts: Any) -> None:
    rows = both_accounts.execute("select account_id, wa_id from public.contacts order by account_id").fetchall()
    assert [(str(row["account_id"]), row["wa_id"]) for row in rows] == [(ACCOUNT_A, PHONE), (ACCOUNT_B, PHONE)]


def test_deleting_a_contact_deletes_nothing_of_another_account(both_accounts: Any) -> None:
    both_accounts.execute("delete from public.contacts where account_id = %s", (ACCOUNT_A,))

    rows = both_accounts.execute("select whatsapp_message_id from public.mensajes").fetchall()
    assert [row["whatsapp_message_id"] for row in rows] == ["b-1"]


def test_the_database_refuses_a_chat_that_mixes_two_accounts(both_accounts: Any) -> None:
    contact_b = both_accounts.execute("select id from public.contacts where account_id = %s", (ACCOUNT_B,)).fetchone()
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        both_accounts.execute(
            "insert into public.chats (account_id, session_id, contact_id) values (%s, %s, %s)",
            (ACCOUNT_A, SESSION_ID, contact_b["id"]),
        )


def test_a_session_needs_an_account(db: Any) -> None:
    with pytest.raises(psycopg.errors.NotNullViolation):
        db.execute("insert into public.whatsapp_sessions (id) values (gen_random_uuid())")


# ---------------------------------------------------------------------------
# Realtime: who may join which topic, and what is broadcast
# ---------------------------------------------------------------------------


def may_join(db: Any, user: str | None, topic: str) -> bool:
    """Authorize a join the way Realtime does: a probe message on the topic, then a
    select of it as the joining user with realtime.topic() set, under RLS."""
    with db.transaction(force_rollback=True):
        probe = db.execute(
            "insert into realtime.messages (topic, extension, event, private) values (%s, 'broadcast', 'probe', true)"
            " returning id",
            (topic,),
        ).fetchone()["id"]
        role = "authenticated" if user else "anon"
        claims = {"sub": user, "role": role} if user else {"role": role}
        db.execute(f"set local role {role}")
        db.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        db.execute("select set_config('realtime.topic', %s, true)", (topic,))
        return db.execute("select count(*) as n from realtime.messages where id = %s", (probe,)).fetchone()["n"] == 1


@pytest.mark.parametrize(
    ("user", "topic", "allowed"),
    [
        (MEMBER_A, f"account:{ACCOUNT_A}", True),
        (MEMBER_A, f"account:{ACCOUNT_B}", False),
        (MEMBER_B, f"account:{ACCOUNT_B}", True),
        (MEMBER_B, f"account:{ACCOUNT_A}", False),
        (OUTSIDER, f"account:{ACCOUNT_A}", False),
        (None, f"account:{ACCOUNT_A}", False),
        (MEMBER_A, "account:", False),
        (MEMBER_A, "anything-else", False),
    ],
)
def test_only_members_may_join_their_accounts_private_topic(
    db: Any, user: str | None, topic: str, allowed: bool
) -> None:
    db.execute("insert into auth.users (id) values (%s) on conflict do nothing", (OUTSIDER,))
    assert may_join(db, user, topic) is allowed


def broadcasts(db: Any) -> list[dict[str, Any]]:
    rows = db.execute("select topic, event, payload, private from realtime.messages order by inserted_at").fetchall()
    return list(rows)


def test_a_status_change_and_a_qr_broadcast_session_updated_on_the_accounts_topic(invoke: Invoke, db: Any) -> None:
    invoke("status_update/valid")
    invoke("qr_update/valid")

    sent = broadcasts(db)
    assert [(row["topic"], row["event"], row["private"]) for row in sent] == [
        (f"account:{ACCOUNT_A}", "session_updated", True)
    ] * 2
    assert sent[0]["payload"]["status"] == "connected" and sent[0]["payload"]["qr_waiting"] is False
    assert sent[1]["payload"]["status"] == "pending" and sent[1]["payload"]["qr_waiting"] is True
    assert set(sent[1]["payload"]) == {"id", "status", "qr_waiting", "qr_generated_at", "last_seen", "updated_at"}


def test_a_stored_message_broadcasts_ids_and_a_short_preview_never_its_content(invoke: Invoke, db: Any) -> None:
    long_text = "é" * 500
    result = invoke(
        request(
            "messages_received/text",
            {
                "session_id": SESSION_ID,
                "from": PHONE,
                "to": "5215500000001",
                "timestamp": 1795840860,
                "message_id": "long",
                "message": {"type": "text", "text": long_text},
            },
        )
    )
    assert result.status == 200, result.body

    (sent,) = broadcasts(db)
    assert (sent["topic"], sent["event"]) == (f"account:{ACCOUNT_A}", "message_created")
    assert sent["payload"]["preview"] == "é" * 100
    assert "content" not in sent["payload"] and long_text not in json.dumps(sent["payload"], ensure_ascii=False)
    assert sent["payload"]["chat_id"] == result.body["data"]["chat_id"]


def test_a_redelivery_broadcasts_nothing(invoke: Invoke, db: Any) -> None:
    invoke("messages_received/text")
    invoke("qr_update/valid")
    before = len(broadcasts(db))

    invoke("messages_received/text")
    invoke("qr_update/valid")

    assert len(broadcasts(db)) == before


# ---------------------------------------------------------------------------
# Contact names
# ---------------------------------------------------------------------------


def display_name(db: Any, account: str = ACCOUNT_A) -> str | None:
    row = db.execute(
        "select display_name from public.contacts where account_id = %s and wa_id = %s", (account, PHONE)
    ).fetchone()
    name: str | None = row["display_name"]
    return name


def test_push_name_is_kept_newest_wins_and_is_never_erased(db: Any) -> None:
    ingest(db, SESSION_ID, "1", push_name="María", sent_at="2026-12-01T10:00:00Z")
    ingest(db, SESSION_ID, "2", push_name="María G.", sent_at="2026-12-01T10:05:00Z")
    ingest(db, SESSION_ID, "3", push_name="Mary (old)", sent_at="2026-12-01T09:00:00Z")  # late delivery
    ingest(db, SESSION_ID, "4", push_name="  ", sent_at="2026-12-01T11:00:00Z")
    ingest(db, SESSION_ID, "5", sent_at="2026-12-01T12:00:00Z")

    assert display_name(db) == "María G."


def test_push_name_of_an_outbound_message_is_the_owners_and_is_not_kept(db: Any) -> None:
    ingest(db, SESSION_ID, "out", sender="5215500000001", push_name="Tienda Centro")

    assert display_name(db) is None


def test_push_name_is_accepted_by_messages_received(invoke: Invoke, db: Any) -> None:
    result = invoke(request("messages_received/text", {**event_body("messages_received/text"), "push_name": "Lupita"}))

    assert result.status == 200, result.body
    row = db.execute("select display_name from public.contacts where id = %s", (result.body["data"]["contact_id"],))
    assert row.fetchone()["display_name"] == "Lupita"
