"""One media job: claim the message, get its file, check it, store it, record the outcome.

Idempotent: whatsapp_media_claim hands a message to one worker at a time and
never once it has an outcome, so a redelivered job downloads and uploads
nothing; each claim writes under its own lease's key, and only the lease
holder's outcome is recorded (a late worker deletes its own upload), so a
stored object is never replaced.
"""

from __future__ import annotations

import base64
import hmac
import re
import unicodedata
from collections.abc import Iterator
from typing import Any

from whatsapp_ingest.config import MediaSettings, media_settings
from whatsapp_ingest.media.crypto import MediaIntegrityError, StreamDecryptor
from whatsapp_ingest.media.fetch import MediaError, TransientMediaError, get
from whatsapp_ingest.media.sources import Plan, plan
from whatsapp_ingest.media.storage import StreamingUpload, s3_client

#: Claims before a transiently failing file is given up as failed (and its job dead-lettered);
#: the template's maxReceiveCount is the same.
MAX_ATTEMPTS = 5
#: Seconds a claim holds a message: above the media function's timeout.
LEASE_SECONDS = 960

#: Content types stored per message type (parameters such as "; codecs=opus" are kept).
ALLOWED_TYPES: dict[str, frozenset[str]] = {
    "image": frozenset({"image/jpeg", "image/png", "image/webp", "image/gif", "image/heic"}),
    "sticker": frozenset({"image/webp", "image/png"}),
    "video": frozenset({"video/mp4", "video/3gpp", "video/quicktime", "video/webm"}),
    "audio": frozenset(
        {"audio/ogg", "audio/mpeg", "audio/mp4", "audio/aac", "audio/amr", "audio/opus", "audio/webm", "audio/wav"}
    ),
}
#: Documents: any type is accepted, but one a browser could run or render as a page is stored as
#: application/octet-stream; every document is served as an attachment.
ACTIVE_DOCUMENT_TYPES = frozenset(
    {"text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml", "text/javascript"}
)
EXTENSIONS = {
    "image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp", "image/gif": ".gif", "image/heic": ".heic",
    "video/mp4": ".mp4", "video/3gpp": ".3gp", "video/quicktime": ".mov", "video/webm": ".webm",
    "audio/ogg": ".ogg", "audio/mpeg": ".mp3", "audio/mp4": ".m4a", "audio/aac": ".aac", "audio/amr": ".amr",
    "audio/opus": ".opus", "audio/webm": ".weba", "audio/wav": ".wav", "application/pdf": ".pdf",
}  # fmt: skip


def safe_filename(name: str | None, fallback: str) -> str:
    """A file name that is safe in an object key and a Content-Disposition header: ASCII letters,
    digits, '.', '-' and '_' only, no leading dot, at most 100 characters."""
    text = unicodedata.normalize("NFKD", name or "").encode("ascii", "ignore").decode()
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]).strip("._")
    if len(text) > 100:
        stem, dot, ext = text.rpartition(".")
        text = f"{stem[: 99 - len(ext)]}.{ext}" if dot and len(ext) <= 10 else text[:100]
    return text or fallback


def content_type(kind: str, declared: str | None, served: str | None) -> str:
    """The type to store: the declared one (else the served one) if allowed for this message type."""
    full = (declared or served or "").strip().lower()
    base = full.split(";")[0].strip()
    if kind == "document":
        return "application/octet-stream" if not base or base in ACTIVE_DOCUMENT_TYPES else full
    if base not in ALLOWED_TYPES[kind]:
        raise MediaError("failed", f"content type {base or 'none'} is not allowed for {kind}")
    return full


def _inline_chunks(data: str, max_bytes: int) -> Iterator[bytes]:
    text = data.strip()
    if len(text) * 3 // 4 > max_bytes + 2:
        raise MediaError("too_large", f"over the {max_bytes} byte cap")
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    step = 4 * 256 * 1024
    try:
        for start in range(0, len(text), step):
            yield base64.b64decode(text[start : start + step], validate=True)
    except ValueError:
        raise MediaError("failed", "data is not valid base64") from None


