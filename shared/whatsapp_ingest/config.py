"""The one place configuration and secrets are read.

Plain settings come from the environment, once per container. Secrets (API
tokens, signing key, database credentials) come from AWS Secrets Manager when
the environment names a secret ARN (deployed), else from environment variables
(local runs): the same code path either way. Each gateway connection's secret
is in Secrets Manager, named after the connection (connection_secret). Secrets are cached for
SECRETS_MAX_AGE_SECONDS, so a rotation is picked up within that time without a
redeploy.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache
from typing import Any
from uuid import UUID

from aws_lambda_powertools import Logger

MIN_TOKEN_LENGTH = 16

#: A child of the service's logger (api.logger): same handler, same JSON lines.
log = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "whatsapp-ingest"), child=True)


class ConfigError(RuntimeError):
    """The environment or a secret does not say what the service needs."""


@dataclass(frozen=True)
class Settings:
    supabase_url: str | None
    #: ARN of {"tokens": [...], "signing_key": "..."}; unset: API_TOKENS / SIGNING_KEY.
    auth_secret_arn: str | None
    #: ARN of {"database_url": "..."} (the default: the whatsapp_ingest login through
    #: Supabase's pooler) or {"supabase_secret_key": "sb_secret_..."} (with SUPABASE_URL);
    #: unset: DATABASE_URL / SUPABASE_SECRET_KEY. The legacy supabase_service_role_key /
    #: SUPABASE_SERVICE_ROLE_KEY still works, with a deprecation warning.
    database_secret_arn: str | None
    #: SQS queue that keeps requests the database could not take (storage-first).
    retry_queue_url: str | None
    #: Where the replay function sets aside requests that can never be applied.
    dead_letter_queue_url: str | None
    secrets_max_age_seconds: int
    #: Connect and read timeout of every database call, below the Lambda timeout.
    db_timeout_seconds: float
    #: HTTP keep-alive of the Supabase client. Longer than httpx's 5 s default so a
    #: warm container reuses its TLS connection across the gaps between requests.
    http_keepalive_seconds: float
    #: Every request must be signed (REQUIRE_SIGNATURE; the template turns it on in
    #: prod): an auth secret without a signing_key is then a configuration error,
    #: never a silent fall back to the bearer token alone.
    require_signature: bool
    #: Direct Postgres: libpq's sslmode and sslrootcert unless the URL sets them
    #: (the template: verify-full, with Supabase's CA; docs/DEPLOY.md).
    database_sslmode: str | None
    database_sslrootcert: str | None
    #: ARN of the gateways' webhook secrets (GatewaySecrets); unset: their environment variables.
    gateway_secret_arn: str | None = None
    #: A message deleted for everyone loses its text and content (else kept for audit).
    erase_deleted_content: bool = False
    #: Secrets Manager name prefix of the connections' secrets (<prefix><connection id>).
    connection_secret_prefix: str = "whatsapp-ingest/connections/"


@dataclass(frozen=True)
class AuthSecrets:
    tokens: tuple[str, ...]
    signing_key: str | None

    def __repr__(self) -> str:  # never print a secret by accident
        return f"AuthSecrets(tokens=<{len(self.tokens)}>, signing_key={'<set>' if self.signing_key else None})"


@dataclass(frozen=True)
class GatewaySecrets:
    """What each gateway's webhook proves itself with (docs/gateway-operators.md); empty: not configured.

    Each is a tuple: during a rotation both the new and the old secret are accepted.
    """

    meta_app_secrets: tuple[str, ...] = ()
    meta_verify_tokens: tuple[str, ...] = ()
    waha_hmac_keys: tuple[str, ...] = ()
    evolution_webhook_tokens: tuple[str, ...] = ()

    @property
    def evolution_webhook_token(self) -> str | None:
        """Set when Evolution authenticates by a header token (else by each payload's apikey)."""
        return self.evolution_webhook_tokens[0] if self.evolution_webhook_tokens else None

    def __repr__(self) -> str:
        return "GatewaySecrets(<redacted>)"


@dataclass(frozen=True)
class DatabaseSecrets:
    supabase_key: str | None
    database_url: str | None

    def __repr__(self) -> str:
        return "DatabaseSecrets(<redacted>)"


def _optional(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _flag(name: str) -> bool:
    """An on/off setting: 'true' or '1' is on; unset, empty, 'false' or '0' is off."""
    value = (_optional(name) or "false").lower()
    if value not in ("true", "1", "false", "0"):
        raise ConfigError(f"{name} must be true or false")
    return value in ("true", "1")


@cache
def settings() -> Settings:
    """Settings of this container; `settings.cache_clear()` re-reads them (tests)."""
    return Settings(
        supabase_url=_optional("SUPABASE_URL"),
        auth_secret_arn=_optional("AUTH_SECRET_ARN"),
        database_secret_arn=_optional("DATABASE_SECRET_ARN"),
        retry_queue_url=_optional("RETRY_QUEUE_URL"),
        dead_letter_queue_url=_optional("DEAD_LETTER_QUEUE_URL"),
        secrets_max_age_seconds=int(os.environ.get("SECRETS_MAX_AGE_SECONDS", "300")),
        db_timeout_seconds=float(os.environ.get("DB_TIMEOUT_SECONDS", "5")),
        http_keepalive_seconds=float(os.environ.get("HTTP_KEEPALIVE_SECONDS", "300")),
        require_signature=_flag("REQUIRE_SIGNATURE"),
        database_sslmode=_optional("DATABASE_SSLMODE"),
        database_sslrootcert=_optional("DATABASE_SSLROOTCERT"),
        gateway_secret_arn=_optional("GATEWAY_SECRET_ARN"),
        erase_deleted_content=_flag("ERASE_DELETED_CONTENT"),
        connection_secret_prefix=_optional("CONNECTION_SECRET_PREFIX") or "whatsapp-ingest/connections/",
    )


def _secret(arn: str) -> dict[str, Any]:
    # Imported here: boto3 stays off the cold-start path until a secret is needed.
    from aws_lambda_powertools.utilities import parameters

    value = parameters.get_secret(arn, transform="json", max_age=settings().secrets_max_age_seconds)
    if not isinstance(value, dict):
        raise ConfigError("secret is not a JSON object")
    return value


def auth_secrets() -> AuthSecrets:
    """The active API tokens (several during a rotation) and the signing key (optional
    unless REQUIRE_SIGNATURE is on)."""
    arn = settings().auth_secret_arn
    if arn:
        secret = _secret(arn)
        tokens = secret.get("tokens")
        signing_key = secret.get("signing_key") or None
    else:
        tokens = [t for t in (os.environ.get("API_TOKENS") or "").split(",") if t.strip()]
        signing_key = _optional("SIGNING_KEY")
    # A string here would make each of its characters a token: refuse anything but
    # a list of long enough strings, and fail closed.
    if not isinstance(tokens, list) or not tokens:
        raise ConfigError("the API tokens must be a non-empty JSON list of strings")
    active = tuple(t.strip() for t in tokens if isinstance(t, str))
    if len(active) != len(tokens) or any(len(t) < MIN_TOKEN_LENGTH for t in active):
        raise ConfigError(f"every API token must be a string of at least {MIN_TOKEN_LENGTH} characters")
    if signing_key is not None and (not isinstance(signing_key, str) or len(signing_key) < MIN_TOKEN_LENGTH):
        raise ConfigError(f"the signing key must be a string of at least {MIN_TOKEN_LENGTH} characters")
    if signing_key is None and settings().require_signature:
        where = "the auth secret has no signing_key" if arn else "SIGNING_KEY is not set"
        raise ConfigError(f"REQUIRE_SIGNATURE is on but {where}: every request is refused until it has one")
    return AuthSecrets(active, signing_key)


@cache
def _warn_legacy_key(where: str) -> None:
    """Once per container: the legacy JWT key still works, but Supabase is retiring it."""
    log.warning(
        f"{where} is deprecated: Supabase is retiring the legacy service_role JWT key; "
        "use a secret key (sb_secret_...) as supabase_secret_key / SUPABASE_SECRET_KEY, "
        "or better the whatsapp_ingest login (database_url; docs/DEPLOY.md)"
    )


def database_secrets() -> DatabaseSecrets:
    """The Data API key (a secret key, or the legacy service_role JWT) or a Postgres URL."""
    arn = settings().database_secret_arn
    if arn:
        secret = _secret(arn)
        new, legacy, url = (secret.get(k) for k in ("supabase_secret_key", "supabase_service_role_key", "database_url"))
        where = "the database secret's supabase_service_role_key"
    else:
        new, legacy, url = (_optional(k) for k in ("SUPABASE_SECRET_KEY", "SUPABASE_SERVICE_ROLE_KEY", "DATABASE_URL"))
        where = "SUPABASE_SERVICE_ROLE_KEY"
    if not new and legacy:
        _warn_legacy_key(where)
    return DatabaseSecrets(new or legacy, url)


#: The gateway secrets: their keys in the Secrets Manager JSON, and their environment variables locally.
_GATEWAY_SECRETS = {
    "meta_app_secret": "META_APP_SECRET",
    "meta_verify_token": "META_VERIFY_TOKEN",
    "waha_hmac_key": "WAHA_HMAC_KEY",
    "evolution_webhook_token": "EVOLUTION_WEBHOOK_TOKEN",
}
#: The shortest webhook secret accepted.
MIN_GATEWAY_SECRET_LENGTH = MIN_TOKEN_LENGTH // 2


def _secret_values(key: str, value: Any) -> tuple[str, ...]:
    """One secret or a list of them (a rotation); refused unless each is a long enough string."""
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else [] if value is None else None
    if values is None or any(not isinstance(v, str) or len(v) < MIN_GATEWAY_SECRET_LENGTH for v in values if v):
        raise ConfigError(
            f"{key} must be a string (or a list of strings) of at least {MIN_GATEWAY_SECRET_LENGTH} characters"
        )
    return tuple(v for v in values if v)


def gateway_secrets() -> GatewaySecrets:
    """The default connection's webhook secrets (GATEWAY_SECRET_ARN's JSON, or the environment):
    the single-secret endpoints /api/whatsapp/webhooks/{gateway}."""
    arn = settings().gateway_secret_arn
    secret = _secret(arn) if arn else {key: _optional(env) for key, env in _GATEWAY_SECRETS.items()}
    values = {f"{key}s": _secret_values(key, secret.get(key)) for key in _GATEWAY_SECRETS}
    return GatewaySecrets(**values)


@dataclass(frozen=True)
class ConnectionSecret:
    """One gateway connection's credentials (docs/gateway-connections.md): what its webhooks
    prove themselves with, and what the service calls its gateway with."""

    connection_id: UUID
    gateway: str
    webhook: GatewaySecrets
    #: WAHA's X-Api-Key, Evolution's apikey, Meta's access token; None: not given.
    api_key: str | None

    def __repr__(self) -> str:
        return f"ConnectionSecret({self.connection_id}, {self.gateway}, <redacted>)"


class SecretsUnavailable(ConfigError):
    """Secrets Manager could not be asked (not: the secret does not exist). Worth retrying (503)."""


#: A connection's secret in Secrets Manager: its gateway, its webhook secrets (several
#: during a rotation) and its API key. What "webhook_secrets" are, per gateway:
_WEBHOOK_FIELD = {"meta": "meta_app_secrets", "waha": "waha_hmac_keys", "evolution": "evolution_webhook_tokens"}
#: At most this many connections' secrets are cached in a container (the oldest is forgotten first).
CONNECTION_CACHE_SIZE = 256
_connection_cache: OrderedDict[UUID, tuple[float, ConnectionSecret | None]] = OrderedDict()
_cache_lock = threading.Lock()


def connection_secret_name(connection_id: UUID) -> str:
    """The Secrets Manager name of a connection's secret: CONNECTION_SECRET_PREFIX + its id."""
    return f"{settings().connection_secret_prefix}{connection_id}"


@cache
def secrets_manager() -> Any:
    """The Secrets Manager client of this container, with short timeouts (a webhook waits on it)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "secretsmanager",
        config=Config(connect_timeout=2, read_timeout=2, retries={"total_max_attempts": 2, "mode": "standard"}),
    )


def connection_secret(connection_id: UUID) -> ConnectionSecret | None:
    """A connection's credentials, or None when it has no secret (no such connection).

    Cached per container for SECRETS_MAX_AGE_SECONDS (an unknown id for at most a minute), so a
    webhook costs no Secrets Manager call while warm, and a rotation is live within that time.
    """
    now = time.monotonic()
    with _cache_lock:
        cached = _connection_cache.get(connection_id)
    if cached is not None and cached[0] > now:
        return cached[1]
    from botocore.exceptions import BotoCoreError, ClientError

    try:  # the client inside: no region or credentials is "unavailable" too
        raw = secrets_manager().get_secret_value(SecretId=connection_secret_name(connection_id))["SecretString"]
        found: ConnectionSecret | None = parse_connection_secret(connection_id, json.loads(raw))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise SecretsUnavailable(f"Secrets Manager: {exc.response.get('Error', {}).get('Code')}") from None
        found = None
    except BotoCoreError as exc:
        raise SecretsUnavailable(f"Secrets Manager: {type(exc).__name__}") from None
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"the secret of connection {connection_id} is not a connection secret") from None
    max_age = settings().secrets_max_age_seconds
    with _cache_lock:
        _connection_cache[connection_id] = (now + (max_age if found else min(max_age, 60)), found)
        _connection_cache.move_to_end(connection_id)
        while len(_connection_cache) > CONNECTION_CACHE_SIZE:
            _connection_cache.popitem(last=False)
    return found


def forget_connection_secrets() -> None:
    """Empty the cache of connection secrets (tests; a fresh container)."""
    with _cache_lock:
        _connection_cache.clear()


def parse_connection_secret(connection_id: UUID, secret: dict[str, Any]) -> ConnectionSecret:
    gateway = secret["gateway"]
    if gateway not in _WEBHOOK_FIELD:
        raise ValueError("unknown gateway")
    webhook = {_WEBHOOK_FIELD[gateway]: _secret_values("webhook_secrets", secret.get("webhook_secrets"))}
    if gateway == "meta":
        webhook["meta_verify_tokens"] = _secret_values("verify_tokens", secret.get("verify_tokens"))
    api_key = secret.get("api_key")
    if api_key is not None and not isinstance(api_key, str):
        raise TypeError("api_key")
    return ConnectionSecret(connection_id, gateway, GatewaySecrets(**webhook), api_key or None)


# ---------------------------------------------------------------------------
# Media (docs/media.md): the media function and its dispatcher read these.
# ---------------------------------------------------------------------------

MIB = 1024 * 1024


@dataclass(frozen=True)
class MediaSettings:
    #: SQS queue of media jobs (the dispatcher sends, the media function receives).
    queue_url: str | None
    bucket: str
    #: A larger file is too_large; nothing past it is read.
    max_bytes: int
    #: make run only: http:// and loopback addresses (the local stand-ins). Refused on Lambda.
    allow_loopback: bool
    #: Host patterns ("*.whatsapp.net" matches subdomains) per source.
    whatsapp_hosts: tuple[str, ...]
    meta_hosts: tuple[str, ...]
    #: Hosts a contract message's plain (unencrypted) url may point at; none by default.
    url_hosts: tuple[str, ...]
    #: Where a direct_path is fetched when a message has no url.
    whatsapp_cdn: str
    meta_graph_url: str
    #: ARN of {s3_endpoint_url, s3_region, s3_access_key_id, s3_secret_access_key}; unset: STORAGE_S3_* variables.
    storage_secret_arn: str | None


@dataclass(frozen=True)
class StorageSecrets:
    endpoint_url: str | None
    region: str
    access_key_id: str | None
    secret_access_key: str | None

    def __repr__(self) -> str:
        return f"StorageSecrets(endpoint_url={self.endpoint_url!r}, <keys redacted>)"


def _hosts(name: str, default: str) -> tuple[str, ...]:
    return tuple(h.strip().lower() for h in os.environ.get(name, default).split(",") if h.strip())


@cache
def media_settings() -> MediaSettings:
    """The media function's settings; `media_settings.cache_clear()` re-reads them (tests)."""
    allow_loopback = _flag("MEDIA_ALLOW_LOOPBACK")
    if allow_loopback and os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        raise ConfigError("MEDIA_ALLOW_LOOPBACK is for make run only: a deployed function refuses it")
    max_bytes = int(os.environ.get("MEDIA_MAX_BYTES", str(100 * MIB)))
    if max_bytes < 1:
        raise ConfigError("MEDIA_MAX_BYTES must be a positive number of bytes")
    return MediaSettings(
        queue_url=_optional("MEDIA_QUEUE_URL"),
        bucket=_optional("MEDIA_BUCKET") or "whatsapp-media",
        max_bytes=max_bytes,
        allow_loopback=allow_loopback,
        whatsapp_hosts=_hosts("WHATSAPP_MEDIA_HOSTS", "mmg.whatsapp.net,*.whatsapp.net"),
        meta_hosts=_hosts("META_MEDIA_HOSTS", "graph.facebook.com,lookaside.fbsbx.com,*.fbsbx.com,*.fbcdn.net"),
        url_hosts=_hosts("MEDIA_URL_HOSTS", ""),
        whatsapp_cdn=(_optional("WHATSAPP_MEDIA_CDN") or "https://mmg.whatsapp.net").rstrip("/"),
        meta_graph_url=(_optional("META_GRAPH_URL") or "https://graph.facebook.com").rstrip("/"),
        storage_secret_arn=_optional("STORAGE_SECRET_ARN"),
    )


def storage_secrets() -> StorageSecrets:
    """Supabase Storage's S3 endpoint and server-side keys (STORAGE_SECRET_ARN's JSON, or the environment)."""
    arn = media_settings().storage_secret_arn
    if arn:
        secret = _secret(arn)
        values = {key: secret.get(key) or None for key in _STORAGE_SECRETS}
    else:
        values = {key: _optional(env) for key, env in _STORAGE_SECRETS.items()}
    return StorageSecrets(
        endpoint_url=values["s3_endpoint_url"],
        region=values["s3_region"] or "us-east-1",
        access_key_id=values["s3_access_key_id"],
        secret_access_key=values["s3_secret_access_key"],
    )


_STORAGE_SECRETS = {
    "s3_endpoint_url": "STORAGE_S3_ENDPOINT_URL",
    "s3_region": "STORAGE_S3_REGION",
    "s3_access_key_id": "STORAGE_S3_ACCESS_KEY_ID",
    "s3_secret_access_key": "STORAGE_S3_SECRET_ACCESS_KEY",
}

#: What the media function needs of each gateway: keys of GATEWAY_SECRET_ARN's JSON, or environment variables.
_SOURCE_SECRETS = {
    "waha_base_url": "WAHA_BASE_URL",
    "waha_api_key": "WAHA_API_KEY",
    "meta_access_token": "META_ACCESS_TOKEN",
    "meta_graph_version": "META_GRAPH_VERSION",
}


def gateway_source_secrets() -> dict[str, str | None]:
    """Deployment-wide gateway credentials for fetching media (the gateway secret, or the environment)."""
    arn = settings().gateway_secret_arn
    secret = _secret(arn) if arn else {key: _optional(env) for key, env in _SOURCE_SECRETS.items()}
    values: dict[str, str | None] = {}
    for key in _SOURCE_SECRETS:
        value = secret.get(key) or None
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{key} must be a string")
        values[key] = value
    return values
