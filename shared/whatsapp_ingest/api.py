"""API plumbing shared by the three functions: resolver, body intake, error envelope,
logging and metrics.

Every response is `{success, message, data?}`. A request is checked in order:
size and encoding, then who sent it (auth.py, before anything is parsed), then
method, content type and JSON syntax, all here before Powertools sees it; then
the body's shape by pydantic through Powertools' validation, whose errors become
a 400 naming each bad field.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse, OpenAPIResponseHeader
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from whatsapp_ingest.auth import CHALLENGE, REFUSED, Unauthorized, authenticate
from whatsapp_ingest.config import auth_secrets
from whatsapp_ingest.models import AcceptedReply, ErrorReply, field_problem
from whatsapp_ingest.retry_queue import QueueUnavailable, defer
from whatsapp_ingest.store import InvalidData, SessionNotFound, StoreUnavailable

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "whatsapp-ingest"))
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "WhatsAppIngest"))

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 64
RETRY_AFTER_SECONDS = 5
JSON = "application/json"

Reply = Response[Any]
Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


class Rejected(Exception):
    """A request refused before it reaches a route: status, message, extra headers, and
    the reason to log when it says more than the message may."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.reason = reason or message


# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------


def envelope(status: int, message: str, data: Any = None, headers: dict[str, str] | None = None) -> Reply:
    """The one response shape of the service."""
    body: dict[str, Any] = {"success": status < 400, "message": message}
    if data is not None:
        body["data"] = data
    return Response(status_code=status, content_type=JSON, body=body, headers=headers)


def ok(message: str, data: Any) -> Reply:
    """A 200 in the envelope: what every route answers when the store did its job."""
    return envelope(200, message, data)


def masked(wa_id: str) -> str:
    """A WhatsApp id fit for logs, at most its last 4 digits: '5215512345678' -> '****5678'
    (ids are personal data; a short one shows none)."""
    user, at, server = wa_id.partition("@")
    shown = f"****{user[-4:]}" if len(user) > 9 else "****"
    return f"{shown}{at}{server}"


_LONG_DIGITS = re.compile(r"\d{7,}")


def masked_id(value: str) -> str:
    """An id fit for logs: every run of 7 or more digits (a phone number inside a WAHA message
    id such as 'true_5215512345678@c.us_3EB0...', or an instance named after its number)
    shows only its last 4: 'true_****5678@c.us_3EB0...'."""
    return _LONG_DIGITS.sub(lambda digits: f"****{digits.group()[-4:]}", value)


def documented(reply: type[BaseModel], success: str) -> dict[int, OpenAPIResponse]:
    """The OpenAPI responses of an endpoint: its success reply and every error the service gives."""

    def error(description: str, **headers: str) -> OpenAPIResponse:
        documented_headers: dict[str, OpenAPIResponseHeader] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()
        }
        return {"description": description, "headers": documented_headers, "content": {JSON: {"model": ErrorReply}}}

    return {
        200: {"description": success, "content": {JSON: {"model": reply}}},
        202: {
            "description": "The database is unavailable: the request is queued and will be applied (storage-first).",
            "content": {JSON: {"model": AcceptedReply}},
        },
        400: error("Malformed JSON or invalid fields; data.errors names each field."),
        401: error("Missing or invalid bearer token or signature.", **{"WWW-Authenticate": "Bearer challenge"}),
        404: error("Unknown session."),
        405: error("Any method but POST.", Allow="POST"),
        413: error(f"Body over {MAX_BODY_BYTES} bytes."),
        415: error("Content type other than application/json."),
        500: error("Our fault; details are only in the log."),
        503: error("Database and retry queue both unavailable.", **{"Retry-After": "seconds"}),
    }


def count_outcome(outcome: str, count: int = 1) -> None:
    """Count an outcome (stored, duplicate, stale, queued, rejected, failed) as an EMF metric."""
    metrics.add_metric(name=outcome, unit=MetricUnit.Count, value=count)


def note_dropped(results: list[dict[str, Any]]) -> None:
    """Pending message events dropped by the per-session cap (whatsapp_message_event): the
    metric `pending_dropped` and a warning line."""
    dropped = sum(int(result.get("dropped") or 0) for result in results)
    if dropped:
        count_outcome("pending_dropped", dropped)
        logger.warning("pending message events dropped: the session's cap was reached", extra={"dropped": dropped})


# ---------------------------------------------------------------------------
# Resolver
# ---------------------------------------------------------------------------


