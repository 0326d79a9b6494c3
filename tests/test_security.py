"""Only the orchestrator gets in, secrets live in Secrets Manager, privileges are
least, and nothing secret or personal leaks into responses or logs."""

from __future__ import annotations

import base64
import json
import logging
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import yaml
from aws_lambda_powertools.utilities import parameters
from conftest import (
    REPO,
    SAMPLE_TOKEN,
    SERVICE_KEY,
    SIGNING_KEY,
    Lines,
    call_handler,
    load_event,
    signed,
    use_backend,
    with_body,
)

from local import gateway
from whatsapp_ingest.auth import sign
from whatsapp_ingest.config import settings
from whatsapp_ingest.store import shared_store

VALID = ["status_update/valid", "messages_received/text", "qr_update/valid"]


def authorized(event: dict[str, Any], header: str | None) -> dict[str, Any]:
    changed = json.loads(json.dumps(event))
    changed["headers"].pop("authorization", None)
    if header is not None:
        changed["headers"]["authorization"] = header
    return changed


def configure(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings.cache_clear()
    shared_store.cache_clear()


# ---------------------------------------------------------------------------
# Authentication
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALID)
@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing bearer token"),
        ("", "missing bearer token"),
        ("Bearer ", "missing bearer token"),
        (f"Basic {SAMPLE_TOKEN}", "missing bearer token"),
        ("Bearer wrong-token", "invalid token"),
        (f"Bearer {SAMPLE_TOKEN}x", "invalid token"),
        ("Bearer ünïcode", "invalid token"),
    ],
)
def test_request_without_an_active_token_is_401_before_the_database_is_touched(
    handlers: Any, monkeypatch: pytest.MonkeyPatch, log_lines: Lines, name: str, header: str | None, reason: str
) -> None:
    # A database that would answer 503 if anything tried to reach it.
    use_backend(monkeypatch, {"DATABASE_URL": "postgresql://postgres@/postgres?host=/nonexistent"})

    result = call_handler(handlers, authorized(load_event(name), header))

    assert result.status == 401
    assert result.headers["WWW-Authenticate"] == 'Bearer realm="whatsapp-ingest"'
    assert result.body == {"success": False, "message": "unauthorized: missing or invalid credentials"}
    assert shared_store.cache_info().currsize == 0  # no store, no client, no connection was made
    (line,) = log_lines()
    assert line["level"] == "WARNING" and line["status"] == 401
    assert line["source_ip"] == "203.0.113.10" and reason in line["reason"]


def test_every_active_token_is_accepted_so_rotation_needs_no_downtime(
    handlers: Any, monkeypatch: pytest.MonkeyPatch, database_url: str, db: Any
) -> None:
    use_backend(monkeypatch, {"DATABASE_URL": database_url})
    configure(monkeypatch, API_TOKENS="old-token-0123456789, new-token-0123456789")

    for token in ("old-token-0123456789", "new-token-0123456789"):
        assert call_handler(handlers, authorized(load_event("qr_update/valid"), f"Bearer {token}")).status == 200
    assert (
        call_handler(handlers, authorized(load_event("qr_update/valid"), "bearer new-token-0123456789")).status == 200
    )


@pytest.fixture
def signing(monkeypatch: pytest.MonkeyPatch, database_url: str, db: Any) -> None:
    use_backend(monkeypatch, {"DATABASE_URL": database_url})
    configure(monkeypatch, SIGNING_KEY=SIGNING_KEY)


@pytest.mark.parametrize("name", VALID)
def test_signed_request_is_accepted(handlers: Any, signing: None, name: str) -> None:
    assert call_handler(handlers, signed(load_event(name))).status == 200


