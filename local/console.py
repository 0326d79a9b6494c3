"""The live console of `make run`: http://127.0.0.1:3000/ shows the local database's
sessions (with the QR to scan while one is waiting) and their latest messages, and
updates itself as the orchestrator's requests land.

Local only: the gateway (local/gateway.py) hands it GET / and GET /console/...;
nothing of it is in template.yaml or the Lambda layer.

- GET /                   the page (local/console/index.html; its CSS and JS next to it)
- GET /console/<file>     console.css, console.js
- GET /console/state      sessions, their QR (as an image) and latest messages, as JSON,
                          each medium with a presigned URL of the local S3 once stored
- GET /console/events     Server-Sent Events: every Realtime Broadcast the database
                          triggers send (session_updated, message_created, ...)

The events are the production ones: the triggers of migration 20261202010000 call
realtime.send, which locally (local/supabase_platform.sql) also does
pg_notify('realtime', {topic, event, payload, private}); each stream LISTENs on that
channel with a connection of its own and relays every notification.

The console reads the database directly, as the local superuser of DATABASE_URL:
it is a development tool, not the CRM's row-level-security path (docs/frontend.md
is that one).
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import sys
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import psycopg
import segno
from psycopg.rows import dict_row

STATIC = Path(__file__).with_name("console")
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/console/console.css": ("console.css", "text/css; charset=utf-8"),
    "/console/console.js": ("console.js", "text/javascript; charset=utf-8"),
}
CHANNEL = "realtime"  # what local realtime.send notifies
HEARTBEAT_SECONDS = 15.0  # a comment line on an idle stream
CHECK_SECONDS = 0.5  # how soon a stream whose page was closed lets its database connection go
CHATS_PER_SESSION = 20
MESSAGES_PER_CHAT = 10
CONNECT_TIMEOUT_SECONDS = 5
# An image the orchestrator rendered itself ("base64 image or raw QR text", the contract says).
QR_IMAGE = re.compile(r"data:image/(?:png|jpeg|gif|webp|svg\+xml);base64,[A-Za-z0-9+/=\s]+")

SESSIONS_SQL = """
select s.id, s.account_id, a.name as account_name, s.status, s.phone_number, s.whatsapp_user_id,
       s.last_seen, s.qr_code, s.qr_generated_at, s.updated_at
  from public.whatsapp_sessions s
  join public.accounts a on a.id = s.account_id
 order by a.name, s.created_at, s.id
"""

# Each session's most recent chats, each with its latest messages, newest first.
MESSAGES_SQL = """
select ch.session_id, ch.id as chat_id, c.wa_id, c.phone_number, c.display_name, ch.last_message_at,
       m.id, m.whatsapp_message_id, m.direction, m.message_type, m.body, m.content, m.from_wa_id,
       m.sent_at, m.media_status, m.media_path, m.media_mime_type, m.media_size, m.media_error
  from (select ch.*, row_number() over (partition by ch.session_id
                                         order by ch.last_message_at desc nulls last, ch.id desc) as rank
          from public.chats ch) ch
  join public.contacts c on c.id = ch.contact_id
  cross join lateral (
        select m.* from public.mensajes m
         where m.chat_id = ch.id
         order by m.sent_at desc, m.id desc
         limit %(messages)s
  ) m
 where ch.rank <= %(chats)s
 order by ch.session_id, ch.rank, m.sent_at desc, m.id desc
