"""WAHA webhooks: `{event, session, me, payload, engine, environment}`.

Authentication: WAHA's HMAC webhook header, `X-Webhook-Hmac` = hex HMAC-SHA512
of the raw body keyed with the webhook's hmac key (WAHA_HMAC_KEY), with
`X-Webhook-Hmac-Algorithm: sha512`.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections.abc import Mapping
from typing import Any

from whatsapp_ingest.auth import Unauthorized
from whatsapp_ingest.config import GatewaySecrets
from whatsapp_ingest.events import (
    AckEvent,
    DeleteEvent,
    EditEvent,
    GatewayBatch,
    MessageEvent,
    ReactionEvent,
    SessionEvent,
    time_or_none,
    wa_id_or_none,
    without_blobs,
)
from whatsapp_ingest.gateways import check_hmac, require

NAME = "waha"

STATUSES = {
    "WORKING": "connected",
    "SCAN_QR_CODE": "pending",
    "STARTING": "pending",
    "STOPPED": "disconnected",
    "FAILED": "disconnected",
}
#: message.ack's `ack` (WAHA's WAMessageAck).
ACKS = {-1: "failed", 0: "pending", 1: "sent", 2: "delivered", 3: "read", 4: "played"}
ACK_NAMES = {
    "ERROR": "failed",
    "PENDING": "pending",
    "SERVER": "sent",
    "DEVICE": "delivered",
    "READ": "read",
    "PLAYED": "played",
}


#: WAHA's serialized message id: `<fromMe>_<chat>_<id>`, for groups (WEBJS) `_<participant>` after.
_SERIALIZED = re.compile(r"^(true|false)_([^_]+@[^_]+)_([^_]+)(_.+)?$")


def authenticate(headers: Mapping[str, str], raw: bytes, secrets: GatewaySecrets) -> None:
    keys = require(secrets.waha_hmac_keys, "HMAC key (WAHA_HMAC_KEY)")
    algorithm = (headers.get("x-webhook-hmac-algorithm") or "sha512").strip().lower()
    if algorithm != "sha512":
        raise Unauthorized("unsupported X-Webhook-Hmac-Algorithm: expected sha512")
    check_hmac(keys, raw, headers.get("x-webhook-hmac"), hashlib.sha512)


def translate(body: dict[str, Any], _secrets: GatewaySecrets, erase_deleted: bool = False) -> GatewayBatch:
    session = body.get("session")
    if not isinstance(session, str) or not session:
        raise ValueError("session: a WAHA webhook names its session")
    batch = GatewayBatch(gateway="waha", instance=session)
    event = str(body.get("event") or "")
    payload = body.get("payload")
    me = _obj(body.get("me"))
    own = wa_id_or_none(me.get("id"))
    if not isinstance(payload, dict):
        batch.ignored.append(event or "unnamed")
        return batch

    if event == "session.status":
        status = STATUSES.get(str(payload.get("status")))
        if status is None:
            batch.ignored.append(f"session.status:{payload.get('status')}")
        else:
            changes = {"whatsapp_user_id": me["id"], "own_wa_id": own} if status == "connected" and own else {}
            batch.events.append(
                SessionEvent(status=status, changes=changes, event_at=time_or_none(body.get("timestamp")))
            )
    elif event in ("message", "message.any"):
        batch.events.append(_message(payload, own))
    elif event == "message.ack":
        ack = (
            ACKS.get(payload["ack"])
            if isinstance(payload.get("ack"), int)
            else ACK_NAMES.get(str(payload.get("ackName")))
        )
        if ack is None:
            raise ValueError("payload.ack: not a WAHA ack")
        from_me = payload.get("fromMe") is True
        target = _serialized(_id(payload.get("id")), payload, from_me)
        batch.events.append(AckEvent(message_id=target, status=ack, event_at=time_or_none(payload.get("timestamp"))))
    elif event == "message.reaction":
        reaction = payload.get("reaction") or {}
        sender = own if payload.get("fromMe") and own else payload.get("participant") or payload.get("from")
        # A reaction is usually to the other side's message; a wrong guess still finds it
        # (whatsapp_message_event tries the other direction prefix).
        target = _serialized(_id(reaction.get("messageId")), payload, payload.get("fromMe") is not True)
        batch.events.append(
            ReactionEvent(
                message_id=target,
                **{"from": sender},
                emoji=reaction.get("text") or None,
                event_at=time_or_none(payload.get("timestamp")),
            )
        )
    elif event == "message.revoked":
        before, after = _obj(payload.get("before")), _obj(payload.get("after"))
        revoked = payload.get("revokedMessageId")
        # The revocation is sent by the message's sender, in its chat: `after` names both.
        target = _serialized(_id(revoked), after, after.get("fromMe") is True) if revoked else _id(before.get("id"))
        batch.events.append(
            DeleteEvent(
                message_id=target,
                erase=erase_deleted,
                event_at=time_or_none((payload.get("after") or {}).get("timestamp")),
            )
        )
    elif event == "message.edited":
        edited = payload.get("editedMessageId")
        # Only the sender edits, in the same chat: the edit's own id and direction name the original's.
        target = _serialized(_id(edited), payload, payload.get("fromMe") is True) if edited else _id(payload.get("id"))
        batch.events.append(
            EditEvent(
                message_id=target,
                body=str(payload.get("body") or ""),
                event_at=time_or_none(payload.get("timestamp")),
            )
        )
    else:
        batch.ignored.append(event or "unnamed")
    return batch


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("payload.id: a message event names its message")
    return value


def _serialized(message_id: str, context: dict[str, Any], from_me: bool) -> str:
    """The id WAHA stores a message under (`true_<chat>_<id>`), for an id that may be bare.

    Newer WAHA names edited and revoked messages by their bare id (editedMessageId,
    revokedMessageId) while messages carry the serialized one: the prefix is taken from the
    event's own serialized id when it has one, else built from its direction and chat."""
    if "_" in message_id:  # serialized already
        return message_id
    own_id = context.get("id")
    parsed = _SERIALIZED.match(own_id) if isinstance(own_id, str) else None
    if parsed and parsed.group(1) == ("true" if from_me else "false"):
        return f"{parsed.group(1)}_{parsed.group(2)}_{message_id}{parsed.group(4) or ''}"
    # The chat: `to` of a message sent by the session, else `from` (an ack may carry only `from`).
    chat = (context.get("to") if context.get("fromMe") is True else None) or context.get("from")
    if not isinstance(chat, str) or "@" not in chat:
        return message_id
    return f"{'true' if from_me else 'false'}_{chat}_{message_id}"


