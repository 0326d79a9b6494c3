"""Scheduled (every minute): queues the pending media messages for the media function.

The hot path only marks a media message pending, in the statement that stores
it; this function is what turns pending rows into jobs, including rows whose
job was lost (docs/media.md, "Queueing").
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from whatsapp_ingest.api import logger, metrics
from whatsapp_ingest.media.queue import dispatch
from whatsapp_ingest.store import get_store


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True, log_event=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    metrics.add_dimension(name="endpoint", value="media_dispatch")
    queued = dispatch(get_store())
    metrics.add_metric(name="media_queued", unit="Count", value=queued)
    logger.info("media jobs queued", extra={"queued": queued})
    return {"queued": queued}
