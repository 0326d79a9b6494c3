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
    object_sha256,
    objects,
    post_media,
    row,
    s3_client,
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


@pytest.mark.parametrize(
    ("kind", "mime", "expected_type"),
    [
        ("image", "image/jpeg", "image/jpeg"),
        ("sticker", "image/webp", "image/webp"),
        ("video", "video/mp4", "video/mp4"),
        ("audio", "audio/ogg; codecs=opus", "audio/ogg; codecs=opus"),
        ("document", "application/pdf", "application/pdf"),
    ],
)
def test_each_media_type_is_stored_with_its_type_and_documents_as_attachments(
    handlers: Any, db: Any, standin: Standin, media_env: dict[str, str], kind: str, mime: str, expected_type: str
) -> None:
    content = os.urandom(20_000)
    fields = whatsapp_file(standin, f"/v/{kind}.enc", content, kind)
    extra = {"filename": "../Cotización <final>.pdf"} if kind == "document" else {}
    post_media(handlers, f"{kind}-1", kind, {"mime_type": mime, **fields, **extra})

    dispatch_and_run()

    stored = row(db, f"{kind}-1")
    assert stored["media_status"] == "stored", stored["media_error"]
    assert object_sha256(stored["media_path"]) == hashlib.sha256(content).hexdigest() == stored["media_sha256"]
    head = objects()[stored["media_path"]]
    assert head["ContentType"] == expected_type == stored["media_mime_type"]
    if kind == "document":
        assert stored["media_path"].endswith("/Cotizacion_final_.pdf")
        assert head["ContentDisposition"] == 'attachment; filename="Cotizacion_final_.pdf"'
    else:
        assert "ContentDisposition" not in head


def test_a_redelivered_message_and_job_download_and_upload_nothing_again(
    handlers: Any, db: Any, standin: Standin, media_env: dict[str, str]
) -> None:
    fields = whatsapp_file(standin, "/v/once.enc", PHOTO)
    post_media(handlers, "once", "image", {"mime_type": "image/jpeg", **fields})
    dispatch_and_run()
    first = row(db, "once")

    again = post_media(handlers, "once", "image", {"mime_type": "image/jpeg", **fields})
    # The same job delivered again (SQS delivers at least once), and the dispatcher run again.
    from whatsapp_ingest.media.queue import job_id
    from whatsapp_ingest.retry_queue import sqs

    sqs().send_message(QueueUrl=media_env["MEDIA_QUEUE_URL"], MessageBody=f'{{"id": {first["id"]}}}')
    dispatch_and_run()

    assert again["duplicate"] is True
    assert standin.paths() == ["/v/once.enc"]
    assert list(objects()) == [first["media_path"]]
    assert row(db, "once")["media_path"] == first["media_path"] and job_id(f'{{"id": {first["id"]}}}') == first["id"]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("file_enc_sha256", "file_enc_sha256 does not match"),
        ("mac", "MAC does not match"),
        ("file_sha256", "file_sha256 does not match"),
    ],
)
def test_a_wrong_hash_or_mac_is_failed_and_nothing_is_stored(
    handlers: Any, db: Any, standin: Standin, media_env: dict[str, str], tamper: str, reason: str
) -> None:
    fields = whatsapp_file(standin, "/v/bad.enc", PHOTO)
    if tamper == "mac":
        status, headers, body = standin.routes["/v/bad.enc"]  # type: ignore[misc]
        standin.routes["/v/bad.enc"] = (status, headers, body[:-1] + bytes([body[-1] ^ 1]))
        del fields["file_enc_sha256"]
    else:
        fields[tamper] = b64(hashlib.sha256(b"something else").digest())
    post_media(handlers, "bad", "image", {"mime_type": "image/jpeg", **fields})

    dispatch_and_run()

    stored = row(db, "bad")
    assert stored["media_status"] == "failed"
    assert reason in stored["media_error"]
    assert stored["media_path"] is None and objects() == {}


@pytest.mark.parametrize("status", [404, 410])
def test_an_expired_or_deleted_file_is_unavailable(
    handlers: Any, db: Any, standin: Standin, media_env: dict[str, str], status: int
) -> None:
    fields = whatsapp_file(standin, "/v/gone.enc", PHOTO)
    standin.routes["/v/gone.enc"] = (status, {}, b"gone")
    post_media(handlers, "gone", "image", {"mime_type": "image/jpeg", **fields})

    dispatch_and_run()

    stored = row(db, "gone")
    assert (stored["media_status"], stored["media_path"]) == ("unavailable", None)
    assert f"answered {status}" in stored["media_error"]


