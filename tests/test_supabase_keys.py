"""Supabase's keys and the database's TLS: the new secret key (sb_secret_...) works on the Data API path,
sent only as `apikey`; the legacy service_role JWT still works and says once that it is deprecated; the
direct path verifies the server's certificate unless told otherwise, and says so when it is."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from conftest import SECRET_KEY, SERVICE_KEY, Lines, call_handler, load_event, use_backend

from whatsapp_ingest.store import api_key_headers, get_store, shared_store

RPC = "/rest/v1/rpc/whatsapp_store_qr"
QR_ARGS = json.dumps({"p_session_id": "00000000-0000-4000-8000-000000000000", "p_qr_code": "x"})


def test_a_secret_key_goes_in_the_apikey_header_only() -> None:
    assert api_key_headers(SECRET_KEY) == {"apikey": SECRET_KEY}
    assert api_key_headers(SERVICE_KEY) == {"apikey": SERVICE_KEY, "Authorization": f"Bearer {SERVICE_KEY}"}


def test_the_service_stores_through_the_data_api_with_a_secret_key(
    handlers: Any, postgrest: Any, db: Any, monkeypatch: pytest.MonkeyPatch, log_lines: Lines
) -> None:
    use_backend(monkeypatch, {"SUPABASE_URL": postgrest.url, "SUPABASE_SECRET_KEY": SECRET_KEY})
    assert call_handler(handlers, load_event("messages_received/text")).status == 200
    assert db.execute("select count(*) as n from public.mensajes").fetchone()["n"] == 1
    assert not [line for line in log_lines() if "deprecated" in line["message"]]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"apikey": SECRET_KEY}, 404),  # accepted: the function answers (no such session)
        ({"apikey": SECRET_KEY, "Authorization": f"Bearer {SECRET_KEY}"}, 404),  # the same key twice: accepted
        ({"Authorization": f"Bearer {SECRET_KEY}"}, 401),  # only as a Bearer token: no API key found
        ({"apikey": SECRET_KEY, "Authorization": "Bearer sb_secret_other"}, 401),  # not a JWT for PostgREST
        ({"apikey": "sb_secret_wrong"}, 401),
    ],
)
def test_the_standin_accepts_a_secret_key_as_supabases_gateway_does(
    postgrest: Any, headers: dict[str, str], status: int
) -> None:
    reply = httpx.post(postgrest.url + RPC, content=QR_ARGS, headers={"Content-Type": "application/json", **headers})
    assert reply.status_code == status, reply.text


def test_the_legacy_service_role_key_still_works_and_warns_once_per_container(
    handlers: Any, postgrest: Any, db: Any, monkeypatch: pytest.MonkeyPatch, log_lines: Lines
) -> None:
    from whatsapp_ingest.config import _warn_legacy_key

    _warn_legacy_key.cache_clear()  # a fresh container
    use_backend(monkeypatch, {"SUPABASE_URL": postgrest.url, "SUPABASE_SERVICE_ROLE_KEY": SERVICE_KEY})
    for name in ("messages_received/text", "status_update/valid"):
        assert call_handler(handlers, load_event(name)).status == 200, name
        shared_store.cache_clear()  # the store rebuilt (a rotated secret): no new warning
    warnings = [line for line in log_lines() if "deprecated" in line["message"]]
    assert len(warnings) == 1
    assert warnings[0]["level"] == "WARNING"
    assert "SUPABASE_SERVICE_ROLE_KEY is deprecated" in warnings[0]["message"]
    assert SERVICE_KEY not in json.dumps(warnings)


def test_the_direct_path_verifies_the_certificate_by_default(
    database_url: str, monkeypatch: pytest.MonkeyPatch, log_lines: Lines
) -> None:
    use_backend(monkeypatch, {"DATABASE_URL": database_url})
    connection = get_store()._connect()  # type: ignore[attr-defined]
    try:  # over this test's Unix socket libpq uses no TLS; what is checked is what reaches libpq
        assert connection.info.get_parameters()["sslmode"] == "verify-full"
    finally:
        connection.close()
    assert not [line for line in log_lines() if "sslmode" in line["message"]]


@pytest.mark.parametrize(
    ("env", "source"),
    [({"DATABASE_SSLMODE": "require"}, "DATABASE_SSLMODE"), ({"url": "sslmode=disable"}, "DATABASE_URL")],
)
def test_an_sslmode_weaker_than_verify_full_is_logged(
    database_url: str, monkeypatch: pytest.MonkeyPatch, log_lines: Lines, env: dict[str, str], source: str
) -> None:
    separator = "&" if "?" in database_url else "?"
    url = f"{database_url}{separator}{env.pop('url')}" if "url" in env else database_url
    use_backend(monkeypatch, {"DATABASE_URL": url, **env})
    get_store()
    [warning] = [line for line in log_lines() if "sslmode" in line["message"]]
    assert warning["level"] == "WARNING"
    assert f"from {source} overrides verify-full" in warning["message"]
    assert database_url not in json.dumps(warning)
