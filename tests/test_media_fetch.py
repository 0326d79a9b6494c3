"""Downloads cannot be turned against us (SSRF): scheme, host allow-list, and every
resolved address checked on the first hop and on every redirect; credentials never
follow a redirect to another host; nothing is read past the size cap."""

from __future__ import annotations

import os
from typing import Any

import pytest
from media_support import Standin

from whatsapp_ingest.config import ConfigError, media_settings
from whatsapp_ingest.media.fetch import MediaError, Policy, get, host_allowed

LOCAL = Policy(("127.0.0.1", "localhost", "10.1.2.3", "169.254.169.254"), allow_loopback=True)


def test_host_patterns_match_subdomains_only() -> None:
    patterns = ("mmg.whatsapp.net", "*.whatsapp.net")
    assert host_allowed("mmg.whatsapp.net", patterns)
    assert host_allowed("media-mia3-1.cdn.whatsapp.net", patterns)
    assert not host_allowed("whatsapp.net.evil.example", patterns)
    assert not host_allowed("evilwhatsapp.net", patterns)


def test_the_cloud_metadata_address_is_refused_even_when_listed() -> None:
    with pytest.raises(MediaError, match="non-public address"):
        get("http://169.254.169.254/latest/meta-data/iam/", LOCAL)


def test_a_private_address_is_refused() -> None:
    with pytest.raises(MediaError, match="non-public address"):
        get("http://10.1.2.3/file.jpg", LOCAL)


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata address
        "64:ff9b:1::a01:203",  # local-use NAT64 of 10.1.2.3
        "::a9fe:a9fe",  # IPv4-compatible metadata address
        "::ffff:a9fe:a9fe",  # IPv4-mapped
        "2002:a9fe:a9fe::1",  # 6to4 of the metadata address
        "2002:a01:203::1",  # 6to4 of 10.1.2.3
        "fec0::1",  # site-local
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    ],
)
def test_an_ipv6_address_standing_for_a_private_one_is_refused(standin: Standin, address: str) -> None:
    with pytest.raises(MediaError, match="non-public address"):
        get(f"http://[{address}]/file.jpg", Policy((address,), allow_loopback=True))
    assert standin.hits == []


def test_loopback_is_refused_where_loopback_is_not_allowed(standin: Standin) -> None:
    deployed = Policy(("127.0.0.1", "localhost"), allow_loopback=False)
    with pytest.raises(MediaError, match="non-public address"):
        get(standin.url.replace("http:", "https:") + "/x", deployed)
    with pytest.raises(MediaError, match="https only"):
        get(standin.url + "/x", deployed)
    assert standin.hits == []


def test_a_deployed_function_refuses_the_loopback_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIA_ALLOW_LOOPBACK", "true")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "whatsapp-ingest-media")
    media_settings.cache_clear()
    try:
        with pytest.raises(ConfigError, match="make run only"):
            media_settings()
    finally:
        media_settings.cache_clear()


def test_a_host_outside_the_sources_list_is_refused(standin: Standin) -> None:
    with pytest.raises(MediaError, match="not a host this source uses"):
        get(standin.url + "/x", Policy(("mmg.whatsapp.net",), allow_loopback=True))
    assert standin.hits == []


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://10.1.2.3/inside", "non-public address"),
        ("http://169.254.169.254/latest/meta-data/", "non-public address"),
        ("https://attacker.example/steal", "not a host this source uses"),
        ("file:///etc/passwd", "https only"),
    ],
)
def test_a_redirect_is_checked_like_the_first_hop(standin: Standin, location: str, reason: str) -> None:
    standin.routes["/go"] = (302, {"Location": location}, b"")
    with pytest.raises(MediaError, match=reason):
        get(standin.url + "/go", LOCAL)
    assert standin.paths() == ["/go"]


def test_credentials_do_not_follow_a_redirect_to_another_host(standin: Standin) -> None:
    standin.routes["/go"] = (302, {"Location": standin.url.replace("127.0.0.1", "localhost") + "/file"}, b"")
    standin.routes["/file"] = (200, {"Content-Type": "image/jpeg"}, b"jpeg")
    policy = Policy(("127.0.0.1", "localhost"), allow_loopback=True, headers={"X-Api-Key": "secret-key-123"})

    response = get(standin.url + "/go", policy)
    assert response.read_all(100) == b"jpeg"
    response.close()

    (first, second) = (headers for _, headers in standin.hits)
    assert first["x-api-key"] == "secret-key-123" and "x-api-key" not in second


def test_nothing_is_read_past_the_cap(standin: Standin) -> None:
    def endless(handler: Any) -> None:
        handler.send_response(200)
        handler.end_headers()
        try:
            while True:
                handler.wfile.write(os.urandom(65536))
        except OSError:
            pass

    standin.routes["/endless"] = endless
    standin.routes["/declared"] = (200, {"Content-Length": str(10**9)}, b"")
    response = get(standin.url + "/endless", LOCAL)
    read = 0
    with pytest.raises(MediaError, match="cap") as refused:
        for chunk in response.chunks(200_000):
            read += len(chunk)
    response.close()
    assert refused.value.status == "too_large" and read <= 200_000

    declared = get(standin.url + "/declared", LOCAL)
    with pytest.raises(MediaError, match="over the 200000 byte cap"):
        next(declared.chunks(200_000))
    declared.close()
