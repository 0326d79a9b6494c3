"""Helpers for the media tests: moto's server (S3 and SQS, as make run uses it), a small
HTTP stand-in for WhatsApp's CDN, a WAHA server and the Graph API, and media messages
posted through the real handlers."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import SESSION_ID, call_handler, request, use_backend

from local import media as local_media
from whatsapp_ingest.config import media_settings
from whatsapp_ingest.retry_queue import sqs

WAHA_API_KEY = "waha-api-key-0123456789"
META_TOKEN = "meta-access-token-0123456789"

#: (status, headers, body) or a callable that writes the response itself.
Route = tuple[int, dict[str, str], bytes] | Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Standin:
    """One HTTP server on port 0; `routes` maps a path (with query) to its answer; `hits` records each request."""

    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def serve(self) -> Iterator[Standin]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                standin.hits.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                route = standin.routes.get(self.path, (404, {}, b"not found"))
                if callable(route):
                    route(self)
                    return
                status, headers, body = route
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()

    @property
    def plain_url(self) -> str:
        """The same server by another name: where a contract's plain URLs point."""
        return self.url.replace("127.0.0.1", "localhost")

    def paths(self) -> list[str]:
        return [path for path, _ in self.hits]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server, endpoint = local_media.start_server()
    yield endpoint
    server.stop()


@pytest.fixture
def standin() -> Iterator[Standin]:
    yield from Standin().serve()


@pytest.fixture
def media_env(
    moto_endpoint: str, standin: Standin, database_url: str, monkeypatch: pytest.MonkeyPatch, db: Any
) -> Iterator[dict[str, str]]:
    """The media function pointed at moto (fresh bucket and queues) and at the stand-in, as make run does."""
    env = local_media.prepare(moto_endpoint, f"jobs-{uuid.uuid4().hex[:12]}")  # fresh queues per test
    env |= {
        "WHATSAPP_MEDIA_HOSTS": "127.0.0.1",
        "WHATSAPP_MEDIA_CDN": standin.url,
        "META_MEDIA_HOSTS": "127.0.0.1",
        "META_GRAPH_URL": standin.url,
        "MEDIA_URL_HOSTS": "localhost",  # plain URLs: not the CDN stand-in's name
        "WAHA_BASE_URL": standin.url,
        "WAHA_API_KEY": WAHA_API_KEY,
        "META_ACCESS_TOKEN": META_TOKEN,
        "META_GRAPH_VERSION": "v21.0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    use_backend(monkeypatch, {"DATABASE_URL": database_url})
    media_settings.cache_clear()
    sqs.cache_clear()
    s3 = s3_client()
    for item in s3.list_objects_v2(Bucket=local_media.BUCKET).get("Contents", []):
        s3.delete_object(Bucket=local_media.BUCKET, Key=item["Key"])
    yield env
    media_settings.cache_clear()
    sqs.cache_clear()


def s3_client() -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=os.environ["STORAGE_S3_ENDPOINT_URL"],
        aws_access_key_id=local_media.LOCAL_KEY,
        aws_secret_access_key=local_media.LOCAL_KEY,
        region_name="us-east-1",
    )


def objects() -> dict[str, Any]:
    """Every stored object: key -> head_object (ContentType, ContentDisposition, ContentLength)."""
    s3 = s3_client()
    listed = s3.list_objects_v2(Bucket=local_media.BUCKET).get("Contents", [])
    return {item["Key"]: s3.head_object(Bucket=local_media.BUCKET, Key=item["Key"]) for item in listed}


def object_sha256(key: str) -> str:
    body = s3_client().get_object(Bucket=local_media.BUCKET, Key=key)["Body"].read()
    return hashlib.sha256(body).hexdigest()


def post_media(handlers: Any, message_id: str, kind: str, media: dict[str, Any]) -> dict[str, Any]:
    """messages/received with a `kind` message, through the real handler; the stored row's answer."""
    body = {
        "session_id": SESSION_ID,
        "from": "5215512345678@s.whatsapp.net",
        "to": "+52 1 55 0000 0001",
        "timestamp": 1795840860,
        "message_id": message_id,
        "message": {"type": kind, kind: {"id": message_id, **media}},
    }
    result = call_handler(handlers, request("messages_received/text", body))
    assert result.status == 200, result.body
    data: dict[str, Any] = result.body["data"]
    return data


def row(db: Any, message_id: str) -> dict[str, Any]:
    found: dict[str, Any] = db.execute(
        "select * from public.mensajes where whatsapp_message_id = %s", (message_id,)
    ).fetchone()
    return found


def dispatch_and_run(rounds: int = 1) -> list[str]:
    """The dispatcher once, then the media function over everything queued; the outcomes logged."""
    from whatsapp_ingest.media.queue import dispatch
    from whatsapp_ingest.store import get_store

    dispatch(get_store(), requeue_after=3600)
    handler = local_media.media_handler()
    received = []
    for _ in range(rounds):
        received.append(local_media.consume_once(handler))
    return [str(n) for n in received]


def dead_letters() -> list[dict[str, Any]]:
    url = os.environ["MEDIA_DEAD_LETTER_QUEUE_URL"]
    messages = sqs().receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]
