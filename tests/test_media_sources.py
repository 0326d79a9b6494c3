"""Each source's media to a stored object, from the gateways' reference webhooks
(events/webhooks/, sources cited there): Evolution's webhook base64 and Baileys
media fields, WAHA's media.url with its API key, the Cloud API's media id through
the Graph API with the access token."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import call_handler
from gateway_support import ENV, link, payload, webhook_event
from media_support import (
    META_TOKEN,
    WAHA_API_KEY,
    Standin,
    dispatch_and_run,
    object_sha256,
    objects,
)
from test_connections import post, status

from whatsapp_ingest import connections
from whatsapp_ingest.config import forget_connection_secrets, secrets_manager
from whatsapp_ingest.media.crypto import encrypt

PHOTO = os.urandom(60_000)


@pytest.fixture
def hook(handlers: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)

    def call(gateway: str, body: Any) -> Any:
        result = call_handler(handlers, webhook_event(gateway, body))
        assert result.status == 200, result.body
        return result

    return call


def only_message(db: Any) -> dict[str, Any]:
    (row,) = db.execute("select * from public.mensajes").fetchall()
    return dict(row)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def evolution_image(file: bytes, *, inline: bool) -> dict[str, Any]:
    """Evolution's reference image webhook, carrying `file`. The reference's own base64 was
    cut short when it was published (an issue report), so the file's bytes and hashes are ours."""
    body = copy.deepcopy(payload("evolution", "messages_upsert_image_inbound_base64.json"))
    message = body["data"]["message"]
    message["imageMessage"]["fileSha256"] = b64(hashlib.sha256(file).digest())
    if inline:
        message["base64"] = b64(file)
    else:
        del message["base64"]
    return body


def test_evolution_webhook_base64_is_stored_without_a_download(
    hook: Any, db: Any, standin: Standin, media_env: dict[str, str]
) -> None:
    link(db, "evolution", "tigo1")
    hook("evolution", evolution_image(PHOTO, inline=True))

    dispatch_and_run()

    stored = only_message(db)
    assert stored["media_status"] == "stored", stored["media_error"]
    assert object_sha256(stored["media_path"]) == hashlib.sha256(PHOTO).hexdigest() == stored["media_sha256"]
    assert "data" not in stored["content"]["image"]
    assert standin.hits == []


def test_evolution_reference_webhook_with_its_cut_base64_is_failed_not_stored(
    hook: Any, db: Any, media_env: dict[str, str]
) -> None:
    link(db, "evolution", "tigo1")
    hook("evolution", payload("evolution", "messages_upsert_image_inbound_base64.json"))

    dispatch_and_run()

    stored = only_message(db)
    assert (stored["media_status"], stored["media_error"]) == ("failed", "data is not valid base64")
    assert objects() == {}


EVOLUTION_CDN = [
    ("messages_upsert_image_inbound_base64.json", "imageMessage", "image"),
    ("messages_upsert_video_inbound_base64.json", "videoMessage", "video"),
    ("messages_upsert_audio_ptt_inbound_base64.json", "audioMessage", "audio"),
    ("messages_upsert_document.assembled.json", "documentMessage", "document"),
    ("messages_upsert_sticker.assembled.json", "stickerMessage", "sticker"),
]


@pytest.mark.parametrize(("name", "field", "kind"), EVOLUTION_CDN, ids=[k for _, _, k in EVOLUTION_CDN])
def test_evolution_baileys_media_fields_are_fetched_from_the_cdn_and_decrypted(
    hook: Any, db: Any, standin: Standin, media_env: dict[str, str], name: str, field: str, kind: str
) -> None:
    body = copy.deepcopy(payload("evolution", name))
    body = body.get("first_delivery", body)
    message = body["data"]["message"]
    message.pop("base64", None)  # Evolution's webhook base64 off: the file is fetched from WhatsApp's CDN
    media = message[field]
    del media["url"]  # fetched from the CDN (WHATSAPP_MEDIA_CDN, the stand-in) + directPath
    encrypted = encrypt(PHOTO, base64.b64decode(media["mediaKey"]), kind)
    media["fileSha256"] = b64(hashlib.sha256(PHOTO).digest())
    media["fileEncSha256"] = b64(hashlib.sha256(encrypted).digest())
    standin.routes[media["directPath"]] = (200, {"Content-Type": "application/octet-stream"}, encrypted)
    link(db, "evolution", body["instance"])
    hook("evolution", body)

    stored = only_message(db)
    assert stored["content"][kind]["media_key"] == media["mediaKey"]
    assert stored["content"][kind]["direct_path"] == media["directPath"]
    dispatch_and_run()

    stored = only_message(db)
    assert stored["media_status"] == "stored", stored["media_error"]
    assert object_sha256(stored["media_path"]) == hashlib.sha256(PHOTO).hexdigest()
    assert stored["media_mime_type"] == media["mimetype"]
    assert standin.paths() == [media["directPath"]]


