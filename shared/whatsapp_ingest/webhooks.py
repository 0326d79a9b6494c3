"""The Lambda handler of a gateway's webhook, and the dispatcher that applies its events.

Two URLs per gateway: /api/whatsapp/webhooks/{gateway}/{connection_id}, one per
gateway connection (its secrets in Secrets Manager, config.connection_secret),
and /api/whatsapp/webhooks/{gateway}, the default connection (the deployment's
single secret, config.gateway_secrets). A connection writes only into its own
sessions.

A request is checked in order: size, then the connection's own authentication
over the raw bytes (before anything is parsed), then method, content type and
JSON syntax (api.py's intake), then the adapter's translation into internal
events (a body the gateway cannot have sent is a 400). Everything the body says
is applied in one database call (Store.apply_gateway_events). Events nobody
maps are answered 200 with `ignored`, so gateways do not retry them forever.

An unknown connection, a wrong secret, an instance the connection does not have
and an Evolution apikey that does not match all get the same 401, and nothing
is stored. Only what is authenticated is queued when the database is down: an
Evolution body whose only proof is its apikey (checked by the database) is
answered 503 instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from types import ModuleType
from typing import Any
from uuid import UUID

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from whatsapp_ingest.api import (
    Handler,
    Rejected,
    _describe,
    _proxy,
    _received_at,
    accounted,
    count_outcome,
    envelope,
    logger,
    masked_id,
    metrics,
    note_dropped,
    parse_body,
    queued,
    request_bytes,
)
from whatsapp_ingest.auth import REFUSED, Unauthorized
from whatsapp_ingest.config import GatewaySecrets, SecretsUnavailable, connection_secret, gateway_secrets, settings
from whatsapp_ingest.events import GatewayBatch
from whatsapp_ingest.retry_queue import defer
from whatsapp_ingest.store import GatewayRefused, InvalidData, SessionNotFound, Store, StoreUnavailable, get_store

#: The retry queue's operation for a queued batch (retry_queue.OPERATIONS).
QUEUED_OPERATION = "gateway_events"
CHALLENGE = 'Signature realm="whatsapp-ingest-webhooks"'
RETRY_AFTER_SECONDS = 5

#: Optional per-gateway GET handler (Meta's verification): (query, secrets) -> response.
Verifier = Callable[[Mapping[str, str], GatewaySecrets], dict[str, Any]]


def apply(store: Store, batch: GatewayBatch, received_at: datetime) -> dict[str, Any]:
    """The dispatcher: a batch's events, applied through the store in one call (none: no call)."""
    if not batch.events:
        return {"session_id": None, "results": []}
    return store.apply_gateway_events(batch, received_at)


def webhook_handler(adapter: ModuleType, verify: Verifier | None = None) -> Handler:
    """The Lambda handler of one gateway's webhook endpoint; `verify` answers GET (Meta)."""
    endpoint = f"webhook_{adapter.NAME}"
    allowed = "GET, POST" if verify else "POST"

    # log_event=False stated, as in api.entrypoint: the event holds the signatures and the messages.
    @metrics.log_metrics
    @logger.inject_lambda_context(
        correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True, log_event=False
    )
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        metrics.add_dimension(name="endpoint", value=endpoint)
        logger.append_keys(endpoint=endpoint)
        headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
        method = event.get("requestContext", {}).get("http", {}).get("method", "")
        reason: str | None = None
        try:
            connection = (event.get("pathParameters") or {}).get("connection_id")
            if method == "GET" and verify is not None:
                response = verify(event.get("queryStringParameters") or {}, _verifier_secrets(adapter, connection))
            else:
                response = _post(adapter, event, headers, method, allowed, connection)
        except Rejected as exc:
            reason = exc.reason
            response = _proxy(envelope(exc.status, exc.message, headers=exc.headers))
        except SecretsUnavailable as exc:  # our side: the gateway retries, nothing was accepted
            logger.warning("secrets unavailable: webhook refused with 503", extra={"secrets_error": str(exc)})
            retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
            response = _proxy(envelope(503, "secrets unavailable, retry later", headers=retry))
        except Exception:  # a bug or a misconfiguration: still the envelope
            logger.exception("webhook failed")
            response = _proxy(envelope(500, "internal error"))

        return accounted(response, event, reason, "webhook")

    return handler


def _secrets(adapter: ModuleType, connection: str | None) -> tuple[UUID | None, GatewaySecrets]:
    """The connection named by the URL and its webhook secrets; without one, the default
    connection's. Raises Unauthorized for a connection that does not exist or is another gateway's."""
    if connection is None:
        return None, gateway_secrets()
    try:
        connection_id = UUID(connection)
    except ValueError:
        raise Unauthorized("the connection id is not a uuid") from None
    secret = connection_secret(connection_id)
    if secret is None:
        raise Unauthorized("no such connection")
    if secret.gateway != adapter.NAME:
        raise Unauthorized(f"the connection is a {secret.gateway} connection")
    return connection_id, secret.webhook


def _verifier_secrets(adapter: ModuleType, connection: str | None) -> GatewaySecrets:
    """A GET verification's secrets: none for an unknown connection (the verifier refuses)."""
    try:
        return _secrets(adapter, connection)[1]
    except Unauthorized:
        return GatewaySecrets()


