"""Real gateway traffic filed the way it happened (docs/gateway-traffic.md): Cloud API edits,
revocations, coexistence echoes, Flow replies and value-level errors; WAHA's bare ids and its
pre-2024 flat media. Every body is a documented one (events/webhooks/SOURCES.md), posted
through the real webhook handlers, on both backends."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from conftest import call_handler
from gateway_support import ENV, WEBHOOKS, link, payload, webhook_event
from test_logging_and_metrics import metrics_in

TEXT_ID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="  # meta/text_official_doc.json
ECHO_ID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="
META_INSTANCE = "106540352242922"
WAHA_TEXT_ID = "true_11111111111@c.us_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"  # waha/message_text_webjs_fromMe.json


@pytest.fixture
def hook(handlers: Any, db: Any, backend: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)

    def call(gateway: str, body: Any) -> Any:
        result = call_handler(handlers, webhook_event(gateway, body))
        assert result.status == 200, result.body
        return result

    return call


def traffic(gateway: str, name: str) -> Any:
    return payload(gateway, f"traffic/{name}")


def message(db: Any, message_id: str) -> dict[str, Any]:
    return dict(db.execute("select * from public.mensajes where whatsapp_message_id = %s", (message_id,)).fetchone())


def pending(db: Any) -> list[dict[str, Any]]:
    return list(db.execute("select * from public.whatsapp_pending_message_events order by id").fetchall())


# ---------------------------------------------------------------------------
# Cloud API
# ---------------------------------------------------------------------------


def test_cloud_api_revoke_deletes_the_original_it_names(hook: Any, db: Any) -> None:
    link(db, "meta", META_INSTANCE)
    hook("meta", payload("meta", "text_official_doc.json"))

    result = hook("meta", traffic("meta", "revoke.source.json"))

    assert result.body["data"]["results"] == [
        {"message_id": TEXT_ID, "kind": "delete", "applied": True, "pending": False}
    ]
    row = message(db, TEXT_ID)
    assert row["deleted_at"] is not None and row["body"] == "Does it come in another color?"  # kept for audit
    assert db.execute("select count(*) as n from public.mensajes").fetchone()["n"] == 1  # no "unsupported" bubble


@pytest.mark.parametrize("dropped", [("contacts",), ("from",), ("contacts", "from")])
def test_cloud_api_revoke_needs_no_sender(hook: Any, db: Any, dropped: tuple[str, ...]) -> None:
    # The documented revoke without what a deletion does not need: the original is named by id.
    link(db, "meta", META_INSTANCE)
    hook("meta", payload("meta", "text_official_doc.json"))
    revoke = copy.deepcopy(traffic("meta", "revoke.source.json"))
    value = revoke["entry"][0]["changes"][0]["value"]
    if "contacts" in dropped:
        del value["contacts"]
    if "from" in dropped:
        del value["messages"][0]["from"]

    result = hook("meta", revoke)

    assert result.body["data"]["results"] == [
        {"message_id": TEXT_ID, "kind": "delete", "applied": True, "pending": False}
    ]
    assert message(db, TEXT_ID)["deleted_at"] is not None


def test_cloud_api_revoke_before_its_message_waits_and_applies(hook: Any, db: Any) -> None:
    link(db, "meta", META_INSTANCE)
    assert hook("meta", traffic("meta", "revoke.source.json")).body["data"]["results"][0]["pending"] is True
    hook("meta", payload("meta", "text_official_doc.json"))
    assert message(db, TEXT_ID)["deleted_at"] is not None
    assert pending(db) == []


def test_cloud_api_edit_replaces_the_caption_of_the_original(hook: Any, db: Any) -> None:
    link(db, "meta", META_INSTANCE)
    body = traffic("meta", "edit_image_caption.source.json")
    original = body["entry"][0]["changes"][0]["value"]["messages"][0]["edit"]["original_message_id"]
    db.execute(  # the image the customer sent first
        "select public.whatsapp_ingest_message(%s, %s, '16505551234', '15550783881', 'image', 'old caption',"
        " %s::jsonb, now() - interval '1 minute')",
        (
            "3f8a2b1c-5d4e-4f6a-9b7c-1d2e3f4a5b6c",
            original,
            '{"type": "image", "image": {"id": "1", "caption": "old caption"}}',
        ),
    )

    hook("meta", body)

    row = message(db, original)
    assert row["body"] == "<MEDIA_ASSET_CAPTION>" and row["content"]["image"]["caption"] == "<MEDIA_ASSET_CAPTION>"
    assert [h["body"] for h in row["edit_history"]] == ["old caption"]
    assert row["edited_at"] is not None


def test_coexistence_echo_is_stored_outbound_with_its_edit_and_revocation(hook: Any, db: Any) -> None:
    link(db, "meta", META_INSTANCE)

    hook("meta", traffic("meta", "smb_message_echoes_text.source.json"))
    row = message(db, ECHO_ID)
    assert (row["direction"], row["from_wa_id"], row["to_wa_id"], row["from_me"]) == (
        "outbound",
        "15550783881",
        "16505551234",
        True,
    )
    assert row["body"].startswith("Here's the info you requested!")
    contact = db.execute("select * from public.contacts where id = %s", (row["contact_id"],)).fetchone()
    assert contact["wa_id"] == "16505551234" and contact["display_name"] is None  # the owner's name is not theirs

    hook("meta", traffic("meta", "smb_message_echoes_edit.source.json"))
    row = message(db, ECHO_ID)
    assert row["body"] == "<MESSAGE_BODY>" and len(row["edit_history"]) == 1

    hook("meta", traffic("meta", "smb_message_echoes_revoke.source.json"))
    assert message(db, ECHO_ID)["deleted_at"] is not None
    assert db.execute("select count(*) as n from public.mensajes").fetchone()["n"] == 1


def test_flow_reply_keeps_its_body_text(hook: Any, db: Any) -> None:
    link(db, "meta", META_INSTANCE)
    hook("meta", traffic("meta", "interactive_nfm_reply_flow.json"))
    row = message(db, "wamid.MESSAGE_ID")
    assert row["message_type"] == "interactive" and row["body"] == "Sent"
    assert row["content"]["interactive"]["nfm_reply"]["response_json"].startswith('{"flow_token"')


def test_value_level_errors_are_logged_and_counted(
    hook: Any, db: Any, log_lines: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    link(db, "meta", META_INSTANCE)
    capsys.readouterr()

    result = hook("meta", traffic("meta", "errors_value_level.source.json"))

    assert result.body["message"] == "ignored"  # nothing to store, nothing to retry
    (line,) = [line for line in log_lines() if line["message"] == "gateway reported an error"]
    assert line["level"] == "WARNING"
    assert line["gateway_error"] == {"code": "130429", "title": "<ERROR_TITLE>", "details": "<ERROR_DETAILS>"}
    assert "gateway_error" in metrics_in(capsys.readouterr().out)


# ---------------------------------------------------------------------------
# WAHA
# ---------------------------------------------------------------------------


def test_waha_edit_and_revocation_by_bare_id_reach_the_message_stored_under_its_full_id(hook: Any, db: Any) -> None:
    link(db, "waha", "default")
    hook("waha", payload("waha", "message_text_webjs_fromMe.json"))

    edited = hook("waha", traffic("waha", "message_edited_bare_id.assembled.json"))
    assert edited.body["data"]["results"][0] == {
        "message_id": WAHA_TEXT_ID,
        "kind": "edit",
        "applied": True,
        "pending": False,
    }
    hook("waha", traffic("waha", "message_revoked_bare_id.assembled.json"))

    row = message(db, WAHA_TEXT_ID)
    assert row["body"] == "new edited text" and [h["body"] for h in row["edit_history"]] == ["Hi there!"]
    assert row["deleted_at"] is not None
    assert pending(db) == []


def test_waha_redelivered_edit_before_its_message_is_kept_once_then_applied(hook: Any, db: Any) -> None:
    link(db, "waha", "default")
    edit = traffic("waha", "message_edited_bare_id.assembled.json")
    for _ in range(3):  # WAHA retries a webhook until it gets a 2xx
        assert hook("waha", edit).body["data"]["results"][0]["pending"] is True
    assert [(p["whatsapp_message_id"], p["kind"]) for p in pending(db)] == [(WAHA_TEXT_ID, "edit")]

    hook("waha", payload("waha", "message_text_webjs_fromMe.json"))
    assert message(db, WAHA_TEXT_ID)["body"] == "new edited text"
    assert pending(db) == []


def test_waha_reaction_and_ack_reach_the_message_whatever_direction_prefix_they_use(hook: Any, db: Any) -> None:
    # WAHA's documented reaction names `true_<chat>_<id>`; the message it reacts to was
    # received (`false_`): the other prefix is tried, here and when the message arrives later.
    reaction = payload("waha", "message_reaction.json")
    target = reaction["payload"]["reaction"]["messageId"]
    received = "false_" + target.removeprefix("true_")
    link(db, "waha", "default")

    assert hook("waha", reaction).body["data"]["results"][0]["pending"] is True
    body = {"event": "message", "session": "default", "payload": {"id": received, "timestamp": 1710481000}}
    body["payload"] |= {"from": "79111111@c.us", "body": "hola", "fromMe": False}
    hook("waha", body)
    assert message(db, received)["reactions"]["79111111"]["emoji"] == "🙏"

    ack = payload("waha", "message_ack_read.json")
    sent = ack["payload"]["id"]
    hook("waha", {**ack, "payload": {**ack["payload"], "id": sent.split("_")[-1]}})  # a bare id
    assert pending(db)[0]["whatsapp_message_id"] == sent  # kept under the full id the message will have


@pytest.mark.parametrize("message_first", [True, False])
def test_waha_reaction_by_bare_id_reaches_the_message_stored_under_its_full_id(
    hook: Any, db: Any, message_first: bool
) -> None:
    # WAHA's documented reaction, naming the reacted message by its bare id as edits and revocations do.
    reaction = copy.deepcopy(payload("waha", "message_reaction.json"))
    full = reaction["payload"]["reaction"]["messageId"]
    reaction["payload"]["reaction"]["messageId"] = full.split("_")[-1]
    sent = {"event": "message", "session": "default", "payload": {"id": full, "timestamp": 1710481000}}
    sent["payload"] |= {"from": "79222222222@c.us", "to": "79111111@c.us", "body": "hola", "fromMe": True}
    link(db, "waha", "default")

    for body in (sent, reaction) if message_first else (reaction, sent):
        hook("waha", body)

    assert message(db, full)["reactions"]["79111111"]["emoji"] == "🙏"
    assert pending(db) == []


@pytest.mark.parametrize(
    ("name", "kind", "mime"),
    [
        ("message_media_url_flat_2023.json", "image", "image/jpeg"),
        ("message_document_media_url_flat_2023.json", "document", "application/pdf"),
    ],
)
def test_waha_flat_media_url_is_a_media_message(hook: Any, db: Any, name: str, kind: str, mime: str) -> None:
    link(db, "waha", "default")
    body = traffic("waha", name)
    hook("waha", body)
    row = message(db, WAHA_TEXT_ID)
    assert row["message_type"] == kind
    assert row["content"][kind]["url"] == body["payload"]["mediaUrl"]
    assert row["content"][kind]["mime_type"] == mime
    if kind == "document":
        assert row["content"][kind]["filename"] == "some-file.pdf"


def test_gateway_message_ids_hold_only_whatsapp_characters(hook: Any, db: Any, handlers: Any) -> None:
    link(db, "waha", "default")
    for bad in ("<img src=x onerror=alert(1)>", "true_1@c.us_AAAA\u202e", "a b"):
        body = copy.deepcopy(payload("waha", "message_text_webjs_fromMe.json"))
        body["payload"]["id"] = bad
        result = call_handler(handlers, webhook_event("waha", body))
        assert result.status == 400 and "id" in result.body["message"], result.body
    assert db.execute("select count(*) as n from public.mensajes").fetchone()["n"] == 0


def test_traffic_files_are_all_used() -> None:
    used = {
        "meta": {
            "edit_image_caption.source.json",
            "revoke.source.json",
            "smb_message_echoes_text.source.json",
            "smb_message_echoes_edit.source.json",
            "smb_message_echoes_revoke.source.json",
            "interactive_nfm_reply_flow.json",
            "errors_value_level.source.json",
        },
        "waha": {
            "message_edited_bare_id.assembled.json",
            "message_revoked_bare_id.assembled.json",
            "message_media_url_flat_2023.json",
            "message_document_media_url_flat_2023.json",
        },
    }
    for gateway, names in used.items():
        assert {p.name for p in (WEBHOOKS / gateway / "traffic").glob("*.json")} == names


def test_a_webhook_event_dropping_an_old_pending_one_is_counted(
    hook: Any, db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    link(db, "waha", "default")
    db.execute(
        "insert into public.whatsapp_pending_message_events (session_id, whatsapp_message_id, kind, data)"
        " select id, 'P' || n, 'status', '{\"status\": \"read\"}' from public.whatsapp_sessions,"
        " generate_series(1, 1000) n where gateway = 'waha'"
    )
    capsys.readouterr()
    hook("waha", traffic("waha", "message_edited_bare_id.assembled.json"))
    assert "pending_dropped" in metrics_in(capsys.readouterr().out)
    assert len(pending(db)) == 1000 and pending(db)[-1]["whatsapp_message_id"] == WAHA_TEXT_ID
