"""What operators see: JSON log lines tied to the request and the session, and an
EMF metric for each outcome."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from conftest import REPO, SAMPLE_TOKEN, SESSION_ID, Invoke, Lines, call_handler, event_body, load_event, use_backend

from local import gateway
from whatsapp_ingest.api import masked, masked_id


def metrics_in(stdout: str) -> list[str]:
    """Names of the EMF metrics printed (one JSON document per flush)."""
    names = []
    for line in stdout.splitlines():
        if line.startswith('{"_aws"'):
            document = json.loads(line)
            names += [m["Name"] for m in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]]
    return names


@pytest.mark.parametrize("event", ["status_update/valid", "messages_received/text", "qr_update/valid"])
def test_each_success_is_one_info_line_with_correlation_and_session_ids(
    invoke: Invoke, log_lines: Lines, event: str
) -> None:
    assert invoke(event).status == 200

    lines = log_lines()
    assert [line["level"] for line in lines] == ["INFO"]
    assert lines[0]["correlation_id"] == load_event(event)["requestContext"]["requestId"]
    assert lines[0]["session_id"] == SESSION_ID
    assert lines[0]["endpoint"] == event.split("/")[0]


def test_message_text_is_never_logged(invoke: Invoke, log_lines: Lines) -> None:
    invoke("messages_received/text")
    invoke("messages_received/image")

    logged = json.dumps(log_lines(), ensure_ascii=False)
    assert "modelo azul" not in logged and "Este modelo" not in logged


def test_rejection_is_one_warning_line_with_status_and_reason(invoke: Invoke, log_lines: Lines) -> None:
    invoke("messages_received/unknown_session")

    (line,) = log_lines()
    assert line["level"] == "WARNING"
    assert line["status"] == 404 and "not found" in line["reason"]
    assert line["session_id"] == "00000000-0000-4000-8000-000000000000"


def test_fault_has_its_stack_trace_in_the_log_and_not_in_the_response(
    handlers: Any, monkeypatch: pytest.MonkeyPatch, database_url: str, db: Any, log_lines: Lines
) -> None:
    use_backend(monkeypatch, {"DATABASE_URL": f"{database_url}&options=-c%20role%3Danon"})

    result = call_handler(handlers, load_event("messages_received/text"))

    errors = [line for line in log_lines() if line["level"] == "ERROR"]
    assert len(errors) == 1
    assert "Traceback" in errors[0]["exception"] and "InsufficientPrivilege" in errors[0]["exception"]
    assert "Traceback" not in json.dumps(result.body) and "select" not in json.dumps(result.body)


def test_each_outcome_is_counted_as_an_emf_metric(
    invoke: Invoke, capsys: pytest.CaptureFixture[str], handlers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoke("messages_received/text")
    invoke("messages_received/text")
    invoke("messages_received/missing_fields")
    use_backend(monkeypatch, {})
    call_handler(handlers, load_event("messages_received/text"))

    assert metrics_in(capsys.readouterr().out) == ["stored", "duplicate", "rejected", "failed"]


def test_session_id_of_an_invalid_body_is_still_logged(invoke: Invoke, log_lines: Lines) -> None:
    invoke("messages_received/text", body={**event_body("messages_received/text"), "from": "nobody"})

    assert [line["session_id"] for line in log_lines()] == [SESSION_ID]


@pytest.mark.parametrize(
    ("wa_id", "shown"),
    [
        ("5215512345678", "****5678"),
        ("123456789012345@lid", "****2345@lid"),
        ("5215512345678-1600000000@g.us", "****0000@g.us"),
        ("1234567890", "****7890"),
        ("123456789", "****"),  # too short to show any of it
        ("status@broadcast", "****@broadcast"),
    ],
)
def test_a_logged_whatsapp_id_shows_at_most_its_last_four_digits(wa_id: str, shown: str) -> None:
    assert masked(wa_id) == shown


def test_a_waha_message_id_is_logged_without_the_phone_number_it_embeds(
    handlers: Any, db: Any, backend: str, log_lines: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway_support import ENV, link, payload, webhook_event

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    link(db, "waha", "default")
    body = payload("waha", "message_text_webjs_fromMe.json")
    full_id = body["payload"]["id"]
    assert call_handler(handlers, webhook_event("waha", body)).status == 200
    logged = json.dumps(log_lines())
    phones = [part.split("@")[0] for part in full_id.split("_") if "@" in part]
    assert phones and all(phone not in logged for phone in phones)
    assert masked_id(full_id) in logged


@pytest.mark.parametrize(
    ("message_id", "shown"),
    [
        ("true_5215512345678@c.us_3EB0C431C2A1", "true_****5678@c.us_3EB0C431C2A1"),
        ("wamid.HBgNNTIxNTUxMjM0NTY3OBUCABIYFDNBMDBDMDM", "wamid.HBgNNTIxNTUxMjM0NTY3OBUCABIYFDNBMDBDMDM"),
        ("3EB0C431C2A1", "3EB0C431C2A1"),
    ],
)
def test_a_logged_message_id_shows_no_run_of_digits_longer_than_four(message_id: str, shown: str) -> None:
    assert masked_id(message_id) == shown


TEXT = "Hola, ¿tienen disponible el modelo azul?"


def test_no_event_is_logged_even_when_the_environment_asks_for_it(
    backend: str, db: Any, monkeypatch: pytest.MonkeyPatch, log_lines: Lines
) -> None:
    # Powertools reads POWERTOOLS_LOGGER_LOG_EVENT when a function's module is
    # imported: import each function anew with it set.
    monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")
    routes = gateway.load_routes(REPO / "template.yaml")
    replay = gateway.Route("ReplayFunction", "", "", REPO / "functions" / "replay", "app.lambda_handler")
    fresh = {r.path: gateway.load_handler(dataclasses.replace(r, logical_id=f"{r.logical_id}LogEvent")) for r in routes}
    body = {**event_body("messages_received/text"), "message": {"type": "text", "text": TEXT}}
    queued = {"endpoint": "messages_received", "body": {**body, "message_id": "queued-1"}, "request_id": "r-1"}
    record = {"messageId": "m-1", "receiptHandle": "h-1", "attributes": {"ApproximateReceiveCount": "1"}}

    for name in ("status_update/valid", "messages_received/text", "qr_update/valid"):
        event = load_event(name)
        if name == "messages_received/text":
            event["body"] = json.dumps(body, ensure_ascii=False)
        assert call_handler(fresh, event).status == 200
    # A gateway's webhook too: seed's account A session is Evolution's instance 'demo-a'.
    from gateway_support import ENV, payload, webhook_event

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    upsert = payload("evolution", "messages_upsert_text_inbound.json")
    upsert = {**upsert, "instance": "demo-a", "data": {**upsert["data"], "message": {"conversation": TEXT}}}
    assert call_handler(fresh, webhook_event("evolution", upsert)).status == 200
    queued["received_at"] = "2026-11-28T04:41:00+00:00"
    event = {"Records": [{**record, "body": json.dumps(queued, ensure_ascii=False)}]}
    replayed = gateway.load_handler(dataclasses.replace(replay, logical_id="ReplayLogEvent"))
    assert replayed(event, gateway.LambdaContext("replay")) == {"batchItemFailures": []}

    logged = json.dumps(log_lines(), ensure_ascii=False)
    assert [line["message"] for line in log_lines()][-1] == "queued request applied"
    for secret in (SAMPLE_TOKEN, ENV["EVOLUTION_WEBHOOK_TOKEN"], TEXT, "Bearer", "authorization", "5215512345678"):
        assert secret not in logged, secret


def test_a_value_the_database_refuses_is_logged_by_its_constraint_not_its_row(
    invoke: Invoke, log_lines: Lines, db: Any
) -> None:
    # A check the models do not know of: the database refuses this sender, and its
    # error's DETAIL ("Failing row contains ...") would quote the phone number.
    db.execute("alter table public.contacts add constraint test_refuse_sender check (wa_id <> '5215512345678')")
    try:
        result = invoke("messages_received/text")
    finally:
        db.execute("alter table public.contacts drop constraint test_refuse_sender")

    assert result.status == 400 and "refused by the database" in result.body["message"]
    refused = [line for line in log_lines() if line["message"] == "database refused a value"]
    assert [(line["sqlstate"], line["constraint"]) for line in refused] == [("23514", "test_refuse_sender")]
    assert "5512345678" not in json.dumps(log_lines())