def _message(payload: dict[str, Any], own: str | None) -> MessageEvent:
    data = _obj(payload.get("_data"))
    from_me = payload.get("fromMe") is True
    chat = payload.get("to") if from_me else payload.get("from")
    group = isinstance(chat, str) and chat.endswith("@g.us")
    text = payload.get("body") if isinstance(payload.get("body"), str) else None
    wa_type = str(data.get("type") or "")
    media = payload.get("media") if isinstance(payload.get("media"), dict) else None
    if media is None and isinstance(payload.get("mediaUrl"), str) and payload["mediaUrl"]:
        # Before 2024 WAHA sent media flat: `mediaUrl` (and `filename` for documents), no `media`.
        url = payload["mediaUrl"]
        media = {"url": url, "filename": payload.get("filename"), "mimetype": mimetypes.guess_type(url)[0]}
    content: dict[str, Any]
    if payload.get("hasMedia") or media:
        mime = str((media or {}).get("mimetype") or "")
        kind = (
            "sticker"
            if wa_type == "sticker"
            else "image"
            if mime.startswith("image/")
            else "video"
            if mime.startswith("video/")
            else "audio"
            if mime.startswith("audio/")
            else "document"
        )
        ref: dict[str, Any] = {"id": _id(payload.get("id")), "url": (media or {}).get("url"), "mime_type": mime or None}
        if (media or {}).get("filename"):
            ref["filename"] = media["filename"] if media else None
        if text:
            ref["caption"] = text
        if kind == "audio":
            ref["voice"] = wa_type == "ptt"
        message_type, body, content = kind, text or None, {"type": kind, kind: ref}
    elif isinstance(payload.get("location"), dict):
        location = payload["location"]
        place = {"latitude": location.get("latitude"), "longitude": location.get("longitude")}
        place |= {k: location[k] for k in ("name", "address", "url", "description") if location.get(k)}
        message_type, body, content = "location", None, {"type": "location", "location": place}
    elif payload.get("vCards"):
        card = {"vcard": payload["vCards"][0], "name": data.get("vcardFormattedName")}
        message_type, body, content = "contact", None, {"type": "contact", "contact": card}
    elif text is not None and wa_type in ("", "chat"):
        message_type, body, content = "text", text, {"type": "text", "text": text}
    else:
        message_type, body = "unsupported", text
        content = {
            "type": "unsupported",
            "unsupported": without_blobs({k: v for k, v in payload.items()}),
            "gateway_types": [wa_type],
        }
    if group and payload.get("participant"):
        content["participant"] = wa_id_or_none(payload["participant"]) or payload["participant"]
    if isinstance(payload.get("replyTo"), dict) and payload["replyTo"].get("id"):
        content["context"] = {"quoted_message_id": payload["replyTo"]["id"]}
    push = data.get("notifyName") or data.get("pushName")
    return MessageEvent(
        message_id=_id(payload.get("id")),
        **{"from": own or payload.get("from") if from_me else chat},
        to=chat if from_me else (own or wa_id_or_none(payload.get("to"))),
        message_type=message_type,
        body=body,
        content=content,
        sent_at=payload.get("timestamp"),
        from_me=from_me,
        push_name=push if isinstance(push, str) and not from_me and not group else None,
    )
