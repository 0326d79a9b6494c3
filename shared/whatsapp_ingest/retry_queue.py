"""Storage-first: a validated request that the database could not take is put on
an SQS queue, and the replay function applies it later through the same SQL
functions. They are idempotent, so a replay racing the orchestrator's own
redelivery still stores everything once.

A queued request keeps the time API Gateway received it and its signed
X-Timestamp: the two clocks that order session updates (docs/orchestrator.md, "Ordering"),
so a late replay does not overwrite a newer state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError

from whatsapp_ingest.config import settings
from whatsapp_ingest.models import MessageReceived, MessagesBatch, QrUpdate, StatusUpdate
from whatsapp_ingest.store import GatewayRefused, InvalidData, SessionNotFound, Store, get_store


class QueueUnavailable(Exception):
    """The request could not be queued either: the caller must retry (503)."""


#: Failures no retry will cure: the replay sets the request aside in the dead-letter queue at once.
#: GatewayRefused is a credential the database refused (an Evolution apikey queued before such
#: bodies stopped being queued): retrying cannot make it right.
PERMANENT = (SessionNotFound, GatewayRefused, InvalidData, ValidationError)

Operation = Callable[[Store, Any, datetime, datetime | None], dict[str, Any]]

#: What each endpoint's queued body becomes, and how the store applies it. A str names a
#: model of whatsapp_ingest.events, imported only when such a request is replayed: not at
#: the cold start of every function (about 20 ms), most of which never queue one.
OPERATIONS: dict[str, tuple[type[BaseModel] | str, Operation]] = {
    "status_update": (
        StatusUpdate,
        lambda store, body, received, signed: store.update_session_status(body, received, signed),
    ),
    "messages_received": (MessageReceived, lambda store, body, _, __: store.ingest_message(body)),
    "qr_update": (QrUpdate, lambda store, body, received, _: store.store_qr(body, received)),
    # Items rejected when the batch arrived are rejected again, and stored by nobody.
    "messages_batch": (
        MessagesBatch,
        lambda store, body, _, __: store.ingest_batch(body.session_id, body.validated()[0]),
    ),
    "message_event": (
        "MessageChange",
        lambda store, body, _, __: store.apply_message_change(body, settings().erase_deleted_content),
    ),
    # A gateway's webhook, queued as its authenticated, translated events (webhooks.py).
    "gateway_events": ("GatewayBatch", lambda store, body, received, _: store.apply_gateway_events(body, received)),
}

#: A queued batch is split into SQS messages of at most this size (one item bigger than it goes alone, up to
#: the queue's MaximumMessageSize, 1 MiB, SQS's largest). Ten of them, one replay invocation, stay under the
#: 6 MB a Lambda invocation may carry.
CHUNK_BYTES = 256 * 1024


@cache
def sqs() -> Any:
    """The SQS client of this container, with short timeouts: a request must end within its Lambda timeout."""
    # Imported here: boto3 stays off the cold-start path until a queue is needed.
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sqs", config=Config(connect_timeout=2, read_timeout=2, retries={"total_max_attempts": 2, "mode": "standard"})
    )


def defer(
    endpoint: str, body: dict[str, Any], request_id: str, received_at: datetime, signed_at: datetime | None = None
) -> None:
    """Queue an already validated request body for replay."""
    url = settings().retry_queue_url
    if not url:
        raise QueueUnavailable("no retry queue configured (RETRY_QUEUE_URL)")
    from botocore.exceptions import BotoCoreError, ClientError

    message = {"endpoint": endpoint, "body": body, "request_id": request_id, "received_at": received_at.isoformat()}
    if signed_at is not None:
        message["signed_at"] = signed_at.isoformat()
    try:
        for chunk in chunks(message):
            sqs().send_message(QueueUrl=url, MessageBody=chunk)
    except (BotoCoreError, ClientError) as exc:
        raise QueueUnavailable(type(exc).__name__) from exc


def _encode(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def chunks(message: dict[str, Any]) -> list[str]:
    """The SQS message bodies for one queued request: a batch whose encoding is over
    CHUNK_BYTES is split into batches that are not (each item whole, in order)."""
    whole = _encode(message)
    items = message["body"].get("messages") if message["endpoint"] == "messages_batch" else None
    if len(whole.encode()) <= CHUNK_BYTES or not isinstance(items, list) or len(items) < 2:
        return [whole]
    envelope = len(_encode({**message, "body": {**message["body"], "messages": []}}).encode())
    bodies: list[str] = []
    current: list[Any] = []
    size = envelope
    for item in items:
        item_size = len(_encode(item).encode()) + 1  # and its comma
        if current and size + item_size > CHUNK_BYTES:
            bodies.append(_encode({**message, "body": {**message["body"], "messages": current}}))
            current, size = [], envelope
        current.append(item)
        size += item_size
    bodies.append(_encode({**message, "body": {**message["body"], "messages": current}}))
    return bodies


def replay(message_body: str) -> dict[str, Any]:
    """Apply one queued request. Raises StoreUnavailable while the database is down
    (SQS retries it), or one of PERMANENT when it can never be applied."""
    message = json.loads(message_body)
    model, operation = OPERATIONS[message["endpoint"]]
    if isinstance(model, str):
        from whatsapp_ingest import events

        model = getattr(events, model)
    received_at = datetime.fromisoformat(message.get("received_at") or datetime.now(UTC).isoformat())
    signed_at = datetime.fromisoformat(message["signed_at"]) if message.get("signed_at") else None
    return operation(get_store(), model.model_validate(message["body"]), received_at, signed_at)


def describe(message_body: str) -> dict[str, Any]:
    """What a log line may say of a queued request: where it came from, not what it holds."""
    try:
        message = json.loads(message_body)
        session_id = message.get("body", {}).get("session_id")
        connection_id = message.get("body", {}).get("connection_id")
        return {
            "endpoint": message.get("endpoint"),
            "request_id": message.get("request_id"),
            "session_id": session_id if isinstance(session_id, str) else None,
        } | ({"connection_id": connection_id[:36]} if isinstance(connection_id, str) else {})
    except (ValueError, AttributeError):
        return {}


def set_aside(message_body: str, reason: str) -> None:
    """Move a request that can never be applied to the dead-letter queue, for a person to look at,
    with why (the message attribute `reason`, e.g. GatewayRefused)."""
    url = settings().dead_letter_queue_url
    if not url:
        raise QueueUnavailable("no dead-letter queue configured (DEAD_LETTER_QUEUE_URL)")
    attributes = {"reason": {"DataType": "String", "StringValue": reason[:256]}}
    sqs().send_message(QueueUrl=url, MessageBody=message_body, MessageAttributes=attributes)


def back_off(receipt_handle: str, receives: int) -> None:
    """Wait longer before each new try while the database is down: 1, 2, 4... minutes, at most an hour."""
    url = settings().retry_queue_url
    if url:
        delay = min(60 * 2 ** max(receives - 1, 0), 3600)
        sqs().change_message_visibility(QueueUrl=url, ReceiptHandle=receipt_handle, VisibilityTimeout=delay)
