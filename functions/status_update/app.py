"""POST /api/whatsapp/sessions/status-update: a session changed state."""

from whatsapp_ingest.api import Reply, count_outcome, create_app, documented, entrypoint, logger, ok
from whatsapp_ingest.models import SessionReply, StatusUpdate
from whatsapp_ingest.store import get_store

app = create_app("status_update")


@app.post(
    "/api/whatsapp/sessions/status-update",
    summary="Report a session's new state",
    tags=["sessions"],
    responses=documented(
        SessionReply,
        "The session, updated (or unchanged and stale: true when an update known to be newer was already applied).",
    ),
)
def status_update(body: StatusUpdate) -> Reply:
    session = get_store().update_session_status(body, app.received_at, app.signed_at)
    if session["stale"]:
        count_outcome("stale")
        logger.info("stale status update ignored", extra={"status": body.status, "compared": session["stale_because"]})
        return ok("stale status update ignored: a newer state is stored", session)
    count_outcome("stored")
    logger.info("session status updated", extra={"status": body.status, "fields": sorted(body.changes())})
    return ok("session status updated", session)


lambda_handler = entrypoint(app)
