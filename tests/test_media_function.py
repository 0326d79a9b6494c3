"""The media function end to end: a message posted through the real handler, the
dispatcher, moto's SQS and S3 (its server, as make run uses it), and a local
stand-in for WhatsApp's CDN; each stored object's SHA-256 checked."""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import pytest
from media_support import (
    Standin,
    dead_letters,
    dispatch_and_run,
    media_env,  # noqa: F401 (fixture)
    moto_endpoint,  # noqa: F401 (fixture)
    objects,
    object_sha256,
    post_media,
    row,
    standin,  # noqa: F401 (fixture)
)

from whatsapp_ingest.media.crypto import encrypt

KEY = bytes(range(32))
PHOTO = os.urandom(300_000)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def whatsapp_file(standin: Standin, path: str, plaintext: bytes, kind: str = "image") -> dict[str, Any]:
    """Serve `plaintext` encrypted as WhatsApp's CDN would; the message's media fields."""
    encrypted = encrypt(plaintext, KEY, kind)
    standin.routes[path] = (200, {"Content-Type": "application/octet-stream"}, encrypted)
    return {
        "media_key": b64(KEY),
        "file_sha256": b64(hashlib.sha256(plaintext).digest()),
        "file_enc_sha256": b64(hashlib.sha256(encrypted).digest()),
        "direct_path": path,
        "file_length": len(plaintext),
    }


def test_an_encrypted_photo_is_decrypted_and_stored_under_its_account(
    handlers: Any, db: Any, standin: Standin, media_env: dict[str, str]
) -> None:
    fields = whatsapp_file(standin, "/v/t62/photo.enc?ccb=11-4", PHOTO)
    posted = post_media(handlers, "photo-1", "image", {"mime_type": "image/jpeg", **fields})
    assert posted["message"]["media_status"] == "pending"

    dispatch_and_run()

    stored = row(db, "photo-1")
    assert stored["media_status"] == "stored", stored["media_error"]
    assert stored["media_sha256"] == hashlib.sha256(PHOTO).hexdigest() == object_sha256(stored["media_path"])
    assert stored["media_size"] == len(PHOTO)
    assert stored["media_path"].startswith(f"{stored['account_id']}/{stored['id']}/")
    assert objects()[stored["media_path"]]["ContentType"] == "image/jpeg"