@pytest.mark.parametrize(
    "name, served",
    [
        ("message_image_media_url.json", "image/jpeg"),
        ("message_document_media_url.json", "application/pdf"),
        # Before 2024 WAHA sent a flat mediaUrl (no mimetype): the kind from the file name.
        ("traffic/message_media_url_flat_2023.json", "image/jpeg"),
        ("traffic/message_document_media_url_flat_2023.json", "application/pdf"),
    ],
)
def test_waha_media_url_is_fetched_from_the_configured_server_with_its_api_key(
    hook: Any, db: Any, standin: Standin, media_env: dict[str, str], name: str, served: str
) -> None:
    body = payload("waha", name)
    path = urlsplit(body["payload"].get("mediaUrl") or body["payload"]["media"]["url"]).path
    standin.routes[path] = (200, {"Content-Type": served}, PHOTO)
    link(db, "waha", body["session"])
    hook("waha", body)

    dispatch_and_run()

    stored = only_message(db)
    assert stored["media_status"] == "stored", stored["media_error"]
    assert object_sha256(stored["media_path"]) == hashlib.sha256(PHOTO).hexdigest()
    # The reference names http://localhost:3000; the file is fetched from WAHA_BASE_URL, with the key.
    ((fetched, headers),) = standin.hits
    assert fetched == path and headers["x-api-key"] == WAHA_API_KEY


@pytest.mark.parametrize(
    "url",
    [
        "https://x/api/other-session/auth/qr",
        "https://x/api/files/../other-session/auth/qr",
        "https://x/api/files/%2e%2e/other-session/auth/qr",
        "https://x/api/files/%2E%2E%2Fother-session%2Fauth%2Fqr",
        "https://x/api/files/%252e%252e/sessions",
    ],
)
def test_waha_media_url_outside_its_file_store_is_failed_without_a_request(
    hook: Any, db: Any, standin: Standin, media_env: dict[str, str], url: str
) -> None:
    body = copy.deepcopy(payload("waha", "message_image_media_url.json"))
    body["payload"]["media"]["url"] = url
    standin.routes[urlsplit(url).path] = (200, {"Content-Type": "image/jpeg"}, PHOTO)
    link(db, "waha", body["session"])
    hook("waha", body)

    dispatch_and_run()

    stored = only_message(db)
    assert stored["media_status"] == "failed"
    assert stored["media_error"] == "refused: a WAHA media url outside /api/files/"
    assert standin.hits == []
    assert objects() == {}


@pytest.mark.parametrize(
    "name", ["image.json", "audio_voice_note.json", "video_forwarded.json", "document.json", "sticker.json"]
)
def test_cloud_api_media_id_is_resolved_through_the_graph_api_and_downloaded_with_the_token(
    hook: Any, db: Any, standin: Standin, media_env: dict[str, str], name: str
) -> None:
    body = payload("meta", name)
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    media = message[message["type"]]
    media_id = media["id"]
    # The Graph API's answer, shaped as Meta documents it (Cloud API reference, "Retrieve Media URL").
    graph = {
        "messaging_product": "whatsapp",
        "url": f"{standin.url}/whatsapp_business/attachments/?mid={media_id}",
        "mime_type": media["mime_type"],
        "sha256": hashlib.sha256(PHOTO).hexdigest(),
        "file_size": len(PHOTO),
        "id": media_id,
    }
    standin.routes[f"/v21.0/{media_id}"] = (200, {"Content-Type": "application/json"}, json.dumps(graph).encode())
    standin.routes[f"/whatsapp_business/attachments/?mid={media_id}"] = (200, {}, PHOTO)
    link(db, "meta", body["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"])
    hook("meta", body)

    dispatch_and_run()

    stored = only_message(db)
    assert stored["media_status"] == "stored", stored["media_error"]
    assert object_sha256(stored["media_path"]) == hashlib.sha256(PHOTO).hexdigest()
    assert [(path, headers["authorization"]) for path, headers in standin.hits] == [
        (f"/v21.0/{media_id}", f"Bearer {META_TOKEN}"),
        (f"/whatsapp_business/attachments/?mid={media_id}", f"Bearer {META_TOKEN}"),
    ]