def test_a_server_error_is_retried_with_back_off_then_dead_lettered_and_failed(
    handlers: Any, db: Any, standin: Standin, media_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from whatsapp_ingest.media import queue

    assert [queue.retry_delay(n) for n in range(1, 7)] == [30, 60, 120, 240, 480, 900]
    monkeypatch.setattr(queue, "retry_delay", lambda receives: 0)  # no waiting in a test
    fields = whatsapp_file(standin, "/v/busy.enc", PHOTO)
    standin.routes["/v/busy.enc"] = (503, {}, b"busy")
    post_media(handlers, "busy", "image", {"mime_type": "image/jpeg", **fields})

    dispatch_and_run(rounds=4)
    assert row(db, "busy")["media_status"] == "pending"  # given back after each of the first four
    dispatch_and_run(rounds=2)  # the fifth try, then SQS moves the job aside

    stored = row(db, "busy")
    assert stored["media_status"] == "failed"
    assert stored["media_error"].startswith("gave up after 5 attempts")
    assert standin.paths() == ["/v/busy.enc"] * 5
    assert dead_letters() == [{"id": stored["id"]}]
    assert objects() == {}


def test_a_file_over_the_cap_is_too_large_and_not_read_past_it(
    handlers: Any, db: Any, standin: Standin, media_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from whatsapp_ingest.config import media_settings

    monkeypatch.setenv("MEDIA_MAX_BYTES", "100000")
    media_settings.cache_clear()
    post_media(handlers, "big", "document", {"mime_type": "application/pdf", "url": standin.plain_url + "/big.pdf"})
    standin.routes["/big.pdf"] = (200, {"Content-Type": "application/pdf"}, os.urandom(150_000))
    post_media(handlers, "huge", "document", {"mime_type": "application/pdf", "url": standin.plain_url + "/huge.pdf"})

    def endless(handler: Any) -> None:  # no Content-Length: a stream that never ends
        handler.send_response(200)
        handler.send_header("Content-Type", "application/pdf")
        handler.end_headers()
        try:
            while True:
                handler.wfile.write(b"x" * 65536)
        except OSError:
            pass

    standin.routes["/huge.pdf"] = endless

    dispatch_and_run()

    for message_id in ("big", "huge"):
        stored = row(db, message_id)
        assert (stored["media_status"], stored["media_path"]) == ("too_large", None), stored["media_error"]
        assert "100000 byte cap" in stored["media_error"]
    assert objects() == {}


def test_a_plain_url_and_inline_data_are_stored_and_the_inline_copy_dropped(
    handlers: Any, db: Any, standin: Standin, media_env: dict[str, str]
) -> None:
    standin.routes["/files/plain.jpg"] = (200, {"Content-Type": "image/jpeg"}, PHOTO)
    post_media(handlers, "plain", "image", {"url": standin.plain_url + "/files/plain.jpg"})
    voice = os.urandom(5000)
    post_media(handlers, "inline", "audio", {"mime_type": "audio/ogg; codecs=opus", "data": b64(voice)})

    dispatch_and_run()

    plain, inline = row(db, "plain"), row(db, "inline")
    assert (plain["media_status"], plain["media_mime_type"]) == ("stored", "image/jpeg")
    assert object_sha256(plain["media_path"]) == hashlib.sha256(PHOTO).hexdigest()
    assert inline["media_status"] == "stored"
    assert object_sha256(inline["media_path"]) == hashlib.sha256(voice).hexdigest()
    assert "data" not in inline["content"]["audio"]


def test_a_type_not_allowed_for_the_message_is_failed(
    handlers: Any, db: Any, standin: Standin, media_env: dict[str, str]
) -> None:
    standin.routes["/files/page"] = (200, {"Content-Type": "text/html"}, b"<script>alert(1)</script>")
    post_media(handlers, "page", "image", {"url": standin.plain_url + "/files/page"})

    dispatch_and_run()

    stored = row(db, "page")
    assert stored["media_status"] == "failed" and "text/html is not allowed for image" in stored["media_error"]
    assert objects() == {}


@pytest.mark.parametrize("damaged", [False, True], ids=["intact", "bad-mac"])
def test_a_file_of_several_parts_is_stored_in_parts_or_left_with_no_part_behind(
    handlers: Any, db: Any, standin: Standin, media_env: dict[str, str], damaged: bool
) -> None:
    big = os.urandom(20 * 1024 * 1024)  # three multipart parts of 8 MiB
    fields = whatsapp_file(standin, "/v/big.enc", big, "document")
    if damaged:
        status, headers, body = standin.routes["/v/big.enc"]  # type: ignore[misc]
        standin.routes["/v/big.enc"] = (status, headers, body[:-1] + bytes([body[-1] ^ 1]))
        del fields["file_enc_sha256"]
    post_media(handlers, "big", "document", {"mime_type": "application/pdf", **fields})

    dispatch_and_run()

    stored = row(db, "big")
    if damaged:
        assert (stored["media_status"], stored["media_path"]) == ("failed", None)
        assert objects() == {}
    else:
        assert stored["media_status"] == "stored", stored["media_error"]
        assert object_sha256(stored["media_path"]) == hashlib.sha256(big).hexdigest()
    assert s3_client().list_multipart_uploads(Bucket="whatsapp-media").get("Uploads", []) == []


def test_a_media_key_that_is_not_32_bytes_of_base64_is_a_400_naming_it(handlers: Any, db: Any) -> None:
    from conftest import SESSION_ID, call_handler, request

    body = {
        "session_id": SESSION_ID,
        "from": "5215512345678",
        "to": "5215500000001",
        "timestamp": 1795840860,
        "message_id": "short-key",
        "message": {"type": "image", "image": {"id": "x", "media_key": "c2hvcnQ="}},
    }
    result = call_handler(handlers, request("messages_received/text", body))
    assert result.status == 400 and "message.image.media_key" in result.body["message"]
    assert db.execute("select count(*) as n from public.mensajes").fetchone()["n"] == 0


def test_a_worker_whose_lease_was_taken_over_keeps_no_object(
    handlers: Any, db: Any, standin: Standin, media_env: dict[str, str]
) -> None:
    from whatsapp_ingest.media.worker import run_job
    from whatsapp_ingest.store import get_store

    fields = whatsapp_file(standin, "/v/slow.enc", PHOTO)
    posted = post_media(handlers, "slow", "image", {"mime_type": "image/jpeg", **fields})
    store = get_store()
    stale = store.media_claim(posted["message"]["id"], 60)  # this worker stalls past its lease...
    db.execute("update public.mensajes set media_lease_until = now() - interval '1 second'")
    store.media_claim(posted["message"]["id"], 60)  # ...and another takes the message over

    class Stalled:  # the stalled worker resumes with its old claim, on the real store
        def media_claim(self, message_id: int, lease: int) -> dict[str, Any]:
            return stale

        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

    assert run_job(Stalled(), posted["message"]["id"]) == "skipped"
    assert objects() == {}  # its upload deleted; the new lease holder's is the only one to come
    assert row(db, "slow")["media_status"] == "pending"


@pytest.mark.parametrize(
    ("declared", "stored"),
    [
        ("text/html", "application/octet-stream"),
        ("image/svg+xml", "application/octet-stream"),
        (None, "application/octet-stream"),
        ("application/pdf", "application/pdf"),
    ],
)
def test_a_document_a_browser_could_render_is_stored_as_octet_stream(declared: str | None, stored: str) -> None:
    from whatsapp_ingest.media.worker import content_type, safe_filename

    assert content_type("document", declared, None) == stored
    assert safe_filename("..\\..\\.htaccess", "document") == "htaccess"
    assert safe_filename("", "image.jpg") == "image.jpg"


def test_storage_failing_gives_the_message_back_for_a_retry(
    handlers: Any, db: Any, standin: Standin, media_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = whatsapp_file(standin, "/v/nowhere.enc", PHOTO)
    post_media(handlers, "nowhere", "image", {"mime_type": "image/jpeg", **fields})
    monkeypatch.setenv("MEDIA_BUCKET", "no-such-bucket")  # Storage refuses every write
    from whatsapp_ingest.config import media_settings

    media_settings.cache_clear()

    dispatch_and_run()

    stored = row(db, "nowhere")
    assert (stored["media_status"], stored["media_error"]) == ("pending", "will retry: NoSuchBucket")
    assert stored["media_lease"] is None  # not held: the next try may claim it at once
