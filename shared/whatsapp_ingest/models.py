"""Request bodies of the three endpoints, and the normalisation of what
orchestrators really send (JIDs in every form, epoch or ISO timestamps).

Validation errors name the field; the API layer turns them into a 400.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

# ---------------------------------------------------------------------------
# WhatsApp ids
# ---------------------------------------------------------------------------

# user[:device]@server. Phone JIDs carry the number; '@lid' (privacy ids),
# groups, broadcasts and channels do not, and no number is guessed from them.
# The user part is capped: real ids are a few dozen characters at most, and the
# key must fit the database's unique index.
_JID = re.compile(
    r"^(?P<user>[^@:\s]{1,64})(?::[0-9]+)?@(?P<server>s\.whatsapp\.net|c\.us|lid|g\.us|broadcast|newsletter)$"
)
_PHONE_JID_SERVERS = frozenset({"s.whatsapp.net", "c.us"})
# The other ids are kept whole and shown by the CRM, so their user part may hold
# only what WhatsApp issues: digits (@lid, channels, new groups, broadcast lists),
# '<creator's number>-<creation time>' for groups made before 2021, and 'status'
# for status@broadcast. Nothing invisible (zero-width) and no markup gets through.
_NON_PHONE_USERS: dict[str, tuple[re.Pattern[str], str]] = {
    "lid": (re.compile(r"[0-9]+"), "only digits"),
    "g.us": (re.compile(r"[0-9]+(?:-[0-9]+)?"), "digits, or digits-digits for an older group"),
    "broadcast": (re.compile(r"status|[0-9]+"), "digits, or 'status' (status@broadcast)"),
    "newsletter": (re.compile(r"[0-9]+"), "only digits"),
}
_PHONE = re.compile(r"^\+?[0-9\s().\-]+$", re.ASCII)  # ASCII digits only: an Arabic-Indic five is not a 5 to WhatsApp


def canonical_wa_id(value: str) -> str:
    """One key per WhatsApp party: a phone number's digits, or the whole non-phone JID.

    '+52 1 55 1234 5678', '5215512345678' and '5215512345678:12@s.whatsapp.net'
    are the same contact ('5215512345678'); '123456789@lid' stays as it is.
    """
    text = value.strip()
    if "@" in text:
        match = _JID.match(text.lower())
        if match is None:
            raise ValueError("not a WhatsApp id: expected a phone number or a JID such as 5215512345678@s.whatsapp.net")
        if match["server"] in _PHONE_JID_SERVERS:
            return _phone_digits(match["user"])
        allowed, described = _NON_PHONE_USERS[match["server"]]
        if not allowed.fullmatch(match["user"]):
            raise ValueError(f"not a WhatsApp id: the part before @{match['server']} may hold {described}")
        return f"{match['user']}@{match['server']}"
    return _phone_digits(text)


def _phone_digits(text: str) -> str:
    if not _PHONE.match(text):
        raise ValueError("not a phone number: only digits, spaces, '+', '-', '.' and parentheses are allowed")
    digits = re.sub(r"[^0-9]", "", text)
    if not 5 <= len(digits) <= 15:
        raise ValueError("a phone number has 5 to 15 digits")
    return digits


WaId = Annotated[str, AfterValidator(canonical_wa_id)]

# ---------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------

# Epoch values at or above this are milliseconds: 1e11 seconds is the year
# 5138, while 1e11 milliseconds is 1973.
_MILLISECONDS_FROM = 100_000_000_000
_EPOCH_TEXT = re.compile(r"^[0-9]+(\.[0-9]+)?$")


def parse_timestamp(value: Any) -> datetime:
    """ISO 8601 (UTC when no offset is given) or epoch seconds/milliseconds, number or string."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and _EPOCH_TEXT.match(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("expected an ISO 8601 time or epoch seconds/milliseconds")
    try:
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.strip())
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        if not math.isfinite(value) or value < 0:
            raise ValueError
        seconds = value / 1000 if value >= _MILLISECONDS_FROM else value
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (ValueError, OverflowError, OSError):
        raise ValueError("expected an ISO 8601 time or epoch seconds/milliseconds within years 1-9999") from None


Timestamp = Annotated[
    datetime,
    BeforeValidator(parse_timestamp, json_schema_input_type=str | int | float),
]

# ---------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------


class _Private(BaseModel):
    """Bodies carry personal data (numbers, texts, captions). Their repr shows only
    the fields named in _shown, so no debug line or traceback can leak the rest."""

    _shown: ClassVar[tuple[str, ...]] = ()

    def __repr_args__(self) -> Any:
        return [(name, getattr(self, name)) for name in self._shown]


