"""Data access: one small interface, two implementations calling the same SQL functions.

Each endpoint is one call of one Postgres function (supabase/migrations), so a
request is one round trip and one transaction whichever way it travels:
Supabase's PostgREST RPC through postgrest-py, supabase-py's RPC client
(production default), or psycopg directly (local runs, tests, or Supabase's
transaction pooler).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from whatsapp_ingest.config import ConfigError, DatabaseSecrets, Settings, database_secrets, log, settings

if TYPE_CHECKING:
    from datetime import datetime

    from whatsapp_ingest.events import GatewayBatch, MessageChange
    from whatsapp_ingest.models import MessageReceived, QrUpdate, StatusUpdate


APPLICATION_NAME = "whatsapp-ingest"  # how our connections show in pg_stat_activity


class StoreError(Exception):
    """The database failed in a way that is our fault (500).

    `sqlstate` and `constraint` say what refused a value; the database's own
    message is not kept, because its DETAIL can quote a row (phone numbers).
    """

    sqlstate: str | None = None
    constraint: str | None = None


class SessionNotFound(StoreError):
    """No session has this id (404)."""

    def __init__(self, session_id: UUID) -> None:
        super().__init__(f"session {session_id} not found")
        self.session_id = session_id


class GatewayRefused(StoreError):
    """The database refused a gateway's credential (the Evolution apikey) for its session (401)."""


class InvalidData(StoreError):
    """The database refused a value the models let through (400)."""


class StoreUnavailable(StoreError):
    """The database could not be reached or is overloaded: worth retrying (the request is queued)."""


def _classify(sqlstate: str | None) -> type[StoreError]:
    """Map a SQLSTATE to our error type, the same way for both implementations."""
    state = sqlstate or ""
    if state == "PT404":  # raised by the functions; PostgREST answers it with a 404
        return SessionNotFound
    if state == "PT401":  # whatsapp_apply_gateway_events: the apikey does not match the session's
        return GatewayRefused
    # data exception, integrity constraint violation, a value too large for an index
    if state[:2] in ("22", "23", "54"):
        return InvalidData
    # connection, resources, shutdown, statement timeout, a deadlock or serialization failure (retrying wins)
    if state[:2] in ("08", "53", "40") or state.startswith("57P") or state == "57014":
        return StoreUnavailable
    return StoreError


