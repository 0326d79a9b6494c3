"""POST /api/whatsapp/messages/received: store one message of any session."""

from whatsapp_ingest.api import Reply, count_outcome, create_app, documented, entrypoint, logger, masked, masked_id, ok
from whatsapp_ingest.models import MessageReceived, MessageReply
from whatsapp_ingest.store import get_store

app = create_app("messages_received")


@app.post(
    "/api/whatsapp/messages/received",
    summary="Store a message seen by a session",
    tags=["messages"],
    responses=documented(
        MessageReply, "The stored message with its contact and chat (duplicate: true for a redelivery)."
    ),
)
def messages_received(body: MessageReceived) -> Reply:
    result = get_store().ingest_message(body)
    duplicate = result["duplicate"]
    outbound = result["message"]["direction"] == "outbound"
    count_outcome("duplicate" if duplicate else "stored")
    logger.info(
        "message already stored" if duplicate else "message stored",
        extra={
            "message_id": masked_id(body.message_id),
            "message_type": body.message.type,
            "direction": result["message"]["direction"],
            "peer": masked(body.to if outbound else body.from_),
            "contact_id": result["contact_id"],
            "chat_id": result["chat_id"],
        },
    )
    return ok("message already stored" if duplicate else "message stored", result)


lambda_handler = entrypoint(app)
