"""The FastAPI application of ``facerec serve``: three pages and a REST API over one work folder.

:func:`create_app` puts together the server's shared objects (:class:`~facerec.serve.state.
ServeState`: settings, work folder, model, trainer, edit lock, manifest cache), the security
checks every route passes first (:mod:`facerec.serve.security`: token, Host, Origin), the one
error handler (a :class:`~facerec.errors.FacerecError` is answered with its class's HTTP status,
:data:`facerec.errors.ERROR_STATUS`) and the routers of :mod:`facerec.serve.routes`:

- pages: ``/people``, ``/train``, ``/recognise`` (``/`` redirects to ``/people``), static files
  under ``/static``, the OpenAPI docs at ``/docs`` (Swagger UI from pinned local files);
- ``GET /api/health``, ``GET /api/people``, ``GET /api/crops?folder=&offset=&limit=``,
  ``GET /api/crops/info?path=``, ``POST /api/people/{name}/rename``, ``POST /api/moves``,
  ``POST /api/undo``, ``POST /api/predict``, ``POST /api/train``, ``GET /api/train/{id}``;
- files: ``/files/{path}`` (images inside WORK_DIR), ``/photos/{path}`` (the source photos, only
  with ``--photos``).

Every edit of ``processed/`` goes through :mod:`facerec.annotate` (logged in
``processed/.facerec/moves.jsonl``, undone by ``facerec annotate --undo`` as well as by the page)
and is serialized by one lock, so two renames at once never interleave.

What a response shows: errors are ``{"detail": ...}`` with user input truncated and paths relative
to the work folder (never an absolute path); FastAPI's validation errors (422) without the input
they refuse; every response carries the headers of :data:`facerec.serve.security.
SECURITY_HEADERS` (no framing, scripts from this server only).
"""

from __future__ import annotations

import os
import secrets
import socket
import sys

from facerec._version import __version__
from facerec.errors import FacerecError, http_status
from facerec.safeio import oserror_message
from facerec.serve.security import is_loopback
from facerec.serve.state import ServeConfig, ServeState

__all__ = ["ServeConfig", "create_app", "resolve_token", "run_server"]


def create_app(config: ServeConfig):
    """The application for ``config`` (the model, if any, is loaded here, once)."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException

    from facerec.serve import security
    from facerec.serve.routes import docs, files, health, pages, people, predict, train

    state = ServeState.open(config)
    app = FastAPI(title="facerec", version=__version__,
                  description="Label, train and recognise faces. Send `Authorization: Bearer "
                  "TOKEN` when the server was started with a token.",
                  docs_url=None, redoc_url=None)  # /docs: routes/docs.py (local files)
    app.state.serve = state
    app.add_exception_handler(FacerecError, facerec_error_response)
    app.add_exception_handler(OSError, facerec_error_response)
    app.add_exception_handler(HTTPException, http_error_response)
    app.add_exception_handler(RequestValidationError, validation_error_response)
    app.add_middleware(security.BodyLimit, config=config)  # innermost: every request body
    app.middleware("http")(security.guard(config))  # every route: pages, files, API, docs
    app.add_middleware(security.SecurityHeaders)  # outermost: every response's headers
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    for module in (docs, files, health, people, predict, train):
        app.include_router(module.router)
    return app


def facerec_error_response(request, exc: FacerecError | OSError):
    """A :class:`FacerecError` (or an ``OSError``: a full disk...) raised by a route:
    ``{"detail": message}`` with the HTTP status of its class (:data:`facerec.errors.
    ERROR_STATUS`), paths in the message relative to the work folder."""
    from fastapi.responses import JSONResponse

    text = oserror_message(exc) if isinstance(exc, OSError) else str(exc)
    return JSONResponse({"detail": _brief(request.app.state.serve.public_text(text))},
                        status_code=http_status(exc))


def _brief(text: str, limit: int = 400) -> str:
    """An error's text cut to ``limit`` characters (a file name, a path can be long)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


async def http_error_response(request, exc):
    """An ``HTTPException`` (the HTTP-level refusals: 404, 411, 413, 415...): FastAPI's answer,
    its text with paths relative to the work folder."""
    from fastapi.exception_handlers import http_exception_handler

    if isinstance(exc.detail, str):
        exc.detail = _brief(request.app.state.serve.public_text(exc.detail))
    return await http_exception_handler(request, exc)


def validation_error_response(request, exc):
    """FastAPI's 422, without the refused input (FastAPI echoes it whole: a 300 MB name would
    come back in the answer): where, what, and the message, cut to 200 characters."""
    from fastapi.responses import JSONResponse

    errors = [{"loc": [str(part)[:60] for part in error.get("loc", ())][:8],
               "type": str(error.get("type", ""))[:60], "msg": str(error.get("msg", ""))[:200]}
              for error in exc.errors()[:20]]
    return JSONResponse({"detail": errors}, status_code=422)


# ------------------------------------------------------------------------------------- running
def resolve_token(host: str, token: str | None) -> tuple[str | None, bool]:
    """(token to require, whether it was generated). Loopback needs none unless given; any other
    host needs one, generated when not given."""
    token = token or os.environ.get("FACEREC_TOKEN") or None
    if token or is_loopback(host):
        return token, False
    return secrets.token_urlsafe(24), True


def run_server(config: ServeConfig, port: int = 8000, out=None) -> None:
    """Bind ``config.host:port`` (an OSError there is a one-line :class:`FacerecError`), print the
    address (and the token once, when generated), serve until Ctrl-C."""
    import uvicorn

    out = out or sys.stdout
    token, generated = resolve_token(config.host, config.token)
    config.token = token
    app = create_app(config)
    family = socket.AF_INET6 if ":" in config.host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((config.host.strip("[]"), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise FacerecError(f"cannot listen on {config.host}:{port}: "
                           f"{exc.strerror or exc}") from None
    bound = sock.getsockname()[1]
    shown = f"[{config.host.strip('[]')}]" if family == socket.AF_INET6 else config.host
    url = f"http://{shown}:{bound}/"
    for note in app.state.serve.notes:  # runs of processed/ finished after a kill
        print(f"note: {note}", file=out, flush=True)
    model = app.state.serve.recogniser.checkpoint
    print(f"facerec serve: {config.work_dir} on {url}"
          + (f" (model: {model})" if model else " (no model yet: train one on the Train page)"),
          file=out, flush=True)
    if token:
        print(f"token{' (generated, shown once)' if generated else ''}: open "
              f"{url}?token={token} or send 'Authorization: Bearer {token}'", file=out, flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
