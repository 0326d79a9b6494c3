"""POST /api/whatsapp/sessions/status-update, through the real handler, on both backends."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import SESSION_ID, Invoke, event_body


def session(db: Any) -> dict[str, Any]:
    row: dict[str, Any] = db.execute("select * from public.whatsapp_sessions where id = %s", (SESSION_ID,)).fetchone()
    return row


def test_status_and_every_optional_field_sent_are_stored_and_returned(invoke: Invoke, db: Any) -> None:
    before = session(db)
    result = invoke("status_update/valid")

    assert result.status == 200, result.body
    assert result.body["success"] is True
    data = result.body["data"]
    stored = session(db)
    assert stored["status"] == data["status"] == "connected"
    assert stored["phone_number"] == "+52 1 55 0000 0001"
    assert stored["whatsapp_user_id"] == "5215500000001:12@s.whatsapp.net"
    assert stored["own_wa_id"] == "5215500000001"
    assert stored["auth_folder_path"] == "/data/auth/3f8a2b1c"
    assert stored["server_port"] == data["server_port"] == 3101
    assert stored["last_seen"].isoformat() == "2026-11-28T04:40:00+00:00"
    assert stored["updated_at"] > before["updated_at"]
    assert data["id"] == SESSION_ID


def test_fields_not_sent_are_left_as_stored(invoke: Invoke, db: Any) -> None:
    invoke("status_update/valid")
    result = invoke(
        "status_update/valid", body={"session_id": SESSION_ID, "status": "disconnected", "phone_number": None}
    )

    assert result.status == 200
    stored = session(db)
    assert stored["status"] == "disconnected"
    assert stored["phone_number"] == "+52 1 55 0000 0001"
    assert stored["server_port"] == 3101


def test_explicit_null_clears_server_port(invoke: Invoke, db: Any) -> None:
    invoke("status_update/valid")
    result = invoke("status_update/clear_server_port")

    assert result.status == 200
    assert result.body["data"]["server_port"] is None
    assert session(db)["server_port"] is None


def test_updated_at_comes_from_the_database_clock(invoke: Invoke, db: Any) -> None:
    invoke("status_update/valid")

    row = db.execute(
        "select updated_at between now() - interval '1 minute' and now() as recent from public.whatsapp_sessions"
    ).fetchone()
    assert row["recent"] is True


@pytest.mark.parametrize(
    ("event", "fields"),
    [
        ("status_update/missing_status", ["status"]),
        ("status_update/invalid_fields", ["session_id", "status", "server_port"]),
    ],
)
def test_invalid_status_update_is_400_naming_each_bad_field(
    invoke: Invoke, db: Any, event: str, fields: list[str]
) -> None:
    before = session(db)
    result = invoke(event)

    assert result.status == 400
    named = {error["field"] for error in result.body["data"]["errors"]}
    assert set(fields) <= named, result.body
    assert session(db) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [("server_port", -1), ("server_port", 65536), ("last_seen", "tomorrow"), ("phone_number", "call me")],
)
def test_out_of_range_or_malformed_optional_field_is_400(invoke: Invoke, db: Any, field: str, value: Any) -> None:
    result = invoke("status_update/valid", body={**event_body("status_update/valid"), field: value})

    assert result.status == 400
    assert [error["field"] for error in result.body["data"]["errors"]] == [field]


def test_status_update_for_an_unknown_session_is_404(invoke: Invoke, db: Any) -> None:
    result = invoke("status_update/unknown_session")

    assert result.status == 404
    assert result.body["success"] is False
    assert "not found" in result.body["message"]


def test_update_older_than_the_stored_state_is_stale_and_changes_nothing(invoke: Invoke, db: Any) -> None:
    newer = {"session_id": SESSION_ID, "status": "connected", "timestamp": "2026-11-28T05:00:00Z", "server_port": 1}
    older = {"session_id": SESSION_ID, "status": "disconnected", "timestamp": "2026-11-28T04:59:59Z", "server_port": 2}
    invoke("status_update/valid", body=newer)
    before = session(db)

    result = invoke("status_update/valid", body=older)

    assert result.status == 200
    assert result.body["data"]["stale"] is True
    assert result.body["message"].startswith("stale")
    assert result.body["data"]["status"] == "connected"
    assert session(db) == before


def test_newer_or_untimed_updates_apply_last_write_wins(invoke: Invoke, db: Any) -> None:
    invoke("status_update/valid", body={"session_id": SESSION_ID, "status": "connected", "timestamp": 1795841000})
    newer = invoke("status_update/valid", body={"session_id": SESSION_ID, "status": "expired", "timestamp": 1795841001})
    untimed = invoke("status_update/valid", body={"session_id": SESSION_ID, "status": "disconnected"})

    assert newer.body["data"]["stale"] is False and untimed.body["data"]["stale"] is False
    assert session(db)["status"] == "disconnected"


def test_an_event_time_far_ahead_of_our_clock_does_not_make_later_updates_stale(invoke: Invoke, db: Any) -> None:
    ahead = invoke("status_update/valid", body={"session_id": SESSION_ID, "status": "expired", "timestamp": 4102444800})
    later = invoke(
        "status_update/valid", body={"session_id": SESSION_ID, "status": "connected", "timestamp": 1795841000}
    )

    assert ahead.body["data"]["stale"] is False and later.body["data"]["stale"] is False
    assert session(db)["status"] == "connected"
