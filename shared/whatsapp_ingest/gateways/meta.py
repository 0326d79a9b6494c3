"""The WhatsApp Cloud API (Meta) webhooks: `{object, entry: [{id, changes: [{field, value}]}]}`.

Authentication: `X-Hub-Signature-256` = `sha256=` + hex HMAC-SHA256 of the raw
body keyed with the Meta app secret (META_APP_SECRET). The GET that subscribes
the webhook is answered with `hub.challenge` when `hub.verify_token` is
META_VERIFY_TOKEN. A body may hold several phone numbers' changes: one batch
per phone_number_id (the session's gateway_instance), each applied in one call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from whatsapp_ingest.api import envelope
from whatsapp_ingest.config import GatewaySecrets
from whatsapp_ingest.events import (
    AckEvent,
    DeleteEvent,
    EditEvent,
    GatewayBatch,
    GatewayError,
    MessageEvent,
    ReactionEvent,
    wa_id_or_none,
    without_blobs,
)
from whatsapp_ingest.gateways import check_hmac, matches_any, require

NAME = "meta"
MEDIA = ("image", "video", "audio", "document", "sticker")
STATUSES = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed", "played": "played"}
#: The webhook fields mapped: the customers' messages and statuses, and (coexistence) the
#: messages the business types in the WhatsApp Business app. Others (history,
#: smb_app_state_sync, account fields) are answered "ignored": docs/gateway-traffic.md says why.
FIELDS = ("messages", "smb_message_echoes")


def authenticate(headers: Mapping[str, str], raw: bytes, secrets: GatewaySecrets) -> None:
    app_secrets = require(secrets.meta_app_secrets, "app secret (META_APP_SECRET)")
    check_hmac(app_secrets, raw, headers.get("x-hub-signature-256"), hashlib.sha256, prefix="sha256=")


def verify(query: Mapping[str, str], secrets: GatewaySecrets) -> dict[str, Any]:
    """Meta's subscription check: echo hub.challenge when the verify token matches, else 403."""
    from whatsapp_ingest.api import _proxy

    given = str(query.get("hub.verify_token") or "")
    if query.get("hub.mode") == "subscribe" and matches_any(given, secrets.meta_verify_tokens):
        challenge = str(query.get("hub.challenge") or "")[:256]
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "text/plain"},
            "body": challenge,
            "isBase64Encoded": False,
        }
    return _proxy(envelope(403, "verification refused: wrong hub.mode or hub.verify_token"))


def translate(body: dict[str, Any], _secrets: GatewaySecrets, erase_deleted: bool = False) -> list[GatewayBatch]:
    entries = body.get("entry")
    if body.get("object") != "whatsapp_business_account" or not isinstance(entries, list):
        raise ValueError("object/entry: not a WhatsApp Business Account webhook")
    batches: dict[str, GatewayBatch] = {}
    ignored: list[str] = []
    for entry in entries:
        for change in (entry or {}).get("changes") or []:
            value = change.get("value") if isinstance(change, dict) else None
            field = str((change or {}).get("field") or "")
            instance = ((value or {}).get("metadata") or {}).get("phone_number_id")
            if field not in FIELDS or not isinstance(value, dict) or not instance:
                ignored.append(field or "unnamed")
                continue
            batch = batches.setdefault(str(instance), GatewayBatch(gateway="meta", instance=str(instance)))
            _change(batch, value, erase_deleted)
            _errors(batch, value)
    if not batches:
        return [GatewayBatch(gateway="meta", instance="-", ignored=ignored)]
    first = next(iter(batches.values()))
    first.ignored = ignored + first.ignored
    return list(batches.values())


def _change(batch: GatewayBatch, value: dict[str, Any], erase_deleted: bool) -> None:
    own = wa_id_or_none((value.get("metadata") or {}).get("display_phone_number"))
    names = {
        c.get("wa_id"): (c.get("profile") or {}).get("name") for c in value.get("contacts") or [] if isinstance(c, dict)
    }
    for message in value.get("messages") or []:
        _message(batch, message, own, names, erase_deleted)
    for echo in value.get("message_echoes") or []:  # typed in the WhatsApp Business app (coexistence)
        _message(batch, echo, own, {}, erase_deleted, echo=True)
    for status in value.get("statuses") or []:
        name = str(status.get("status"))
        if name == "deleted":
            batch.events.append(
                DeleteEvent(message_id=status.get("id"), event_at=status.get("timestamp"), erase=erase_deleted)
            )
        elif name in STATUSES:
            error = (status.get("errors") or [{}])[0]
            batch.events.append(
                AckEvent(
                    message_id=status.get("id"),
                    status=STATUSES[name],
                    event_at=status.get("timestamp"),
                    error_code=error.get("code"),
                    error_title=error.get("title"),
                )
            )
        else:
            batch.ignored.append(f"status:{name}")


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _errors(batch: GatewayBatch, value: dict[str, Any]) -> None:
    """Value-level errors (a problem with the app or account, no message to attach it to)."""
    for error in value.get("errors") or []:
        if isinstance(error, dict):
            details = _obj(error.get("error_data"))
            batch.errors.append(
                GatewayError(
                    code=str(error.get("code"))[:64],
                    title=str(error.get("title") or error.get("message") or "")[:256],
                    details=str(details.get("details") or "")[:256] or None,
                )
            )