def _post(
    adapter: ModuleType,
    event: dict[str, Any],
    headers: dict[str, str],
    method: str,
    allowed: str,
    connection: str | None,
) -> dict[str, Any]:
    data = request_bytes(event)
    try:
        connection_id, secrets = _secrets(adapter, connection)
        adapter.authenticate(headers, data, secrets)
    except Unauthorized as exc:
        raise _refused(f"unauthorized: {exc}") from None
    if method != "POST":
        raise Rejected(405, f"method {method} not allowed: use {allowed}", {"Allow": allowed})
    body = parse_body(data, headers.get("content-type", ""))
    try:
        translated = adapter.translate(body, secrets, settings().erase_deleted_content)
    except Unauthorized as exc:
        raise _refused(f"unauthorized: {exc}") from None
    except ValidationError as exc:
        problems = [_describe(dict(error)) for error in exc.errors()]
        message = "invalid event: " + "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        raise Rejected(400, message[:1000]) from None
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as exc:
        raise Rejected(400, f"invalid event: {str(exc)[:300] or type(exc).__name__}") from None
    # Meta may batch several phone numbers in one body: one batch (one call) per session.
    batches: list[GatewayBatch] = translated if isinstance(translated, list) else [translated]
    for batch in batches:
        batch.connection_id = connection_id
    ignored = [name for batch in batches for name in batch.ignored]
    instances = ",".join(masked_id(b.instance[:64]) for b in batches)[:256]
    logger.append_keys(gateway=adapter.NAME, connection_id=str(connection_id or "default"), instance=instances)
    for name in ignored:
        count_outcome("ignored")
        logger.info("gateway event ignored", extra={"gateway_event": name[:100]})
    for error in (error for batch in batches for error in batch.errors):
        count_outcome("gateway_error")
        logger.warning("gateway reported an error", extra={"gateway_error": error.model_dump()})
    batches = [batch for batch in batches if batch.events]
    if not batches:
        return _proxy(envelope(200, "ignored", {"ignored": ignored, "results": []}))

    received_at = _received_at(event)
    results: list[dict[str, Any]] = []
    unknown: list[str] = []
    for index, batch in enumerate(batches):
        try:
            result = apply(get_store(), batch, received_at)
        except SessionNotFound:
            # A Meta body may name several phone numbers of one app: one not linked to a session of
            # this connection must not hold up the others, which are applied. Only a body naming
            # none of this connection's sessions is refused, like a wrong secret (no oracle).
            unknown.append(masked_id(batch.instance[:64]))
            continue
        except GatewayRefused:
            raise _refused("unauthorized: the apikey does not match the session's") from None
        except InvalidData as exc:
            logger.warning("database refused a value", extra={"sqlstate": exc.sqlstate, "constraint": exc.constraint})
            return _proxy(envelope(400, "invalid event: a value was refused by the database"))
        except StoreUnavailable as exc:
            if any(b.require_apikey for b in batches[index:]):
                # Its only proof is the apikey the database checks: not authenticated, so not queued.
                logger.warning("database unavailable: an apikey-authenticated webhook refused with 503")
                retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
                return _proxy(envelope(503, "database unavailable, retry later", headers=retry))
            return _queue(batches[index:], event, received_at, exc)
        results.extend(result["results"])

    if len(unknown) == len(batches):
        raise _refused("unauthorized: this connection has no session with this instance")
    for instance in unknown:
        count_outcome("ignored")
        logger.warning("webhook names an instance this connection has no session for", extra={"unknown": instance})
        ignored.append(f"instance {instance}: no session of this connection")
    for outcome in results:
        count_outcome(_outcome(outcome))
    note_dropped(results)
    logger.info("webhook applied", extra={"events": [_summary(r) for r in results], "ignored": ignored})
    reply = {"session_id": result["session_id"] if len(batches) == 1 else None, "results": results, "ignored": ignored}
    return _proxy(envelope(200, "applied", reply))


def _queue(batches: list[GatewayBatch], event: dict[str, Any], received_at: datetime, exc: Exception) -> dict[str, Any]:
    """Storage-first: keep the authenticated, translated events (not yet applied) for the replay function."""
    request_id = event.get("requestContext", {}).get("requestId", "")

    def queue() -> None:
        for batch in batches:
            defer(QUEUED_OPERATION, batch.model_dump(mode="json", by_alias=True), request_id, received_at)

    return _proxy(queued(queue, exc, "webhook"))


def _refused(reason: str) -> Rejected:
    """One 401 for every failed check (as api.py answers); which one failed goes to the log only."""
    return Rejected(401, REFUSED, {"WWW-Authenticate": CHALLENGE}, reason)


def _outcome(result: dict[str, Any]) -> str:
    if result.get("duplicate"):
        return "duplicate"
    if result.get("stale"):
        return "stale"
    if result.get("pending"):
        return "pending"
    return "stored"


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    """What a log line may say of one applied event: kind, ids, outcome; never text or numbers."""
    keys = ("kind", "id", "chat_id", "contact_id", "direction", "status", "applied", "pending")
    summary = {k: result[k] for k in keys if k in result} | {"outcome": _outcome(result)}
    if isinstance(result.get("message_id"), str):
        summary["message_id"] = masked_id(result["message_id"])
    return summary
