"""POST /api/whatsapp/messages/batch: store many messages of one session at once (history sync)."""

from whatsapp_ingest.api import Reply, count_outcome, create_app, documented, entrypoint, logger, ok
from whatsapp_ingest.models import MAX_BATCH_BYTES, BatchReply, MessagesBatch
from whatsapp_ingest.store import get_store

app = create_app("messages_batch", max_body_bytes=MAX_BATCH_BYTES)


@app.post(
    "/api/whatsapp/messages/batch",
    summary="Store a batch of messages of one session",
    tags=["messages"],
    responses=documented(
        BatchReply, "How many items were stored, were duplicates and were rejected; each rejected item and why."
    ),
)
def messages_batch(body: MessagesBatch) -> Reply:
    valid, rejected = body.validated()
    result = get_store().ingest_batch(body.session_id, valid)
    stored, duplicates = result["stored"], result["duplicates"]
    count_outcome("stored", stored)
    count_outcome("duplicate", duplicates)
    count_outcome("rejected_items", len(rejected))
    logger.info(
        "message batch stored",
        extra={"items": len(body.messages), "stored": stored, "duplicates": duplicates, "rejected": len(rejected)},
    )
    return ok(
        f"{stored} stored, {duplicates} duplicates, {len(rejected)} rejected",
        {
            "stored": stored,
            "duplicates": duplicates,
            "rejected": len(rejected),
            "rejections": [r.model_dump() for r in rejected],
        },
    )


lambda_handler = entrypoint(app)
