"""The one internal model of what happened in a session, whichever gateway said it.

Each gateway adapter (whatsapp_ingest.gateways.<name>) only translates a webhook
body into a GatewayBatch: a list of these events. The store applies a batch in
one call of one SQL function (whatsapp_apply_gateway_events), which hands each
event to the same SQL functions the contract endpoints use. A batch is also
what is queued when the database is down (retry_queue.OPERATIONS).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from whatsapp_ingest.models import (
    QR_MAX_CHARS,
    MessageType,
    SessionStatus,
    Timestamp,
    WaId,
    canonical_wa_id,
    parse_timestamp,
    qr_url_checked,
)

Gateway = Literal["evolution", "waha", "meta"]
#: The contract's eight types and what gateways add (docs/gateway-operators.md).
GatewayMessageType = Literal[MessageType, "interactive", "template", "unsupported"]
DeliveryStatus = Literal["pending", "sent", "delivered", "read", "played", "failed"]
#: A gateway's message id, in the characters WhatsApp and the gateways use: Baileys'
#: and Evolution's hex ids, Meta's `wamid.` + base64, WAHA's `true_<chat>_<id>[_<participant>]`
#: (JIDs: digits, `@`, `.`, `-`, `:`). No markup, space, quote or control character
#: (bidirectional ones included): the CRM shows and links these ids.
GatewayMessageId = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9._:@+/=\-]+$")]
#: WhatsApp's longest text message; an edit's text is capped to it.
MAX_TEXT_CHARS = 65_536


class _Event(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    def __repr_args__(self) -> Any:  # personal data stays out of logs and tracebacks
        return [("kind", getattr(self, "kind", None))]


class MessageEvent(_Event):
    """A message seen by the session, inbound or sent from the phone (whatsapp_ingest_message)."""

    kind: Literal["message"] = "message"
    message_id: GatewayMessageId
    from_: WaId | None = Field(default=None, alias="from")
    to: WaId | None = None
    message_type: GatewayMessageType
    body: str | None = None
    content: dict[str, Any]
    sent_at: Timestamp
    from_me: bool | None = None
    push_name: str | None = Field(default=None, max_length=256)

    @model_validator(mode="after")
    def _has_its_peer(self) -> MessageEvent:
        peer = self.to if self.from_me else self.from_
        if peer is None:
            raise ValueError("a message needs its other party: 'to' when sent from the phone, else 'from'")
        return self


class HistoryEvent(_Event):
    """A page of history sync (Evolution messages.set): stored set-based, in one
    whatsapp_ingest_batch call, with the single path's guarantees."""

    kind: Literal["history"] = "history"
    messages: list[MessageEvent]

    def items(self) -> list[dict[str, Any]]:
        """The messages as whatsapp_ingest_batch takes them (whatsapp_batch_items)."""
        return [
            {
                "i": index,
                "message_id": m.message_id,
                "from": m.from_,
                "to": m.to,
                "type": m.message_type,
                "body": m.body,
                "content": m.content,
                "sent_at": m.sent_at.isoformat(),
                "from_me": m.from_me,
                "push_name": m.push_name,
            }
            for index, m in enumerate(self.messages)
        ]


class SessionEvent(_Event):
    """The session's state changed (whatsapp_update_session_status)."""

    kind: Literal["session"] = "session"
    status: SessionStatus
    changes: dict[str, Any] = Field(default_factory=dict)
    event_at: Timestamp | None = None


class QrEvent(_Event):
    """A new QR code to scan (whatsapp_store_qr)."""

    kind: Literal["qr"] = "qr"
    qr_code: str = Field(min_length=1, max_length=QR_MAX_CHARS)
    #: As the contract's qr_url: https, or a base64 raster data URL.
    qr_url: Annotated[str | None, AfterValidator(qr_url_checked)] = Field(default=None, max_length=QR_MAX_CHARS)
    generated_at: Timestamp


class _MessageChange(_Event):
    message_id: GatewayMessageId
    event_at: Timestamp | None = None


class AckEvent(_MessageChange):
    """A message's delivery status (only ever moves forward; whatsapp_message_event)."""

    kind: Literal["status"] = "status"
    status: DeliveryStatus
    error_code: int | Annotated[str, StringConstraints(max_length=64)] | None = None
    error_title: str | None = Field(default=None, max_length=1024)

    def data(self) -> dict[str, Any]:
        error = {"code": self.error_code, "title": self.error_title} if self.status == "failed" else None
        return {"status": self.status, "error": error}


class ReactionEvent(_MessageChange):
    """A reaction set on a message, or removed (emoji None or empty)."""

    kind: Literal["reaction"] = "reaction"
    from_: WaId = Field(alias="from")
    emoji: str | None = Field(default=None, max_length=64)

    def data(self) -> dict[str, Any]:
        return {"from": self.from_, "emoji": self.emoji or None}


class EditEvent(_MessageChange):
    """A message's new text; the old one goes to its edit history."""

    kind: Literal["edit"] = "edit"
    body: str = Field(max_length=MAX_TEXT_CHARS)

    def data(self) -> dict[str, Any]:
        return {"body": self.body}


class DeleteEvent(_MessageChange):
    """A message deleted (revoked) for everyone; its content is kept unless `erase`."""

    kind: Literal["delete"] = "delete"
    erase: bool = False

    def data(self) -> dict[str, Any]:
        return {"erase": self.erase}


MessageChangeEvent = AckEvent | ReactionEvent | EditEvent | DeleteEvent