def store_file(job: dict[str, Any], config: MediaSettings, client: Any) -> dict[str, Any]:
    """Fetch, check and upload the job's file; {path, mime_type, size, sha256}. MediaError or
    TransientMediaError when it cannot; nothing is left in Storage then."""
    kind = job["message_type"]
    source: Plan = plan(job, config)
    media = job["content"][kind]
    response = None
    if source.inline is not None:
        chunks: Iterator[bytes] = _inline_chunks(source.inline, config.max_bytes)
        served = None
    else:
        assert source.url is not None and source.policy is not None
        response = get(source.url, source.policy)
        # An encrypted file is padded and carries a MAC: up to 26 bytes over the plaintext's cap.
        cap = config.max_bytes + 32 if source.media_key else config.max_bytes
        chunks = response.chunks(cap)
        served = response.content_type
    try:  # the response, once opened, is closed whatever happens below
        mime = content_type(kind, source.mime_type, served)
        base = mime.split(";")[0].strip()
        fallback = f"{kind}{EXTENSIONS.get(base, '')}"
        filename = safe_filename(media.get("filename") if kind == "document" else None, fallback)
        key = f"{job['account_id']}/{job['id']}/{job['lease']}/{filename}"
        disposition = f'attachment; filename="{filename}"' if kind == "document" else None
        upload = StreamingUpload(client, config.bucket, key, mime, disposition)
        decryptor = StreamDecryptor(source.media_key, kind, source.file_enc_sha256) if source.media_key else None
        try:
            try:
                for chunk in chunks:
                    upload.write(decryptor.update(chunk) if decryptor else chunk)
                    if upload.size > config.max_bytes:
                        raise MediaError("too_large", f"over the {config.max_bytes} byte cap")
                if decryptor:
                    upload.write(decryptor.finalize())
            except MediaIntegrityError as exc:
                raise MediaError("failed", str(exc)) from None
            if upload.size > config.max_bytes:
                raise MediaError("too_large", f"over the {config.max_bytes} byte cap")
            if source.file_sha256 is not None and not hmac.compare_digest(upload.sha256.digest(), source.file_sha256):
                raise MediaError("failed", "file_sha256 does not match the file")
            if upload.size == 0:
                raise MediaError("failed", "the file is empty")
            upload.complete()
        except BaseException:
            upload.abort()
            raise
    finally:
        if response is not None:
            response.close()
    return {"path": key, "mime_type": mime, "size": upload.size, "sha256": upload.sha256.hexdigest()}


def run_job(store: Any, message_id: int) -> str:
    """Process one job: the outcome (stored, failed, unavailable, too_large, skipped).

    Raises TransientMediaError after giving the message back, so the queue retries it
    later; at the last attempt it is recorded failed first, and still raised, so the
    job ends in the dead-letter queue, whose alarm calls a person.
    """
    config = media_settings()
    job = store.media_claim(message_id, LEASE_SECONDS)
    if not job:
        return "skipped"
    try:
        stored = store_file(job, config, s3_client())
    except MediaError as exc:
        store.media_finish(job["id"], job["lease"], exc.status, {}, exc.reason)
        return exc.status
    except Exception as exc:
        # Transient, or Storage (S3) failing, or a fault of ours: given back and retried like a
        # network error, never left leased; only the exception's type is recorded (no detail, no secret).
        failure = exc if isinstance(exc, TransientMediaError) else TransientMediaError(type(exc).__name__)
        last = int(job.get("attempts") or 1) >= MAX_ATTEMPTS
        reason = f"gave up after {MAX_ATTEMPTS} attempts: {failure}" if last else f"will retry: {failure}"
        store.media_finish(job["id"], job["lease"], "failed" if last else "pending", {}, reason)
        if failure is exc:
            raise
        raise failure from exc
    if not store.media_finish(job["id"], job["lease"], "stored", stored, None).get("recorded"):
        # Another worker took the message over after this one's lease ran out: keep only its object.
        s3_client().delete_object(Bucket=config.bucket, Key=stored["path"])
        return "skipped"
    return "stored"
