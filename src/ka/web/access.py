"""Who may read the dashboard: loopback freely, anyone else with the token.

The token comes as `Authorization: Bearer TOKEN`, as a cookie set by a first visit with
`?token=TOKEN`, or as that query parameter. Loopback is trusted only when the request also
names a loopback host: a web page elsewhere that makes the admin's browser send its requests
here under a name of its own (DNS rebinding) must show the token like anybody else. Every
answer carries headers that keep the pages from loading anything from elsewhere and the token
from leaking in a Referer. The dashboard is read-only: nothing but GET and HEAD is served.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from ka.errors import UsageError

COOKIE = "ka_token"
MIN_TOKEN = 16
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_from_file(path: str) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as e:
        raise UsageError(f"cannot read the dashboard token file {path}: {e.strerror}") from e
    if len(token) < MIN_TOKEN or any(c.isspace() or not c.isprintable() for c in token):
        raise UsageError(f"{path}: the token must be one word of at least {MIN_TOKEN} "
                         "printable characters",
                         hint="e.g. python3 -c 'import secrets; print(secrets.token_urlsafe())'")
    return token


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def host_name(header: str) -> str:
    """The host of a Host header, without its port ("[::1]:8080" -> "::1")."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def _same(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


class TokenGate:
    """ASGI middleware in front of the whole dashboard."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        if scope["method"] not in ("GET", "HEAD"):
            await _refuse(send, 405, "the dashboard is read-only", [(b"allow", b"GET, HEAD")])
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = query.get("token", [None])[-1]
        set_cookie = _same(given, self.token)
        if not (set_cookie or self._allowed(scope, headers)):
            await _refuse(send, 401, "a token is needed: open the address `ka` printed "
                                     "(…/?token=TOKEN) or send Authorization: Bearer TOKEN",
                          [(b"www-authenticate", b'Bearer realm="ka"')])
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                extra = list(SECURITY_HEADERS)
                if set_cookie:
                    extra.append((b"set-cookie", f"{COOKIE}={self.token}; Path=/; HttpOnly; "
                                                 "SameSite=Strict".encode()))
                present = {k.lower() for k, _v in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *[(k, v) for k, v in extra if k not in present]]
            await send(message)

        await self.app(scope, receive, with_headers)

    def _allowed(self, scope: dict[str, Any], headers: dict[str, str]) -> bool:
        client = scope.get("client")
        if client and is_loopback(client[0]) and is_loopback(host_name(headers.get("host", ""))):
            return True
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and _same(value.strip(), self.token):
            return True
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # noqa: BLE001 - a cookie header we cannot parse is no token
            return False
        morsel = cookie.get(COOKIE)
        return morsel is not None and _same(morsel.value, self.token)


async def _refuse(send: Any, status: int, text: str,
                  headers: list[tuple[bytes, bytes]]) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            *headers, *SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})