class MessageChange(BaseModel):
    """The contract's messages/event body: a status, reaction, edit or deletion of a
    message of the session, as an orchestrator of our own contract sends it (the
    same events the gateway adapters produce; an addition to the contract)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    session_id: UUID
    kind: Literal["status", "reaction", "edit", "delete"]
    message_id: str = Field(min_length=1, max_length=512)
    #: When it happened, on the orchestrator's clock; statuses only move forward anyway.
    timestamp: Timestamp | None = None
    status: DeliveryStatus | None = None
    error_code: int | Annotated[str, StringConstraints(max_length=64)] | None = None
    error_title: str | None = Field(default=None, max_length=1024)
    #: reaction: who reacted, and the emoji (null or "" removes the reaction)
    from_: WaId | None = Field(default=None, alias="from")
    emoji: str | None = Field(default=None, max_length=64)
    #: edit: the new text (the old one goes to the message's edit history)
    text: str | None = Field(default=None, max_length=MAX_TEXT_CHARS)

    def __repr_args__(self) -> Any:
        return [("session_id", self.session_id), ("kind", self.kind)]

    @model_validator(mode="after")
    def _has_what_its_kind_needs(self) -> MessageChange:
        needs = {"status": "status", "reaction": "from_", "edit": "text"}.get(self.kind)
        if needs and getattr(self, needs) is None:
            field = "from" if needs == "from_" else needs
            raise ValueError(f"a {self.kind} event needs '{field}'")
        return self

    def event(self, erase_deleted: bool) -> MessageChangeEvent:
        """The internal event it is. Built from fields this model validated (model_construct):
        its message_id is the contract's (any characters, as messages/received stores them),
        not restricted to a gateway's characters."""
        at = self.timestamp
        if self.kind == "status":
            assert self.status is not None
            return AckEvent.model_construct(
                message_id=self.message_id,
                event_at=at,
                status=self.status,
                error_code=self.error_code,
                error_title=self.error_title,
            )
        if self.kind == "reaction":
            assert self.from_ is not None
            return ReactionEvent.model_construct(
                message_id=self.message_id, event_at=at, from_=self.from_, emoji=self.emoji
            )
        if self.kind == "edit":
            assert self.text is not None
            return EditEvent.model_construct(message_id=self.message_id, event_at=at, body=self.text)
        return DeleteEvent.model_construct(message_id=self.message_id, event_at=at, erase=erase_deleted)


Event = Annotated[
    MessageEvent | HistoryEvent | SessionEvent | QrEvent | AckEvent | ReactionEvent | EditEvent | DeleteEvent,
    Field(discriminator="kind"),
]


class GatewayError(BaseModel):
    """An error a gateway reports about the account or app, not about one message (logged, counted)."""

    code: str = Field(max_length=64)
    title: str = Field(max_length=256)
    details: str | None = Field(default=None, max_length=256)


class GatewayBatch(BaseModel):
    """What one webhook body said: the session (by the gateway's id) and its events, in order."""

    gateway: Gateway
    instance: str = Field(min_length=1, max_length=512)
    events: list[Event] = Field(default_factory=list)
    #: Names of the gateway's events that were not mapped (200 "ignored", counted).
    ignored: list[str] = Field(default_factory=list)
    #: Errors the gateway reported about the account (Meta's value-level `errors`): logged, counted.
    errors: list[GatewayError] = Field(default_factory=list)
    #: Evolution without a webhook token: the payload's apikey, hashed, must match the session's.
    apikey_sha256: str | None = None
    require_apikey: bool = False
    #: The connection whose webhook URL the body came to (its sessions only); None: the default one.
    connection_id: UUID | None = None

    def __repr_args__(self) -> Any:
        return [("gateway", self.gateway), ("events", len(self.events)), ("ignored", self.ignored)]

    def calls(self) -> list[dict[str, Any]]:
        """The events as whatsapp_apply_gateway_events takes them."""
        calls: list[dict[str, Any]] = []
        for event in self.events:
            if isinstance(event, (AckEvent, ReactionEvent, EditEvent, DeleteEvent)):
                calls.append(
                    {
                        "kind": event.kind,
                        "message_id": event.message_id,
                        "data": event.data(),
                        "event_at": event.event_at.isoformat() if event.event_at else None,
                    }
                )
            elif isinstance(event, HistoryEvent):
                calls.append({"kind": "history", "messages": event.items()})
            else:
                calls.append(event.model_dump(mode="json", by_alias=True))
        return calls


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


# ---------------------------------------------------------------------------
# Helpers the adapters share
# ---------------------------------------------------------------------------


def wa_id_or_none(value: Any) -> str | None:
    """A canonical WhatsApp id, or None when `value` is absent or not one (envelope metadata, placeholders)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return canonical_wa_id(value)
    except ValueError:
        return None


def time_or_none(value: Any) -> datetime | None:
    """A gateway's time, or None when absent or unreadable (then arrival orders)."""
    if value is None or value == "":
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def without_blobs(value: Any) -> Any:
    """A gateway's message object without inline media bytes or thumbnails: media are stored as references."""
    if isinstance(value, dict):
        return {
            k: without_blobs(v)
            for k, v in value.items()
            if k not in {"base64", "jpegThumbnail", "thumbnail", "pngThumbnail", "mediaKey", "messageSecret"}
        }
    if isinstance(value, list):
        return [without_blobs(v) for v in value]
    return value
