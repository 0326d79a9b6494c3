"""Where a message's file is, per source, and what may be fetched to get it.

- inline `data` (the contract's, or Evolution's webhook base64): no download;
- Meta (WhatsApp Cloud API): the media id resolved through the Graph API with
  the business's access token, then downloaded with the same token;
- WAHA: media.url's path, only under /api/files/ (WAHA's file store), fetched from
  the configured WAHA server with its API key;
- a `media_key` (contract, Evolution): the encrypted file on WhatsApp's CDN
  (url, or the CDN + direct_path), decrypted;
- otherwise a contract `url` is a plain file, from MEDIA_URL_HOSTS only (a
  WhatsApp CDN url without its media_key is unavailable: it cannot be decrypted).

The source is the session's gateway (whatsapp_sessions.gateway) for WAHA and
Meta; the message's own fields otherwise.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit
from uuid import UUID

from whatsapp_ingest.config import MediaSettings, gateway_source_secrets
from whatsapp_ingest.connections import credentials_for_session
from whatsapp_ingest.media.fetch import MediaError, Policy, get, host_allowed

DEFAULT_GRAPH_VERSION = "v21.0"


@dataclass(frozen=True)
class SourceCredentials:
    """What fetching a gateway's media needs. Never logged."""

    base_url: str | None = None  # WAHA's server
    api_key: str | None = None  # WAHA's X-Api-Key
    access_token: str | None = None  # Meta's business access token
    graph_version: str = DEFAULT_GRAPH_VERSION

    def __repr__(self) -> str:
        return f"SourceCredentials(base_url={self.base_url!r}, <secrets redacted>)"


def source_credentials(gateway: str | None, session_id: str) -> SourceCredentials:
    """The credentials for fetching `session_id`'s media from `gateway`: its gateway
    connection's (docs/gateway-connections.md), else, for a session of the default
    connection, the deployment-wide settings of the gateway secret (docs/media.md).
    """
    if gateway in ("waha", "meta"):
        connection = credentials_for_session(UUID(session_id))
        if connection is not None:
            if gateway == "waha":
                return SourceCredentials(base_url=connection.base_url, api_key=connection.api_key)
            return SourceCredentials(
                access_token=connection.api_key, graph_version=connection.api_version or DEFAULT_GRAPH_VERSION
            )
    secrets = gateway_source_secrets()
    if gateway == "waha":
        return SourceCredentials(base_url=secrets["waha_base_url"], api_key=secrets["waha_api_key"])
    if gateway == "meta":
        return SourceCredentials(
            access_token=secrets["meta_access_token"],
            graph_version=secrets["meta_graph_version"] or DEFAULT_GRAPH_VERSION,
        )
    return SourceCredentials()


@dataclass(frozen=True)
class Plan:
    """How to get one file: inline base64, or a URL under a policy, maybe encrypted."""

    inline: str | None = None
    url: str | None = None
    policy: Policy | None = None
    media_key: bytes | None = None
    file_enc_sha256: bytes | None = None
    file_sha256: bytes | None = None
    #: The type the source declared (Graph API, or the message).
    mime_type: str | None = None


def _b64(value: Any) -> bytes | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def _host_of(url: str) -> tuple[str, ...]:
    host = urlsplit(url).hostname
    return (host.lower(),) if host else ()


def plan(job: dict[str, Any], config: MediaSettings) -> Plan:
    """The plan for a claimed job (whatsapp_media_claim's answer); MediaError when there is none."""
    kind = job["message_type"]
    media = (job.get("content") or {}).get(kind)
    if not isinstance(media, dict):
        raise MediaError("unavailable", "the message carries no media object")
    declared = media.get("mime_type") if isinstance(media.get("mime_type"), str) else None
    file_sha256 = _b64(media.get("file_sha256"))
    if isinstance(media.get("data"), str) and media["data"]:
        return Plan(inline=media["data"], file_sha256=file_sha256, mime_type=declared)

    gateway = job.get("gateway")
    credentials = source_credentials(gateway, str(job["session_id"]))
    if gateway == "meta":
        return _meta_plan(str(media.get("id") or ""), credentials, config)
    url = media.get("url") if isinstance(media.get("url"), str) else None
    if gateway == "waha":
        if not (credentials.base_url and credentials.api_key):
            raise MediaError("failed", "WAHA_BASE_URL and WAHA_API_KEY are not configured")
        if not url:
            raise MediaError("unavailable", "WAHA sent no media url (is WAHA's media download on?)")
        parts = urlsplit(url)
        # Only WAHA's file store (it serves downloaded media at /api/files/...): the API key
        # opens every session on the server, so no other path (another session's QR, ...).
        path = unquote(parts.path)
        if (
            not parts.path.startswith("/api/files/")
            or any(segment in ("", ".", "..") for segment in path.split("/")[3:])
            or "\\" in path
            or "%" in path
        ):
            raise MediaError("failed", "refused: a WAHA media url outside /api/files/")
        # Always from the configured server: WAHA may report itself under another name.
        fetched = credentials.base_url.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
        policy = Policy(
            _host_of(credentials.base_url), config.allow_loopback, headers={"X-Api-Key": credentials.api_key}
        )
        return Plan(url=fetched, policy=policy, mime_type=declared)

    media_key = _b64(media.get("media_key"))
    if media_key is not None:
        direct_path = media.get("direct_path")
        if not url and isinstance(direct_path, str) and direct_path.startswith("/"):
            url = config.whatsapp_cdn + direct_path
        if not url:
            raise MediaError("unavailable", "a media_key without url or direct_path")
        return Plan(
            url=url,
            policy=Policy(config.whatsapp_hosts, config.allow_loopback),
            media_key=media_key,
            file_enc_sha256=_b64(media.get("file_enc_sha256")),
            file_sha256=file_sha256,
            mime_type=declared,
        )
    if url and host_allowed(_host_of(url)[0] if _host_of(url) else "", config.whatsapp_hosts):
        raise MediaError("unavailable", "an encrypted WhatsApp file without its media_key (or the file as data)")
    if url:
        return Plan(
            url=url, policy=Policy(config.url_hosts, config.allow_loopback), file_sha256=file_sha256, mime_type=declared
        )
    raise MediaError("unavailable", "the message has no url, media_key or data")


def _meta_plan(media_id: str, credentials: SourceCredentials, config: MediaSettings) -> Plan:
    if not credentials.access_token:
        raise MediaError("failed", "META_ACCESS_TOKEN is not configured")
    if not re.fullmatch(r"[0-9A-Za-z_-]{1,128}", media_id):
        raise MediaError("failed", "the Cloud API media id is not an id")
    auth = {"Authorization": f"Bearer {credentials.access_token}"}
    graph = get(
        f"{config.meta_graph_url}/{credentials.graph_version}/{media_id}",
        Policy(config.meta_hosts, config.allow_loopback, headers=auth),
    )
    try:
        answer = json.loads(graph.read_all(64 * 1024))
    except ValueError:
        raise MediaError("failed", "the Graph API's answer is not JSON") from None
    finally:
        graph.close()
    url = answer.get("url") if isinstance(answer, dict) else None
    if not isinstance(url, str):
        raise MediaError("failed", "the Graph API gave no media url")
    mime = answer.get("mime_type") if isinstance(answer.get("mime_type"), str) else None
    return Plan(url=url, policy=Policy(config.meta_hosts, config.allow_loopback, headers=auth), mime_type=mime)