def test_signature_covers_the_raw_bytes_of_a_base64_encoded_body(handlers: Any, signing: None) -> None:
    event = load_event("messages_received/text")
    raw = event["body"].encode()
    timestamp = str(int(time.time()))
    event.update(body=base64.b64encode(raw).decode(), isBase64Encoded=True)
    event["headers"].update({"x-timestamp": timestamp, "x-signature": sign(SIGNING_KEY, timestamp, raw)})

    assert call_handler(handlers, event).status == 200


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda e: {**e, "headers": {k: v for k, v in e["headers"].items() if k != "x-signature"}}, "missing"),
        (lambda e: {**e, "headers": {**e["headers"], "x-signature": "sha256=" + "0" * 64}}, "invalid signature"),
        (lambda e: with_body(e, e["body"].replace("Hola", "Adiós")) | {"headers": e["headers"]}, "invalid signature"),
        (lambda e: signed(e, key="another-key"), "invalid signature"),
        (lambda e: signed(e, at=int(time.time()) - 301), "within 300 s"),
        (lambda e: signed(e, at=int(time.time()) + 301), "within 300 s"),
        (lambda e: {**e, "headers": {**e["headers"], "x-timestamp": "yesterday"}}, "within 300 s"),
    ],
)
def test_missing_wrong_or_stale_signature_is_401_with_the_reason_in_the_log_only(
    handlers: Any, signing: None, log_lines: Lines, tamper: Any, reason: str
) -> None:
    result = call_handler(handlers, tamper(signed(load_event("messages_received/text"))))

    assert result.status == 401
    assert result.body == {"success": False, "message": "unauthorized: missing or invalid credentials"}
    (line,) = log_lines()
    assert line["status"] == 401 and reason in line["reason"]


def test_a_wrong_token_and_a_wrong_signature_get_the_same_answer(handlers: Any, signing: None) -> None:
    event = signed(load_event("messages_received/text"))
    wrong_token = call_handler(handlers, authorized(event, "Bearer guessed-token-0123456789"))
    wrong_signature = call_handler(handlers, {**event, "headers": {**event["headers"], "x-signature": "sha256=00"}})
    no_signature = call_handler(handlers, load_event("messages_received/text"))

    assert wrong_token.status == wrong_signature.status == no_signature.status == 401
    assert wrong_token.body == wrong_signature.body == no_signature.body
    assert wrong_token.headers == wrong_signature.headers == no_signature.headers


