"""Shared fixtures: a real embedded Postgres with the migrations applied, the real
handlers loaded from template.yaml, and both data-access implementations.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from local import database, gateway
from whatsapp_ingest.config import settings
from whatsapp_ingest.store import shared_store

REPO = Path(__file__).resolve().parent.parent
EVENTS = REPO / "events"
#: The media tests' fixtures (moto's server, the HTTP stand-in, the media environment).
pytest_plugins = ["media_support"]

SESSION_ID = "3f8a2b1c-5d4e-4f6a-9b7c-1d2e3f4a5b6c"  # the seeded demo session, in account A
# The seed's two accounts, their sessions and members (supabase/seed.sql).
ACCOUNT_A, ACCOUNT_B = "0a0a0a0a-0000-4000-8000-0000000000a0", "0b0b0b0b-0000-4000-8000-0000000000b0"
SESSION_B = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"
MEMBER_A, MEMBER_B = "a1a1a1a1-0000-4000-8000-00000000000a", "b2b2b2b2-0000-4000-8000-00000000000b"
# Shaped like a Supabase key (supabase-py checks the shape); valid only for the stand-in.
SERVICE_KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.dGVzdC1vbmx5LW5vdC1hLXNlY3JldA"
# A new-style secret key (not a JWT); valid only for the stand-in.
SECRET_KEY = "sb_secret_test-only-not-a-secret-000000"


#: The token the sample events in events/ carry; accepted only where configured.
SAMPLE_TOKEN = "local-dev-sample-token"
SIGNING_KEY = "test-signing-key-0123456789abcdef"


@pytest.fixture(scope="session", autouse=True)
def orchestrator_token() -> Iterator[str]:
    """The service accepts the sample events' token unless a test says otherwise."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("API_TOKENS", SAMPLE_TOKEN)
        patch.delenv("SIGNING_KEY", raising=False)
        patch.delenv("AUTH_SECRET_ARN", raising=False)
        patch.delenv("DATABASE_SECRET_ARN", raising=False)
        settings.cache_clear()
        yield SAMPLE_TOKEN
    settings.cache_clear()


@dataclass
class Result:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


def load_event(name: str) -> dict[str, Any]:
    """An API Gateway v2 event from events/, e.g. 'messages_received/text'."""
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return event


def with_body(event: dict[str, Any], body: Any) -> dict[str, Any]:
    """A copy of `event` carrying another JSON body (a str is sent as it is)."""
    changed = copy.deepcopy(event)
    changed["body"] = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    changed["isBase64Encoded"] = False
    return changed


def request(name: str, body: dict[str, Any], received_ms: int | None = None) -> dict[str, Any]:
    """The event `name` (an endpoint's valid sample) carrying `body`, received by API Gateway at `received_ms`."""
    event = with_body(load_event(name), body)
    if received_ms is not None:
        event["requestContext"]["timeEpoch"] = received_ms
    return event


def signed(event: dict[str, Any], key: str = SIGNING_KEY, at: int | None = None) -> dict[str, Any]:
    """`event` with X-Timestamp (now, or `at`) and its X-Signature."""
    from whatsapp_ingest.auth import sign

    timestamp = str(int(time.time()) if at is None else at)
    changed = copy.deepcopy(event)
    body = changed.get("body", "").encode()
    changed["headers"].update({"x-timestamp": timestamp, "x-signature": sign(key, timestamp, body)})
    return changed


def event_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(load_event(name)["body"])
    return body


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory the embedded server can use.

    Not under pytest's tmp_path: run as root, pgserver starts Postgres as the user
    "pgserver", and every pytest session start resets /tmp/pytest-of-root to mode
    0700, which locks that user out.
    """
    directory = Path(tempfile.mkdtemp(prefix=f"whatsapp-ingest-{prefix}-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def embedded_postgres(version: int = 18) -> Iterator[Any]:
    """A fresh embedded Postgres, stopped and deleted afterwards."""
    with scratch_dir("pg") as directory:
        server = database.start(directory / "data", delete_on_exit=True, version=version)
        try:
            yield server
        finally:
            server.cleanup()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with embedded_postgres() as server:
        url = server.get_uri()
        database.migrate(url)
        yield url


#: Everything the tests write, so each starts from the seed alone.
TRUNCATE = (
    "truncate public.mensajes, public.chats, public.contacts, public.whatsapp_sessions, public.accounts,"
    " realtime.messages cascade"
)


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """A clean database holding only the seeded demo session."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(TRUNCATE)
        conn.execute(database.SEED_SQL.read_text())
        conn.execute("truncate realtime.messages")  # what the seed broadcast
        yield conn


def add_session(conn: Any, session_id: str, account_id: str = ACCOUNT_A) -> str:
    """A session the CRM just created in `account_id`: its own number is not known yet."""
    conn.execute(
        "insert into public.whatsapp_sessions (id, account_id) values (%s, %s) on conflict (id) do nothing",
        (session_id, account_id),
    )
    return session_id


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """AWS emulated by moto, with fake credentials so nothing can reach a real account."""
    from moto import mock_aws

    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


@pytest.fixture(scope="session")
def postgrest(database_url: str) -> Iterator[Any]:
    from postgrest_standin import PostgrestStandin

    standin = PostgrestStandin(database_url, SERVICE_KEY, secret_key=SECRET_KEY)
    standin.start()
    yield standin
    standin.stop()


def use_backend(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Point the service at a database, as a fresh container would see it."""
    for name in ("SUPABASE_URL", "SUPABASE_SECRET_KEY", "SUPABASE_SERVICE_ROLE_KEY", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings.cache_clear()
    shared_store.cache_clear()


@pytest.fixture(params=["postgres", "supabase"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, database_url: str) -> Iterator[str]:
    """Each test using it runs twice: psycopg directly, and supabase-py through PostgREST."""
    if request.param == "supabase":
        standin = request.getfixturevalue("postgrest")
        use_backend(monkeypatch, {"SUPABASE_URL": standin.url, "SUPABASE_SECRET_KEY": SECRET_KEY})
    else:
        use_backend(monkeypatch, {"DATABASE_URL": database_url})
    yield request.param
    settings.cache_clear()
    shared_store.cache_clear()


@pytest.fixture(scope="session")
def handlers() -> dict[str, gateway.Handler]:
    """The real Lambda handlers, found through template.yaml by path."""
    return {route.path: gateway.load_handler(route) for route in gateway.load_routes(REPO / "template.yaml")}


def call_handler(handlers: dict[str, gateway.Handler], event: dict[str, Any]) -> Result:
    response = handlers[event["rawPath"]](event, gateway.LambdaContext("test"))
    return Result(response["statusCode"], response.get("headers", {}), json.loads(response["body"]))


Invoke = Callable[..., Result]
Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def log_lines() -> Iterator[Lines]:
    """The service's log lines, formatted exactly as in Lambda."""
    from whatsapp_ingest.api import logger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


@pytest.fixture
def invoke(handlers: dict[str, gateway.Handler], backend: str, db: Any) -> Invoke:
    """invoke('messages_received/text') or invoke(event, body=...): the handler's Result."""

    def call(event: str | dict[str, Any], **changes: Any) -> Result:
        loaded = load_event(event) if isinstance(event, str) else event
        if "body" in changes:
            loaded = with_body(loaded, changes["body"])
        return call_handler(handlers, loaded)

    return call