SessionStatus = Literal["connected", "disconnected", "expired", "pending"]
MessageType = Literal["text", "image", "video", "audio", "document", "location", "contact", "sticker"]
MEDIA_TYPES: frozenset[str] = frozenset({"image", "video", "audio", "document", "sticker"})


class StatusUpdate(_Private):
    """A session changed state. Absent fields are left as stored."""

    _shown = ("session_id", "status")

    session_id: UUID
    status: SessionStatus
    #: When the orchestrator saw the change, on its own clock (an addition to the
    #: contract): orders this update against the session's other orchestrator
    #: times. Without it (and without a signed X-Timestamp), arrival orders it.
    timestamp: Timestamp | None = None
    #: The last contact with the phone: stored, never used to order updates.
    last_seen: Timestamp | None = None
    phone_number: str | None = Field(default=None, max_length=64)
    whatsapp_user_id: str | None = Field(default=None, max_length=256)
    auth_folder_path: str | None = Field(default=None, max_length=4096)
    # Strict: true or "3101" are not ports, and what is stored must be what was sent.
    server_port: Annotated[int, Strict()] | None = Field(default=None, ge=0, le=65535)

    @field_validator("phone_number", "whatsapp_user_id")
    @classmethod
    def _is_whatsapp_id(cls, value: str | None) -> str | None:
        # Validated like `from`, but stored as sent: the CRM shows it.
        if value is not None:
            canonical_wa_id(value)
        return value

    def changes(self) -> dict[str, Any]:
        """The optional fields to write: those sent, plus the session's own canonical id.

        Only server_port may be cleared with an explicit null (the contract types
        it number | null); a null elsewhere is taken as "not sent", so an
        orchestrator that serialises unknown values as null loses nothing.
        """
        sent = self.model_fields_set
        changes: dict[str, Any] = {
            name: getattr(self, name)
            for name in ("last_seen", "phone_number", "whatsapp_user_id", "auth_folder_path")
            if name in sent and getattr(self, name) is not None
        }
        if "last_seen" in changes:
            changes["last_seen"] = changes["last_seen"].isoformat()
        if "server_port" in sent:
            changes["server_port"] = self.server_port
        own = self.whatsapp_user_id or self.phone_number
        if own is not None:
            changes["own_wa_id"] = canonical_wa_id(own)
        return changes


class _Open(_Private):
    # Gateways add fields of their own (ptt, sha256, vcard...): kept, and stored in content.
    model_config = ConfigDict(extra="allow")


#: Base64 (standard or URL-safe alphabet, padded or not) of 32 bytes: a media key or a SHA-256, as Baileys gives them.
_BASE64_32 = r"^[A-Za-z0-9+/_-]{43}=?$"
#: Base64 of a whole file (the characters only; the media function decodes it, and fails it if it does not).
_BASE64 = r"^[A-Za-z0-9+/_\-\s]*={0,2}\s*$"


class Media(_Open):
    id: str = Field(min_length=1)
    url: str | None = None
    caption: str | None = None
    mime_type: str | None = None
    filename: str | None = None
    #: WhatsApp's media fields, as Baileys gives them (mediaKey, fileSha256, fileEncSha256, directPath,
    #: fileLength): with media_key, url (or WhatsApp's CDN + direct_path) is the encrypted file (docs/media.md).
    media_key: str | None = Field(default=None, pattern=_BASE64_32)
    file_sha256: str | None = Field(default=None, pattern=_BASE64_32)
    file_enc_sha256: str | None = Field(default=None, pattern=_BASE64_32)
    direct_path: str | None = Field(default=None, pattern=r"^/[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*$", max_length=2048)
    file_length: int | str | None = None
    #: The file itself, base64, for orchestrators that decrypt it themselves (within the body limit).
    data: str | None = Field(default=None, pattern=_BASE64)


class Location(_Open):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    name: str | None = None
    address: str | None = None


class ContactCard(_Open):
    name: str | None = None
    phone: str | None = None

    @model_validator(mode="after")
    def _has_name_or_phone(self) -> ContactCard:
        if not (self.name or self.phone):
            raise ValueError("a contact needs at least a name or a phone")
        return self


class Message(_Open):
    """One WhatsApp message: `type` says which of the other fields carries it."""

    _shown = ("type",)

    type: MessageType
    text: str | None = None
    image: Media | None = None
    video: Media | None = None
    audio: Media | None = None
    document: Media | None = None
    sticker: Media | None = None
    location: Location | None = None
    contact: ContactCard | None = None

    @model_validator(mode="after")
    def _payload_matches_type(self) -> Message:
        if getattr(self, self.type) is None:
            kind = "a string" if self.type == "text" else "an object"
            raise ValueError(f"a message of type '{self.type}' needs '{self.type}' as {kind}")
        return self

    @property
    def body(self) -> str | None:
        """The searchable text: the text itself, or the media's caption."""
        if self.type == "text":
            return self.text
        if self.type in MEDIA_TYPES:
            media: Media = getattr(self, self.type)
            return media.caption
        return None


