"""The media queue: the dispatcher hands pending messages to SQS, the media
function takes them off it. The database, not the queue, is the record: a
message the queue lost (SQS down at dispatch, a job expired) is pending still,
and is dispatched again REQUEUE_AFTER_SECONDS later."""

from __future__ import annotations

import json
from typing import Any

from whatsapp_ingest.config import ConfigError, media_settings
from whatsapp_ingest.retry_queue import sqs

#: A queued message without an outcome after this long is queued again: longer than the
#: queue's retries take (five tries, back-off up to 15 minutes).
REQUEUE_AFTER_SECONDS = 3600
DISPATCH_LIMIT = 500


def dispatch(store: Any, limit: int = DISPATCH_LIMIT, requeue_after: int = REQUEUE_AFTER_SECONDS) -> int:
    """Queue the pending media messages; how many were queued."""
    url = media_settings().queue_url
    if not url:
        raise ConfigError("MEDIA_QUEUE_URL is not set")
    ids: list[int] = store.media_dispatch(limit, requeue_after)
    for start in range(0, len(ids), 10):
        entries = [{"Id": str(i), "MessageBody": json.dumps({"id": i})} for i in ids[start : start + 10]]
        # A failed entry is not retried here: its message is queued again after requeue_after.
        sqs().send_message_batch(QueueUrl=url, Entries=entries)
    return len(ids)


def job_id(body: str) -> int:
    """The mensajes id a queued job names."""
    value = json.loads(body).get("id")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("a media job names a mensajes id")
    return value


def retry_delay(receives: int) -> int:
    """Seconds before the next try of a transient failure: 30 s, 1, 2, 4, 8 minutes (at most 15)."""
    return min(30 * 2 ** max(receives - 1, 0), 900)


def back_off(receipt_handle: str, receives: int) -> None:
    """Hide the job from the queue for retry_delay(receives) seconds (exponential back-off)."""
    url = media_settings().queue_url
    if url:
        delay = retry_delay(receives)
        sqs().change_message_visibility(QueueUrl=url, ReceiptHandle=receipt_handle, VisibilityTimeout=delay)
