"""`make docs`: docs/openapi.json, generated from the handlers.

The schema is Powertools' OpenAPI merge of the three functions' resolvers (their
pydantic request and reply models). The examples are real: every event in
events/ is run through its handler against a scratch database, and what it
answered becomes the example of that status.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from local import database, gateway

DOCUMENT = gateway.REPO / "docs" / "openapi.json"
#: Order matters: each runs against the state the previous ones left.
ENDPOINTS = ["status_update", "messages_received", "messages_batch", "message_event", "qr_update"]
#: Values that change from run to run, pinned so the document is reproducible.
VOLATILE = {"created_at": "2026-11-28T04:43:00.000000+00:00", "updated_at": "2026-11-28T04:43:00.000000+00:00"}
EXAMPLE_TOKEN = "local-dev-sample-token"


def build(database_url: str) -> dict[str, Any]:
    """The OpenAPI document, with examples recorded against `database_url` (emptied first)."""
    from aws_lambda_powertools.event_handler.openapi.merge import OpenAPIMerge
    from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer, Server

    # The gateways' webhooks take the gateways' own formats (docs/gateway-operators.md): not ours to document here.
    routes = [r for r in gateway.load_routes(gateway.REPO / "template.yaml") if r.path and not is_webhook(r)]
    merge = OpenAPIMerge(
        title="WhatsApp ingestion API",
        version="1.0.0",
        description=(gateway.REPO / "docs" / "openapi-intro.md").read_text(),
        servers=[Server(url="http://127.0.0.1:3000", description="make run")],
        security_schemes={"bearer": HTTPBearer()},
        security=[{"bearer": []}],
    )
    for route in routes:
        gateway.load_handler(route)  # the module, with its resolver, is now loaded
        merge.add_schema(
            _resolver_of(route).get_openapi_schema().model_dump(mode="json", by_alias=True, exclude_none=True)
        )
    document: dict[str, Any] = json.loads(merge.get_openapi_json_schema())
    _drop_framework_defaults(document)
    _record_examples(document, routes, database_url)
    return document


def is_webhook(route: gateway.Route) -> bool:
    return route.path.startswith("/api/whatsapp/webhooks/")


def _resolver_of(route: gateway.Route) -> Any:
    import sys

    return sys.modules[f"fn_{route.logical_id}"].app


def _drop_framework_defaults(document: dict[str, Any]) -> None:
    """Powertools documents a 422 and its own 500; the service answers 400 and its envelope."""
    for operation in _operations(document):
        operation["responses"].pop("422", None)
        operation["responses"]["500"] = copy.deepcopy(operation["responses"]["503"]) | {
            "description": "Our fault; details are only in the log.",
            "headers": {},
        }
    schemas = document["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schemas.pop(name, None)


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [item["post"] for item in document["paths"].values()]


@contextlib.contextmanager
def _service_on(database_url: str) -> Iterator[None]:
    """The handlers configured for `database_url` and the sample token, quiet; restored afterwards."""
    from whatsapp_ingest.config import settings
    from whatsapp_ingest.store import shared_store

    saved = dict(os.environ)
    log = logging.getLogger("whatsapp-ingest")
    level = log.level
    os.environ.update(DATABASE_URL=database_url, API_TOKENS=EXAMPLE_TOKEN)
    for name in ("SUPABASE_URL", "AUTH_SECRET_ARN", "DATABASE_SECRET_ARN", "SIGNING_KEY", "RETRY_QUEUE_URL"):
        os.environ.pop(name, None)
    settings.cache_clear()
    shared_store.cache_clear()
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        settings.cache_clear()
        shared_store.cache_clear()
        log.setLevel(level)


def _record_examples(document: dict[str, Any], routes: list[gateway.Route], database_url: str) -> None:
    import psycopg

    from whatsapp_ingest.store import shared_store

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("truncate public.mensajes, public.chats, public.contacts, public.whatsapp_sessions cascade")
        conn.execute(database.SEED_SQL.read_text())
    by_dir = {route.code_dir.name: route for route in routes}
    with _service_on(database_url):
        for endpoint in ENDPOINTS:
            route = by_dir[endpoint]
            operation = document["paths"][route.path]["post"]
            handler = gateway.load_handler(route)
            paths = sorted((gateway.REPO / "events" / endpoint).glob("*.json"))
            for path in paths:
                _example(operation, path.stem, json.loads(path.read_text()), handler)
            # The errors no sample event shows, made from the endpoint's first valid event.
            valid = next(json.loads(p.read_text()) for p in paths if p.stem in ("valid", "text", "status_read"))
            no_token = _changed(valid, headers={"authorization": None})
            _example(operation, "without_token", no_token, handler, False)
            _example(operation, "not_json", _changed(valid, headers={"content-type": "text/plain"}), handler, False)
            limit = _resolver_of(route).max_body_bytes
            _example(operation, "too_large", _changed(valid, body=" " * limit + valid["body"]), handler, False)
            os.environ["DATABASE_URL"] = "postgresql://postgres@/postgres?host=/nonexistent"
            shared_store.cache_clear()
            _example(operation, "database_and_queue_down", valid, handler, False)
            os.environ.pop("DATABASE_URL")
            _example(operation, "misconfigured", valid, handler, False)
            os.environ["DATABASE_URL"] = database_url
            operation["responses"]["202"]["content"]["application/json"]["examples"] = {
                "queued": {"summary": "queued", "value": {"success": True, "message": "accepted, queued for retry"}}
            }


def _changed(
    event: dict[str, Any], body: str | None = None, headers: dict[str, str | None] | None = None
) -> dict[str, Any]:
    changed = json.loads(json.dumps(event))
    if body is not None:
        changed["body"] = body
    for name, value in (headers or {}).items():
        if value is None:
            changed["headers"].pop(name, None)
        else:
            changed["headers"][name] = value
    return changed


def _example(
    operation: dict[str, Any], name: str, event: dict[str, Any], handler: Any, as_request: bool = True
) -> None:
    """Run `event` through the handler; its body and answer become examples named `name`."""
    with contextlib.redirect_stdout(io.StringIO()):  # the service's logs and metrics are not the point here
        response = handler(event, gateway.LambdaContext("openapi"))
    status = str(response["statusCode"])
    try:
        request = json.loads(event.get("body") or "null")
    except ValueError:
        request = None
    if as_request and isinstance(request, dict):
        examples = operation["requestBody"]["content"]["application/json"].setdefault("examples", {})
        examples[name] = {"summary": name.replace("_", " "), "value": request}
    reply = _pin(json.loads(response["body"]))
    content = operation["responses"][status]["content"]["application/json"]
    content.setdefault("examples", {})[name] = {"summary": name.replace("_", " "), "value": reply}


def _pin(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: VOLATILE[k] if k in VOLATILE else _pin(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_pin(v) for v in value]
    return value


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=DOCUMENT)
    args = parser.parse_args(argv)
    import sys
    import tempfile

    sys.path.insert(0, str(gateway.REPO / "shared"))
    with tempfile.TemporaryDirectory(prefix="whatsapp-ingest-docs-") as scratch:
        os.chmod(scratch, 0o755)  # the embedded server runs as its own user
        server = database.start(Path(scratch) / "pgdata", delete_on_exit=True)
        try:
            database.migrate(server.get_uri())
            args.output.write_text(render(build(server.get_uri())))
        finally:
            server.cleanup()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
