"""The normalisation rules for what orchestrators really send."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from whatsapp_ingest.models import QR_MAX_CHARS, QrUpdate, canonical_wa_id, parse_timestamp


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("+52 1 55 1234 5678", "5215512345678"),
        ("5215512345678", "5215512345678"),
        ("5215512345678@s.whatsapp.net", "5215512345678"),
        ("5215512345678:12@s.whatsapp.net", "5215512345678"),
        ("5215512345678@c.us", "5215512345678"),
        ("5215512345678@S.WHATSAPP.NET", "5215512345678"),
        ("123456789012345@lid", "123456789012345@lid"),
        ("123456789012345:7@lid", "123456789012345@lid"),
        ("120363025246125486@g.us", "120363025246125486@g.us"),
        ("5215512345678-1600000000@g.us", "5215512345678-1600000000@g.us"),
        ("status@broadcast", "status@broadcast"),
        ("STATUS@broadcast", "status@broadcast"),
        ("1600000000@broadcast", "1600000000@broadcast"),
        ("120363025246125486@newsletter", "120363025246125486@newsletter"),
    ],
)
def test_phone_numbers_and_jids_normalise_to_one_key(raw: str, key: str) -> None:
    assert canonical_wa_id(raw) == key


@pytest.mark.parametrize(
    "raw", ["", "abc", "12", "1" * 16, "5215512345678@example.com", "@s.whatsapp.net", "+52 1 55 x"]
)
def test_values_that_are_neither_a_number_nor_a_jid_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        canonical_wa_id(raw)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-28T04:41:00Z",
        "2026-11-28T04:41:00+00:00",
        "2026-11-28 04:41:00",
        1795840860,
        1795840860000,
        "1795840860",
    ],
)
def test_timestamps_parse_to_the_same_utc_instant(value: Any) -> None:
    assert parse_timestamp(value) == datetime(2026, 11, 28, 4, 41, tzinfo=UTC)


@pytest.mark.parametrize("value", ["yesterday", -1, True, None, [], 10**20, "99999-01-01", float("inf")])
def test_unreadable_timestamps_are_refused(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(value)


ARABIC_INDIC = "".join(chr(0x0660 + int(d)) for d in "5215512345678")
FULL_WIDTH = "".join(chr(0xFF10 + int(d)) for d in "5215512345678")


@pytest.mark.parametrize("raw", [ARABIC_INDIC, FULL_WIDTH, "1" * 65 + "@lid"])
def test_non_ascii_digits_and_overlong_ids_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        canonical_wa_id(raw)


# What the CRM renders: a non-phone id is shown whole, so it holds only what WhatsApp issues.
@pytest.mark.parametrize(
    "raw",
    [
        "<svg onload=alert(1)>@lid",
        "<svg/onload=alert(1)>@g.us",
        "javascript:alert(1)@lid",
        "1234\u200b5678@lid",  # zero-width space
        "\u202e1234@g.us",  # right-to-left override
        "abc@lid",
        "1-2@lid",
        "1-2-3@g.us",
        "-1234@g.us",
        "status1@broadcast",
        "news@newsletter",
        "a@LID",
    ],
)
def test_non_phone_ids_with_anything_but_whatsapps_characters_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="not a WhatsApp id"):
        canonical_wa_id(raw)


QR = {"session_id": "3f8a2b1c-5d4e-4f6a-9b7c-1d2e3f4a5b6c", "qr_code": "2@Xk3bY7LxQq0v9a1S", "timestamp": 1795840920}
PNG_DATA_URL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.mark.parametrize(
    "url", [None, "https://orchestrator.example.com/qr/3f8a2b1c.png?v=2#x", "https://10.0.0.7:8443/qr", PNG_DATA_URL]
)
def test_qr_url_may_be_an_https_url_or_a_raster_image_data_url(url: str | None) -> None:
    assert QrUpdate.model_validate({**QR, "qr_url": url}).qr_url == url


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(document.cookie)//https://x",
        "data:image/svg+xml,<svg onload=alert(1)>",
        "data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "data:image/png,<svg onload=alert(1)>",
        'https://example.com/"><svg onload=alert(1)>',
        "https://example.com/qr png",
        "http://example.com/qr.png",
        "//example.com/qr.png",
        "https://",
        "",
    ],
)
def test_qr_url_of_another_scheme_or_with_markup_is_refused_naming_the_field(url: str) -> None:
    with pytest.raises(ValidationError) as refused:
        QrUpdate.model_validate({**QR, "qr_url": url})

    assert [error["loc"] for error in refused.value.errors()] == [("qr_url",)]


def test_qr_code_is_capped_at_64_kib_of_characters() -> None:
    assert QrUpdate.model_validate({**QR, "qr_code": "x" * QR_MAX_CHARS}).qr_code == "x" * QR_MAX_CHARS
    with pytest.raises(ValidationError) as refused:
        QrUpdate.model_validate({**QR, "qr_code": "x" * (QR_MAX_CHARS + 1)})

    assert [error["loc"] for error in refused.value.errors()] == [("qr_code",)]
