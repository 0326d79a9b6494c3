"""The normalisation rules for what orchestrators really send."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from whatsapp_ingest.models import canonical_wa_id, parse_timestamp


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
