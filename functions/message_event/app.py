"""POST /api/whatsapp/messages/event: a message's delivery status, a reaction, an edit or a deletion."""

from whatsapp_ingest.api import (
    Reply,
    count_outcome,
    create_app,
    documented,
    entrypoint,
    logger,
    masked_id,
    note_dropped,
    ok,
)
from whatsapp_ingest.config import settings
from whatsapp_ingest.events import MessageChange
from whatsapp_ingest.models import MessageEventReply
from whatsapp_ingest.store import get_store

app = create_app("message_event")


@app.post(
    "/api/whatsapp/messages/event",
    summary="Report a status, reaction, edit or deletion of a message",
    tags=["messages"],
    responses=documented(
        MessageEventReply, "Applied to the message, or kept until the message arrives (pending: true)."
    ),
)
def message_event(body: MessageChange) -> Reply:
    result = get_store().apply_message_change(body, settings().erase_deleted_content)
    note_dropped([result])
    result.pop("dropped", None)
    outcome = "pending" if result["pending"] else "stored" if result["applied"] else "duplicate"
    count_outcome(outcome)
    logger.info(
        "message event", extra={"kind": body.kind, "message_id": masked_id(body.message_id), "outcome": outcome}
    )
    message = {
        "pending": "message event kept until its message arrives",
        "stored": "message event applied",
        "duplicate": "message event changed nothing (already applied, or older)",
    }[outcome]
    return ok(message, result)


lambda_handler = entrypoint(app)
