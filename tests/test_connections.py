"""Gateway connections (docs/gateway-connections.md): each gateway server or Meta app has its
own webhook URL and secrets (Secrets Manager, emulated by moto), and writes only into its own
sessions; the single-secret endpoints keep serving the sessions of the default connection."""

from __future__ import annotations

import copy
import hashlib
import hmac
import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg
import pytest
from conftest import ACCOUNT_A, ACCOUNT_B, REPO, SESSION_B, SESSION_ID, add_session, use_backend
from gateway_support import payload, webhook_event
from test_reliability import drain

from local import gateway as local_gateway
from whatsapp_ingest import connections, retry_queue
from whatsapp_ingest.config import forget_connection_secrets, secrets_manager, settings
from whatsapp_ingest.store import InvalidData

#: What each gateway's sample body names as its instance, and the file.
SAMPLES = {
    "evolution": ("messages_upsert_text_inbound.json", "tigo1"),
    "waha": ("message_text_webjs_fromMe.json", "default"),
    "meta": ("text.json", "PHONE_NUMBER_ID"),
}


@pytest.fixture(scope="module")
def replay_handler() -> Any:
    route = local_gateway.Route("ReplayFunction", "", "", REPO / "functions" / "replay", "app.lambda_handler")
    return local_gateway.load_handler(route)


