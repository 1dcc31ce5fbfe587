"""Who may use the console, and from where.

- Bound to loopback (the default, 127.0.0.1) with no `console_token`: no login, but
  only requests whose Host is a loopback name are answered, so a web page cannot
  reach the console through DNS rebinding.
- Bound anywhere else: a token is required on every request, as
  `Authorization: Bearer TOKEN` or as the session cookie the login page sets. The
  console never starts off loopback without one: `console_token`, or one generated
  once, kept in `$CONJURE_HOME/console.token` (mode 600) and printed.
- Requests that change something (POST) must come from the console's own pages:
  a browser's `Sec-Fetch-Site` must say same-origin and its `Origin` must be ours.
"""

from __future__ import annotations

import hashlib
import hmac
import html
from urllib.parse import parse_qs, quote, urlsplit

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conjure.infra.console_token import is_loopback

COOKIE = "conjure_console"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
OPEN_PATHS = {"/login", "/logout", "/static/app.css", "/favicon.svg"}

HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
]


def session_value(token: str) -> str:
    """What the cookie holds: derived from the token, so the token itself never sits in it."""
    return hmac.new(token.encode(), b"conjure-console-session", hashlib.sha256).hexdigest()


class Guard:
    """ASGI middleware: host check, authentication, cross-site check, security headers."""

    def __init__(self, app: ASGIApp, token: str | None, loopback_only: bool) -> None:
        self.app = app
        self.token = token
        self.session = session_value(token) if token else ""
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + HEADERS
            await send(message)

        refusal = self.check(scope)
        if refusal is None and scope["path"] in ("/login", "/logout"):
            refusal = await self.login(scope, receive)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def check(self, scope: Scope) -> Response | None:
        headers = Headers(scope=scope)
        path: str = scope["path"]
        api = path.startswith("/api/")
        host = headers.get("host", "")
        if self.loopback_only and not is_loopback(urlsplit(f"//{host}").hostname or ""):
            return _refuse(api, 421, "this console answers only to 127.0.0.1 and localhost")
        if scope["method"] not in SAFE_METHODS and not same_origin(headers, host):
            return _refuse(api, 403, "cross-site request refused")
        if self.token is None or path in OPEN_PATHS:
            return None
        if self.authenticated(headers):
            return None
        if api:
            return JSONResponse(
                {"error": "a console token is required (Authorization: Bearer TOKEN)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        target = path + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    def authenticated(self, headers: Headers) -> bool:
        assert self.token is not None
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return hmac.compare_digest(auth[7:].strip().encode(), self.token.encode())
        cookie = Request({"type": "http", "headers": headers.raw}).cookies.get(COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self.session.encode())

    async def login(self, scope: Scope, receive: Receive) -> Response:
        request = Request(scope, receive)
        if scope["path"] == "/logout":
            resp = RedirectResponse("/login" if self.token else "/", status_code=303)
            resp.delete_cookie(COOKIE)
            return resp
        nxt = request.query_params.get("next", "/")
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/"
        if self.token is None:
            return RedirectResponse(nxt, status_code=303)
        given = request.query_params.get("token", "")
        if request.method == "POST":
            form = parse_qs((await request.body()).decode(errors="replace"))
            given = (form.get("token") or [""])[0]
            nxt = (form.get("next") or [nxt])[0]
            if not nxt.startswith("/") or nxt.startswith("//"):
                nxt = "/"
        if given:
            if hmac.compare_digest(given.strip().encode(), self.token.encode()):
                resp = RedirectResponse(nxt, status_code=303)
                resp.set_cookie(COOKIE, self.session, httponly=True, samesite="strict")
                return resp
            return login_page(nxt, "That token is not this console's.", 401)
        return login_page(nxt)


def same_origin(headers: Headers, host: str) -> bool:
    """A browser says where a request comes from in Sec-Fetch-Site (a header no page can
    set); older ones only in Origin. A client that is no browser sends neither."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = headers.get("origin")
    return origin is None or (origin != "null" and urlsplit(origin).netloc == host)


def _refuse(api: bool, status: int, message: str) -> Response:
    if api:
        return JSONResponse({"error": message}, status_code=status)
    return HTMLResponse(f"<!doctype html><p>{html.escape(message)}</p>", status_code=status)


def login_page(nxt: str, error: str = "", status: int = 200) -> HTMLResponse:
    err = f'<p class="error">{html.escape(error)}</p>' if error else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Conjure · log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/app.css"></head>
<body class="login"><main><h1>Conjure</h1>
<p>This console needs its token: <code>console_token</code>, or the one
<code>conjure console</code> printed (kept in <code>$CONJURE_HOME/console.token</code>).</p>
{err}<form method="post" action="/login">
<input type="hidden" name="next" value="{html.escape(nxt)}">
<label>Token <input type="password" name="token" autocomplete="current-password" autofocus></label>
<button type="submit">Log in</button></form></main></body></html>"""
    return HTMLResponse(body, status_code=status)
