"""Fetching an image from a URL without server-side request forgery (``GET /api/remove?url=``).

http(s) only; every address the host resolves to must be public (not private, loopback,
link-local, cloud metadata, reserved, multicast, or such an address wrapped in IPv6), unless
it lies in a network the operator allowed (``serve_url_allow``). The connection goes to the
checked address itself (the host name is only sent as Host and TLS SNI), so a second DNS answer
cannot redirect it; every redirect is checked again; the body is capped, and the whole fetch
(redirects included) has one total time limit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpx

from rmcli.serve.http_errors import ServeError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_REDIRECTS = 5
REDIRECTS = {301, 302, 303, 307, 308}
NAT64 = ipaddress.ip_network("64:ff9b::/96")
COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated IPv4-compatible (::a.b.c.d)
TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # IPv4-translated (::ffff:0:a.b.c.d)


def _embedded(ip: IPAddress) -> IPAddress | None:
    """The IPv4 address inside an IPv4-mapped, IPv4-compatible, IPv4-translated, 6to4, Teredo
    or NAT64 IPv6 address (``::`` and ``::1`` are judged as themselves)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if (ip in COMPATIBLE and int(ip) > 1) or ip in TRANSLATED or ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return None


def _kind(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address, or None when it is."""
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local (cloud metadata)"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "reserved"
    return None


@dataclass
class UrlPolicy:
    """Which addresses a fetch may reach, how much it may read and for how long in all."""

    max_bytes: int
    allow: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    timeout: float = 10.0  # seconds for the whole fetch, redirects included

    @classmethod
    def from_text(cls, allow: str, max_bytes: int, timeout: float = 10.0) -> UrlPolicy:
        """``allow``: comma-separated networks such as ``10.1.0.0/16`` (empty: none); a bad
        one: ValueError."""
        names = [n.strip() for n in allow.split(",") if n.strip()]
        return cls(max_bytes, [ipaddress.ip_network(n, strict=False) for n in names], timeout)

    def refusal(self, ip: IPAddress) -> str | None:
        """Why the policy refuses ``ip`` (None: allowed); an embedded IPv4 address counts."""
        inner = _embedded(ip)
        for address in (inner, ip) if inner is not None else (ip,):
            if any(address in n for n in self.allow if n.version == address.version):
                continue
            kind = _kind(address)
            if kind is not None:
                return kind if address is ip else f"{kind} (embedded {inner})"
        return None


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (a literal address: itself)."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise ServeError(400, f"cannot resolve host {host!r}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def checked_target(url: str, policy: UrlPolicy, resolver=resolve) -> tuple[str, str, int]:
    """(host, the one checked address to connect to, port); ServeError when refused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ServeError(400, f"invalid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ServeError(400, f"only http and https URLs are fetched, not {parts.scheme!r}")
    host = parts.hostname
    if not host:
        raise ServeError(400, "invalid URL: no host")
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = await resolver(host, port)
    if not addresses:
        raise ServeError(400, f"cannot resolve host {host!r}")
    for address in addresses:
        reason = policy.refusal(ipaddress.ip_address(address.split("%")[0]))
        if reason is not None:
            raise ServeError(
                403, f"refused to fetch {host!r}: it resolves to {address}, a {reason} address"
            )
    return host, addresses[0], port


async def fetch(
    url: str, policy: UrlPolicy, resolver=resolve, deadline: float | None = None
) -> bytes:
    """The body of ``url`` (status 200), fetched under ``policy`` within ``policy.timeout``
    seconds in all (and before the loop time ``deadline``); ServeError otherwise."""
    limit = policy.timeout
    if deadline is not None:
        limit = min(limit, deadline - asyncio.get_running_loop().time())
    try:
        async with asyncio.timeout(max(limit, 0.0)):
            return await _fetch(url, policy, resolver)
    except TimeoutError:
        raise ServeError(
            504,
            f"{url}: not fetched within {max(limit, 0.0):.3g} s "
            f"(serve_url_timeout {policy.timeout:g} s, within serve_deadline)",
        ) from None


async def _fetch(url: str, policy: UrlPolicy, resolver) -> bytes:
    limits = httpx.Timeout(policy.timeout)
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=limits) as client:
        for _ in range(MAX_REDIRECTS + 1):
            host, address, port = await checked_target(url, policy, resolver)
            parts = urlsplit(url)
            literal = f"[{address}]" if ":" in address else address
            pinned = parts._replace(netloc=f"{literal}:{port}").geturl()
            default = (parts.scheme, port) in (("http", 80), ("https", 443))
            headers = {
                "Host": host if default else f"{host}:{port}",
                "Accept": "image/*",
                "Accept-Encoding": "identity",
            }
            extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
            try:
                async with client.stream(
                    "GET", pinned, headers=headers, extensions=extensions
                ) as response:
                    if response.status_code in REDIRECTS:
                        location = response.headers.get("location")
                        if not location:
                            raise ServeError(502, f"{url}: redirect without a Location")
                        url = urljoin(url, location)
                        continue
                    if response.status_code != 200:
                        raise ServeError(502, f"{url}: answered HTTP {response.status_code}")
                    return await _capped(response, url, policy.max_bytes)
            except httpx.HTTPError as exc:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                raise ServeError(502, f"{url}: cannot fetch: {reason}") from None
    raise ServeError(502, f"{url}: more than {MAX_REDIRECTS} redirects")


async def _capped(response: httpx.Response, url: str, max_bytes: int) -> bytes:
    too_big = ServeError(413, f"{url}: larger than {max_bytes:,} bytes (serve_url_max_bytes)")
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)
