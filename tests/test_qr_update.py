"""POST /api/whatsapp/sessions/qr-update, through the real handler, on both backends."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import SESSION_ID, Invoke, event_body


def test_qr_is_kept_on_the_session_which_becomes_pending(invoke: Invoke, db: Any) -> None:
    sent = event_body("qr_update/valid")
    result = invoke("qr_update/valid")

    assert result.status == 200, result.body
    data = result.body["data"]
    assert data["qr_code"] == sent["qr_code"]
    assert data["qr_url"] == sent["qr_url"]
    assert data["timestamp"] == "2026-11-28T04:42:00+00:00"
    assert data["session"]["status"] == "pending"
    assert data["session"]["id"] == SESSION_ID
    stored = db.execute("select * from public.whatsapp_sessions where id = %s", (SESSION_ID,)).fetchone()
    assert stored["status"] == "pending"
    assert stored["qr_code"] == sent["qr_code"]
    assert stored["qr_url"] == sent["qr_url"]
    assert stored["qr_generated_at"].isoformat() == "2026-11-28T04:42:00+00:00"


def test_a_new_qr_replaces_the_previous_one(invoke: Invoke, db: Any) -> None:
    invoke("qr_update/valid")
    newer = {**event_body("qr_update/valid"), "qr_code": "2@second", "timestamp": 1795841000}
    invoke("qr_update/valid", body=newer)

    stored = db.execute("select qr_code from public.whatsapp_sessions where id = %s", (SESSION_ID,)).fetchone()
    assert stored["qr_code"] == "2@second"


@pytest.mark.parametrize(
    ("event", "field"), [("qr_update/missing_qr_code", "qr_code"), ("qr_update/invalid_timestamp", "timestamp")]
)
def test_invalid_qr_update_is_400_naming_the_field(invoke: Invoke, db: Any, event: str, field: str) -> None:
    result = invoke(event)

    assert result.status == 400
    assert [error["field"] for error in result.body["data"]["errors"]] == [field]
    assert (
        db.execute("select qr_code from public.whatsapp_sessions where id = %s", (SESSION_ID,)).fetchone()["qr_code"]
        is None
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("qr_url", "javascript:alert(document.cookie)"),
        ("qr_url", "data:image/svg+xml,<svg onload=alert(1)>"),
        ("qr_code", "x" * (64 * 1024 + 1)),
    ],
)
def test_qr_the_crm_must_not_render_is_400_naming_the_field_and_writes_nothing(
    invoke: Invoke, db: Any, field: str, value: str
) -> None:
    result = invoke("qr_update/valid", body={**event_body("qr_update/valid"), field: value})

    assert result.status == 400
    assert [error["field"] for error in result.body["data"]["errors"]] == [field]
    assert result.body["message"].startswith(f"invalid request: {field}: ")
    assert db.execute("select qr_code, qr_url from public.whatsapp_sessions").fetchone() == {
        "qr_code": None,
        "qr_url": None,
    }


def test_qr_for_an_unknown_session_is_404(invoke: Invoke, db: Any) -> None:
    result = invoke("qr_update/unknown_session")

    assert result.status == 404
    assert result.body["success"] is False


def test_late_qr_older_than_the_stored_state_is_stale(invoke: Invoke, db: Any) -> None:
    connected = {"session_id": SESSION_ID, "status": "connected", "timestamp": "2026-11-28T04:50:00Z"}
    invoke("status_update/valid", body=connected)

    result = invoke("qr_update/valid")  # generated 04:42, delivered late

    assert result.status == 200
    assert result.body["message"].startswith("stale")
    stored = db.execute("select status, qr_code from public.whatsapp_sessions where id = %s", (SESSION_ID,)).fetchone()
    assert stored == {"status": "connected", "qr_code": None}
