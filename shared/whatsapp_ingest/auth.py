"""Who may call: the orchestrator, proven by a bearer token and, when a signing key
is configured (always, with REQUIRE_SIGNATURE), by an HMAC of the raw body.

Checked before the body is parsed or the database touched. Tokens are compared
in constant time against every active token, so a rotation can keep the old and
the new one active at once.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from whatsapp_ingest.config import AuthSecrets

#: How far X-Timestamp may be from our clock, either way: bounds replays.
SIGNATURE_WINDOW_SECONDS = 300
CHALLENGE = 'Bearer realm="whatsapp-ingest"'
#: The one answer to every failed check: a caller cannot tell a wrong token from a
#: wrong signature, so it cannot learn that a guessed token is active.
REFUSED = "unauthorized: missing or invalid credentials"


class Unauthorized(Exception):
    """The caller did not prove it is the orchestrator. The reason is for the log
    only; the caller gets REFUSED."""


def sign(key: str, timestamp: str, body: bytes) -> str:
    """The X-Signature value: 'sha256=' + hex HMAC-SHA256 of '<timestamp>.<raw body>'."""
    digest = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def authenticate(headers: Mapping[str, str], body: bytes, secrets: AuthSecrets, now: float) -> int | None:
    """Raise Unauthorized unless the request carries an active token (and a valid signature).

    Returns the signed X-Timestamp (Unix seconds) when signing is on: a time on
    the orchestrator's clock that a replayed capture cannot change.
    """
    scheme, _, token = (headers.get("authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token")
    given = token.strip().encode("utf-8", "surrogatepass")
    # No early exit: the time taken does not tell which token, if any, matched.
    matched = False
    for active in secrets.tokens:
        matched |= hmac.compare_digest(given, active.encode())
    if not matched:
        raise Unauthorized("invalid token")
    if secrets.signing_key:
        return _verify_signature(headers, body, secrets.signing_key, now)
    return None


def _verify_signature(headers: Mapping[str, str], body: bytes, key: str, now: float) -> int:
    timestamp = (headers.get("x-timestamp") or "").strip()
    signature = (headers.get("x-signature") or "").strip()
    if not timestamp or not signature:
        raise Unauthorized("missing X-Timestamp or X-Signature")
    # Unix seconds have 10 digits until the year 2286: anything longer is not a time.
    plausible = len(timestamp) <= 12 and timestamp.isascii() and timestamp.isdecimal()
    if not plausible or abs(now - int(timestamp)) > SIGNATURE_WINDOW_SECONDS:
        raise Unauthorized(f"X-Timestamp is not Unix seconds within {SIGNATURE_WINDOW_SECONDS} s of now")
    if not hmac.compare_digest(signature.lower().encode("utf-8", "surrogatepass"), sign(key, timestamp, body).encode()):
        raise Unauthorized("invalid signature")
    return int(timestamp)