@pytest.fixture
def sm(aws: None, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Secrets Manager (moto) and the database, as a fresh container sees them."""
    use_backend(monkeypatch, {"DATABASE_URL": database_url})
    secrets_manager.cache_clear()
    retry_queue.sqs.cache_clear()
    forget_connection_secrets()
    yield
    secrets_manager.cache_clear()
    retry_queue.sqs.cache_clear()
    forget_connection_secrets()


def new_connection(gateway: str, secret: str | None, account: str | None = None) -> str:
    given = {"webhook_secret": secret, "verify_token": f"verify-{secret}", "api_key": f"api-key-of-{secret}"}
    base_url = None if gateway == "meta" else f"https://{gateway}.example.com"
    row = connections.add_connection(gateway, f"{gateway} {secret}", given, account, base_url)
    assert row["webhook_path"] == f"/api/whatsapp/webhooks/{gateway}/{row['id']}"
    return str(row["id"])


def link(
    db: Any, session_id: str, connection: str | None, gateway: str, instance: str, apikey: str | None = None
) -> None:
    db.execute(
        "update public.whatsapp_sessions set gateway = %s, gateway_instance = %s, gateway_connection_id = %s,"
        " gateway_apikey_sha256 = %s where id = %s",
        (gateway, instance, connection, apikey and hashlib.sha256(apikey.encode()).hexdigest(), session_id),
    )


def signed_for(gateway: str, raw: bytes, secret: str) -> dict[str, str]:
    """The headers the gateway puts on its webhook, with the connection's secret."""
    if gateway == "evolution":
        return {"authorization": f"Bearer {secret}"}
    if gateway == "waha":
        return {"x-webhook-hmac": hmac.new(secret.encode(), raw, hashlib.sha512).hexdigest()}
    return {"x-hub-signature-256": "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()}


def post(handlers: Any, gateway: str, connection: str, body: Any, secret: str | None, **kwargs: Any) -> Any:
    """The body posted to a connection's URL, signed with `secret` (None: unsigned)."""
    event = webhook_event(gateway, body, sign=False, **kwargs)
    if secret is not None:
        event["headers"].update(signed_for(gateway, event["body"].encode(), secret))
    path = f"/api/whatsapp/webhooks/{gateway}/{connection}"
    event = copy.deepcopy(event) | {"rawPath": path, "pathParameters": {"connection_id": connection}}
    return handlers[f"/api/whatsapp/webhooks/{gateway}/{{connection_id}}"](event, local_gateway.LambdaContext("t"))


def status(response: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return response["statusCode"], json.loads(response["body"])


def messages(db: Any) -> list[Any]:
    return db.execute("select session_id, whatsapp_message_id from public.mensajes").fetchall()


@pytest.mark.parametrize("gateway", SAMPLES)
def test_a_connections_secret_naming_another_connections_instance_is_refused_and_stores_nothing(
    handlers: Any, db: Any, sm: None, gateway: str
) -> None:
    name, instance = SAMPLES[gateway]
    body = payload(gateway, name)
    a, b = new_connection(gateway, "secret-of-a-0123"), new_connection(gateway, "secret-of-b-0123")
    link(db, SESSION_ID, a, gateway, "a-only-instance")
    link(db, SESSION_B, b, gateway, instance)

    crossed = status(post(handlers, gateway, a, body, "secret-of-a-0123"))
    b_secret_at_a = status(post(handlers, gateway, a, body, "secret-of-b-0123"))
    unknown = status(post(handlers, gateway, "0f0f0f0f-0000-4000-8000-000000000000", body, "secret-of-a-0123"))
    not_a_uuid = status(post(handlers, gateway, "default", body, "secret-of-a-0123"))

    refused = (401, {"success": False, "message": "unauthorized: missing or invalid credentials"})
    assert crossed == b_secret_at_a == unknown == not_a_uuid == refused
    assert messages(db) == []
    assert status(post(handlers, gateway, b, body, "secret-of-b-0123"))[0] == 200
    assert {str(row["session_id"]) for row in messages(db)} == {SESSION_B}


def test_a_connection_of_another_gateway_is_refused_like_an_unknown_one(handlers: Any, db: Any, sm: None) -> None:
    waha = new_connection("waha", "secret-of-waha-0123")
    link(db, SESSION_ID, waha, "waha", "tigo1")
    body = payload("evolution", "messages_upsert_text_inbound.json")
    assert status(post(handlers, "evolution", waha, body, "secret-of-waha-0123"))[0] == 401
    assert messages(db) == []


def test_two_servers_may_each_name_an_instance_default_but_one_server_only_once(db: Any, sm: None) -> None:
    first, second = new_connection("waha", "secret-of-one-0123"), new_connection("waha", "secret-of-two-0123")
    link(db, SESSION_ID, first, "waha", "default")
    link(db, SESSION_B, second, "waha", "default")
    third = add_session(db, "7a7a7a7a-0000-4000-8000-00000000000c")
    link(db, third, None, "waha", "default")  # the default connection is one more namespace
    with pytest.raises(psycopg.errors.UniqueViolation):
        link(db, third, first, "waha", "default")


def test_a_session_without_a_gateway_cannot_name_a_connection(db: Any, sm: None) -> None:
    # The foreign key checks nothing when gateway is null (MATCH SIMPLE): the check does.
    waha = new_connection("waha", "secret-of-waha-0123")
    missing = "7a7a7a7a-0000-4000-8000-0000000000ff"
    for connection in (waha, missing):
        with pytest.raises(psycopg.errors.CheckViolation, match="whatsapp_sessions_gateway_connection_gateway_check"):
            db.execute(
                "update public.whatsapp_sessions set gateway = null, gateway_connection_id = %s where id = %s",
                (connection, SESSION_ID),
            )


def test_upgrade_gives_a_session_naming_a_connection_without_a_gateway_its_connections_gateway() -> None:
    # Before 20261206030000 the key checked nothing with gateway null: such rows take their
    # connection's gateway, or lose a connection that does not exist, and the check then holds.
    from conftest import embedded_postgres
    from psycopg.rows import dict_row

    from local import database

    with embedded_postgres() as server:
        url = server.get_uri()
        database.migrate(url, until="20261206020000", seed=True)
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            waha = conn.execute(
                "select public.whatsapp_add_gateway_connection(gen_random_uuid(), 'waha', 'WAHA 2', null,"
                " 'https://waha-2.example.com') ->> 'id' as id"
            ).fetchone()["id"]
            missing = "7a7a7a7a-0000-4000-8000-0000000000ff"
            for session, connection in ((SESSION_ID, waha), (SESSION_B, missing)):
                conn.execute(
                    "update public.whatsapp_sessions set gateway = null, gateway_connection_id = %s where id = %s",
                    (connection, session),
                )

            database.migrate(url)

            rows = conn.execute(
                "select id::text, gateway, gateway_connection_id::text from public.whatsapp_sessions"
                " where id in (%s, %s) order by id = %s desc",
                (SESSION_ID, SESSION_B, SESSION_ID),
            ).fetchall()
            assert [(r["gateway"], r["gateway_connection_id"]) for r in rows] == [("waha", waha), (None, None)]


def test_an_accounts_connection_takes_only_that_accounts_sessions_an_operators_any(db: Any, sm: None) -> None:
    of_a = new_connection("waha", "secret-of-acct-a-0123", account=ACCOUNT_A)
    operators = new_connection("waha", "secret-of-operator-0123")
    link(db, SESSION_ID, of_a, "waha", "one")
    with pytest.raises(psycopg.errors.CheckViolation, match="serves another account"):
        link(db, SESSION_B, of_a, "waha", "two")
    link(db, SESSION_B, operators, "waha", "two")
    with pytest.raises(psycopg.errors.CheckViolation):  # nor can the session move to another account under it
        db.execute("update public.whatsapp_sessions set account_id = %s where id = %s", (ACCOUNT_B, SESSION_ID))


def test_secrets_live_only_in_secrets_manager_never_in_the_database_or_the_output(
    db: Any, sm: None, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = {"webhook_secret": "hmac-key-never-shown-0123", "api_key": "api-key-never-shown-0123"}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(given)))
    args = ["add", "--gateway", "waha", "--name", "WAHA 2", "--base-url", "https://waha-2.example.com"]
    assert connections.main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    everything = json.dumps(db.execute("select * from public.whatsapp_gateway_connections").fetchall(), default=str)
    assert printed["gateway"] == "waha" and printed["base_url"] == "https://waha-2.example.com"
    for secret in given.values():
        assert secret not in json.dumps(printed) and secret not in everything
    stored = boto3.client("secretsmanager").get_secret_value(SecretId=f"whatsapp-ingest/connections/{printed['id']}")
    assert json.loads(stored["SecretString"])["webhook_secrets"] == ["hmac-key-never-shown-0123"]
    assert "never-shown" not in repr(connections.connection_secret(__import__("uuid").UUID(printed["id"])))


def test_a_refused_connection_leaves_no_secret_behind(db: Any, sm: None) -> None:
    with pytest.raises(InvalidData):  # no such account
        new_connection("waha", "secret-of-nobody-0123", account="0c0c0c0c-0000-4000-8000-0000000000c0")
    assert boto3.client("secretsmanager").list_secrets()["SecretList"] == []


def test_during_a_rotation_both_secrets_are_accepted_then_only_the_new_one(handlers: Any, db: Any, sm: None) -> None:
    body = payload("waha", "message_text_webjs_fromMe.json")
    connection = new_connection("waha", "old-hmac-key-0123")
    link(db, SESSION_ID, connection, "waha", "default")
    from uuid import UUID

    connections.rotate(UUID(connection), {"webhook_secret": "new-hmac-key-0123"})
    assert status(post(handlers, "waha", connection, body, "old-hmac-key-0123"))[0] == 200
    assert status(post(handlers, "waha", connection, body, "new-hmac-key-0123"))[0] == 200
    connections.finish_rotation(UUID(connection))
    assert status(post(handlers, "waha", connection, body, "old-hmac-key-0123"))[0] == 401
    assert status(post(handlers, "waha", connection, body, "new-hmac-key-0123"))[0] == 200


def test_meta_verification_is_per_connection(handlers: Any, db: Any, sm: None) -> None:
    connection = new_connection("meta", "meta-app-secret-0123")
    query = {"hub.mode": "subscribe", "hub.verify_token": "verify-meta-app-secret-0123", "hub.challenge": "1158201444"}
    ok = post(handlers, "meta", connection, "", None, method="GET", query=query)
    assert ok["statusCode"] == 200 and ok["body"] == "1158201444"
    elsewhere = post(handlers, "meta", "0f0f0f0f-0000-4000-8000-000000000000", "", None, method="GET", query=query)
    assert elsewhere["statusCode"] == 403


def test_evolution_global_webhook_one_url_for_every_instance_of_a_server_by_apikey(
    handlers: Any, db: Any, sm: None
) -> None:
    # WEBHOOK_GLOBAL_URL: no custom headers, the instance and its apikey in each body.
    server, other = new_connection("evolution", None), new_connection("evolution", None)
    link(db, SESSION_ID, server, "evolution", "tigo1", apikey="apikey-of-tigo1")
    link(db, SESSION_B, server, "evolution", "tigo2", apikey="apikey-of-tigo2")
    body = payload("evolution", "messages_upsert_text_inbound.json")
    first = {**body, "apikey": "apikey-of-tigo1"}
    second = {**body, "instance": "tigo2", "apikey": "apikey-of-tigo2"}

    assert status(post(handlers, "evolution", other, first, None))[0] == 401  # another server's URL
    assert status(post(handlers, "evolution", server, {**second, "apikey": "apikey-of-tigo1"}, None))[0] == 401
    assert status(post(handlers, "evolution", server, first, None))[0] == 200
    assert status(post(handlers, "evolution", server, second, None))[0] == 200
    assert sorted(str(row["session_id"]) for row in messages(db)) == sorted([SESSION_ID, SESSION_B])


def test_an_apikey_only_body_is_never_queued_while_the_database_is_down(
    handlers: Any, db: Any, sm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = new_connection("evolution", None)
    link(db, SESSION_ID, server, "evolution", "tigo1", apikey="apikey-of-tigo1")
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="retry")["QueueUrl"]
    monkeypatch.setenv("RETRY_QUEUE_URL", queue)
    use_backend(monkeypatch, {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"})
    body = {**payload("evolution", "messages_upsert_text_inbound.json"), "apikey": "a-guess"}

    response = post(handlers, "evolution", server, body, None)

    assert response["statusCode"] == 503 and response["headers"]["Retry-After"] == "5"
    assert sqs.receive_message(QueueUrl=queue).get("Messages", []) == []


def test_a_credential_refused_at_replay_goes_to_the_dead_letter_queue_at_once_with_its_reason(
    db: Any, sm: None, monkeypatch: pytest.MonkeyPatch, replay_handler: Any
) -> None:
    server = new_connection("evolution", None)
    link(db, SESSION_ID, server, "evolution", "tigo1", apikey="apikey-of-tigo1")
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="retry")["QueueUrl"]
    dead = sqs.create_queue(QueueName="dead")["QueueUrl"]
    monkeypatch.setenv("RETRY_QUEUE_URL", queue)
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", dead)
    settings.cache_clear()
    # What a deployment before this change queued: a body whose apikey the database had not checked yet.
    batch = {"gateway": "evolution", "instance": "tigo1", "connection_id": server, "require_apikey": True}
    batch |= {"apikey_sha256": hashlib.sha256(b"a-guess").hexdigest(), "events": []}
    batch["events"] = [{"kind": "session", "status": "connected", "changes": {}}]
    message = {"endpoint": "gateway_events", "body": batch, "request_id": "r1", "received_at": "2026-12-06T07:00:00Z"}
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(message))

    (response,) = drain(sqs, queue, replay_handler)

    assert response["batchItemFailures"] == []
    (set_aside,) = sqs.receive_message(QueueUrl=dead, MessageAttributeNames=["All"])["Messages"]
    assert set_aside["MessageAttributes"]["reason"]["StringValue"] == "GatewayRefused"
    assert (
        db.execute("select status from public.whatsapp_sessions where id = %s", (SESSION_ID,)).fetchone()["status"]
        != "connected"
    )


def test_credentials_for_session_are_its_connections_and_none_for_the_default_connection(db: Any, sm: None) -> None:
    from uuid import UUID

    waha = new_connection("waha", "secret-of-waha-0123")
    link(db, SESSION_ID, waha, "waha", "default")
    link(db, SESSION_B, None, "waha", "default")

    credentials = connections.credentials_for_session(UUID(SESSION_ID))

    assert credentials is not None
    assert (credentials.connection_id, credentials.gateway, credentials.instance) == (UUID(waha), "waha", "default")
    assert (credentials.base_url, credentials.api_key) == ("https://waha.example.com", "api-key-of-secret-of-waha-0123")
    assert "api-key-of" not in repr(credentials)
    assert connections.credentials_for_session(UUID(SESSION_B)) is None


def test_upgrade_keeps_linked_sessions_on_the_single_secret_endpoints_as_the_default_connection() -> None:
    from conftest import embedded_postgres
    from psycopg.rows import dict_row

    from local import database

    before = "20261202040000"  # the last migration before connections
    with embedded_postgres() as server:
        url = server.get_uri()
        database.migrate(url, until=before, seed=True)
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            conn.execute(
                "update public.whatsapp_sessions set gateway = 'evolution', gateway_instance = 'default' where id = %s",
                (SESSION_ID,),
            )
            database.migrate(url)

            row = conn.execute(
                "select gateway, gateway_instance, gateway_connection_id from public.whatsapp_sessions where id = %s",
                (SESSION_ID,),
            ).fetchone()
            assert row == {"gateway": "evolution", "gateway_instance": "default", "gateway_connection_id": None}
            # The single-secret endpoint (no connection) still finds it...
            event = '[{"kind": "session", "status": "connected", "changes": {}}]'
            applied = conn.execute(
                "select public.whatsapp_apply_gateway_events('evolution', 'default', %s) as r", (event,)
            ).fetchone()["r"]
            assert applied["session_id"] == SESSION_ID
            # ...and a new server's own "default" is another session, which that endpoint never reaches.
            server_id = conn.execute(
                "select public.whatsapp_add_gateway_connection(gen_random_uuid(), 'evolution', 'Evolution 2', null,"
                " 'https://evolution-2.example.com') ->> 'id' as id"
            ).fetchone()["id"]
            conn.execute(
                "update public.whatsapp_sessions set gateway = 'evolution', gateway_instance = 'default',"
                " gateway_connection_id = %s where id = %s",
                (server_id, SESSION_B),
            )
            on_server = conn.execute(
                "select public.whatsapp_apply_gateway_events('evolution', 'default', %s, p_connection_id => %s) as r",
                (event, server_id),
            ).fetchone()["r"]
            assert on_server["session_id"] == SESSION_B
            again = conn.execute(
                "select public.whatsapp_apply_gateway_events('evolution', 'default', '[]') as r"
            ).fetchone()["r"]
            assert again["session_id"] == SESSION_ID


def test_secrets_manager_unreachable_is_503_and_nothing_is_accepted(
    handlers: Any, db: Any, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:1")
    use_backend(monkeypatch, {"DATABASE_URL": database_url})
    secrets_manager.cache_clear()
    forget_connection_secrets()
    body = payload("waha", "message_text_webjs_fromMe.json")
    try:
        response = post(handlers, "waha", "0f0f0f0f-0000-4000-8000-000000000000", body, "any-key-0123")
    finally:
        secrets_manager.cache_clear()
    assert (response["statusCode"], response["headers"]["Retry-After"]) == (503, "5")
    assert messages(db) == []


def test_the_default_connections_secret_takes_two_keys_during_a_rotation(
    handlers: Any, db: Any, sm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import call_handler

    arn = boto3.client("secretsmanager").create_secret(
        Name="gateways", SecretString=json.dumps({"waha_hmac_key": ["new-hmac-key-0123", "old-hmac-key-0123"]})
    )["ARN"]
    monkeypatch.setenv("GATEWAY_SECRET_ARN", arn)
    settings.cache_clear()
    link(db, SESSION_ID, None, "waha", "default")
    body = payload("waha", "message_text_webjs_fromMe.json")
    for key, expected in (("old-hmac-key-0123", 200), ("new-hmac-key-0123", 200), ("other-key-0123", 401)):
        event = webhook_event("waha", body, sign=False)
        event["headers"].update(signed_for("waha", event["body"].encode(), key))
        assert call_handler(handlers, event).status == expected


def test_a_signed_body_queued_during_an_outage_is_replayed_into_its_connections_session(
    handlers: Any, db: Any, sm: None, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    waha = new_connection("waha", "secret-of-waha-0123")
    other = new_connection("waha", "secret-of-other-0123")
    link(db, SESSION_ID, waha, "waha", "default")
    link(db, SESSION_B, other, "waha", "default")
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="retry")["QueueUrl"]
    monkeypatch.setenv("RETRY_QUEUE_URL", queue)
    use_backend(monkeypatch, {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"})
    body = payload("waha", "message_text_webjs_fromMe.json")

    assert post(handlers, "waha", waha, body, "secret-of-waha-0123")["statusCode"] == 202
    use_backend(monkeypatch, {"DATABASE_URL": database_url})
    (queued,) = sqs.receive_message(QueueUrl=queue)["Messages"]
    assert json.loads(queued["Body"])["body"]["connection_id"] == waha
    retry_queue.replay(queued["Body"])

    assert {str(row["session_id"]) for row in messages(db)} == {SESSION_ID}


def test_credentials_for_an_unknown_session_is_session_not_found(db: Any, sm: None) -> None:
    from uuid import UUID

    from whatsapp_ingest.store import SessionNotFound

    with pytest.raises(SessionNotFound):
        connections.credentials_for_session(UUID("0f0f0f0f-0000-4000-8000-000000000000"))
