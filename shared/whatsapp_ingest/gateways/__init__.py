"""One adapter module per gateway: how it authenticates, and how its webhook bodies
become internal events (whatsapp_ingest.events). Nothing here touches the database.

An adapter module provides:
- NAME: the gateway's name, as sessions store it (whatsapp_sessions.gateway);
- authenticate(headers, raw_body, secrets) -> None: raise Unauthorized unless the
  request comes from the gateway, proven with one of the connection's secrets
  (GatewaySecrets; two during a rotation), before the body is parsed;
- translate(body, secrets, erase_deleted) -> GatewayBatch (Meta: a list): raise
  ValueError (or pydantic's ValidationError) for a body that cannot be what the
  gateway sends. Which connection the batch belongs to is set by the caller.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from whatsapp_ingest.auth import Unauthorized


def require(secrets: tuple[str, ...], what: str) -> tuple[str, ...]:
    """The configured secrets, or Unauthorized: without one nothing is accepted (fail closed)."""
    if not secrets:
        raise Unauthorized(f"no {what} is configured for this connection")
    return secrets


def matches_any(given: str, secrets: tuple[str, ...]) -> bool:
    """Whether `given` is one of `secrets` (several during a rotation), in constant time:
    every one is compared, so the time taken does not tell which matched."""
    encoded = given.encode("utf-8", "surrogatepass")
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(encoded, secret.encode())
    return matched


def check_hmac(
    keys: tuple[str, ...], body: bytes, given: str | None, algorithm: Any = hashlib.sha256, prefix: str = ""
) -> None:
    """Raise Unauthorized unless `given` is prefix + hex HMAC(key, body) for one of `keys`."""
    if not given:
        raise Unauthorized("missing signature header")
    expected = tuple(prefix + hmac.new(key.encode(), body, algorithm).hexdigest() for key in keys)
    if not matches_any(given.strip().lower(), expected):
        raise Unauthorized("invalid signature")
