"""Helpers for the gateway webhook tests: raw bodies from events/webhooks/, wrapped in
API Gateway v2 events and signed the way each gateway signs."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from conftest import EVENTS, SESSION_ID

WEBHOOKS = EVENTS / "webhooks"
EVOLUTION_TOKEN = "evolution-webhook-token-0123456789"
WAHA_KEY = "waha-hmac-key-0123456789"
META_SECRET = "meta-app-secret-0123456789"
META_VERIFY = "meta-verify-token-0123456789"
ENV = {
    "EVOLUTION_WEBHOOK_TOKEN": EVOLUTION_TOKEN,
    "WAHA_HMAC_KEY": WAHA_KEY,
    "META_APP_SECRET": META_SECRET,
    "META_VERIFY_TOKEN": META_VERIFY,
}


def payload(gateway: str, name: str) -> Any:
    return json.loads((WEBHOOKS / gateway / name).read_text())


def files(gateway: str) -> list[Path]:
    return sorted(p for p in (WEBHOOKS / gateway).glob("*.json") if p.name != "hmac_test_vector.json")


def webhook_event(
    gateway: str,
    body: Any,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    sign: bool = True,
    query: dict[str, str] | None = None,
) -> dict[str, Any]:
    raw = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    path = f"/api/whatsapp/webhooks/{gateway}"
    all_headers = {"content-type": "application/json", **(signature(gateway, raw.encode()) if sign else {})}
    all_headers.update(headers or {})
    return {
        "version": "2.0",
        "routeKey": f"ANY {path}",
        "rawPath": path,
        "rawQueryString": "&".join(f"{k}={v}" for k, v in (query or {}).items()),
        "queryStringParameters": query,
        "headers": all_headers,
        "requestContext": {
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.9"},
            "requestId": "webhook-test",
            "routeKey": f"ANY {path}",
            "stage": "$default",
            "timeEpoch": 1795840860000,
        },
        "body": raw,
        "isBase64Encoded": False,
    }


def signature(gateway: str, raw: bytes) -> dict[str, str]:
    if gateway == "evolution":
        return {"authorization": f"Bearer {EVOLUTION_TOKEN}"}
    if gateway == "waha":
        digest = hmac.new(WAHA_KEY.encode(), raw, hashlib.sha512).hexdigest()
        return {"x-webhook-hmac": digest, "x-webhook-hmac-algorithm": "sha512"}
    digest = hmac.new(META_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    return {"x-hub-signature-256": f"sha256={digest}"}


def link(db: Any, gateway: str, instance: str, session_id: str = SESSION_ID, apikey_sha256: str | None = None) -> None:
    """The CRM names the session's gateway and instance (and, for Evolution's apikey mode, the key's hash)."""
    db.execute(
        "update public.whatsapp_sessions set gateway = %s, gateway_instance = %s, gateway_apikey_sha256 = %s"
        " where id = %s",
        (gateway, instance, apikey_sha256, session_id),
    )
