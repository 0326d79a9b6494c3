"""What every endpoint does with a request before and around validation: methods,
sizes, encodings, malformed JSON, values the database cannot store as-is, and our
own failures. None of it may produce a 5xx with internals in the body."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from conftest import Invoke, call_handler, event_body, load_event, use_backend

ENDPOINTS = ["status_update", "messages_received", "qr_update"]
VALID = {
    "status_update": "status_update/valid",
    "messages_received": "messages_received/text",
    "qr_update": "qr_update/valid",
}


def raw_event(endpoint: str, body: bytes | str, *, base64_encoded: bool = False, **headers: str) -> dict[str, Any]:
    event = load_event(VALID[endpoint])
    if isinstance(body, bytes):
        body = base64.b64encode(body).decode() if base64_encoded else body.decode()
    event["body"] = body
    event["isBase64Encoded"] = base64_encoded
    event["headers"].update(headers)
    return event


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_other_methods_get_405_with_allow_post(invoke: Invoke, endpoint: str) -> None:
    result = invoke(f"{endpoint}/wrong_method")

    assert result.status == 405
    assert result.headers["Allow"] == "POST"
    assert result.body["success"] is False and "POST" in result.body["message"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_malformed_json_is_400_not_422(invoke: Invoke, endpoint: str) -> None:
    result = invoke(f"{endpoint}/malformed_json")

    assert result.status == 400
    assert result.body["message"].startswith("malformed JSON")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_body_over_one_mebibyte_is_413(invoke: Invoke, endpoint: str) -> None:
    body = {**event_body(VALID[endpoint]), "padding": "x" * (1024 * 1024)}
    result = invoke(VALID[endpoint], body=body)

    assert result.status == 413
    assert result.body["success"] is False


def test_body_of_one_mebibyte_is_accepted(invoke: Invoke, db: Any) -> None:
    body = event_body("messages_received/text")
    body["message"]["text"] = ""
    body["message"]["text"] = "x" * (1024 * 1024 - len(json.dumps(body).encode()))
    result = invoke("messages_received/text", body=body)

    assert result.status == 200, result.body["message"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_non_json_content_type_is_415(invoke: Invoke, content_type: str) -> None:
    event = raw_event(
        "messages_received", json.dumps(event_body("messages_received/text")), **{"content-type": content_type}
    )

    result = invoke(event)

    assert result.status == 415


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.orchestrator+json"])
def test_json_content_types_with_parameters_or_suffix_are_accepted(invoke: Invoke, content_type: str) -> None:
    event = raw_event(
        "messages_received", json.dumps(event_body("messages_received/text")), **{"content-type": content_type}
    )

    assert invoke(event).status == 200


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("[]", "JSON object"),
        ('"text"', "JSON object"),
        ('{"a": NaN}', "NaN"),
        ('{"a": Infinity}', "Infinity"),
        ('{"a": 1e400}', "out of range"),
        ('{"a": ' + "9" * 5000 + "}", "malformed JSON"),
        ("[" * 100_000 + "]" * 100_000, "nested"),
        ('{"a":' * 70 + "1" + "}" * 70, "nested"),
    ],
)
def test_body_that_is_not_a_storable_json_object_is_400(invoke: Invoke, body: str, reason: str) -> None:
    result = invoke(raw_event("messages_received", body))

    assert result.status == 400
    assert reason in result.body["message"]


def test_base64_encoded_body_is_decoded(invoke: Invoke) -> None:
    raw = json.dumps(event_body("messages_received/text")).encode()

    result = invoke(raw_event("messages_received", raw, base64_encoded=True))

    assert result.status == 200, result.body


@pytest.mark.parametrize("raw", [b"\xff\xfe{}", b'{"session_id": "\xc3\x28"}'])
def test_body_that_is_not_utf8_is_400(invoke: Invoke, raw: bytes) -> None:
    result = invoke(raw_event("messages_received", raw, base64_encoded=True))

    assert result.status == 400
    assert "UTF-8" in result.body["message"]


def test_invalid_base64_is_400(invoke: Invoke) -> None:
    event = raw_event("messages_received", "not base64 at all!!")
    event["isBase64Encoded"] = True

    assert invoke(event).status == 400


def test_nul_character_is_stored_as_the_replacement_character(invoke: Invoke, db: Any) -> None:
    body = event_body("messages_received/text")
    body["message"] = {"type": "text", "text": "a\u0000b", "meta\u0000key": ["\u0000"]}

    result = invoke("messages_received/text", body=body)

    assert result.status == 200, result.body
    row = db.execute("select body, content from public.mensajes").fetchone()
    assert row["body"] == "a\ufffdb"
    assert row["content"] == {"type": "text", "text": "a\ufffdb", "meta\ufffdkey": ["\ufffd"]}


def test_unpaired_surrogate_is_stored_as_the_replacement_character(invoke: Invoke, db: Any) -> None:
    body = json.dumps(event_body("messages_received/text")).replace(
        '"text": "Hola', '"text": "\\ud800 Hola \\ud83d\\ude00'
    )

    result = invoke(raw_event("messages_received", body))

    assert result.status == 200, result.body
    assert db.execute("select body from public.mensajes").fetchone()["body"].startswith("\ufffd Hola \U0001f600")


def test_emoji_and_right_to_left_text_read_back_exactly(invoke: Invoke, db: Any) -> None:
    text = "مرحبا بك 👋🏽 שלום 👨‍👩‍👧"
    body = event_body("messages_received/text")
    body["message"]["text"] = text

    assert invoke("messages_received/text", body=body).status == 200
    assert db.execute("select body from public.mensajes").fetchone()["body"] == text


def test_unknown_path_is_404_in_the_envelope(handlers: Any, backend: str, db: Any) -> None:
    event = load_event("messages_received/text")
    event["rawPath"] = "/api/whatsapp/messages/unknown"
    event["requestContext"]["http"]["path"] = event["rawPath"]
    handler = handlers["/api/whatsapp/messages/received"]

    result = call_handler({event["rawPath"]: handler}, event)

    assert result.status == 404
    assert result.body["success"] is False


def test_unreachable_database_is_503_with_retry_after_and_no_internals(
    handlers: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    use_backend(
        monkeypatch, {"DATABASE_URL": f"postgresql://postgres@/postgres?host={tmp_path}", "DB_TIMEOUT_SECONDS": "1"}
    )

    result = call_handler(handlers, load_event("messages_received/text"))

    assert result.status == 503
    assert result.headers["Retry-After"]
    assert result.body == {"success": False, "message": "database unavailable, retry later"}


def test_unreachable_postgrest_is_503(handlers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    use_backend(monkeypatch, {"SUPABASE_URL": "http://127.0.0.1:9", "SUPABASE_SERVICE_ROLE_KEY": "eyJa.eyJb.c"})

    result = call_handler(handlers, load_event("status_update/valid"))

    assert result.status == 503


def test_our_own_database_fault_is_500_without_stack_trace_or_sql(
    handlers: Any, monkeypatch: pytest.MonkeyPatch, database_url: str, db: Any
) -> None:
    # Connected as anon, which may not execute the functions: a fault of our
    # deployment, not of the request.
    use_backend(monkeypatch, {"DATABASE_URL": f"{database_url}&options=-c%20role%3Danon"})

    result = call_handler(handlers, load_event("messages_received/text"))

    assert result.status == 500
    assert result.body == {"success": False, "message": "internal error"}


def test_missing_database_configuration_is_500_without_details(handlers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    use_backend(monkeypatch, {})

    result = call_handler(handlers, load_event("qr_update/valid"))

    assert result.status == 500
    assert result.body == {"success": False, "message": "internal error"}