class MessageReceived(_Private):
    """A message seen by a session, inbound or typed on the linked phone."""

    _shown = ("session_id", "message_id", "message")

    model_config = ConfigDict(populate_by_name=True)

    session_id: UUID
    from_: WaId = Field(alias="from")
    to: WaId
    message: Message
    timestamp: Timestamp
    message_id: str = Field(min_length=1, max_length=512)
    #: Sent from the linked phone (Baileys' key.fromMe; an addition to the
    #: contract). When present it decides the direction; when absent, a message
    #: whose `from` is the session's own number is outbound.
    from_me: Annotated[bool, Strict()] | None = None
    #: The sender's WhatsApp display name (Baileys' pushName; an addition to the
    #: contract): kept on the contact of an inbound message, newest wins.
    push_name: str | None = Field(default=None, max_length=256)

    # No default: pydantic inspects a default factory's signature on every
    # validation, a measurable cost on the hot path. The validator below sets it.
    _raw_message: dict[str, Any] = PrivateAttr()

    @model_validator(mode="wrap")
    @classmethod
    def _keep_message_as_sent(cls, data: Any, handler: Any) -> MessageReceived:
        # content stores the message exactly as received, not as re-serialised
        # by pydantic (which would turn 19 into 19.0 and reorder keys).
        model: MessageReceived = handler(data)
        if isinstance(data, dict) and isinstance(data.get("message"), dict):
            model._raw_message = data["message"]
        else:
            model._raw_message = model.message.model_dump(mode="json", exclude_unset=True)
        return model

    @property
    def content(self) -> dict[str, Any]:
        return self._raw_message


#: The most characters of a qr_code or qr_url. Baileys' raw QR text is about 250
#: characters; a base64 PNG data URL of it is 3-8 KB at the usual 4-8 pixels per
#: module, under 32 KB at 20. 64 KiB leaves room for any real QR, and keeps what the
#: CRM stores and renders (every 20-60 s per pending session) far below the 1 MiB body.
QR_MAX_CHARS = 65_536
# What the CRM may put in an <img src> or a link: an https URL (RFC 3986 characters
# only: no space, quote or angle bracket) or a base64 raster image. Not svg, which
# can carry script; not javascript: or any other scheme.
_QR_HTTPS_URL = re.compile(r"https://[A-Za-z0-9.\-]+(?::[0-9]{1,5})?(?:[/?#][A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*)?")
_QR_DATA_URL = re.compile(r"data:image/(?:png|jpeg|gif|webp);base64,[A-Za-z0-9+/]+={0,2}")


class QrUpdate(_Private):
    """A new QR code must be scanned to link the session."""

    _shown = ("session_id", "timestamp")

    session_id: UUID
    qr_code: str = Field(min_length=1, max_length=QR_MAX_CHARS, description="the raw QR text or a base64 image")
    qr_url: str | None = Field(
        default=None,
        max_length=QR_MAX_CHARS,
        description="an https:// URL, or a data:image/(png|jpeg|gif|webp);base64 URL",
    )
    timestamp: Timestamp

    @field_validator("qr_url")
    @classmethod
    def _is_https_or_image_data(cls, value: str | None) -> str | None:
        return qr_url_checked(value)


def qr_url_checked(value: str | None) -> str | None:
    """A QR's URL as the CRM may render it (QrUpdate and the gateways' QR events), else ValueError."""
    if value is not None and not (_QR_HTTPS_URL.fullmatch(value) or _QR_DATA_URL.fullmatch(value)):
        raise ValueError("expected an https:// URL or a data:image/(png|jpeg|gif|webp);base64 URL")
    return value


#: A batch holds at most this many messages and this many bytes. The bytes: a
#: Lambda invocation carries at most 6 MB (the API Gateway event, in which the
#: body is a JSON string, so quotes and non-ASCII text grow when escaped); API
#: Gateway itself would take 10 MB. The items: a history page of Baileys'
#: messaging-history.set, with room; 1,000 text messages are about 0.5 MB.
MAX_BATCH_ITEMS = 1000
MAX_BATCH_BYTES = 4 * 1024 * 1024


def field_problem(error: Any) -> tuple[str, str]:
    """One pydantic error as (field, problem), in the request's own terms."""
    loc = [str(part) for part in error.get("loc", ()) if part != "body"]
    problem = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return ".".join(loc) or "body", problem


class Rejection(BaseModel):
    """An item of a batch that was not stored, and why."""

    index: int
    message_id: str | None
    field: str
    problem: str