@pytest.fixture
def on_connection(
    handlers: Any, db: Any, media_env: dict[str, str], moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """Adds a connection (its secret on the same moto server), links the gateway's session to it
    and posts `body` to its URL: the media then come with that connection's credentials."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_endpoint)
    secrets_manager.cache_clear()
    forget_connection_secrets()

    def post_on(gateway: str, instance: str, given: dict[str, str], body: Any, **row: Any) -> None:
        connection = connections.add_connection(gateway, f"{gateway} 2", given, None, **row)["id"]
        link(db, gateway, instance)
        db.execute(
            "update public.whatsapp_sessions set gateway_connection_id = %s where gateway = %s", (connection, gateway)
        )
        assert status(post(handlers, gateway, connection, body, given["webhook_secret"]))[0] == 200

    yield post_on
    secrets_manager.cache_clear()
    forget_connection_secrets()


def test_waha_media_of_a_connections_session_are_fetched_from_its_server_with_its_api_key(
    on_connection: Any, db: Any, standin: Standin, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The connection's base URL is the stand-in; the deployment-wide WAHA settings name another server and key.
    monkeypatch.setenv("WAHA_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WAHA_API_KEY", "the-default-connections-key")
    body = payload("waha", "message_image_media_url.json")
    path = urlsplit(body["payload"]["media"]["url"]).path
    standin.routes[path] = (200, {"Content-Type": body["payload"]["media"]["mimetype"]}, PHOTO)
    given = {"webhook_secret": "waha-hmac-of-server-2", "api_key": "waha-api-key-of-server-2"}
    on_connection("waha", body["session"], given, body, base_url=standin.url)

    dispatch_and_run()

    stored = only_message(db)
    assert stored["media_status"] == "stored", stored["media_error"]
    ((fetched, headers),) = standin.hits
    assert fetched == path and headers["x-api-key"] == "waha-api-key-of-server-2"


def test_cloud_api_media_of_a_connections_session_use_its_apps_token_and_graph_version(
    on_connection: Any, db: Any, standin: Standin
) -> None:
    # A second Meta app: its own access token and Graph version, not the deployment-wide ones.
    body = payload("meta", "image.json")
    value = body["entry"][0]["changes"][0]["value"]
    media_id = value["messages"][0]["image"]["id"]
    graph = {"url": f"{standin.url}/whatsapp_business/attachments/?mid={media_id}", "id": media_id}
    standin.routes[f"/v22.0/{media_id}"] = (200, {"Content-Type": "application/json"}, json.dumps(graph).encode())
    standin.routes[f"/whatsapp_business/attachments/?mid={media_id}"] = (200, {"Content-Type": "image/jpeg"}, PHOTO)
    given = {"webhook_secret": "app-secret-of-app-2", "verify_token": "verify-2", "api_key": "token-of-app-2"}
    on_connection("meta", value["metadata"]["phone_number_id"], given, body, api_version="v22.0")

    dispatch_and_run()

    stored = only_message(db)
    assert stored["media_status"] == "stored", stored["media_error"]
    assert [(path, headers["authorization"]) for path, headers in standin.hits] == [
        (f"/v22.0/{media_id}", "Bearer token-of-app-2"),
        (f"/whatsapp_business/attachments/?mid={media_id}", "Bearer token-of-app-2"),
    ]
