"""SQS consumer: applies the requests queued while the database was unavailable.

Each record is applied on its own and failures are reported per record (partial
batch response), so SQS retries only those. While the database is still down,
the rest of the batch is not even tried and each record waits longer before its
next try (back-off up to an hour; the queue keeps it 14 days). A request that
can never be applied (its session is gone, the database refuses a value) is set
aside in the dead-letter queue at once, with its reason (an error line and the
message attribute `reason`), and its alarm fires: so is a gateway's credential
the database refuses, never retried.
"""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from whatsapp_ingest.api import count_outcome, logger, metrics, note_dropped
from whatsapp_ingest.retry_queue import PERMANENT, back_off, describe, replay, set_aside
from whatsapp_ingest.store import StoreUnavailable

# A whole failed batch is reported record by record too, rather than raised.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
database_down = False  # within one batch: once down, do not wait on it for every record


def apply(record: SQSRecord) -> None:
    """Apply one queued request, or say why not (raising keeps it in the queue)."""
    global database_down
    receives = int(record.attributes.approximate_receive_count or 1)
    if database_down:
        back_off(record.receipt_handle, receives)
        raise StoreUnavailable("database down earlier in this batch")
    try:
        result = replay(record.body)
    except StoreUnavailable:
        database_down = True
        back_off(record.receipt_handle, receives)
        raise
    except PERMANENT as exc:
        logger.error(
            "queued request can never be applied: set aside in the dead-letter queue",
            extra={"reason": type(exc).__name__, "sqs_message_id": record.message_id, **describe(record.body)},
        )
        set_aside(record.body, type(exc).__name__)
        count_outcome("dead")
        return
    outcome = "duplicate" if result.get("duplicate") else "stale" if result.get("stale") else "stored"
    count_outcome(outcome)
    note_dropped(result.get("results", [result]))  # a gateway body's results, or one message event's
    logger.info(
        "queued request applied",
        extra={"outcome": outcome, "sqs_message_id": record.message_id, **describe(record.body)},
    )


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True, log_event=False)  # queued bodies hold message text: never logged
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    global database_down
    database_down = False
    metrics.add_dimension(name="endpoint", value="replay")
    response = process_partial_response(event=event, record_handler=apply, processor=processor, context=context)
    failures = len(response["batchItemFailures"])
    if failures:
        metrics.add_metric(name="failed", unit="Count", value=failures)
    return response
