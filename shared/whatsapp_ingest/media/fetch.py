"""Downloads that cannot be turned against us (SSRF), streamed.

Every hop (the URL, then each redirect) is checked before a byte is sent: the
scheme (https; http only where loopback is allowed, i.e. make run), the host
against the source's allow-list, and every address the host resolves to (no
private, loopback, link-local, metadata, reserved or shared address). The
connection then goes to the checked address itself, so a second DNS answer
cannot swap it (DNS rebinding); TLS still verifies the host name.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

CHUNK = 1024 * 1024
MAX_REDIRECTS = 5
TIMEOUT_SECONDS = 20.0


class MediaError(Exception):
    """A download that will not succeed: its outcome (failed, unavailable, too_large) and a short reason."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class TransientMediaError(Exception):
    """Worth another try later: a network error, a 5xx, 408 or 429."""


@dataclass(frozen=True)
class Policy:
    hosts: tuple[str, ...]
    allow_loopback: bool = False
    #: Credentials sent only to the first host (never after a redirect elsewhere).
    headers: dict[str, str] = field(default_factory=dict)


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """Exact names, or '*.example.com' for any subdomain of example.com."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and host != pattern[2:]:
            return True
        if host == pattern:
            return True
    return False


#: IPv6 prefixes that carry an IPv4 address in their low 32 bits (NAT64, IPv4-compatible).
_IPV4_IN_LOW_BITS = tuple(
    ipaddress.IPv6Network(net) for net in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96", "::ffff:0:0/96")
)
#: Python calls these global: site-local (deprecated, routed privately) and Teredo.
_REFUSED_V6 = tuple(ipaddress.IPv6Network(net) for net in ("fec0::/10", "2001::/32"))
_6TO4 = ipaddress.IPv6Network("2002::/16")


def _embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 address an IPv6 one stands for (NAT64, IPv4-compatible or -mapped, 6to4), else itself."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    if ip in _6TO4:
        return ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)
    if int(ip) <= 1:
        return ip  # :: and ::1 are themselves (unspecified, loopback)
    if any(ip in net for net in _IPV4_IN_LOW_BITS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def checked_address(host: str, port: int, allow_loopback: bool) -> str:
    """The address to connect to, once every address the host resolves to is public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise TransientMediaError(f"{host} does not resolve") from None
    # Every address is checked; IPv4 first, as Lambda has no IPv6 route out by default.
    addresses = [str(info[4][0]) for info in sorted(infos, key=lambda info: info[0] != socket.AF_INET)]
    for address in addresses:
        ip = _embedded_ipv4(ipaddress.ip_address(address.split("%")[0]))
        if isinstance(ip, ipaddress.IPv6Address) and any(ip in net for net in _REFUSED_V6):
            raise MediaError("failed", f"refused: {host} resolves to a non-public address")
        if ip.is_loopback and allow_loopback:
            continue
        if not ip.is_global or ip.is_multicast:
            raise MediaError("failed", f"refused: {host} resolves to a non-public address")
    return addresses[0]


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str) -> None:
        super().__init__(host, port, timeout=TIMEOUT_SECONDS, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str) -> None:
        super().__init__(host, port, timeout=TIMEOUT_SECONDS)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


@dataclass
class Response:
    status: int
    content_type: str | None
    length: int | None
    _response: http.client.HTTPResponse
    _connection: http.client.HTTPConnection

    def chunks(self, max_bytes: int) -> Iterator[bytes]:
        """The body in chunks; too_large as soon as more than max_bytes arrive (nothing more is read)."""
        if self.length is not None and self.length > max_bytes:
            raise MediaError("too_large", f"{self.length} bytes, over the {max_bytes} byte cap")
        seen = 0
        try:
            while chunk := self._response.read(min(CHUNK, max_bytes + 1 - seen)):
                seen += len(chunk)
                if seen > max_bytes:
                    raise MediaError("too_large", f"over the {max_bytes} byte cap")
                yield chunk
        except (OSError, http.client.HTTPException) as exc:
            raise TransientMediaError(f"download interrupted: {type(exc).__name__}") from None

    def read_all(self, max_bytes: int) -> bytes:
        return b"".join(self.chunks(max_bytes))

    def close(self) -> None:
        self._connection.close()


def get(url: str, policy: Policy) -> Response:
    """GET `url` under `policy`, following redirects (each one checked); a 2xx response, ready to stream.

    404 and 410 are unavailable (expired or deleted), other 4xx failed, 5xx/408/429 transient.
    """
    headers = dict(policy.headers)
    first_host: str | None = None
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme != "https" and not (parts.scheme == "http" and policy.allow_loopback):
            raise MediaError("failed", f"refused: {parts.scheme or 'no'} scheme (https only)")
        if not host_allowed(host, policy.hosts):
            raise MediaError("failed", f"refused: {host or 'no host'} is not a host this source uses")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        address = checked_address(host, port, policy.allow_loopback)
        first_host = first_host or host
        if host != first_host:
            headers = {}  # never hand a gateway's credential to another host
        connection: http.client.HTTPConnection = (
            _PinnedHTTPS(host, port, address) if parts.scheme == "https" else _PinnedHTTP(host, port, address)
        )
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        try:
            connection.request("GET", path, headers={"User-Agent": "whatsapp-ingest-media", **headers})
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise TransientMediaError(f"{host}: {type(exc).__name__}") from None
        status = response.status
        if status in (301, 302, 303, 307, 308) and response.getheader("Location"):
            url = urljoin(url, response.getheader("Location") or "")
            connection.close()
            continue
        if 200 <= status < 300:
            length = response.getheader("Content-Length")
            return Response(
                status,
                (response.getheader("Content-Type") or "").split(";")[0].strip().lower() or None,
                int(length) if length and length.isdecimal() else None,
                response,
                connection,
            )
        connection.close()
        if status in (404, 410):
            raise MediaError("unavailable", f"{host} answered {status}: the file has expired or was deleted")
        if status in (408, 429) or status >= 500:
            raise TransientMediaError(f"{host} answered {status}")
        raise MediaError("failed", f"{host} answered {status}")
    raise MediaError("failed", f"more than {MAX_REDIRECTS} redirects")
