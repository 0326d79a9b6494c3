"""What the bench and its child processes share: paths, the production-like environment, payloads.

Kept free of the layer's internals (only each function's `lambda_handler` is used), so the bench keeps
measuring whatever the layer becomes.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO / "shared"
FUNCTIONS = REPO / "functions"
EVENTS = REPO / "events"
PYTHON = sys.executable

SESSION_ID = "3f8a2b1c-5d4e-4f6a-9b7c-1d2e3f4a5b6c"  # seeded by supabase/seed.sql
OWN_NUMBER = "5215500000001"  # the seeded session's own number: messages to it are inbound
SAMPLE_TOKEN = "local-dev-sample-token"  # the token events/*.json carry
# Shaped like a Supabase key (supabase-py checks the shape); only the PostgREST stand-in accepts it.
SERVICE_KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.dGVzdC1vbmx5LW5vdC1hLXNlY3JldA"
SENT_AT = "2026-11-28T04:41:00Z"
RESPONSE_MARK = "@@bench-response"  # the line a cold child prints once it has its first response

#: The same call PostgresStore makes (named arguments, content as JSON text): the ceiling's query.
INGEST_SQL = (
    "select public.whatsapp_ingest_message(p_session_id => %(p_session_id)s, p_message_id => %(p_message_id)s,"
    " p_from => %(p_from)s, p_to => %(p_to)s, p_message_type => %(p_message_type)s, p_body => %(p_body)s,"
    " p_content => %(p_content)s, p_sent_at => %(p_sent_at)s)"
)

_CLEARED = frozenset(
    {
        "SUPABASE_URL",
        "SUPABASE_SECRET_KEY",
        "SUPABASE_SERVICE_ROLE_KEY",
        "DATABASE_URL",
        "AUTH_SECRET_ARN",
        "DATABASE_SECRET_ARN",
    }
    | {"API_TOKENS", "SIGNING_KEY", "RETRY_QUEUE_URL", "AWS_PROFILE"}
)


def production_env(**settings: str) -> dict[str, str]:
    """The deployed functions' environment (template.yaml Globals), secrets from env vars instead of AWS.

    Nothing from the caller's environment that changes Python or the service leaks in (PYTHON*, the
    store settings): each child is a fresh container.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON") and k not in _CLEARED}
    env.update(
        STAGE="dev",
        SECRETS_MAX_AGE_SECONDS="300",
        DB_TIMEOUT_SECONDS="5",
        POWERTOOLS_SERVICE_NAME="whatsapp-ingest",
        POWERTOOLS_METRICS_NAMESPACE="WhatsAppIngest",
        POWERTOOLS_LOG_LEVEL="INFO",
        API_TOKENS=SAMPLE_TOKEN,
    )
    env.update(settings)
    return env


def supabase_env(url: str) -> dict[str, str]:
    return production_env(SUPABASE_URL=url, SUPABASE_SERVICE_ROLE_KEY=SERVICE_KEY)


def postgres_env(database_url: str) -> dict[str, str]:
    return production_env(DATABASE_URL=database_url)


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return event


def fresh_tag() -> str:
    """A prefix making message ids (and peers) unique across runs on the same database."""
    return uuid.uuid4().hex[:10]


def fresh_peer() -> str:
    """A phone number never seen before (13 digits), so a message also creates its contact and chat."""
    return f"52{uuid.uuid4().int % 10**11:011d}"


def message_body(message_id: str, peer: str, text: str = "Hola, ¿tienen disponible el modelo azul?") -> dict[str, Any]:
    """An inbound text message from `peer` (already canonical, so the SQL arguments are exact)."""
    return {
        "session_id": SESSION_ID,
        "from": f"{peer}@s.whatsapp.net",
        "to": f"{OWN_NUMBER}@s.whatsapp.net",
        "timestamp": SENT_AT,
        "message_id": message_id,
        "message": {"type": "text", "text": text},
    }


def message_event(body: dict[str, Any]) -> dict[str, Any]:
    """The API Gateway v2 event of events/messages_received/text.json carrying `body`."""
    event = copy.deepcopy(_TEMPLATE_EVENT)
    event["body"] = json.dumps(body, ensure_ascii=False)
    event["requestContext"]["requestId"] = f"bench-{body['message_id']}"
    return event


def message_args(body: dict[str, Any]) -> dict[str, Any]:
    """The arguments the store passes to public.whatsapp_ingest_message for `body` (see store.py)."""
    return {
        "p_session_id": body["session_id"],
        "p_message_id": body["message_id"],
        "p_from": body["from"].split("@")[0],
        "p_to": body["to"].split("@")[0],
        "p_message_type": body["message"]["type"],
        "p_body": body["message"].get("text"),
        "p_content": json.dumps(body["message"]),
        "p_sent_at": SENT_AT.replace("Z", "+00:00"),
    }


_TEMPLATE_EVENT = load_event("messages_received/text")

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


class Context:
    """The Lambda context attributes Powertools reads."""

    function_name = "bench"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:bench"
    memory_limit_in_mb = 512
    aws_request_id = "bench"
    log_group_name = "/aws/lambda/bench"
    log_stream_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 15_000


def load_handler(function: str) -> Handler:
    """functions/<function>/app.py's lambda_handler, with shared/ on the path as the layer is in Lambda."""
    if str(SHARED) not in sys.path:
        sys.path.insert(0, str(SHARED))
    spec = importlib.util.spec_from_file_location(f"fn_{function}", FUNCTIONS / function / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    handler: Handler = module.lambda_handler
    return handler


def timed(call: Callable[[], Any]) -> float:
    """Seconds `call` takes, by the monotonic high-resolution clock."""
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


@contextmanager
def slow_network(socket: Path, delay_ms: int = 20) -> Iterator[str]:
    """A DATABASE_URL through bench/delay_proxy.py: `delay_ms` per client-to-server chunk."""
    import subprocess

    proxy = subprocess.Popen(
        [PYTHON, "-m", "bench.delay_proxy", "--unix", str(socket), "--delay-ms", str(delay_ms)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proxy.stdout is not None
        port = int(proxy.stdout.readline().split()[1])
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable"  # the proxy speaks no TLS
    finally:
        proxy.terminate()
        proxy.wait()
