"""SQS consumer: applies the requests queued while the database was unavailable.

Each record is applied on its own; failures are reported per record (partial
batch response), so SQS retries only those, and moves a record to the
dead-letter queue after the queue's maxReceiveCount.
"""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from whatsapp_ingest.api import count_outcome, logger, metrics
from whatsapp_ingest.retry_queue import replay

# A whole failed batch is reported record by record too, rather than raised.
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


def apply(record: SQSRecord) -> None:
    result = replay(record.body)
    outcome = "duplicate" if result.get("duplicate") else "stale" if result.get("stale") else "stored"
    count_outcome(outcome)
    logger.info("queued request applied", extra={"outcome": outcome, "sqs_message_id": record.message_id})


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    metrics.add_dimension(name="endpoint", value="replay")
    response = process_partial_response(event=event, record_handler=apply, processor=processor, context=context)
    if response["batchItemFailures"]:
        count_outcome("failed")
    return response