class Store(ABC):
    """The three operations of the service. Subclasses only know how to call a function."""

    def update_session_status(
        self, update: StatusUpdate, received_at: datetime, signed_at: datetime | None = None
    ) -> dict[str, Any]:
        """Set the status and the optional fields sent; returns the session row and `stale`.

        Two clocks, never compared with each other: the orchestrator's (the body's
        `timestamp`, else the signed X-Timestamp) and API Gateway's `received_at`,
        which a replay from the retry queue keeps (docs/orchestrator.md, "Ordering").
        """
        event_at = update.timestamp or signed_at
        return self._call(
            "whatsapp_update_session_status",
            {
                "p_session_id": str(update.session_id),
                "p_status": update.status,
                "p_changes": update.changes(),
                "p_event_at": event_at.isoformat() if event_at else None,
                "p_received_at": received_at.isoformat(),
            },
            update.session_id,
        )

    def store_qr(self, qr: QrUpdate, received_at: datetime) -> dict[str, Any]:
        """Keep the QR on the session and set it pending; returns the session row, `stale` and `duplicate`."""
        return self._call(
            "whatsapp_store_qr",
            {
                "p_session_id": str(qr.session_id),
                "p_qr_code": qr.qr_code,
                "p_qr_url": qr.qr_url,
                "p_generated_at": qr.timestamp.isoformat(),
                "p_received_at": received_at.isoformat(),
            },
            qr.session_id,
        )

    def ingest_message(self, received: MessageReceived) -> dict[str, Any]:
        """Store a message once; returns {message, contact_id, chat_id, duplicate}."""
        return self._call(
            "whatsapp_ingest_message",
            {
                "p_session_id": str(received.session_id),
                "p_message_id": received.message_id,
                "p_from": received.from_,
                "p_to": received.to,
                "p_message_type": received.message.type,
                "p_body": received.message.body,
                "p_content": received.content,
                "p_sent_at": received.timestamp.isoformat(),
                "p_from_me": received.from_me,
                "p_push_name": received.push_name,
            },
            received.session_id,
        )

    def ingest_batch(self, session_id: UUID, items: list[MessageReceived]) -> dict[str, Any]:
        """Store valid messages of one session in one set-based call; returns {stored, duplicates}."""
        return self._call(
            "whatsapp_ingest_batch",
            {
                "p_session_id": str(session_id),
                "p_messages": [
                    {
                        "i": index,
                        "message_id": item.message_id,
                        "from": item.from_,
                        "to": item.to,
                        "type": item.message.type,
                        "body": item.message.body,
                        "content": item.content,
                        "sent_at": item.timestamp.isoformat(),
                        "from_me": item.from_me,
                        "push_name": item.push_name,
                    }
                    for index, item in enumerate(items)
                ],
            },
            session_id,
        )

    def apply_message_change(self, change: MessageChange, erase_deleted: bool) -> dict[str, Any]:
        """A status, reaction, edit or deletion of one message: applied, or kept until the message
        arrives; returns {message_id, kind, applied, pending}."""
        event = change.event(erase_deleted)
        return self._call(
            "whatsapp_message_event",
            {
                "p_session_id": str(change.session_id),
                "p_message_id": event.message_id,
                "p_kind": event.kind,
                "p_data": event.data(),
                "p_event_at": event.event_at.isoformat() if event.event_at else None,
            },
            change.session_id,
        )

    def apply_gateway_events(self, batch: GatewayBatch, received_at: datetime) -> dict[str, Any]:
        """Apply every event of one webhook body in one call and one transaction, the session
        found by (gateway, instance) within the batch's connection; returns {session_id, results}."""
        return self._call(
            "whatsapp_apply_gateway_events",
            {
                "p_gateway": batch.gateway,
                "p_instance": batch.instance,
                "p_events": batch.calls(),
                "p_received_at": received_at.isoformat(),
                "p_apikey_sha256": batch.apikey_sha256,
                "p_require_apikey": batch.require_apikey,
                "p_connection_id": str(batch.connection_id) if batch.connection_id else None,
            },
            cast("UUID", batch.instance),  # named in a SessionNotFound: the gateway's id of the session
        )

    def session_connection(self, session_id: UUID) -> dict[str, Any]:
        """The connection the service calls a session's gateway through:
        {session_id, connection_id, gateway, instance, base_url, api_version} (None but
        session_id when the session has no connection)."""
        return self._call("whatsapp_session_connection", {"p_session_id": str(session_id)}, session_id)

    def add_connection(
        self,
        connection_id: UUID,
        gateway: str,
        name: str,
        account_id: UUID | None,
        base_url: str | None,
        api_version: str | None,
    ) -> dict[str, Any]:
        """Record a gateway connection (the operator's, through the service role); returns its row."""
        return self._call(
            "whatsapp_add_gateway_connection",
            {
                "p_id": str(connection_id),
                "p_gateway": gateway,
                "p_name": name,
                "p_account_id": str(account_id) if account_id else None,
                "p_base_url": base_url,
                "p_api_version": api_version,
            },
            connection_id,
        )

    def media_dispatch(self, limit: int, requeue_after: int) -> list[int]:
        """Pending media messages to queue now (never queued, or queued `requeue_after` seconds ago
        without an outcome), marked queued (docs/media.md)."""
        ids = self._call("whatsapp_media_dispatch", {"p_limit": limit, "p_requeue_after": requeue_after}, _NO_SESSION)
        return cast(list[int], ids["ids"])

    def media_claim(self, message_id: int, lease_seconds: int) -> dict[str, Any]:
        """The media job of a pending message, leased to the caller; {} when there is nothing to do."""
        return self._call("whatsapp_media_claim", {"p_id": message_id, "p_lease": lease_seconds}, _NO_SESSION)

    def media_finish(
        self, message_id: int, lease: str, status: str, media: dict[str, Any], error: str | None
    ) -> dict[str, Any]:
        """Record a job's outcome under its lease: {recorded}."""
        args = {"p_id": message_id, "p_lease": lease, "p_status": status, "p_media": media, "p_error": error}
        return self._call("whatsapp_media_finish", args, _NO_SESSION)

    @abstractmethod
    def _call(self, function: str, args: dict[str, Any], session_id: UUID) -> dict[str, Any]:
        """Call public.<function> with named JSON-able arguments; return its jsonb result.

        Raises SessionNotFound, InvalidData, StoreUnavailable or StoreError.
        """


#: The media functions name no session (a SessionNotFound cannot come from them).
_NO_SESSION = UUID(int=0)


