"""One adapter module per gateway: how it authenticates, and how its webhook bodies
become internal events (whatsapp_ingest.events). Nothing here touches the database.

An adapter module provides:
- NAME: the gateway's name, as sessions store it (whatsapp_sessions.gateway);
- authenticate(headers, raw_body, secrets) -> None: raise Unauthorized unless the
  request comes from the gateway (before the body is parsed);
- translate(body, erase_deleted) -> GatewayBatch: raise ValueError (or pydantic's
  ValidationError) for a body that cannot be what the gateway sends.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from whatsapp_ingest.auth import Unauthorized


def require(secret: str | None, what: str) -> str:
    """The configured secret, or Unauthorized: without a secret nothing is accepted (fail closed)."""
    if not secret:
        raise Unauthorized(f"no {what} is configured for this gateway")
    return secret


def check_hmac(key: str, body: bytes, given: str | None, algorithm: Any = hashlib.sha256, prefix: str = "") -> None:
    """Raise Unauthorized unless `given` is prefix + hex HMAC(key, body), compared in constant time."""
    if not given:
        raise Unauthorized("missing signature header")
    expected = prefix + hmac.new(key.encode(), body, algorithm).hexdigest()
    if not hmac.compare_digest(given.strip().lower().encode("utf-8", "surrogatepass"), expected.encode()):
        raise Unauthorized("invalid signature")
