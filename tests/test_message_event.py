"""POST /api/whatsapp/messages/event: what the gateway adapters map (delivery status,
reactions, edits, deletions), for an orchestrator of our own contract, on both backends."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import SESSION_ID, Invoke, event_body, request

EVENT = "message_event/status_read"
MESSAGE_ID = event_body("messages_received/text")["message_id"]


def change(kind: str, **fields: Any) -> dict[str, Any]:
    return {"session_id": SESSION_ID, "kind": kind, "message_id": MESSAGE_ID, **fields}


def stored(db: Any) -> dict[str, Any]:
    row: dict[str, Any] = db.execute(
        "select * from public.mensajes where whatsapp_message_id = %s", (MESSAGE_ID,)
    ).fetchone()
    return row


def test_a_status_is_kept_on_the_message_and_only_moves_forward(invoke: Invoke, db: Any) -> None:
    invoke("messages_received/text")

    read = invoke(request(EVENT, change("status", status="read")))
    back = invoke(request(EVENT, change("status", status="delivered")))

    assert read.body["data"] == {"message_id": MESSAGE_ID, "kind": "status", "applied": True, "pending": False}
    assert back.body["message"].startswith("message event changed nothing")
    assert stored(db)["delivery_status"] == "read"


def test_a_status_before_its_message_is_kept_and_applied_when_the_message_arrives(invoke: Invoke, db: Any) -> None:
    early = invoke(request(EVENT, change("status", status="delivered")))
    assert early.body["data"]["pending"] is True

    invoke("messages_received/text")

    assert stored(db)["delivery_status"] == "delivered"


def test_a_failed_status_keeps_its_error_code(invoke: Invoke, db: Any) -> None:
    invoke("messages_received/text")
    invoke(request(EVENT, change("status", status="failed", error_code=131053, error_title="Media upload error")))

    row = stored(db)
    assert row["delivery_status"] == "failed"
    assert str(row["delivery_error"]["code"]) == "131053"


def test_a_reaction_is_set_and_removed(invoke: Invoke, db: Any) -> None:
    invoke("messages_received/text")
    invoke(request(EVENT, change("reaction", emoji="👍", **{"from": "5215512345678"})))
    assert "👍" in str(stored(db)["reactions"])

    invoke(request(EVENT, change("reaction", emoji="", **{"from": "5215512345678"})))
    assert "👍" not in str(stored(db)["reactions"])


def test_an_edit_changes_the_text_and_keeps_the_old_one(invoke: Invoke, db: Any) -> None:
    invoke("messages_received/text")
    before = stored(db)["body"]

    invoke(request(EVENT, change("edit", text="nuevo texto")))

    row = stored(db)
    assert row["body"] == "nuevo texto" and row["edited_at"] is not None
    assert before in str(row["edit_history"])


def test_a_deletion_marks_the_message_and_keeps_its_content_for_audit(invoke: Invoke, db: Any) -> None:
    invoke("messages_received/text")
    text = stored(db)["body"]

    invoke(request(EVENT, change("delete")))

    row = stored(db)
    assert row["deleted_at"] is not None and row["body"] == text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (change("status"), "body"),
        (change("reaction", emoji="👍"), "body"),
        (change("like"), "kind"),
        (change("status", status="seen"), "status"),
    ],
)
def test_an_event_missing_what_its_kind_needs_is_400(invoke: Invoke, db: Any, body: dict[str, Any], field: str) -> None:
    result = invoke(request(EVENT, body))

    assert result.status == 400
    assert field in {error["field"] for error in result.body["data"]["errors"]}


def test_an_event_for_an_unknown_session_is_404(invoke: Invoke, db: Any) -> None:
    assert invoke("message_event/unknown_session").status == 404


def test_an_edit_after_an_erasing_deletion_does_not_bring_the_text_back(
    invoke: Invoke, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from whatsapp_ingest.config import settings

    monkeypatch.setenv("ERASE_DELETED_CONTENT", "true")
    settings.cache_clear()
    invoke("messages_received/text")
    invoke(request(EVENT, change("delete")))

    late = invoke(request(EVENT, change("edit", text="secreto v2", timestamp="2026-11-28T04:44:00Z")))

    assert late.body["data"]["applied"] is False
    row = stored(db)
    assert row["body"] is None and "secreto" not in str(row["content"])


def test_a_redelivered_reaction_changes_nothing_and_broadcasts_nothing(invoke: Invoke, db: Any) -> None:
    invoke("messages_received/text")
    reaction = change("reaction", emoji="❤️", **{"from": "5215512345678"})
    first = invoke(request(EVENT, reaction))
    sent = db.execute("select count(*) as n from realtime.messages").fetchone()["n"]

    again = invoke(request(EVENT, reaction))

    assert (first.body["data"]["applied"], again.body["data"]["applied"]) == (True, False)
    assert db.execute("select count(*) as n from realtime.messages").fetchone()["n"] == sent


def test_events_that_waited_a_week_for_their_message_are_forgotten(invoke: Invoke, db: Any) -> None:
    invoke(request(EVENT, change("status", status="delivered", message_id="never-arrives")))
    db.execute("update public.whatsapp_pending_message_events set created_at = now() - interval '8 days'")

    invoke(request(EVENT, change("status", status="read", message_id="also-waiting")))

    waiting = db.execute("select whatsapp_message_id from public.whatsapp_pending_message_events").fetchall()
    assert [row["whatsapp_message_id"] for row in waiting] == ["also-waiting"]


def test_a_queued_message_event_is_applied_by_the_replay(invoke: Invoke, db: Any) -> None:
    import json

    from whatsapp_ingest.retry_queue import replay

    invoke("messages_received/text")
    queued = {"endpoint": "message_event", "body": change("status", status="read"), "request_id": "r-1"}

    result = replay(json.dumps({**queued, "received_at": "2026-11-28T04:46:00+00:00"}))

    assert result["applied"] is True
    assert stored(db)["delivery_status"] == "read"