def _message(
    batch: GatewayBatch,
    message: dict[str, Any],
    own: str | None,
    names: dict[Any, Any],
    erase_deleted: bool,
    echo: bool = False,
) -> None:
    kind = str(message.get("type") or "unsupported")
    sender = message.get("from")
    at = message.get("timestamp")
    if kind in ("edit", "revoke"):
        change = _obj(message.get(kind))
        target = change.get("original_message_id")
        if kind == "revoke":  # a deletion names its message, nothing more
            batch.events.append(DeleteEvent(message_id=target, event_at=at, erase=erase_deleted))
            return
        edited = _obj(change.get("message"))
        new_kind = str(edited.get("type") or "")
        new = _obj(edited.get(new_kind))
        text = new.get("body") if new_kind == "text" else new.get("caption")
        if not isinstance(text, str):
            batch.ignored.append(f"edit:{new_kind or 'unnamed'}")
            return
        batch.events.append(EditEvent(message_id=target, body=text, event_at=at))
        return
    if kind == "reaction":
        reaction = message.get("reaction") or {}
        batch.events.append(
            ReactionEvent(
                message_id=reaction.get("message_id"),
                **{"from": sender},
                emoji=reaction.get("emoji") or None,
                event_at=at,
            )
        )
        return
    if kind == "system":
        batch.ignored.append(f"system:{(message.get('system') or {}).get('type')}")
        return
    context: dict[str, Any] = {}
    if isinstance(message.get("context"), dict):
        quoted = message["context"]
        context["context"] = {"quoted_message_id": quoted.get("id"), "quoted_from": quoted.get("from")}
        if quoted.get("forwarded") or quoted.get("frequently_forwarded"):
            context["forwarded"] = True
    if isinstance(message.get("referral"), dict):
        context["referral"] = message["referral"]
    body: str | None = None
    if kind == "text":
        body = (message.get("text") or {}).get("body")
        content: dict[str, Any] = {"type": "text", "text": body}
    elif kind in MEDIA and isinstance(message.get(kind), dict):
        media = dict(message[kind])
        if kind == "audio":
            media["voice"] = bool(media.get("voice"))
        body = media.get("caption")
        content = {"type": kind, kind: media}
    elif kind == "location" and isinstance(message.get("location"), dict):
        content = {"type": "location", "location": message["location"]}
    elif kind == "contacts" and message.get("contacts"):
        card = message["contacts"][0]
        phones = card.get("phones") or [{}]
        kind = "contact"
        content = {
            "type": "contact",
            "contact": {
                "name": (card.get("name") or {}).get("formatted_name"),
                "phone": phones[0].get("phone"),
                "contacts": message["contacts"],
            },
        }
    elif kind == "interactive" and isinstance(message.get("interactive"), dict):
        interactive = message["interactive"]
        reply = interactive.get(interactive.get("type")) or {}
        body = reply.get("title") or reply.get("body")  # a Flow's reply (nfm_reply) has its body text
        content = {"type": "interactive", "interactive": interactive}
    elif kind == "button" and isinstance(message.get("button"), dict):
        kind, body = "interactive", message["button"].get("text")
        content = {"type": "interactive", "interactive": {"type": "button", "button": message["button"]}}
    else:
        kind = "unsupported"
        content = {"type": "unsupported", "unsupported": without_blobs(message), "gateway_types": [message.get("type")]}
    batch.events.append(
        MessageEvent(
            message_id=message.get("id"),
            **{"from": own if echo and own else sender},
            to=message.get("to") if echo else own,
            message_type=kind,
            body=body,
            content=content | context,
            sent_at=at,
            from_me=echo,
            push_name=None if echo else names.get(sender),
        )
    )
