"""Evolution API v2 webhooks (Baileys underneath): `{event, instance, data, sender, date_time, apikey}`.

Authentication: the webhook's custom headers (`Authorization: Bearer <token>`,
configured with the instance's webhook) when EVOLUTION_WEBHOOK_TOKEN is set;
otherwise the instance apikey Evolution puts in each payload, whose sha256 must
match the session's `gateway_apikey_sha256` (checked by the database, in the same
call that applies the events).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from whatsapp_ingest.auth import Unauthorized
from whatsapp_ingest.config import GatewaySecrets
from whatsapp_ingest.events import (
    AckEvent,
    DeleteEvent,
    EditEvent,
    GatewayBatch,
    HistoryEvent,
    MessageEvent,
    QrEvent,
    ReactionEvent,
    SessionEvent,
    sha256_hex,
    time_or_none,
    wa_id_or_none,
    without_blobs,
)
from whatsapp_ingest.gateways import matches_any

NAME = "evolution"

#: Baileys' message status (WAMessageStatus names as Evolution sends them).
ACKS = {"SERVER_ACK": "sent", "DELIVERY_ACK": "delivered", "READ": "read", "PLAYED": "played", "ERROR": "failed"}
#: Wrappers whose inner `message` is the real one.
WRAPPERS = (
    "ephemeralMessage",
    "viewOnceMessage",
    "viewOnceMessageV2",
    "viewOnceMessageV2Extension",
    "documentWithCaptionMessage",
    "editedMessage",
)
MEDIA = {
    "imageMessage": "image",
    "videoMessage": "video",
    "audioMessage": "audio",
    "documentMessage": "document",
    "stickerMessage": "sticker",
}
#: Events that carry nothing a CRM stores (answered 200 "ignored").
IGNORED = frozenset(
    {
        "application.startup",
        "contacts.set",
        "contacts.upsert",
        "contacts.update",
        "presence.update",
        "chats.set",
        "chats.upsert",
        "chats.update",
        "chats.delete",
        "groups.upsert",
        "group.update",
        "groups.update",
        "group.participants.update",
        "labels.edit",
        "labels.association",
        "call",
        "typebot.start",
        "typebot.change.status",
        "remove.instance",
        "logout.instance",
        "instance.create",
        "instance.delete",
    }
)


def authenticate(headers: Mapping[str, str], _raw: bytes, secrets: GatewaySecrets) -> None:
    tokens = secrets.evolution_webhook_tokens
    if not tokens:
        return  # the payload's apikey is checked against the session's, in the database
    scheme, _, given = (headers.get("authorization") or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized("missing bearer token (set it in the Evolution webhook's headers)")
    if not matches_any(given.strip(), tokens):
        raise Unauthorized("invalid token")


def translate(body: dict[str, Any], secrets: GatewaySecrets, erase_deleted: bool = False) -> GatewayBatch:
    instance = body.get("instance")
    if not isinstance(instance, str) or not instance:
        raise ValueError("instance: an Evolution webhook names its instance")
    event = str(body.get("event") or "").lower().replace("_", ".")
    batch = GatewayBatch(gateway="evolution", instance=instance)
    if not secrets.evolution_webhook_token:
        apikey = body.get("apikey")
        if not isinstance(apikey, str) or not apikey:
            raise Unauthorized("no apikey in the payload and no webhook token configured")
        batch.apikey_sha256, batch.require_apikey = sha256_hex(apikey), True

    data = body.get("data")
    own = wa_id_or_none(body.get("sender"))
    at = time_or_none(body.get("date_time"))
    if event in ("messages.upsert", "send.message", "messages.set"):
        items = (
            data
            if isinstance(data, list)
            else (data or {}).get("messages", [data])
            if event == "messages.set"
            else [data]
        )
        start = len(batch.events)
        for item in items:
            _message(batch, item, own, erase_deleted)
        if event == "messages.set":  # history sync: its messages go in one set-based call
            page = batch.events[start:]
            history = [e for e in page if isinstance(e, MessageEvent)]
            others = [e for e in page if not isinstance(e, MessageEvent)]
            head: list[Any] = [HistoryEvent(messages=history)] if history else []
            batch.events[start:] = head + others
    elif event in ("messages.update", "send.message.update"):
        for item in data if isinstance(data, list) else [data]:
            _update(batch, item, at, erase_deleted)
    elif event == "messages.delete":
        for item in data if isinstance(data, list) else [data]:
            key = item.get("key", item) if isinstance(item, dict) else {}
            batch.events.append(DeleteEvent(message_id=_id(key.get("id")), event_at=at, erase=erase_deleted))
    elif event == "messages.edited":
        for item in data if isinstance(data, list) else [data]:
            _message(batch, item, own, erase_deleted, edited=True)
    elif event == "connection.update":
        _connection(batch, data or {}, at)
    elif event == "qrcode.updated":
        _qr(batch, data or {}, at)
    elif event == "status.instance":
        if isinstance(data, dict) and data.get("status") == "closed":
            batch.events.append(SessionEvent(status="disconnected", event_at=at))
        else:
            batch.ignored.append(event)
    else:
        batch.ignored.append(event or "unnamed")
    return batch


def _id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("key.id: a message needs its id")
    return value


def _connection(batch: GatewayBatch, data: dict[str, Any], at: datetime | None) -> None:
    state = data.get("state")
    changes: dict[str, Any] = {}
    if state == "open":
        status = "connected"
        own = wa_id_or_none(data.get("wuid"))
        if own is not None:
            changes = {"whatsapp_user_id": data["wuid"], "own_wa_id": own}
    elif state == "connecting":
        status = "pending"
    elif state == "close" and data.get("statusReason") in (401, 403):
        status = "expired"  # logged out from the phone: the session must be linked again
    elif state in ("close", "refused"):
        status = "disconnected"
    else:
        batch.ignored.append(f"connection.update:{state}")
        return
    batch.events.append(SessionEvent(status=status, changes=changes, event_at=at))


def _qr(batch: GatewayBatch, data: dict[str, Any], at: datetime | None) -> None:
    qr = data.get("qrcode")
    if isinstance(qr, dict) and (qr.get("base64") or qr.get("code")):
        code = qr.get("base64") or qr.get("code")
        batch.events.append(QrEvent(qr_code=code, generated_at=at or datetime.now().astimezone()))
    elif data.get("statusCode") is not None:  # "QR code limit reached": Evolution gives up on the pairing
        batch.events.append(SessionEvent(status="disconnected", event_at=at))
    else:
        raise ValueError("data.qrcode: a qrcode.updated event carries the QR")


def _update(batch: GatewayBatch, data: Any, at: datetime | None, erase_deleted: bool) -> None:
    if not isinstance(data, dict):
        raise ValueError("data: expected an object")
    message_id = _id(data.get("keyId") or (data.get("key") or {}).get("id"))
    status = str(data.get("status") or (data.get("update") or {}).get("status") or "")
    edited = ((data.get("update") or {}).get("message") or {}).get("editedMessage")
    if status == "DELETED":
        batch.events.append(DeleteEvent(message_id=message_id, event_at=at, erase=erase_deleted))
    elif status in ACKS:
        batch.events.append(AckEvent(message_id=message_id, status=ACKS[status], event_at=at))
    elif isinstance(edited, dict):
        text = _text_of(_unwrap(edited))
        if text is not None:
            batch.events.append(EditEvent(message_id=message_id, body=text, event_at=at))
    else:
        batch.ignored.append(f"messages.update:{status or 'other'}")


def _unwrap(message: dict[str, Any]) -> dict[str, Any]:
    for _ in range(4):  # wrappers nest (an ephemeral view-once message)
        inner = next(
            (
                message[w]["message"]
                for w in WRAPPERS
                if isinstance(message.get(w), dict) and isinstance(message[w].get("message"), dict)
            ),
            None,
        )
        if inner is None:
            break
        message = inner
    return message


def _text_of(message: dict[str, Any]) -> str | None:
    if isinstance(message.get("conversation"), str):
        return str(message["conversation"])
    extended = message.get("extendedTextMessage")
    if isinstance(extended, dict) and isinstance(extended.get("text"), str):
        return str(extended["text"])
    return None


def _message(batch: GatewayBatch, data: Any, own: str | None, erase_deleted: bool, edited: bool = False) -> None:
    if not isinstance(data, dict) or not isinstance(data.get("key"), dict):
        raise ValueError("data.key: a message carries its key")
    key = data["key"]
    message_id = _id(key.get("id"))
    raw = data.get("message")
    if not isinstance(raw, dict):
        raise ValueError("data.message: expected an object")
    message = _unwrap(raw)
    at = time_or_none(data.get("messageTimestamp"))

    protocol = message.get("protocolMessage")
    if isinstance(protocol, dict):
        target = (protocol.get("key") or {}).get("id")
        kind = protocol.get("type")
        if kind in (0, "REVOKE") and target:
            batch.events.append(DeleteEvent(message_id=target, event_at=at, erase=erase_deleted))
        elif kind in (14, "MESSAGE_EDIT") and target and isinstance(protocol.get("editedMessage"), dict):
            text = _text_of(_unwrap(protocol["editedMessage"]))
            if text is not None:
                batch.events.append(EditEvent(message_id=target, body=text, event_at=at))
        else:
            batch.ignored.append(f"protocolMessage:{kind}")
        return
    reaction = message.get("reactionMessage")
    if isinstance(reaction, dict):
        sender = (
            key.get("participant") if key.get("fromMe") is False and key.get("participant") else key.get("remoteJid")
        )
        batch.events.append(
            ReactionEvent(
                message_id=_id((reaction.get("key") or {}).get("id")),
                **{"from": own if key.get("fromMe") and own else sender},
                emoji=reaction.get("text") or None,
                event_at=time_or_none(reaction.get("senderTimestampMs")) or at,
            )
        )
        return
    if edited:
        text = _text_of(message)
        if text is not None:
            batch.events.append(EditEvent(message_id=message_id, body=text, event_at=at))
        return
    if at is None:
        raise ValueError("data.messageTimestamp: a message carries its time")

    # The chat: a person (phone or @lid, with its phone number when Evolution adds one) or a group.
    chat = _phone_alt(key, "remoteJid") or key.get("remoteJid")
    group = isinstance(chat, str) and chat.endswith("@g.us")
    participant = _phone_alt(key, "participant") or key.get("participant") if group else None
    message_type, body, content = _content(message, message_id)
    if participant:
        content["participant"] = wa_id_or_none(participant) or participant
    from_me = key.get("fromMe") is True
    push_name = data.get("pushName") if isinstance(data.get("pushName"), str) and not group else None
    batch.events.append(
        MessageEvent(
            message_id=message_id,
            **{"from": own if from_me else chat},
            to=chat if from_me else own,
            message_type=message_type,
            body=body,
            content=content,
            sent_at=at,
            from_me=from_me,
            push_name=push_name,
        )
    )
    ack = ACKS.get(str(data.get("status") or ""))
    if from_me and ack:
        batch.events.append(AckEvent(message_id=message_id, status=ack, event_at=at))


def _phone_alt(key: dict[str, Any], field: str) -> str | None:
    """For an @lid party, the phone JID Evolution/Baileys add beside it (remoteJidAlt, senderPn, participantPn)."""
    value = key.get(field)
    if not isinstance(value, str) or not value.endswith("@lid"):
        return None
    for alt in (f"{field}Alt", "senderPn" if field == "remoteJid" else "participantPn"):
        candidate = key.get(alt)
        if isinstance(candidate, str) and candidate.endswith(("@s.whatsapp.net", "@c.us")):
            return candidate
    return None


#: Baileys' media fields, as the contract names them.
MEDIA_FIELDS = (
    ("media_key", "mediaKey"),
    ("file_sha256", "fileSha256"),
    ("file_enc_sha256", "fileEncSha256"),
    ("direct_path", "directPath"),
    ("file_length", "fileLength"),
)


def _content(message: dict[str, Any], message_id: str) -> tuple[str, str | None, dict[str, Any]]:
    """(message_type, body, content in the contract's shape) of a Baileys message."""
    text = _text_of(message)
    context = _context(message)
    if text is not None:
        return "text", text, {"type": "text", "text": text, **context}
    for field, kind in MEDIA.items():
        media = message.get(field)
        if isinstance(media, dict):
            ref: dict[str, Any] = {"id": media.get("fileSha256") or message_id, "url": media.get("url")}
            for ours, theirs in (("mime_type", "mimetype"), ("caption", "caption"), ("filename", "fileName")):
                if media.get(theirs) is not None:
                    ref[ours] = media[theirs]
            # What the media function needs (docs/media.md): Baileys' key and hashes of the file on
            # WhatsApp's CDN, or the file itself when Evolution's webhook base64 option is on.
            for ours, theirs in MEDIA_FIELDS:
                if media.get(theirs) is not None:
                    ref[ours] = media[theirs]
            if isinstance(message.get("base64"), str) and message["base64"]:
                ref["data"] = message["base64"]
            if kind == "audio":
                ref["voice"] = bool(media.get("ptt"))
            for extra in ("seconds", "isAnimated", "title"):
                if media.get(extra) is not None:
                    ref[extra] = media[extra]
            return kind, ref.get("caption"), {"type": kind, kind: ref, **context}
    location = message.get("locationMessage") or message.get("liveLocationMessage")
    if isinstance(location, dict) and location.get("degreesLatitude") is not None:
        place = {"latitude": location.get("degreesLatitude"), "longitude": location.get("degreesLongitude")}
        place |= {k: location[k] for k in ("name", "address", "url") if location.get(k)}
        return "location", None, {"type": "location", "location": place, **context}
    contact = message.get("contactMessage")
    if not isinstance(contact, dict) and isinstance(message.get("contactsArrayMessage"), dict):
        contact = (message["contactsArrayMessage"].get("contacts") or [None])[0]
    if isinstance(contact, dict):
        card = {"name": contact.get("displayName"), "vcard": contact.get("vcard")}
        phone = _vcard_phone(contact.get("vcard"))
        if phone:
            card["phone"] = phone
        return "contact", None, {"type": "contact", "contact": card, **context}
    for field, title_key, id_key in (
        ("buttonsResponseMessage", "selectedDisplayText", "selectedButtonId"),
        ("templateButtonReplyMessage", "selectedDisplayText", "selectedId"),
        ("listResponseMessage", "title", None),
    ):
        reply = message.get(field)
        if isinstance(reply, dict):
            title = reply.get(title_key)
            reply_id = reply.get(id_key) if id_key else (reply.get("singleSelectReply") or {}).get("selectedRowId")
            interactive = {"reply": {"id": reply_id, "title": title}, "source": field}
            return "interactive", title, {"type": "interactive", "interactive": interactive, **context}
    template = message.get("templateMessage")
    if isinstance(template, dict):
        shown = template.get("hydratedTemplate") or template.get("hydratedFourRowTemplate") or {}
        body = shown.get("hydratedContentText") if isinstance(shown, dict) else None
        return "template", body, {"type": "template", "template": without_blobs(template), **context}
    kinds = [k for k in message if k not in ("messageContextInfo", "senderKeyDistributionMessage")]
    return "unsupported", None, {"type": "unsupported", "unsupported": without_blobs(message), "gateway_types": kinds}


def _context(message: dict[str, Any]) -> dict[str, Any]:
    """What a CRM shows around a message: the quoted message's id, forwarded, disappearing."""
    for value in message.values():
        if isinstance(value, dict) and isinstance(value.get("contextInfo"), dict):
            info = value["contextInfo"]
            context: dict[str, Any] = {}
            if info.get("stanzaId"):
                context["context"] = {"quoted_message_id": info["stanzaId"], "quoted_from": info.get("participant")}
            if info.get("isForwarded"):
                context["forwarded"] = True
            if info.get("expiration"):
                context["ephemeral_seconds"] = info["expiration"]
            return context
    return {}


def _vcard_phone(vcard: Any) -> str | None:
    if not isinstance(vcard, str):
        return None
    for line in vcard.splitlines():
        if line.upper().startswith(("TEL", "ITEM1.TEL")) and ":" in line:
            return line.rsplit(":", 1)[1].strip() or None
    return None
