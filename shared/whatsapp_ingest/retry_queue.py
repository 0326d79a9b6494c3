"""Storage-first: a validated request that the database could not take is put on
an SQS queue, and the replay function applies it later through the same SQL
functions. They are idempotent, so a replay racing the orchestrator's own
redelivery still stores everything once.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from pydantic import BaseModel

from whatsapp_ingest.config import settings
from whatsapp_ingest.models import MessageReceived, QrUpdate, StatusUpdate
from whatsapp_ingest.store import Store, get_store


class QueueUnavailable(Exception):
    """The request could not be queued either: the caller must retry (503)."""


#: What each endpoint's queued body becomes, and which store operation applies it.
OPERATIONS: dict[str, tuple[type[BaseModel], Any]] = {
    "status_update": (StatusUpdate, Store.update_session_status),
    "messages_received": (MessageReceived, Store.ingest_message),
    "qr_update": (QrUpdate, Store.store_qr),
}


@cache
def _sqs() -> Any:
    # Imported here: boto3 stays off the cold-start path until a queue is needed.
    import boto3
    from botocore.config import Config

    timeout = settings().db_timeout_seconds
    return boto3.client(
        "sqs", config=Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2})
    )


def defer(endpoint: str, body: dict[str, Any], request_id: str) -> None:
    """Queue an already validated request body for replay."""
    url = settings().retry_queue_url
    if not url:
        raise QueueUnavailable("no retry queue configured (RETRY_QUEUE_URL)")
    from botocore.exceptions import BotoCoreError, ClientError

    message = {"endpoint": endpoint, "body": body, "request_id": request_id}
    try:
        _sqs().send_message(QueueUrl=url, MessageBody=json.dumps(message, ensure_ascii=False))
    except (BotoCoreError, ClientError) as exc:
        raise QueueUnavailable(type(exc).__name__) from exc


def replay(message_body: str) -> dict[str, Any]:
    """Apply one queued request; raises (so SQS retries it) while the database is down."""
    message = json.loads(message_body)
    model, operation = OPERATIONS[message["endpoint"]]
    result: dict[str, Any] = operation(get_store(), model.model_validate(message["body"]))
    return result