"""


def database_url() -> str | None:
    return os.environ.get("DATABASE_URL")


def qr_image(qr_code: str) -> str:
    """The QR as an <img> source: the orchestrator's own image, or the raw text drawn
    as SVG (segno; 4-module quiet zone, error correction M) in a data URL."""
    if QR_IMAGE.fullmatch(qr_code):
        return qr_code
    return segno.make(qr_code, error="m", micro=False).svg_data_uri(scale=8, border=4, dark="#000", light="#fff")


def message_text(body: str | None, content: dict[str, Any]) -> str:
    """The text or caption; for a location or contact card, what it names."""
    if body:
        return body
    kind = content.get("type")
    detail = content.get(kind) if isinstance(kind, str) else None
    if isinstance(detail, dict):
        keys = {"location": ("name", "address"), "contact": ("name", "phone")}.get(str(kind), ("filename",))
        return ", ".join(str(detail[k]) for k in keys if detail.get(k))
    return ""


#: How long a media link of the page works: the page asks again on every change.
MEDIA_URL_SECONDS = 300


def media(row: dict[str, Any]) -> dict[str, Any] | None:
    """A media message's status and, once stored, a short-lived presigned URL of the local S3
    (docs/media.md): what supabase-js createSignedUrl gives the CRM."""
    if row["media_status"] is None:
        return None
    shown: dict[str, Any] = {
        "status": row["media_status"],
        "mime_type": row["media_mime_type"],
        "size": row["media_size"],
        "error": row["media_error"],
        "url": None,
    }
    if row["media_status"] == "stored" and os.environ.get("STORAGE_S3_ENDPOINT_URL"):
        from whatsapp_ingest.config import media_settings
        from whatsapp_ingest.media.storage import s3_client

        shown["filename"] = row["media_path"].rsplit("/", 1)[-1]
        shown["url"] = s3_client().generate_presigned_url(
            "get_object",
            Params={"Bucket": media_settings().bucket, "Key": row["media_path"]},
            ExpiresIn=MEDIA_URL_SECONDS,
        )
    return shown


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def state(url: str) -> dict[str, Any]:
    """Everything the page shows, in one read (a direct query: see the module's docstring)."""
    with psycopg.connect(url, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_SECONDS) as conn:
        sessions = conn.execute(SESSIONS_SQL).fetchall()
        rows = conn.execute(MESSAGES_SQL, {"chats": CHATS_PER_SESSION, "messages": MESSAGES_PER_CHAT}).fetchall()
    chats: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        session_chats = chats.setdefault(row["session_id"], [])
        if not session_chats or session_chats[-1]["id"] != row["chat_id"]:
            number = row["phone_number"] or row["wa_id"]
            contact = f"{row['display_name']} ({number})" if row["display_name"] else number
            session_chats.append({"id": row["chat_id"], "contact": contact, "wa_id": row["wa_id"], "messages": []})
        inbound = row["direction"] == "inbound"
        session_chats[-1]["messages"].append(
            {
                "id": row["id"],
                "whatsapp_message_id": row["whatsapp_message_id"],
                "direction": row["direction"],
                "type": row["message_type"],
                "sender": session_chats[-1]["contact"] if inbound else "this phone",
                "from": row["from_wa_id"],
                "text": message_text(row["body"], row["content"]),
                "sent_at": _iso(row["sent_at"]),
                "media": media(row),
            }
        )
    return {
        "sessions": [
            {
                "id": str(s["id"]),
                "account_id": str(s["account_id"]),
                "account": s["account_name"],
                "status": s["status"],
                "phone_number": s["phone_number"],
                "last_seen": _iso(s["last_seen"]),
                "updated_at": _iso(s["updated_at"]),
                # Waiting: what the trigger calls qr_waiting; any other status clears the QR.
                "qr": (
                    {"code": s["qr_code"], "image": qr_image(s["qr_code"]), "generated_at": _iso(s["qr_generated_at"])}
                    if s["status"] == "pending" and s["qr_code"] is not None
                    else None
                ),
                "chats": chats.get(s["id"], []),
            }
            for s in sessions
        ]
    }


def serve(request: BaseHTTPRequestHandler) -> bool:
    """Answer the console's routes; False for anything else (the API's routes)."""
    path = request.path.split("?", 1)[0]
    if request.command not in ("GET", "HEAD") or not (path == "/" or path.startswith("/console/")):
        return False
    if request.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in request.headers:
        request.close_connection = True  # a body is not read here: it must not pass for the next request
    port = request.connection.getsockname()[1]  # the port this request came to
    if not local_host(request.headers.get("Host"), port):
        # DNS rebinding: a page of another site, its name pointed at 127.0.0.1, must not read the console.
        _reply(request, 403, "text/plain; charset=utf-8", b"the console answers only to localhost or 127.0.0.1\n")
        return True
    if path in FILES:
        name, content_type = FILES[path]
        _reply(request, 200, content_type, (STATIC / name).read_bytes())
    elif path == "/console/state":
        url = database_url()
        if url is None:
            unavailable = {"error": "the console reads the database directly: it needs DATABASE_URL"}
            _reply(request, 503, "application/json", json.dumps(unavailable).encode())
        else:
            try:
                document, status = state(url), 200
            except psycopg.OperationalError as error:
                document, status = {"error": f"database unavailable: {error}"}, 503
            _reply(request, status, "application/json", json.dumps(document).encode())
    elif path == "/console/events" and request.command == "GET":
        _stream(request)
    else:
        _reply(request, 404, "text/plain; charset=utf-8", b"not found\n")
    return True


def local_host(host: str | None, port: int) -> bool:
    """Whether a Host header names this console: localhost or 127.0.0.1 at its own port."""
    return host in (f"localhost:{port}", f"127.0.0.1:{port}")


def _reply(request: BaseHTTPRequestHandler, status: int, content_type: str, payload: bytes) -> None:
    request.send_response_only(status)  # the gateway's log format: no access line per poll
    request.send_header("Content-Type", content_type)
    request.send_header("Content-Length", str(len(payload)))
    request.send_header("Cache-Control", "no-store")
    request.end_headers()
    if request.command != "HEAD":
        request.wfile.write(payload)


def _stream(request: BaseHTTPRequestHandler) -> None:
    """Relay every notification on channel 'realtime' as one SSE message, until the client
    goes away (noticed within CHECK_SECONDS) or a write fails. The gateway serves
    each request on a daemon thread, so an open stream holds neither the other requests
    nor the shutdown."""
    url = database_url()
    if url is None:
        _reply(request, 503, "text/plain; charset=utf-8", b"the console needs DATABASE_URL\n")
        return
    request.close_connection = True  # the stream ends the connection
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS) as conn:
            conn.execute(f"listen {CHANNEL}")
            request.send_response_only(200)
            request.send_header("Content-Type", "text/event-stream; charset=utf-8")
            request.send_header("Cache-Control", "no-store")
            request.send_header("Connection", "close")
            request.end_headers()
            # Listening from here: the page reads the state after this and misses nothing.
            _send(request, b"retry: 1000\nevent: ready\ndata: {}\n\n")
            quiet_since = time.monotonic()
            while not _gone(request):
                for notify in conn.notifies(timeout=CHECK_SECONDS):
                    lines = "".join(f"data: {line}\n" for line in notify.payload.splitlines())
                    _send(request, f"event: broadcast\n{lines}\n".encode())
                    quiet_since = time.monotonic()
                if time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
                    _send(request, b": heartbeat\n\n")  # what keeps proxies and idle timers from closing it
                    quiet_since = time.monotonic()
    except (ConnectionError, TimeoutError):
        pass  # the page was closed or reloaded
    except psycopg.OperationalError as error:  # the database went away: the page reconnects
        print(f"console: event stream ended: {error}", file=sys.stderr)


def _gone(request: BaseHTTPRequestHandler) -> bool:
    """The client closed its end (an EventSource sends nothing after its request)."""
    readable, _, _ = select.select([request.connection], [], [], 0)
    return bool(readable) and not request.connection.recv(1, socket.MSG_PEEK)


def _send(request: BaseHTTPRequestHandler, chunk: bytes) -> None:
    request.wfile.write(chunk)
    request.wfile.flush()
