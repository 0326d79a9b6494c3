"""The rules real traffic needs, everywhere (migration 20261206010000): push names newest-wins
by message time without exception; a late close still ends the QRs before it; pending events
capped per session (and counted); bounded edit history; bounded, render-safe gateway values."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from conftest import SESSION_ID, call_handler, embedded_postgres, request
from psycopg.rows import dict_row
from pydantic import ValidationError
from test_logging_and_metrics import metrics_in

from local import database
from whatsapp_ingest.events import AckEvent, EditEvent, MessageChange, QrEvent, ReactionEvent

PEER = "5215512345678"
OWN = "5215500000001"


def ingest(db: Any, message_id: str, at: str, name: str | None) -> None:
    db.execute(
        'select public.whatsapp_ingest_message(%s, %s, %s, %s, \'text\', \'hola\', \'{"type": "text", "text":'
        ' "hola"}\', %s, false, %s)',
        (SESSION_ID, message_id, PEER, OWN, at, name),
    )


def ingest_batch(db: Any, items: list[tuple[str, str, str | None]]) -> None:
    messages = [
        {
            "i": i,
            "message_id": mid,
            "from": PEER,
            "to": OWN,
            "type": "text",
            "body": "hola",
            "content": {"type": "text", "text": "hola"},
            "sent_at": at,
            "from_me": False,
            "push_name": name,
        }
        for i, (mid, at, name) in enumerate(items)
    ]
    db.execute("select public.whatsapp_ingest_batch(%s, %s::jsonb)", (SESSION_ID, psycopg.types.json.Json(messages)))


def display_name(db: Any) -> str | None:
    row = db.execute("select display_name from public.contacts where wa_id = %s", (PEER,)).fetchone()
    return row["display_name"]


# ---------------------------------------------------------------------------
# Push names
# ---------------------------------------------------------------------------


def test_an_old_name_delivered_late_does_not_replace_a_name_resent_since(db: Any) -> None:
    ingest(db, "N1", "2026-12-01T10:00:00Z", "Ana")
    ingest(db, "N2", "2026-12-01T10:20:00Z", "Ana")  # the same name again: the contact is not written
    ingest(db, "N3", "2026-12-01T10:10:00Z", "Anita")  # history, delivered late: older than N2
    assert display_name(db) == "Ana"

    ingest(db, "N4", "2026-12-01T10:30:00Z", "Anita")  # a newer name still wins
    assert display_name(db) == "Anita"


def test_a_history_batch_follows_the_same_rule(db: Any) -> None:
    ingest_batch(db, [("B1", "2026-12-01T10:00:00Z", "Ana"), ("B2", "2026-12-01T10:20:00Z", "Ana")])
    ingest_batch(db, [("B3", "2026-12-01T10:10:00Z", "Anita")])
    assert display_name(db) == "Ana"
    ingest_batch(db, [("B4", "2026-12-01T10:30:00Z", "Anita")])
    assert display_name(db) == "Anita"


def test_a_name_resent_unchanged_costs_no_contact_write(db: Any) -> None:
    ingest(db, "W1", "2026-12-01T10:00:00Z", "Ana")
    before = db.execute("select xmin::text as x from public.contacts where wa_id = %s", (PEER,)).fetchone()["x"]
    ingest(db, "W2", "2026-12-01T10:20:00Z", "Ana")
    after = db.execute("select xmin::text as x from public.contacts where wa_id = %s", (PEER,)).fetchone()["x"]
    assert after == before


# ---------------------------------------------------------------------------
# A late close is still a fact about the QR
# ---------------------------------------------------------------------------


def status(db: Any, name: str, at: str) -> dict[str, Any]:
    return db.execute(
        "select public.whatsapp_update_session_status(%s, %s, '{}', %s, %s) as r", (SESSION_ID, name, at, at)
    ).fetchone()["r"]


def qr(db: Any, code: str, at: str) -> dict[str, Any]:
    return db.execute(
        "select public.whatsapp_store_qr(%s, %s, null, %s, %s) as r", (SESSION_ID, code, at, at)
    ).fetchone()["r"]


def shown(db: Any) -> tuple[str, str | None]:
    row = db.execute("select status, qr_code from public.whatsapp_sessions where id = %s", (SESSION_ID,)).fetchone()
    return row["status"], row["qr_code"]


def test_a_close_older_than_the_newest_pending_still_ends_the_qr_before_it(db: Any) -> None:
    status(db, "pending", "2026-12-01T10:00:00Z")
    qr(db, "2@first", "2026-12-01T10:00:05Z")
    status(db, "pending", "2026-12-01T10:00:40Z")  # a new attempt, delivered before the close
    late = status(db, "disconnected", "2026-12-01T10:00:30Z")

    assert late["stale"] is True  # the session stays pending: the newer attempt
    assert shown(db) == ("pending", None)  # but the closed attempt's QR is gone
    # ... and a QR of that closed attempt, arriving after, is refused
    assert qr(db, "2@first-refresh", "2026-12-01T10:00:25Z")["stale"] is True
    assert shown(db) == ("pending", None)
    # the new attempt's QR is shown
    assert qr(db, "2@second", "2026-12-01T10:00:45Z")["stale"] is False
    assert shown(db) == ("pending", "2@second")


@pytest.mark.parametrize("close", ["disconnected", "expired", "connected"])
def test_a_late_close_keeps_a_qr_generated_after_it(db: Any, close: str) -> None:
    status(db, "pending", "2026-12-01T10:00:00Z")
    qr(db, "2@newer", "2026-12-01T10:00:50Z")
    assert status(db, close, "2026-12-01T10:00:30Z")["stale"] is True
    assert shown(db) == ("pending", "2@newer")


def test_after_the_upgrade_a_late_close_ends_a_qr_stored_before_it() -> None:
    # Sessions stored before this migration have no qr_order: the QR's own time decides.
    with embedded_postgres() as server:
        url = server.get_uri()
        database.migrate(url, until="20261202040000", seed=True)
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            status(conn, "pending", "2026-12-01T10:00:00Z")
            qr(conn, "2@old", "2026-12-01T10:00:05Z")
            status(conn, "pending", "2026-12-01T10:00:40Z")
            database.migrate(url)
            assert shown(conn) == ("pending", "2@old")
            assert status(conn, "disconnected", "2026-12-01T10:00:30Z")["stale"] is True
            assert shown(conn) == ("pending", None)
            assert conn.execute("select count(*) as n from public.chats where name_seen_at is not null").fetchone() == {
                "n": 0
            }


# ---------------------------------------------------------------------------
# Pending events: capped per session, deduplicated, counted
# ---------------------------------------------------------------------------


def event(db: Any, message_id: str, data: str = '{"status": "read"}', kind: str = "status") -> dict[str, Any]:
    return db.execute(
        "select public.whatsapp_message_event(%s, %s, %s, %s::jsonb) as r", (SESSION_ID, message_id, kind, data)
    ).fetchone()["r"]


def waiting(db: Any) -> list[str]:
    rows = db.execute("select whatsapp_message_id from public.whatsapp_pending_message_events order by id")
    return [row["whatsapp_message_id"] for row in rows]


def test_pending_events_are_capped_at_1000_per_session_oldest_dropped(db: Any) -> None:
    db.execute(
        "insert into public.whatsapp_pending_message_events (session_id, whatsapp_message_id, kind, data)"
        " select %s, 'P' || n, 'status', '{\"status\": \"read\"}' from generate_series(1, 1000) n",
        (SESSION_ID,),
    )
    result = event(db, "P1001")
    assert result["pending"] is True and result["dropped"] == 1
    kept = waiting(db)
    assert len(kept) == 1000 and kept[0] == "P2" and kept[-1] == "P1001"
    assert "dropped" not in event(db, "P1001")  # the same event again: kept once, nothing dropped


def test_pending_events_are_capped_at_one_mebibyte_per_session(db: Any) -> None:
    text = "x" * 60_000
    results = [event(db, f"E{n}", f'{{"body": "{text}"}}', "edit") for n in range(20)]
    dropped = sum(r.get("dropped", 0) for r in results)
    size = db.execute(
        "select sum(octet_length(data::text)) as b from public.whatsapp_pending_message_events"
    ).fetchone()
    assert dropped > 0 and size["b"] <= 1_048_576
    assert waiting(db)[-1] == "E19"  # the newest is kept


def test_a_dropped_pending_event_is_counted_as_a_metric(
    db: Any, handlers: Any, invoke: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    db.execute(
        "insert into public.whatsapp_pending_message_events (session_id, whatsapp_message_id, kind, data)"
        " select %s, 'P' || n, 'status', '{\"status\": \"read\"}' from generate_series(1, 1000) n",
        (SESSION_ID,),
    )
    capsys.readouterr()
    body = {"session_id": SESSION_ID, "message_id": "NEW", "kind": "status", "status": "read"}
    result = call_handler(handlers, request("message_event/status_read", body))
    assert result.status == 200 and result.body["data"] == {
        "message_id": "NEW",
        "kind": "status",
        "applied": False,
        "pending": True,
    }
    assert "pending_dropped" in metrics_in(capsys.readouterr().out)


# ---------------------------------------------------------------------------
# Bounded edit history, bounded and render-safe gateway values
# ---------------------------------------------------------------------------


def test_edit_history_keeps_the_last_20_versions(db: Any) -> None:
    ingest(db, "H1", "2026-12-01T10:00:00Z", None)
    for n in range(25):
        event(db, "H1", f'{{"body": "v{n}"}}', "edit")
    history = db.execute("select edit_history, body from public.mensajes where whatsapp_message_id = 'H1'").fetchone()
    assert len(history["edit_history"]) == 20
    assert [h["body"] for h in history["edit_history"]][-2:] == ["v22", "v23"] and history["body"] == "v24"


NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "make",
    [
        lambda: QrEvent(qr_code="2@x", qr_url="javascript:alert(1)", generated_at=NOW),
        lambda: QrEvent(qr_code="2@x", qr_url="data:image/svg+xml;base64,PHN2Zz4=", generated_at=NOW),
        lambda: QrEvent(qr_code="x" * 65_537, generated_at=NOW),
        lambda: EditEvent(message_id="ABC", body="x" * 65_537),
        lambda: ReactionEvent(message_id="ABC", **{"from": PEER}, emoji="😀" * 65),
        lambda: AckEvent(message_id="ABC", status="failed", error_title="x" * 1025),
        lambda: AckEvent(message_id="wamid.<script>", status="read"),
        lambda: AckEvent(message_id="ABC\u2066", status="read"),
    ],
)
def test_gateway_values_are_bounded_and_render_safe(make: Any) -> None:
    with pytest.raises(ValidationError):
        make()


def test_gateway_qr_accepts_what_the_contract_accepts() -> None:
    ok = QrEvent(qr_code="2@x", qr_url="data:image/png;base64,iVBORw0KGgo=", generated_at=NOW)
    assert ok.qr_url is not None
    assert QrEvent(qr_code="2@x", qr_url="https://qr.example/p.png", generated_at=NOW).qr_url


def test_the_contracts_message_event_keeps_its_ids_as_messages_received_stores_them() -> None:
    # messages/received accepts any message_id up to 512 characters; an event must be able to name it.
    change = MessageChange.model_validate(
        {"session_id": SESSION_ID, "message_id": "id with space", "kind": "status", "status": "read"}
    )
    assert change.event(False).message_id == "id with space"


def test_an_event_naming_the_other_direction_prefix_waits_for_a_message_being_stored(
    db: Any, database_url: str
) -> None:
    # One lock for both spellings: an event filed while the message is being stored under the
    # other prefix waits for it, then applies, instead of being left pending for a week.
    received, named = "false_5215512345678@c.us_3EB0AB12", "true_5215512345678@c.us_3EB0AB12"
    with psycopg.connect(database_url, row_factory=dict_row) as storing:
        storing.execute(
            "select public.whatsapp_ingest_message(%s, %s, %s, %s, 'text', 'hola', '{}', now(), false)",
            (SESSION_ID, received, PEER, OWN),
        )  # in a transaction, not committed yet
        results: list[dict[str, Any]] = []

        def file_event() -> None:
            with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as other:
                results.append(event(other, named))

        filing = threading.Thread(target=file_event)
        filing.start()
        filing.join(timeout=0.5)
        assert filing.is_alive()  # waiting on the message's lock
        storing.commit()
    filing.join(timeout=10)
    assert results == [{"message_id": named, "kind": "status", "applied": True, "pending": False}]
    assert waiting(db) == []