# ---------------------------------------------------------------------------
# Signatures required (REQUIRE_SIGNATURE, on in prod)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALID)
def test_with_signatures_required_an_unsigned_request_is_401_and_a_signed_one_is_stored(
    handlers: Any, signing: None, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    configure(monkeypatch, REQUIRE_SIGNATURE="true")

    assert call_handler(handlers, load_event(name)).status == 401
    assert call_handler(handlers, signed(load_event(name))).status == 200


@pytest.mark.parametrize("value", ["false", "0", ""])
def test_with_signatures_not_required_a_token_alone_is_enough_when_there_is_no_signing_key(
    handlers: Any, monkeypatch: pytest.MonkeyPatch, database_url: str, db: Any, value: str
) -> None:
    use_backend(monkeypatch, {"DATABASE_URL": database_url})
    configure(monkeypatch, REQUIRE_SIGNATURE=value)

    assert call_handler(handlers, load_event("qr_update/valid")).status == 200


@pytest.mark.parametrize(
    ("value", "cause"),
    [
        ("true", "REQUIRE_SIGNATURE is on but SIGNING_KEY is not set"),
        ("TRUE", "REQUIRE_SIGNATURE is on but SIGNING_KEY is not set"),
        ("1", "REQUIRE_SIGNATURE is on but SIGNING_KEY is not set"),
        ("yes", "REQUIRE_SIGNATURE must be true or false"),  # not a value the template sets: fail closed
    ],
)
def test_signatures_required_without_a_signing_key_is_500_for_every_request_and_the_log_says_why(
    handlers: Any, monkeypatch: pytest.MonkeyPatch, database_url: str, db: Any, log_lines: Lines, value: str, cause: str
) -> None:
    use_backend(monkeypatch, {"DATABASE_URL": database_url})
    configure(monkeypatch, REQUIRE_SIGNATURE=value)

    unsigned = call_handler(handlers, load_event("qr_update/valid"))
    signed_anyway = call_handler(handlers, signed(load_event("qr_update/valid")))

    assert unsigned.status == signed_anyway.status == 500
    assert unsigned.body == signed_anyway.body == {"success": False, "message": "internal error"}
    errors = [line for line in log_lines() if line["level"] == "ERROR"]
    assert len(errors) == 2 and all(cause in line["exception"] for line in errors)
    assert SAMPLE_TOKEN not in json.dumps(log_lines())
    assert db.execute("select qr_code from public.whatsapp_sessions").fetchone()["qr_code"] is None


def test_signature_within_the_window_is_accepted(handlers: Any, signing: None) -> None:
    event = signed(load_event("messages_received/text"), at=int(time.time()) - 290)

    assert call_handler(handlers, event).status == 200


# ---------------------------------------------------------------------------
# Secrets in Secrets Manager (moto)
# ---------------------------------------------------------------------------


@pytest.fixture
def secrets_manager(aws: None) -> Iterator[Any]:
    parameters.clear_caches()
    yield boto3.client("secretsmanager", region_name="us-east-1")
    parameters.clear_caches()


@pytest.fixture
def deployed(secrets_manager: Any, monkeypatch: pytest.MonkeyPatch, database_url: str, db: Any) -> dict[str, str]:
    """Configured as in AWS: only secret ARNs in the environment."""
    auth = secrets_manager.create_secret(
        Name="whatsapp-ingest/dev/auth", SecretString=json.dumps({"tokens": ["token-old-0123456789"]})
    )
    database = secrets_manager.create_secret(
        Name="whatsapp-ingest/dev/database", SecretString=json.dumps({"database_url": database_url})
    )
    use_backend(monkeypatch, {})
    monkeypatch.delenv("API_TOKENS")
    configure(
        monkeypatch, AUTH_SECRET_ARN=auth["ARN"], DATABASE_SECRET_ARN=database["ARN"], SECRETS_MAX_AGE_SECONDS="1"
    )
    return {"auth": auth["ARN"], "database": database["ARN"]}


def status_with(handlers: Any, token: str) -> int:
    return call_handler(handlers, authorized(load_event("status_update/valid"), f"Bearer {token}")).status


def test_tokens_and_database_credentials_come_from_secrets_manager(handlers: Any, deployed: dict[str, str]) -> None:
    assert status_with(handlers, "token-old-0123456789") == 200
    assert status_with(handlers, SAMPLE_TOKEN) == 401


def test_rotation_new_token_works_after_max_age_and_removed_token_stops(
    handlers: Any, deployed: dict[str, str], secrets_manager: Any
) -> None:
    assert status_with(handlers, "token-old-0123456789") == 200

    secrets_manager.put_secret_value(
        SecretId=deployed["auth"], SecretString=json.dumps({"tokens": ["token-old-0123456789", "token-new-0123456789"]})
    )
    time.sleep(1.1)
    assert status_with(handlers, "token-new-0123456789") == 200
    assert status_with(handlers, "token-old-0123456789") == 200

    secrets_manager.put_secret_value(
        SecretId=deployed["auth"], SecretString=json.dumps({"tokens": ["token-new-0123456789"]})
    )
    time.sleep(1.1)
    assert status_with(handlers, "token-old-0123456789") == 401
    assert status_with(handlers, "token-new-0123456789") == 200


def test_signatures_required_with_an_auth_secret_without_signing_key_is_500_until_the_key_is_added(
    handlers: Any, deployed: dict[str, str], secrets_manager: Any, monkeypatch: pytest.MonkeyPatch, log_lines: Lines
) -> None:
    configure(monkeypatch, REQUIRE_SIGNATURE="true")
    event = authorized(load_event("status_update/valid"), "Bearer token-old-0123456789")

    assert call_handler(handlers, event).status == 500
    assert "the auth secret has no signing_key" in log_lines()[0]["exception"]

    secret = {"tokens": ["token-old-0123456789"], "signing_key": SIGNING_KEY}
    secrets_manager.put_secret_value(SecretId=deployed["auth"], SecretString=json.dumps(secret))
    time.sleep(1.1)
    assert call_handler(handlers, event).status == 401
    assert call_handler(handlers, signed(event)).status == 200


def test_a_rotated_database_secret_rebuilds_the_client(
    handlers: Any, deployed: dict[str, str], secrets_manager: Any
) -> None:
    assert status_with(handlers, "token-old-0123456789") == 200

    dead = json.dumps({"database_url": "postgresql://postgres@/postgres?host=/nonexistent"})
    secrets_manager.put_secret_value(SecretId=deployed["database"], SecretString=dead)
    time.sleep(1.1)

    assert status_with(handlers, "token-old-0123456789") == 503


# ---------------------------------------------------------------------------
# Least privilege
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load((REPO / "template.yaml").read_text(), Loader=gateway.CfnLoader)
    return loaded


def statements(resource: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for policy in resource["Properties"].get("Policies", []):
        assert isinstance(policy, dict) and "Statement" in policy, f"managed or templated policy: {policy}"
        found += policy["Statement"]
    return found


def test_each_function_may_only_read_its_own_secrets_and_queue_without_wildcards(template: dict[str, Any]) -> None:
    functions = {n: r for n, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
    # Each endpoint, the replay, and the media function and its dispatcher (docs/media.md);
    # a webhook function serves two routes (its default and per-connection URLs).
    assert len(functions) == len({r.logical_id for r in gateway.load_routes(REPO / "template.yaml")}) + 3
    connections = (
        "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}"
        ":secret:whatsapp-ingest/${Stage}/connections/*"
    )
    for name, function in functions.items():
        granted = {(statement["Action"], json.dumps(statement["Resource"])) for statement in statements(function)}
        if name == "MediaFunction":  # reads its queue through its event source; never the orchestrator's tokens
            expected = {
                (
                    "secretsmanager:GetSecretValue",
                    json.dumps(
                        [
                            "DatabaseSecretArn",
                            ["HasStorageSecret", "StorageSecretArn", "AWS::NoValue"],
                            ["HasGatewaySecret", "GatewaySecretArn", "AWS::NoValue"],
                        ]
                    ),
                ),
                ("secretsmanager:GetSecretValue", json.dumps(connections)),  # a session's connection's API key
                ("sqs:ChangeMessageVisibility", json.dumps("MediaQueue.Arn")),
            }
        elif name == "MediaDispatchFunction":
            expected = {
                ("secretsmanager:GetSecretValue", json.dumps("DatabaseSecretArn")),
                ("sqs:SendMessage", json.dumps("MediaQueue.Arn")),
            }
        elif name == "ReplayFunction":  # it reads the queue through its event source
            expected = {
                ("secretsmanager:GetSecretValue", json.dumps("DatabaseSecretArn")),
                ("sqs:ChangeMessageVisibility", json.dumps("RetryQueue.Arn")),
                ("sqs:SendMessage", json.dumps("RetryDeadLetterQueue.Arn")),
            }
        elif name.startswith("Webhook"):  # the gateways' secret (when configured), not the orchestrator's tokens
            gateway_or_not = ["HasGatewaySecret", ["GatewaySecretArn", "DatabaseSecretArn"], ["DatabaseSecretArn"]]
            expected = {
                ("secretsmanager:GetSecretValue", json.dumps(gateway_or_not)),
                ("secretsmanager:GetSecretValue", json.dumps(connections)),
                ("sqs:SendMessage", json.dumps("RetryQueue.Arn")),
            }
        else:
            expected = {
                ("secretsmanager:GetSecretValue", json.dumps(["AuthSecretArn", "DatabaseSecretArn"])),
                ("sqs:SendMessage", json.dumps("RetryQueue.Arn")),
            }
        assert granted == expected, name
    for resource in template["Resources"].values():
        for statement in statements(resource) if "Policies" in resource.get("Properties", {}) else []:
            text = json.dumps([statement.get("Action"), statement.get("Resource")])
            # The one wildcard: connections' secrets are created after the deploy, under the stage's prefix.
            text = text.replace(":secret:whatsapp-ingest/${Stage}/connections/*", ":secret:<the stage's connections>")
            assert "*" not in text, statement


def test_nothing_secret_is_in_the_template_or_samconfig(template: dict[str, Any]) -> None:
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert not {"SUPABASE_SERVICE_ROLE_KEY", "DATABASE_URL", "API_TOKENS", "SIGNING_KEY"} & set(variables)
    assert {"AUTH_SECRET_ARN", "DATABASE_SECRET_ARN"} <= set(variables)
    samconfig = (REPO / "samconfig.toml").read_text().lower()
    assert "key=" not in samconfig.replace(" ", "") and "password" not in samconfig


def test_api_throttling_is_set_on_the_stage_from_parameters(template: dict[str, Any]) -> None:
    settings_ = template["Resources"]["HttpApi"]["Properties"]["DefaultRouteSettings"]
    assert settings_ == {"ThrottlingRateLimit": "ThrottlingRateLimit", "ThrottlingBurstLimit": "ThrottlingBurstLimit"}
    assert {"ThrottlingRateLimit", "ThrottlingBurstLimit"} <= set(template["Parameters"])


# ---------------------------------------------------------------------------
# Nothing leaks
# ---------------------------------------------------------------------------

HOSTILE_BODIES: list[Any] = [
    "{",
    "[]",
    "null",
    '{"session_id": "\'; drop table mensajes; --"}',
    {"session_id": None},
    {"session_id": "3f8a2b1c-5d4e-4f6a-9b7c-1d2e3f4a5b6c", "status": "connected", "server_port": 10**30},
    {
        "session_id": "3f8a2b1c-5d4e-4f6a-9b7c-1d2e3f4a5b6c",
        "status": "connected",
        "last_seen": "0001-01-01T00:00:00+14:00",
    },
]


@pytest.mark.parametrize("backend_name", ["postgres", "supabase"])
def test_full_cycle_logs_hold_no_secret_no_message_text_and_only_masked_numbers(
    handlers: Any,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    db: Any,
    request: pytest.FixtureRequest,
    log_lines: Lines,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    backend_name: str,
) -> None:
    token = "tok-7f3a9c1e5b2d4f6a8c0e2b4d6f8a1c3e"
    if backend_name == "supabase":
        standin = request.getfixturevalue("postgrest")
        use_backend(monkeypatch, {"SUPABASE_URL": standin.url, "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY})
    else:
        use_backend(monkeypatch, {"DATABASE_URL": database_url})
    configure(monkeypatch, API_TOKENS=token, SIGNING_KEY=SIGNING_KEY, POWERTOOLS_LOG_LEVEL="DEBUG")
    caplog.set_level(logging.DEBUG)
    statuses = set()
    for name in [
        *VALID,
        "messages_received/image",
        "messages_received/from_linked_phone",
        "messages_received/unknown_session",
        "messages_received/invalid_sender",
        "status_update/invalid_fields",
        "qr_update/wrong_method",
    ]:
        event = signed(authorized(load_event(name), f"Bearer {token}"))
        statuses.add(call_handler(handlers, event).status)
        statuses.add(call_handler(handlers, load_event(name)).status)  # the sample token is refused
    assert statuses >= {200, 400, 401, 404, 405}

    logged = json.dumps(log_lines(), ensure_ascii=False) + caplog.text + capsys.readouterr().out
    for secret in (token, SIGNING_KEY, SERVICE_KEY, database_url):
        assert secret not in logged
    for text in ("¿tienen disponible", "Este modelo", "Claro, se lo aparto"):
        assert text not in logged
    for number in ("5215512345678", "+52 1 55 1234 5678", "5215500000001"):
        assert number not in logged
    assert "****5678" in logged  # the peer, masked
    assert not re.search(r"[0-9]\*\*\*\*", logged)  # nothing shown before the mask: no country or area code


@pytest.mark.parametrize("body", HOSTILE_BODIES)
@pytest.mark.parametrize("name", VALID)
def test_responses_to_hostile_input_hold_no_trace_sql_key_or_hostname(
    invoke: Any, backend: str, database_url: str, name: str, body: Any
) -> None:
    result = invoke(name, body=body)

    assert result.status < 500 or result.body == {"success": False, "message": "internal error"}
    text = json.dumps(result.body)
    for leak in (
        "Traceback",
        "select ",
        "insert ",
        "psycopg",
        "postgrest",
        "SQLSTATE",
        SERVICE_KEY,
        SAMPLE_TOKEN,
        database_url,
        "127.0.0.1",
        "/tmp/",
        ".py",
    ):
        assert leak not in text, (leak, text)


def test_the_documented_signing_recipe_computes_the_signature_the_service_checks() -> None:
    readme = (REPO / "docs" / "security.md").read_text()
    recipe = next(line for line in readme.splitlines() if line.startswith("SIG=$("))
    body = '{"session_id":"3f8a2b1c-5d4e-4f6a-9b7c-1d2e3f4a5b6c","status":"connected","name":"José 😀"}'
    script = f"BODY='{body}'\nTS=1795841018\n{recipe}\nprintf %s \"$SIG\""

    result = subprocess.run(
        ["bash", "-c", script],
        env={"SIGNING_KEY": SIGNING_KEY, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )

    assert "sha256=" + result.stdout == sign(SIGNING_KEY, "1795841018", body.encode())