class PostgresStore(Store):
    """psycopg 3, one connection per thread, kept across invocations.

    prepare_threshold=None: no server-side prepared statements, which Supabase's
    transaction pooler cannot carry from one transaction to the next.
    """

    def __init__(
        self, database_url: str, timeout_seconds: float, sslmode: str | None = None, sslrootcert: str | None = None
    ) -> None:
        from psycopg.conninfo import conninfo_to_dict

        self._url = database_url
        self._timeout = timeout_seconds
        # TLS that verifies the server's certificate and host name unless explicitly told otherwise
        # (libpq's own default, prefer, would take an unencrypted connection; over a Unix socket,
        # as the embedded Postgres of tests and make run, libpq uses no TLS whatever sslmode says).
        in_url = conninfo_to_dict(database_url).get("sslmode")
        sslmode = sslmode or "verify-full"
        self._tls = {name: value for name, value in (("sslmode", sslmode), ("sslrootcert", sslrootcert)) if value}
        effective, source = (in_url, "DATABASE_URL") if in_url else (sslmode, "DATABASE_SSLMODE")
        if effective != "verify-full":
            log.warning(
                f"database TLS: sslmode={effective} from {source} overrides verify-full: "
                "the database server's certificate or host name is not fully verified",
                extra={"sslmode": effective, "sslmode_source": source},
            )
        self._local = threading.local()

    def _connect(self) -> Any:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(self._url)
        # Keep options from the URL (a role, a search_path) and add the timeout.
        timeout = f"-c statement_timeout={int(self._timeout * 1000)}"
        params["options"] = f"{params.get('options', '')} {timeout}".strip()
        params.setdefault("connect_timeout", max(1, round(self._timeout)))
        params.setdefault("application_name", APPLICATION_NAME)
        # psycopg has no read timeout: a socket left half-open while the container
        # was frozen must fail in seconds, not hang until the Lambda times out.
        params.setdefault("tcp_user_timeout", int(self._timeout * 1000))
        params.setdefault("keepalives_idle", 30)
        for name, value in self._tls.items():  # the URL's own TLS settings win
            params.setdefault(name, value)
        return psycopg.connect(
            make_conninfo("", **params),
            autocommit=True,  # the function call is the transaction
            prepare_threshold=None,
        )

    def _call(self, function: str, args: dict[str, Any], session_id: UUID) -> dict[str, Any]:
        import psycopg

        params = {name: json.dumps(v) if isinstance(v, dict | list) else v for name, v in args.items()}
        named = ", ".join(f"{name} => %({name})s" for name in params)
        query = f"select public.{function}({named})"
        # A kept connection may have been closed while the container was frozen:
        # then reconnect once. The functions are idempotent, so a retry is safe.
        for attempt in (1, 2):
            conn = getattr(self._local, "conn", None)
            reused = conn is not None and not conn.closed
            try:
                if conn is None or conn.closed:
                    conn = self._local.conn = self._connect()
                row = conn.execute(query, params).fetchone()
                return cast(dict[str, Any], row[0])
            except psycopg.Error as exc:
                error = _classify(exc.sqlstate)
                if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
                    error = StoreUnavailable
                if error is StoreUnavailable:
                    self._local.conn = None
                    # Reconnect once when a kept connection turns out dead; not after
                    # a statement timeout, which would only wait as long again.
                    if reused and attempt == 1 and exc.sqlstate != "57014":
                        continue
                raise _error(error, session_id, exc) from exc
        raise AssertionError("unreachable")


def api_key_headers(key: str) -> dict[str, str]:
    """How a Data API request carries our key.

    A secret key (sb_secret_...) is no JWT: it goes in the `apikey` header alone, and Supabase's
    gateway runs the request as service_role ("API keys", https://supabase.com/docs/guides/api/api-keys:
    "How API keys work"; a secret key sent only as a Bearer token is refused, supabase discussion
    #54235). A legacy JWT key (the service_role key, or a JWT of another role) goes in both headers,
    as supabase-py sends it, since PostgREST takes the role from the Authorization header.
    """
    if key.startswith("sb_"):
        return {"apikey": key}
    return {"apikey": key, "Authorization": f"Bearer {key}"}


