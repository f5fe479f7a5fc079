"""The checks every request of ``facerec serve`` passes first (pages, files, API, docs): the Host
header (DNS rebinding), the Origin of a state-changing request (cross-site posts) and the token;
and what every response carries.

No token configured: everyone, on loopback only. Otherwise the ``Authorization: Bearer TOKEN``
header, or the cookie set when a page is opened with the printed ``?token=`` link (the API takes
the header only), compared in constant time. The link redirects to the same path on this server
only (:func:`local_redirect`: never ``//other.host``).

:class:`SecurityHeaders` (outermost): every response gets :data:`SECURITY_HEADERS` (no framing
by any page: a page of another local origin cannot click Undo through an iframe; scripts from
this server only). :class:`BodyLimit` (innermost): every request body is limited
(:func:`body_limit`: 413 before it is read when Content-Length says so, or as soon as a chunked
body passes the limit).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from urllib.parse import quote, urlsplit

COOKIE = "facerec_token"

#: the Content-Security-Policy of every response: scripts, styles, fonts and fetches from this
#: server only (the /docs page's Swagger UI included: pinned local files, no inline script), no
#: framing (``frame-ancestors 'none'``), no plugins, no <base>; images may also be the page's own
#: blob:/data: URLs (the Recognise page draws the dropped photo)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; font-src 'self'; connect-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
_HEADER_NAMES = {name for name, _ in SECURITY_HEADERS}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def guard(config):
    """The HTTP middleware for ``config`` (a :class:`~facerec.serve.state.ServeConfig`):
    ``app.middleware("http")(guard(config))``."""
    from fastapi.responses import JSONResponse, RedirectResponse

    async def check(request, call_next):
        if not host_allowed(request, config.token):
            # a page on another site resolving its own name to 127.0.0.1 (DNS rebinding)
            return JSONResponse({"detail": "unexpected Host header"}, status_code=400)
        if request.method not in ("GET", "HEAD") and not same_origin(request):
            # another site's page posting to this server through the user's browser
            return JSONResponse({"detail": "cross-origin request refused"}, status_code=403)
        query_token = request.query_params.get("token")
        if config.token and query_token is not None and request.method == "GET" \
                and not request.url.path.startswith("/api/"):
            # a link with ?token=: check it, keep it in a cookie and drop it from the address bar
            if not hmac.compare_digest(query_token.encode(), config.token.encode()):
                return unauthorised(request)
            target = request.url.remove_query_params("token")
            response = RedirectResponse(local_redirect(target.path, target.query), status_code=303)
            response.set_cookie(COOKIE, config.token, httponly=True, samesite="strict")
            return response
        if not authorised(request, config.token):
            return unauthorised(request)
        return await call_next(request)

    return check


def _bearer(request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def authorised(request, token: str | None) -> bool:
    """No token configured: everyone (loopback only). Otherwise the bearer header or the cookie
    set from a ``?token=`` link, compared in constant time."""
    if not token:
        return True
    for given in (_bearer(request), request.cookies.get(COOKIE)):
        if given and hmac.compare_digest(given.encode(), token.encode()):
            return True
    return False


def unauthorised(request):
    from fastapi.responses import HTMLResponse, JSONResponse

    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": "missing or wrong token (send Authorization: Bearer "
                             "TOKEN)"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    return HTMLResponse("<!doctype html><title>facerec: token needed</title><p>This facerec "
                        "server needs its token: open the link it printed when it started "
                        "(<code>http://HOST:PORT/?token=...</code>).</p>", status_code=401)


def host_allowed(request, token: str | None) -> bool:
    """On loopback without a token, only loopback Host names: a DNS-rebinding page (evil.example
    resolving to 127.0.0.1) sends its own name and is refused. With a token, any Host."""
    if token:
        return True
    host = request.headers.get("host", "")
    name = urlsplit(f"//{host}").hostname or ""
    return name == "" or is_loopback(name)


def same_origin(request) -> bool:
    """A browser sends Origin with a cross-site POST; it must name this server. Clients that are
    not browsers (curl, scripts) send none and pass."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def local_redirect(path: str, query: str = "") -> str:
    """A redirect target on this server only: exactly one leading slash (to a browser
    ``//evil.example/`` and ``/\\evil.example/`` are other sites), the path percent-encoded (no
    control characters or backslashes left), then the query."""
    path = "/" + path.lstrip("/\\")
    return quote(path, safe="/:@!$&'()*+,;=-._~") + (f"?{query}" if query else "")


def body_limit(config, path: str) -> int:
    """The largest request body a route takes, in bytes: the uploads of ``POST /api/predict``
    (``max_files`` images of ``max_upload_bytes``, plus the multipart framing), else
    ``max_body_bytes`` (JSON bodies: a rename, a list of moves, training options)."""
    if path == "/api/predict":
        return config.max_upload_bytes * config.max_files + 64 * 1024
    return config.max_body_bytes


class SecurityHeaders:
    """Pure ASGI middleware, the outermost: :data:`SECURITY_HEADERS` on every response (the
    refusals of :func:`guard` and of :class:`BodyLimit` included)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_hardened(message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in _HEADER_NAMES]
                message = {**message, "headers": headers + list(SECURITY_HEADERS)}
            await send(message)

        await self.app(scope, receive, send_hardened)


class BodyLimit:
    """Pure ASGI middleware, the innermost (below :func:`guard`, whose task group would wrap its
    error): :func:`body_limit` on every request body, 413 before anything is read when
    Content-Length is above it, else as soon as a chunked body passes it."""

    def __init__(self, app, config) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from fastapi import HTTPException

        limit = body_limit(self.config, scope.get("path", ""))
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _refuse(send, 400, "bad Content-Length")
                return
            if int(length) > limit:
                await _refuse(send, 413, _too_large(limit))
                return
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # a chunked body (no Content-Length) past the limit
                    raise HTTPException(413, _too_large(limit))
            return message

        async def tracked_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except HTTPException as exc:  # read outside a route (none today): answer it here
            if started or exc.status_code != 413:
                raise
            await _refuse(send, 413, str(exc.detail))


def _too_large(limit: int) -> str:
    size = f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit // 1024} KB"
    return f"request body too large (at most {size})"


async def _refuse(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
