"""Nothing lost when the database is down, nothing stored twice: storage-first with a
real Postgres that is really stopped, and SQS emulated by moto."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg
import pytest
from conftest import (
    SERVICE_KEY,
    SESSION_ID,
    TRUNCATE,
    Lines,
    Result,
    add_session,
    call_handler,
    embedded_postgres,
    event_body,
    load_event,
    use_backend,
    with_body,
)
from psycopg.rows import dict_row

from local import database, gateway
from whatsapp_ingest.config import settings
from whatsapp_ingest.store import shared_store

SECOND_SESSION = "9b2f6c1e-0a4d-4e8b-8c3f-2d1e0f9a8b7c"
REPO_REPLAY = gateway.REPO / "functions" / "replay"


class Outage:
    """A database of its own that the test can stop and start."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.url: str = server.get_uri()
        self.running = True

    def stop(self) -> None:
        self.server.stop()
        self.running = False

    def start(self) -> None:
        self.server.start()
        self.running = True

    def count(self, table: str) -> int:
        with psycopg.connect(self.url) as conn:
            return int(conn.execute(f"select count(*) from public.{table}").fetchone()[0])  # type: ignore[index]

    def rows(self, query: str) -> list[dict[str, Any]]:
        with psycopg.connect(self.url, row_factory=dict_row) as conn:
            return conn.execute(query).fetchall()


@pytest.fixture(scope="module")
def stoppable_server() -> Iterator[Any]:
    with embedded_postgres() as server:
        database.migrate(server.get_uri())
        yield server


@pytest.fixture
def outage(stoppable_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Outage]:
    """A running database with the demo session and a second one, nothing else."""
    outage = Outage(stoppable_server)
    with psycopg.connect(outage.url, autocommit=True) as conn:
        conn.execute(TRUNCATE)
        conn.execute(database.SEED_SQL.read_text())
        add_session(conn, SECOND_SESSION)
    use_backend(monkeypatch, {"DATABASE_URL": outage.url, "DB_TIMEOUT_SECONDS": "1"})
    yield outage
    shared_store.cache_clear()
    if not outage.running:
        outage.start()


@pytest.fixture
def queue(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from whatsapp_ingest import retry_queue

    retry_queue.sqs.cache_clear()  # a client bound to this mock
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="whatsapp-ingest-retry-test")["QueueUrl"]
    dead = sqs.create_queue(QueueName="whatsapp-ingest-retry-dlq-test")["QueueUrl"]
    monkeypatch.setenv("RETRY_QUEUE_URL", url)
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", dead)
    settings.cache_clear()
    yield sqs, url
    retry_queue.sqs.cache_clear()


@pytest.fixture(scope="module")
def replay_handler() -> Any:
    route = gateway.Route("ReplayFunction", "", "", REPO_REPLAY, "app.lambda_handler")
    return gateway.load_handler(route)


def drain(sqs: Any, url: str, replay_handler: Any) -> list[dict[str, Any]]:
    """Run the replay function over everything in the queue, as the SQS event source would."""
    responses = []
    while True:
        received = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, AttributeNames=["ApproximateReceiveCount"]
        )
        messages = received.get("Messages", [])
        if not messages:
            return responses
        event = {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m["Attributes"],
                    "messageAttributes": {},
                    "md5OfBody": m["MD5OfBody"],
                    "eventSource": "aws:sqs",
                    "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:whatsapp-ingest-retry-test",
                    "awsRegion": "us-east-1",
                }
                for m in messages
            ]
        }
        response = replay_handler(event, gateway.LambdaContext("replay"))
        responses.append(response)
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        if failed:
            return responses  # left in the queue, as SQS would
        for m in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def post(handlers: Any, name: str, body: dict[str, Any]) -> Result:
    return call_handler(handlers, with_body(load_event(name), body))


def deliveries(distinct: int, contacts: int, duplicates: int, seed: int = 7) -> list[dict[str, Any]]:
    """`distinct` messages from `contacts` new contacts over two sessions, plus redeliveries."""
    base = event_body("messages_received/text")
    messages = []
    for i in range(distinct):
        contact = i % contacts
        messages.append(
            {
                **base,
                "session_id": base["session_id"] if contact % 2 else SECOND_SESSION,
                "from": f"+52 1 55 {3000_0000 + contact}",
                "message_id": f"outage-{i:04d}",
                "timestamp": 1795840000 + i,
                "message": {"type": "text", "text": f"mensaje {i}"},
            }
        )
    rng = random.Random(seed)
    redelivered = [{**rng.choice(messages), "timestamp": 1795849999} for _ in range(duplicates)]
    everything = messages + redelivered
    rng.shuffle(everything)
    return everything


