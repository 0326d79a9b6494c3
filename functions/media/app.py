"""SQS consumer: stores the media of the messages the dispatcher queued (docs/media.md).

Each record is one message's file; failures are reported per record (partial
batch response). A transient failure (network, 5xx, throttling) gives the
message back and waits longer before each new try; after five tries the job
lands in the dead-letter queue, whose alarm fires. Permanent failures are
recorded on the message (failed, unavailable, too_large) and the job is done.
"""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from whatsapp_ingest.api import count_outcome, logger, metrics
from whatsapp_ingest.media.fetch import TransientMediaError
from whatsapp_ingest.media.queue import back_off, job_id
from whatsapp_ingest.media.worker import run_job
from whatsapp_ingest.store import get_store

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def store_media(record: SQSRecord) -> None:
    """Store one message's file, or say why not (raising keeps the job in the queue)."""
    message_id = job_id(record.body)
    try:
        outcome = run_job(get_store(), message_id)
    except TransientMediaError as exc:
        logger.warning("media not stored yet: will retry", extra={"message_row": message_id, "reason": str(exc)})
        back_off(record.receipt_handle, int(record.attributes.approximate_receive_count or 1))
        raise
    count_outcome(outcome)
    logger.info("media job done", extra={"message_row": message_id, "outcome": outcome})


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True, log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    metrics.add_dimension(name="endpoint", value="media")
    return process_partial_response(event=event, record_handler=store_media, processor=processor, context=context)
