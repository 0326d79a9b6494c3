"""POST /api/whatsapp/sessions/qr-update: a new QR code must be scanned."""

from whatsapp_ingest.api import Reply, count_outcome, create_app, documented, entrypoint, logger, ok
from whatsapp_ingest.models import QrReply, QrUpdate
from whatsapp_ingest.store import get_store

app = create_app("qr_update")


@app.post(
    "/api/whatsapp/sessions/qr-update",
    summary="Report a new QR code to scan",
    tags=["sessions"],
    responses=documented(QrReply, "The QR code, kept on the session, which is now pending (or stale, or duplicate)."),
)
def qr_update(body: QrUpdate) -> Reply:
    session = get_store().store_qr(body, app.received_at)
    generated = body.timestamp.isoformat()
    if session["stale"]:
        count_outcome("stale")
        logger.info("stale qr code ignored", extra={"qr_generated_at": generated, "compared": session["stale_because"]})
        message = "stale qr code ignored: a newer state is stored"
    elif session["duplicate"]:
        count_outcome("duplicate")
        logger.info("qr code already stored", extra={"qr_generated_at": generated})
        message = "qr code already stored"
    else:
        count_outcome("stored")
        logger.info("qr code stored", extra={"qr_generated_at": generated})
        message = "qr code stored"
    return ok(message, {"session": session, "qr_code": body.qr_code, "qr_url": body.qr_url, "timestamp": generated})


lambda_handler = entrypoint(app)