def test_database_down_messages_are_accepted_queued_and_replayed_exactly_once(
    handlers: Any, outage: Outage, queue: Any, replay_handler: Any
) -> None:
    sqs, url = queue
    sent = deliveries(distinct=200, contacts=20, duplicates=40)
    outage.stop()

    results = [post(handlers, "messages_received/text", body) for body in sent]

    assert {r.status for r in results} == {202}
    assert {json.dumps(r.body) for r in results} == {'{"success": true, "message": "accepted, queued for retry"}'}
    outage.start()
    drain(sqs, url, replay_handler)

    assert outage.count("mensajes") == 200
    assert outage.count("contacts") == 20
    assert outage.count("chats") == 20  # each contact writes to one session
    assert (
        outage.rows("select count(distinct (session_id, whatsapp_message_id)) as n from public.mensajes")[0]["n"] == 200
    )
    stored = {r["whatsapp_message_id"]: r["body"] for r in outage.rows("select * from public.mensajes")}
    assert stored == {b["message_id"]: b["message"]["text"] for b in sent}


def test_a_batch_during_an_outage_is_queued_in_chunks_and_replayed_exactly_once_per_message(
    handlers: Any, outage: Outage, queue: Any, replay_handler: Any
) -> None:
    from whatsapp_ingest.retry_queue import CHUNK_BYTES

    sqs, url = queue
    items = [
        {k: v for k, v in {**body, "message": {"type": "text", "text": "ñ" * 600}}.items() if k != "session_id"}
        for body in deliveries(distinct=800, contacts=40, duplicates=0)
        if body["session_id"] == SESSION_ID
    ]
    items.append({"from": "not a number", "to": "1", "timestamp": 1, "message_id": "bad", "message": {}})
    outage.stop()

    result = post(handlers, "messages_batch/valid", {"session_id": SESSION_ID, "messages": items})

    assert result.status == 202
    queued = int(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
            "ApproximateNumberOfMessages"
        ]
    )
    assert queued > 1  # split: each SQS message within CHUNK_BYTES (tests/test_batch.py)
    outage.start()
    drain(sqs, url, replay_handler)
    drain(sqs, url, replay_handler)  # a second pass finds nothing to do

    assert outage.count("mensajes") == len(items) - 1 == 400
    assert outage.rows("select count(*) as n from public.mensajes where length(body) <> 600") == [{"n": 0}]
    assert len(json.dumps(items).encode()) > CHUNK_BYTES


def test_status_and_qr_updates_are_queued_too(handlers: Any, outage: Outage, queue: Any, replay_handler: Any) -> None:
    sqs, url = queue
    outage.stop()

    assert call_handler(handlers, load_event("status_update/valid")).status == 202
    assert call_handler(handlers, load_event("qr_update/valid")).status == 202
    outage.start()
    drain(sqs, url, replay_handler)

    (session,) = outage.rows("select * from public.whatsapp_sessions where server_port = 3101")
    assert session["status"] == "pending" and session["qr_code"] == event_body("qr_update/valid")["qr_code"]


def test_replay_racing_a_redelivery_stores_the_message_once(
    handlers: Any, outage: Outage, queue: Any, replay_handler: Any
) -> None:
    sqs, url = queue
    outage.stop()
    assert call_handler(handlers, load_event("messages_received/text")).status == 202
    outage.start()

    redelivered = call_handler(handlers, load_event("messages_received/text"))
    drain(sqs, url, replay_handler)

    assert redelivered.status == 200 and redelivered.body["data"]["duplicate"] is False
    assert outage.count("mensajes") == 1


def test_replay_while_the_database_is_still_down_keeps_every_record_and_backs_off(
    handlers: Any, outage: Outage, queue: Any, replay_handler: Any
) -> None:
    sqs, url = queue
    outage.stop()
    for name in ("messages_received/text", "messages_received/image"):
        assert call_handler(handlers, load_event(name)).status == 202

    (response,) = drain(sqs, url, replay_handler)

    assert len(response["batchItemFailures"]) == 2
    counts = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert counts["ApproximateNumberOfMessages"] == "0"  # none lost, none retried at once:
    assert counts["ApproximateNumberOfMessagesNotVisible"] == "2"  # both wait out their back-off


