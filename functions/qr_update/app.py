"""POST /api/whatsapp/sessions/qr-update: a new QR code must be scanned."""

from whatsapp_ingest.api import Reply, count_outcome, create_app, documented, entrypoint, logger, ok
from whatsapp_ingest.models import QrReply, QrUpdate
from whatsapp_ingest.store import get_store

app = create_app("qr_update")


@app.post(
    "/api/whatsapp/sessions/qr-update",
    summary="Report a new QR code to scan",
    tags=["sessions"],
    responses=documented(QrReply, "The QR code, kept on the session, which is now pending."),
)
def qr_update(body: QrUpdate) -> Reply:
    session = get_store().store_qr(body)
    stale = session["stale"]
    count_outcome("stale" if stale else "stored")
    logger.info(
        "stale qr code ignored" if stale else "qr code stored", extra={"qr_generated_at": body.timestamp.isoformat()}
    )
    return ok(
        "stale qr code ignored: a newer state is stored" if stale else "qr code stored",
        {
            "session": session,
            "qr_code": body.qr_code,
            "qr_url": body.qr_url,
            "timestamp": body.timestamp.isoformat(),
        },
    )


lambda_handler = entrypoint(app)
