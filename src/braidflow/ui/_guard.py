"""What every request to the dashboard passes before it is served: the name it asks
for (against DNS rebinding), the token (when one is set), the origin of a POST.

Every response also gets headers that keep the page to itself: a content
security policy that allows only the app's own script and style, no
framing by other sites, no referrer, no caching.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

__all__ = ["COOKIE", "Guard"]

COOKIE = "braidflow_ui_token"
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'self'"
)
_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),  # no-referrer would make a form's Origin "null"
    (b"cache-control", b"no-store"),
]


class Guard:
    """ASGI middleware in front of the dashboard.

    Args:
        app: The dashboard.
        token: Asked of every request, or ``None``. A request with
            ``?token=`` right is sent on to the same address without it, with
            a cookie that carries it from then on (like Jupyter's).
        hosts: The host names a request may name (``Host``); ``None``: any.
    """

    def __init__(self, app: Any, *, token: str | None, hosts: tuple[str, ...] | None) -> None:
        self.app = app
        self.token = token
        self.hosts = hosts
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        host = headers.get("host", "")
        if self.hosts is not None and _host_name(host) not in self.hosts:
            await _plain(
                send,
                403,
                f"this dashboard is not served as {host!r}; open it by the address it printed",
            )
            return
        if self.token is not None:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            given = query.pop("token", None)
            if given is not None and secrets.compare_digest(given, self.token):
                rest = urlencode(query)
                path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
                # One leading slash: "//host/..." would send the browser to another site.
                where = "/" + path.lstrip("/") + (f"?{rest}" if rest else "")
                await _redirect(send, where, self.token)
                return
            if not self._carries_token(headers):
                await _plain(
                    send,
                    403,
                    "this dashboard needs its token: open the address with ?token= that "
                    "'braidflow ui' printed",
                )
                return
        if scope["method"] == "POST" and not _same_origin(headers, host):
            await _plain(send, 403, "a form from another site was refused")
            return

        async def guarded_send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                extra = list(_HEADERS)
                names = {name.lower() for name, _ in message.get("headers", [])}
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", _POLICY.encode()))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, guarded_send)

    def _carries_token(self, headers: dict[str, str]) -> bool:
        assert self.token is not None
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed cookie header carries no token
            return False
        kept = cookie.get(COOKIE)
        if kept is not None and secrets.compare_digest(kept.value, self.token):
            return True
        scheme, _, given = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "token" and secrets.compare_digest(given, self.token)


def _host_name(host: str) -> str:
    """The name of a Host header, without its port: ``[::1]:8765`` -> ``::1``."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if ":" in host else host


def _same_origin(headers: dict[str, str], host: str) -> bool:
    """A POST's Origin (sent by every browser) names this very host."""
    origin = headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return origin.partition("://")[2] == host


async def _plain(send: Send, status: int, text: str) -> None:
    body = f"braidflow ui: {text}\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), *_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _redirect(send: Send, where: str, token: str) -> None:
    cookie = f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", where.encode("latin-1")),
                (b"set-cookie", cookie.encode("latin-1")),
                *_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