def test_a_queued_request_that_can_never_be_applied_is_set_aside_with_an_error_line(
    handlers: Any, outage: Outage, queue: Any, replay_handler: Any, log_lines: Any
) -> None:
    sqs, url = queue
    outage.stop()
    assert call_handler(handlers, load_event("messages_received/unknown_session")).status == 202
    outage.start()

    (response,) = drain(sqs, url, replay_handler)

    assert response["batchItemFailures"] == []
    dead = sqs.get_queue_url(QueueName="whatsapp-ingest-retry-dlq-test")["QueueUrl"]
    (set_aside,) = sqs.receive_message(QueueUrl=dead, MaxNumberOfMessages=10)["Messages"]
    assert json.loads(set_aside["Body"])["body"] == event_body("messages_received/unknown_session")
    errors = [line for line in log_lines() if line["level"] == "ERROR"]
    assert [(e["reason"], e["endpoint"], e["session_id"]) for e in errors] == [
        ("SessionNotFound", "messages_received", "00000000-0000-4000-8000-000000000000")
    ]


def test_a_replayed_status_update_does_not_overwrite_a_newer_one(
    handlers: Any, outage: Outage, queue: Any, replay_handler: Any
) -> None:
    sqs, url = queue
    older = with_body(load_event("status_update/valid"), {"session_id": SESSION_ID, "status": "disconnected"})
    newer = with_body(load_event("status_update/valid"), {"session_id": SESSION_ID, "status": "connected"})
    newer["requestContext"]["timeEpoch"] = older["requestContext"]["timeEpoch"] + 60_000
    outage.stop()
    assert call_handler(handlers, older).status == 202
    outage.start()
    assert call_handler(handlers, newer).status == 200

    drain(sqs, url, replay_handler)

    assert outage.rows(f"select status from public.whatsapp_sessions where id = '{SESSION_ID}'") == [
        {"status": "connected"}
    ]


def test_queue_unreachable_too_is_503_with_retry_after(
    handlers: Any, outage: Outage, queue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETRY_QUEUE_URL", queue[1].replace("retry-test", "no-such-queue"))
    use_backend(monkeypatch, {"DATABASE_URL": outage.url, "DB_TIMEOUT_SECONDS": "1"})
    outage.stop()

    result = call_handler(handlers, load_event("messages_received/text"))

    assert result.status == 503
    assert result.headers["Retry-After"]


def test_database_down_without_a_retry_queue_is_one_warning_line_per_request_without_traceback(
    handlers: Any, outage: Outage, monkeypatch: pytest.MonkeyPatch, log_lines: Lines
) -> None:
    monkeypatch.delenv("RETRY_QUEUE_URL", raising=False)
    use_backend(monkeypatch, {"DATABASE_URL": outage.url, "DB_TIMEOUT_SECONDS": "1"})
    outage.stop()

    result = call_handler(handlers, load_event("messages_received/text"))

    assert result.status == 503
    refused = [line for line in log_lines() if line["level"] != "INFO"]
    assert [line["message"] for line in refused][:1] == [
        "database unavailable and the request could not be queued: refused with 503"
    ]
    assert not any("queueing" in line["message"] for line in refused)
    assert not any("exception" in line for line in refused), "a traceback was logged"


@pytest.mark.parametrize(
    ("name", "status"), [("messages_received/unknown_session", 404), ("messages_received/missing_fields", 400)]
)
def test_non_transient_failures_get_their_4xx_and_are_not_queued(
    handlers: Any, outage: Outage, queue: Any, name: str, status: int
) -> None:
    sqs, url = queue

    assert call_handler(handlers, load_event(name)).status == status
    assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)


# ---------------------------------------------------------------------------
# The Supabase client's own retries
# ---------------------------------------------------------------------------


@pytest.fixture
def supabase_backend(monkeypatch: pytest.MonkeyPatch, postgrest: Any, db: Any) -> Iterator[Any]:
    use_backend(monkeypatch, {"SUPABASE_URL": postgrest.url, "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY})
    postgrest.drop_next = 0
    yield postgrest
    postgrest.drop_next = 0


def test_supabase_client_retries_a_dropped_connection(handlers: Any, supabase_backend: Any) -> None:
    supabase_backend.drop_next = 2

    result = call_handler(handlers, load_event("messages_received/text"))

    assert result.status == 200
    assert supabase_backend.drop_next == 0


def test_supabase_client_gives_up_after_bounded_retries(handlers: Any, supabase_backend: Any) -> None:
    supabase_backend.drop_next = 100

    result = call_handler(handlers, load_event("messages_received/text"))

    assert result.status == 503  # no queue configured here
    assert supabase_backend.drop_next == 100 - 3  # the first try and two retries


def test_supabase_client_keeps_its_connection_alive_across_invocations(handlers: Any, supabase_backend: Any) -> None:
    before = supabase_backend.connections
    for name in ("messages_received/text", "messages_received/image", "status_update/valid"):
        assert call_handler(handlers, load_event(name)).status == 200

    assert supabase_backend.connections - before == 1