class MessagesBatch(_Private):
    """Several messages of one session (history sync): each item is a messages/received
    body without session_id, validated on its own, so one bad item rejects only itself."""

    _shown = ("session_id",)

    session_id: UUID
    messages: list[Any] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)

    def validated(self) -> tuple[list[MessageReceived], list[Rejection]]:
        """The items that are valid messages, and a Rejection for each other item."""
        valid: list[MessageReceived] = []
        rejected: list[Rejection] = []
        for index, item in enumerate(self.messages):
            if not isinstance(item, dict):
                rejected.append(Rejection(index=index, message_id=None, field="", problem="an item must be an object"))
                continue
            message_id = item.get("message_id")
            shown_id = message_id[:512] if isinstance(message_id, str) else None
            if item.get("session_id", str(self.session_id)) != str(self.session_id):
                rejected.append(
                    Rejection(index=index, message_id=shown_id, field="session_id", problem="items take the batch's")
                )
                continue
            try:
                valid.append(MessageReceived.model_validate({**item, "session_id": self.session_id}))
            except ValidationError as exc:
                field, problem = field_problem(exc.errors()[0])
                rejected.append(Rejection(index=index, message_id=shown_id, field=field, problem=problem))
        return valid, rejected


# ---------------------------------------------------------------------------
# Replies, as documented in the OpenAPI document (docs/openapi.json)
# ---------------------------------------------------------------------------


class OrderMark(BaseModel):
    """What a session remembers of the updates it applied, per clock (docs/orchestrator.md, "Ordering")."""

    event_at: datetime | None
    received_at: datetime | None
    untimed_received_at: datetime | None
    event_received_at: datetime | None


class ComparedTime(BaseModel):
    at: datetime
    clock: Literal["orchestrator", "arrival"]


class StaleBecause(BaseModel):
    update: ComparedTime
    newer: ComparedTime


class Session(BaseModel):
    """A row of whatsapp_sessions, as the SQL functions return it."""

    model_config = ConfigDict(extra="allow")

    id: UUID
    account_id: UUID
    status: SessionStatus
    phone_number: str | None
    whatsapp_user_id: str | None
    own_wa_id: str | None
    auth_folder_path: str | None
    server_port: int | None
    last_seen: datetime | None
    qr_code: str | None
    qr_url: str | None
    qr_generated_at: datetime | None
    state_order: OrderMark | None
    qr_close_order: OrderMark | None
    created_at: datetime
    updated_at: datetime
    stale: bool = Field(description="true when an update known to be newer was already applied: nothing changed")
    stale_because: StaleBecause | None = Field(default=None, description="the two times compared, when stale")


class StoredMessage(BaseModel):
    """A row of mensajes."""

    id: int
    account_id: UUID
    chat_id: int
    session_id: UUID
    contact_id: int
    whatsapp_message_id: str
    tipo: Literal["whatsapp_api"]
    direction: Literal["inbound", "outbound"]
    from_wa_id: str | None
    to_wa_id: str | None
    from_me: bool | None
    message_type: MessageType
    body: str | None
    content: dict[str, Any]
    sent_at: datetime
    created_at: datetime


class MessageResult(BaseModel):
    message: StoredMessage
    contact_id: int
    chat_id: int
    duplicate: bool = Field(description="true when this message id was already stored: nothing was written")


class BatchResult(BaseModel):
    stored: int = Field(description="messages written")
    duplicates: int = Field(description="items whose message id was already stored, or repeated in the batch")
    rejected: int = Field(description="items not valid: nothing of them was written")
    rejections: list[Rejection]


class QrSession(Session):
    duplicate: bool = Field(description="true when this QR is the one already shown: nothing was written")


class QrResult(BaseModel):
    session: QrSession
    qr_code: str
    qr_url: str | None
    timestamp: datetime


class FieldProblem(BaseModel):
    field: str
    problem: str


class Problems(BaseModel):
    errors: list[FieldProblem]


class _Reply(BaseModel):
    success: bool
    message: str


class SessionReply(_Reply):
    data: Session


class MessageReply(_Reply):
    data: MessageResult


class QrReply(_Reply):
    data: QrResult


class MessageEventResult(BaseModel):
    message_id: str
    kind: Literal["status", "reaction", "edit", "delete"]
    applied: bool = Field(description="the message changed")
    pending: bool = Field(description="the message is not stored yet: the event is kept and applied when it arrives")


class MessageEventReply(_Reply):
    data: MessageEventResult


class BatchReply(_Reply):
    data: BatchResult


class AcceptedReply(_Reply):
    """202: the database was unavailable; the request is queued and will be applied."""


class ErrorReply(_Reply):
    data: Problems | None = Field(default=None, description="for invalid fields: each field and its problem")
