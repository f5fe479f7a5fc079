"""The checks every request of ``facerec serve`` passes first (pages, files, API, docs): the Host
header (DNS rebinding), the Origin of a state-changing request (cross-site posts) and the token.

No token configured: everyone, on loopback only. Otherwise the ``Authorization: Bearer TOKEN``
header, or the cookie set when a page is opened with the printed ``?token=`` link (the API takes
the header only), compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

COOKIE = "facerec_token"


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
            response = RedirectResponse(str(target.path) + (f"?{target.query}" if target.query
                                                            else ""), status_code=303)
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