def _classify_postgrest(code: str | None) -> type[StoreError]:
    """Map a PostgREST error's code: a SQLSTATE, a PGRST code, or, for a body that
    is not PostgREST's (a gateway in front of it), the HTTP status postgrest-py puts there."""
    if code in ("PGRST000", "PGRST001", "PGRST002", "PGRST003"):  # the database or its pool is unreachable
        return StoreUnavailable
    if not code or (len(code) == 3 and code.isdecimal() and int(code) >= 500):  # a proxy, balancer or CDN failed
        return StoreUnavailable
    return _classify(code)


class SupabaseStore(Store):
    """Supabase's PostgREST RPC, with one keep-alive HTTP client per container.

    Through postgrest-py, the RPC client inside supabase-py, rather than
    supabase.create_client: that also builds the auth, storage, realtime and
    functions clients, which this service never uses, and costs about 170 ms and
    16 MiB of layer more per cold start (docs/PERFORMANCE.md).

    Transport errors and PostgREST's "database unreachable" answers are retried
    (the three functions are idempotent): at most RETRIES more times, with full
    jitter, and never starting an attempt after one timeout's worth of time has
    passed, so a call ends within about twice the timeout, below the Lambda's.
    """

    RETRIES = 2
    BACKOFF_SECONDS = 0.1

    def __init__(self, url: str, key: str, timeout_seconds: float, keepalive_seconds: float) -> None:
        import httpx
        from postgrest import SyncPostgrestClient

        self._timeout = timeout_seconds
        http = httpx.Client(
            timeout=httpx.Timeout(timeout_seconds, connect=min(2.0, timeout_seconds)),
            limits=httpx.Limits(max_keepalive_connections=4, keepalive_expiry=keepalive_seconds),
        )
        self._client = SyncPostgrestClient(
            f"{url.rstrip('/')}/rest/v1",
            headers={**api_key_headers(key), "Content-Type": "application/json"},
            http_client=http,
            retry_enabled=False,  # the retries are ours, above
        )

    def _call(self, function: str, args: dict[str, Any], session_id: UUID) -> dict[str, Any]:
        import httpx
        from postgrest.exceptions import APIError

        started = time.monotonic()
        for attempt in range(self.RETRIES + 1):
            try:
                return cast(dict[str, Any], self._client.rpc(function, args).execute().data)
            except httpx.TransportError as exc:  # refused, reset, timed out
                failure: Exception = exc
            except APIError as exc:
                kind = _classify_postgrest(exc.code)
                if kind is not StoreUnavailable:
                    raise _error(kind, session_id, exc) from exc
                failure = exc
            if attempt == self.RETRIES or time.monotonic() - started > self._timeout:
                break
            time.sleep(random.uniform(0, self.BACKOFF_SECONDS * 2**attempt))
        raise StoreUnavailable(f"{function}: {type(failure).__name__}") from failure


def _error(kind: type[StoreError], session_id: UUID, cause: Exception) -> StoreError:
    if kind is SessionNotFound:
        return SessionNotFound(session_id)
    error = kind(type(cause).__name__)
    error.sqlstate = getattr(cause, "sqlstate", None) or getattr(cause, "code", None)
    diag = getattr(cause, "diag", None)
    # psycopg names the constraint; PostgREST only says it in its message
    named = re.search(r'constraint "([^"]{1,63})"', str(getattr(cause, "message", None) or ""))
    error.constraint = getattr(diag, "constraint_name", None) or (named.group(1) if named else None)
    return error


def get_store() -> Store:
    """The store of this container, reused across invocations.

    Rebuilt only when the database secret changes (a rotated key), which
    database_secrets() notices within the secrets' max age.
    """
    return shared_store(settings(), database_secrets())


def build_store(config: Settings, secrets: DatabaseSecrets) -> Store:
    """Supabase when SUPABASE_URL is set, else direct Postgres from DATABASE_URL."""
    if config.supabase_url:
        if not secrets.supabase_key:
            raise ConfigError("SUPABASE_URL is set but SUPABASE_SECRET_KEY (or the legacy service role key) is not")
        return SupabaseStore(
            config.supabase_url, secrets.supabase_key, config.db_timeout_seconds, config.http_keepalive_seconds
        )
    if secrets.database_url:
        return PostgresStore(
            secrets.database_url, config.db_timeout_seconds, config.database_sslmode, config.database_sslrootcert
        )
    raise ConfigError("set DATABASE_URL, or SUPABASE_URL with SUPABASE_SECRET_KEY")


#: One store per container (tests clear it to act as a fresh container).
shared_store = lru_cache(maxsize=1)(build_store)