class IngestApp(APIGatewayHttpResolver):
    """The resolver of one endpoint (one function), which knows its name."""

    def __init__(self, endpoint: str, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        super().__init__(
            enable_validation=True,
            serializer=_serialize,
            json_body_deserializer=self._parsed_body,
        )
        self.endpoint = endpoint
        #: The request's body as parse_body read it (strictly, storable); set per request.
        self.body: dict[str, Any] = {}
        #: When API Gateway received the request; set per request.
        self.received_at = datetime.now(UTC)
        #: The signed X-Timestamp (the orchestrator's clock) when signing is on; set per request.
        self.signed_at: datetime | None = None
        self.max_body_bytes = max_body_bytes

    def _parsed_body(self, _raw: str) -> dict[str, Any]:
        # Powertools asks for the parsed body: hand it the one already parsed,
        # rather than parse the raw text a second time (and less strictly).
        return self.body


def create_app(endpoint: str, max_body_bytes: int = MAX_BODY_BYTES) -> IngestApp:
    """A resolver with validation on and every error mapped to the envelope."""
    app = IngestApp(endpoint, max_body_bytes)

    @app.exception_handler(RequestValidationError)
    def _invalid(exc: RequestValidationError) -> Response:
        problems = [_describe(error) for error in exc.errors()]
        message = "invalid request: " + "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        return envelope(400, message, {"errors": problems})

    @app.exception_handler(SessionNotFound)
    def _unknown_session(exc: SessionNotFound) -> Response:
        return envelope(404, f"session {exc.session_id} not found")

    @app.exception_handler(InvalidData)
    def _refused(exc: InvalidData) -> Response:
        # Not exc_info: the chained database error's DETAIL can quote the row (phone numbers).
        logger.warning("database refused a value", extra={"sqlstate": exc.sqlstate, "constraint": exc.constraint})
        return envelope(400, "invalid request: a value was refused by the database")

    @app.exception_handler(StoreUnavailable)
    def _unavailable(exc: StoreUnavailable) -> Response:
        request_id = app.current_event.request_context.request_id
        return queued(lambda: defer(app.endpoint, app.body, request_id, app.received_at, app.signed_at), exc)

    @app.exception_handler(Exception)
    def _failed(exc: Exception) -> Response:
        logger.exception("request failed")
        return envelope(500, "internal error")

    @app.not_found
    def _no_route(exc: Exception) -> Response:
        return envelope(404, f"no route for {app.current_event.path}")

    return app


def queued(queue: Callable[[], None], exc: Exception, what: str = "request") -> Reply:
    """Storage-first: 202 once `queue()` kept the request for the replay, else 503. Rather
    than make the caller retry (some never do). One line per request, no traceback: an
    outage would otherwise bury the log."""
    try:
        queue()
    except QueueUnavailable as queue_exc:
        logger.warning(
            f"database unavailable and the {what} could not be queued: refused with 503",
            extra={"database_error": str(exc), "queue_error": str(queue_exc)},
        )
        return envelope(503, "database unavailable, retry later", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    logger.warning(f"database unavailable: {what} queued for replay", extra={"database_error": str(exc)})
    count_outcome("queued")
    return envelope(202, "accepted, queued for retry")


def _serialize(body: Any) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _describe(error: dict[str, Any]) -> dict[str, str]:
    field, problem = field_problem(error)
    return {"field": field, "problem": problem}


# ---------------------------------------------------------------------------
# Body intake
# ---------------------------------------------------------------------------

_UNPAIRED_SURROGATE = re.compile("[\ud800-\udfff]")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _storable(value: Any, depth: int = 0) -> Any:
    """Make valid JSON storable as-is in Postgres text and jsonb.

    Postgres cannot hold U+0000 and UTF-8 cannot hold an unpaired surrogate
    (both legal JSON escapes): each becomes U+FFFD, the Unicode replacement
    character. Everything else is kept exactly.
    """
    if depth > MAX_JSON_DEPTH:
        raise Rejected(400, f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        return _UNPAIRED_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_storable(k, depth): _storable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v, depth + 1) for v in value]
    return value


def request_bytes(event: dict[str, Any], limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body as sent (API Gateway base64-encodes what is not text)."""
    raw: str = event.get("body") or ""
    if event.get("isBase64Encoded") and raw:
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise Rejected(400, "malformed body: invalid base64") from None
    else:
        data = raw.encode("utf-8", "surrogatepass")
    if len(data) > limit:
        raise Rejected(413, f"body too large: the limit is {limit} bytes")
    return data


def parse_body(data: bytes, content_type: str) -> dict[str, Any]:
    """The request's JSON object, storable as-is, or Rejected with the status that says why not."""
    media_type = content_type.split(";")[0].strip().lower()
    if media_type and media_type != JSON and not media_type.endswith("+json"):
        raise Rejected(415, f"unsupported content type {media_type[:100]}: send application/json")
    if not data.strip():
        raise Rejected(400, "request body is empty: expected a JSON object")
    try:
        parsed = json.loads(data.decode("utf-8"), parse_float=_finite, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise Rejected(400, "malformed body: not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise Rejected(400, f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # number limits
        raise Rejected(400, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise Rejected(400, f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None

    if not isinstance(parsed, dict):
        raise Rejected(400, "invalid request: the body must be a JSON object")
    result: dict[str, Any] = _storable(parsed)
    return result


# ---------------------------------------------------------------------------
# Lambda entry point
# ---------------------------------------------------------------------------


def entrypoint(app: IngestApp) -> Handler:
    """The Lambda handler of one function: intake, routing, logging and metrics around `app`."""
    endpoint = app.endpoint

    # log_event=False stated, not left to POWERTOOLS_LOGGER_LOG_EVENT: the event holds
    # the bearer token, the signature and the message text, none of which is logged.
    @metrics.log_metrics
    @logger.inject_lambda_context(
        correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True, log_event=False
    )
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        metrics.add_dimension(name="endpoint", value=endpoint)
        logger.append_keys(endpoint=endpoint)
        headers = event.get("headers") or {}
        reason: str | None = None
        try:
            data = request_bytes(event, app.max_body_bytes)
            try:
                signed = authenticate(headers, data, auth_secrets(), time.time())
            except Unauthorized as exc:
                # One answer for every failure; which check failed goes to the log only.
                raise Rejected(401, REFUSED, {"WWW-Authenticate": CHALLENGE}, f"unauthorized: {exc}") from None
            method = event.get("requestContext", {}).get("http", {}).get("method", "")
            if method != "POST":
                raise Rejected(405, f"method {method} not allowed: use POST", {"Allow": "POST"})
            body = parse_body(data, headers.get("content-type", ""))
            session_id = body.get("session_id")
            if isinstance(session_id, str):
                logger.append_keys(session_id=session_id[:64])
            app.body = body
            app.received_at = _received_at(event)
            app.signed_at = datetime.fromtimestamp(signed, UTC) if signed is not None else None
            response: dict[str, Any] = app.resolve({**event, "headers": {**headers, "content-type": JSON}}, context)
        except Rejected as exc:
            reason = exc.reason
            response = _proxy(envelope(exc.status, exc.message, headers=exc.headers))
        except Exception:  # a bug or a misconfiguration outside the resolver: still the envelope
            logger.exception("request failed")
            response = _proxy(envelope(500, "internal error"))

        return accounted(response, event, reason)

    return handler


def accounted(
    response: dict[str, Any], event: dict[str, Any], reason: str | None, what: str = "request"
) -> dict[str, Any]:
    """Count a failed or rejected response, and log a rejection with its reason and source; returns it."""
    status = int(response["statusCode"])
    if status >= 500:
        count_outcome("failed")
    elif status >= 400:
        count_outcome("rejected")
        logger.warning(
            f"{what} rejected",
            extra={
                "status": status,
                "reason": reason or _message_of(response),
                "source_ip": event.get("requestContext", {}).get("http", {}).get("sourceIp"),
            },
        )
    return response


def _received_at(event: dict[str, Any]) -> datetime:
    """requestContext.timeEpoch: when API Gateway received the request (now, if absent)."""
    epoch_ms = event.get("requestContext", {}).get("timeEpoch")
    return datetime.fromtimestamp(epoch_ms / 1000, UTC) if isinstance(epoch_ms, int) else datetime.now(UTC)


def _message_of(response: dict[str, Any]) -> str:
    try:
        return str(json.loads(response.get("body") or "{}").get("message", ""))[:500]
    except (ValueError, AttributeError):
        return ""


def _proxy(response: Response) -> dict[str, Any]:
    """An API Gateway v2 result for a response made outside the resolver."""
    headers = {key: ", ".join(value) if isinstance(value, list) else value for key, value in response.headers.items()}
    return {
        "statusCode": response.status_code,
        "headers": headers,
        "body": _serialize(response.body),
        "isBase64Encoded": False,
    }
