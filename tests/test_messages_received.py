"""POST /api/whatsapp/messages/received, through the real handler, on both backends."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from conftest import SESSION_ID, Invoke, add_session, event_body

from whatsapp_ingest.models import MessageType

MESSAGE_TYPES = list(get_args(MessageType))


def count(db: Any, table: str) -> int:
    return int(db.execute(f"select count(*) as n from public.{table}").fetchone()["n"])


@pytest.mark.parametrize("kind", MESSAGE_TYPES)
def test_each_message_type_is_stored_with_its_text_or_caption_and_whole_content(
    invoke: Invoke, db: Any, kind: str
) -> None:
    sent = event_body(f"messages_received/{kind}")
    result = invoke(f"messages_received/{kind}")

    assert result.status == 200, result.body
    assert result.body["success"] is True
    data = result.body["data"]
    row = db.execute("select * from public.mensajes where id = %s", (data["message"]["id"],)).fetchone()
    assert row["tipo"] == "whatsapp_api"
    assert row["message_type"] == kind
    assert row["direction"] == "inbound"
    assert row["content"] == sent["message"]
    assert row["whatsapp_message_id"] == sent["message_id"]
    assert row["chat_id"] == data["chat_id"] and row["contact_id"] == data["contact_id"]
    payload = sent["message"].get(kind)
    expected_body = (
        payload if kind == "text" else (payload.get("caption") if kind not in ("location", "contact") else None)
    )
    assert row["body"] == expected_body
    assert data["message"]["content"] == sent["message"]


def test_unknown_fields_inside_the_message_are_kept_in_content(invoke: Invoke, db: Any) -> None:
    result = invoke("messages_received/audio")

    content = result.body["data"]["message"]["content"]
    assert content["audio"]["ptt"] is True


@pytest.mark.parametrize(
    "sender",
    [
        "+52 1 55 1234 5678",
        "5215512345678",
        "5215512345678:3@s.whatsapp.net",
        "5215512345678@c.us",
        "+52 (1) 55-1234-5678",
    ],
)
def test_phone_numbers_and_jids_of_one_person_make_one_contact(invoke: Invoke, db: Any, sender: str) -> None:
    first = invoke("messages_received/text")
    body = {**event_body("messages_received/text"), "from": sender, "message_id": "second"}
    second = invoke("messages_received/text", body=body)

    assert second.status == 200, second.body
    assert second.body["data"]["contact_id"] == first.body["data"]["contact_id"]
    assert second.body["data"]["chat_id"] == first.body["data"]["chat_id"]
    contact = db.execute("select wa_id, phone_number from public.contacts").fetchall()
    assert contact == [{"wa_id": "5215512345678", "phone_number": "+5215512345678"}]
    assert count(db, "chats") == 1 and count(db, "mensajes") == 2


def test_message_typed_on_the_linked_phone_is_outbound_and_belongs_to_the_receiver(invoke: Invoke, db: Any) -> None:
    result = invoke("messages_received/from_linked_phone")

    assert result.status == 200, result.body
    assert result.body["data"]["message"]["direction"] == "outbound"
    contact = db.execute("select * from public.contacts where id = %s", (result.body["data"]["contact_id"],)).fetchone()
    assert contact["wa_id"] == "5215512345678"


def test_lid_sender_is_a_contact_without_a_guessed_phone_number(invoke: Invoke, db: Any) -> None:
    result = invoke("messages_received/lid_sender")

    assert result.status == 200, result.body
    contact = db.execute("select * from public.contacts").fetchone()
    assert contact["wa_id"] == "123456789012345@lid"
    assert contact["phone_number"] is None


def test_redelivered_message_is_stored_once_and_returns_the_stored_row(invoke: Invoke, db: Any) -> None:
    first = invoke("messages_received/text")
    redelivery = {**event_body("messages_received/text"), "timestamp": 1795841999}
    second = invoke("messages_received/text", body=redelivery)

    assert second.status == 200
    assert second.body["data"]["duplicate"] is True
    assert first.body["data"]["duplicate"] is False
    assert second.body["data"]["message"] == first.body["data"]["message"]
    assert count(db, "mensajes") == 1 and count(db, "contacts") == 1 and count(db, "chats") == 1


def test_same_message_id_in_another_session_is_another_message(invoke: Invoke, db: Any) -> None:
    other = "9b2f6c1e-0a4d-4e8b-8c3f-2d1e0f9a8b7c"
    add_session(db, other)
    invoke("messages_received/text")
    result = invoke("messages_received/text", body={**event_body("messages_received/text"), "session_id": other})

    assert result.status == 200
    assert result.body["data"]["duplicate"] is False
    assert count(db, "mensajes") == 2 and count(db, "contacts") == 1 and count(db, "chats") == 2


@pytest.mark.parametrize(
    "timestamp",
    [
        "2026-11-28T04:41:00Z",
        "2026-11-28T05:41:00+01:00",
        "2026-11-28T04:41:00",
        1795840860,
        1795840860000,
        "1795840860",
        "1795840860000",
        1795840860.0,
    ],
)
def test_timestamps_in_iso_8601_and_epoch_seconds_or_milliseconds_mean_the_same_time(
    invoke: Invoke, db: Any, timestamp: Any
) -> None:
    result = invoke("messages_received/text", body={**event_body("messages_received/text"), "timestamp": timestamp})

    assert result.status == 200, result.body
    row = db.execute("select sent_at = '2026-11-28T04:41:00Z'::timestamptz as same from public.mensajes").fetchone()
    assert row["same"] is True


def test_chat_remembers_when_its_last_message_was_sent(invoke: Invoke, db: Any) -> None:
    invoke("messages_received/text")
    invoke("messages_received/image")

    chat = db.execute("select last_message_at = '2026-11-28T04:41:00Z'::timestamptz as ok from public.chats").fetchone()
    assert chat["ok"] is True


@pytest.mark.parametrize(
    ("event", "fields"),
    [
        ("messages_received/missing_fields", ["from", "to", "timestamp", "message_id", "message"]),
        ("messages_received/type_without_payload", ["message"]),
        ("messages_received/location_out_of_range", ["message.location.latitude", "message.location.longitude"]),
        ("messages_received/contact_without_name_or_phone", ["message.contact"]),
        ("messages_received/invalid_sender", ["from"]),
    ],
)
def test_invalid_message_is_400_naming_each_bad_field_and_writes_nothing(
    invoke: Invoke, db: Any, event: str, fields: list[str]
) -> None:
    result = invoke(event)

    assert result.status == 400
    assert result.body["success"] is False
    named = {error["field"] for error in result.body["data"]["errors"]}
    for field in fields:
        assert field in named, (field, result.body["message"])
        assert f"{field}:" in result.body["message"]
    assert count(db, "mensajes") == 0 and count(db, "contacts") == 0


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"type": "text", "text": 5}, "message.text"),
        ({"type": "image", "image": {"url": "https://x"}}, "message.image.id"),
        ({"type": "video", "video": "not an object"}, "message.video"),
        ({"type": "voice", "voice": {}}, "message.type"),
        ({"type": "location", "location": {"latitude": "north", "longitude": 0}}, "message.location.latitude"),
    ],
)
def test_each_message_type_is_validated_with_its_own_object(
    invoke: Invoke, db: Any, message: dict[str, Any], field: str
) -> None:
    result = invoke("messages_received/text", body={**event_body("messages_received/text"), "message": message})

    assert result.status == 400
    assert field in {error["field"] for error in result.body["data"]["errors"]}, result.body


@pytest.mark.parametrize("field", ["from", "to"])
@pytest.mark.parametrize(
    "jid", ["<svg onload=alert(1)>@lid", "1203630\u200b25246125486@g.us", "javascript:x@broadcast"]
)
def test_non_phone_id_with_markup_or_invisible_characters_is_400_naming_the_field(
    invoke: Invoke, db: Any, field: str, jid: str
) -> None:
    result = invoke("messages_received/text", body={**event_body("messages_received/text"), field: jid})

    assert result.status == 400
    assert [error["field"] for error in result.body["data"]["errors"]] == [field]
    assert "not a WhatsApp id" in result.body["message"]
    assert count(db, "mensajes") == 0 and count(db, "contacts") == 0


def test_message_for_an_unknown_session_is_404_and_writes_nothing(invoke: Invoke, db: Any) -> None:
    result = invoke("messages_received/unknown_session")

    assert result.status == 404
    assert result.body == {"success": False, "message": "session 00000000-0000-4000-8000-000000000000 not found"}
    assert count(db, "contacts") == 0 and count(db, "chats") == 0


def test_demo_session_is_the_one_the_events_use() -> None:
    assert event_body("messages_received/text")["session_id"] == SESSION_ID
