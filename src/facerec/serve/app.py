"""The FastAPI application of ``facerec serve``: three pages and a REST API over one work folder.

Routes (every one checks the token when there is one, see :func:`_authorised`):

- pages: ``/people``, ``/train``, ``/recognise`` (``/`` redirects to ``/people``), static files
  under ``/static``, FastAPI's OpenAPI docs at ``/docs``;
- ``GET /api/health``, ``GET /api/people``, ``GET /api/crops?folder=&offset=&limit=``,
  ``GET /api/crops/info?path=``, ``POST /api/people/{name}/rename``, ``POST /api/moves``,
  ``POST /api/undo``, ``POST /api/predict``, ``POST /api/train``, ``GET /api/train/{id}``;
- files: ``/files/{path}`` (images inside WORK_DIR), ``/photos/{path}`` (the source photos, only
  with ``--photos``).

Every edit of ``processed/`` goes through :mod:`facerec.annotate` (logged in
``processed/.facerec/moves.jsonl``, undone by ``facerec annotate --undo`` as well as by the page)
and is serialized by one lock, so two renames at once never interleave.
"""

# no ``from __future__ import annotations``: FastAPI reads the route signatures' types at runtime
import hmac
import ipaddress
import os
import secrets
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Query, Request
from pydantic import BaseModel, Field

from facerec.errors import (FacerecError, InvalidInputError, NotFoundError, UnavailableError,
                            http_status)
from facerec.workspace import Workspace

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "facerec_token"
PAGES = ("people", "train", "recognise")


def render_page(name: str) -> str:
    """Page NAME: its body (static/NAME.html) in the shell every page shares (static/page.html:
    head, scripts, navigation)."""
    from string import Template

    here = {other: ' class="here"' if other == name else "" for other in PAGES}
    nav = "".join(f'<a{here[other]} href="/{other}">{other.capitalize()}</a>' for other in PAGES)
    shell = Template((STATIC / "page.html").read_text(encoding="utf-8"))
    return shell.substitute(name=name, nav=nav, body=(STATIC / f"{name}.html").read_text(encoding="utf-8"))
PAGE_SIZE_MAX = 500


@dataclass
class ServeConfig:
    work_dir: Path
    checkpoint: Path | None = None
    photos_dir: Path | None = None
    token: str | None = None            # None: no token needed (loopback only)
    device: str = "auto"
    max_upload_bytes: int = 20 * 1024 * 1024   # per image
    max_files: int = 16                        # per predict request
    host: str = "127.0.0.1"

    @property
    def workspace(self) -> Workspace:
        return Workspace(self.work_dir, photos=self.photos_dir)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------------------ request bodies
class RenameBody(BaseModel):
    new_name: str = Field(..., description="new name; an existing person = merge")


class MovesBody(BaseModel):
    to: str = Field(..., description="a person (created if new), _rejected or _singletons")
    crops: list[str] = Field(default_factory=list, max_length=100_000,
                             description="crop paths relative to processed/")
    folder: str | None = Field(None, description="or: every crop of this folder "
                               "(e.g. _suggested/alice to accept all suggestions)")


class TrainBody(BaseModel):
    max_epochs: int = Field(30, ge=1, le=1000)
    backbone: str = Field("dlib_face", max_length=100)
    val: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, ge=0, lt=1)
    seed: int = 42


# ------------------------------------------------------------------------------------------ app
def create_app(config: ServeConfig):
    """The application for ``config`` (the model, if any, is loaded here, once)."""
    from fastapi.responses import (FileResponse, HTMLResponse, JSONResponse, RedirectResponse,
                                   Response)
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool

    import facerec.annotate as ann
    from facerec.serve.files import UnsafePath, safe_file, safe_folder
    from facerec.serve.people import ManifestCache, crop_info, list_crops, list_groups
    from facerec.serve.recognise import Recogniser
    from facerec.serve.training import TrainManager
    from facerec.workflow import TrainOptions

    workspace = config.workspace
    work, processed = workspace.root, workspace.processed
    if not processed.is_dir():
        raise NotFoundError(f"no processed/ folder in {work} (give a `facerec run` work folder, "
                            "or any folder with processed/)")
    recogniser = Recogniser(device=config.device)
    checkpoint = config.checkpoint or workspace.best_checkpoint()
    if checkpoint is not None:
        recogniser.load(checkpoint)
    edit_lock = threading.Lock()
    trainer = TrainManager(workspace, recogniser, edit_lock, device=config.device)
    manifest = ManifestCache(processed)

    app = FastAPI(title="facerec", version=_version(),
                  description="Label, train and recognise faces. Send `Authorization: Bearer "
                  "TOKEN` when the server was started with a token.")
    app.state.config, app.state.recogniser, app.state.trainer = config, recogniser, trainer
    app.state.edit_lock = edit_lock
    app.add_exception_handler(FacerecError, facerec_error_response)

    # ---- token, Host and Origin checks, for every route (pages, files, API, docs)
    @app.middleware("http")
    async def guard(request: Request, call_next):
        if not _host_allowed(request, config):
            # a page on another site resolving its own name to 127.0.0.1 (DNS rebinding)
            return JSONResponse({"detail": "unexpected Host header"}, status_code=400)
        if request.method not in ("GET", "HEAD") and not _same_origin(request):
            # another site's page posting to this server through the user's browser
            return JSONResponse({"detail": "cross-origin request refused"}, status_code=403)
        query_token = request.query_params.get("token")
        if config.token and query_token is not None and request.method == "GET" \
                and not request.url.path.startswith("/api/"):
            # a link with ?token=: check it, keep it in a cookie and drop it from the address bar
            if not hmac.compare_digest(query_token.encode(), config.token.encode()):
                return _unauthorised(request)
            target = request.url.remove_query_params("token")
            response = RedirectResponse(str(target.path) + (f"?{target.query}" if target.query
                                                            else ""), status_code=303)
            response.set_cookie(COOKIE, config.token, httponly=True, samesite="strict")
            return response
        if not _authorised(request, config.token):
            return _unauthorised(request)
        return await call_next(request)

    # ---- pages
    @app.get("/", include_in_schema=False)
    def index():
        return RedirectResponse("/people", status_code=303)

    def page(name: str):
        html = render_page(name)

        def handler():
            return HTMLResponse(html, headers={"Cache-Control": "no-store"})
        app.get(f"/{name}", include_in_schema=False)(handler)

    for name in PAGES:
        page(name)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)  # no icon; spares the browser console a 404

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ---- files
    @app.get("/files/{path:path}", include_in_schema=False)
    def work_file(path: str):
        try:
            return FileResponse(safe_file(work, path))
        except UnsafePath:
            raise NotFoundError("not found") from None

    @app.get("/photos/{path:path}", include_in_schema=False)
    def photo_file(path: str):
        if config.photos_dir is None:
            raise HTTPException(404, "no photos folder (start with --photos PHOTOS)")
        try:
            return FileResponse(safe_file(config.photos_dir, path))
        except UnsafePath:
            raise NotFoundError("not found") from None

    # ---- API: health, people
    @app.get("/api/health")
    def health() -> dict[str, Any]:
        """Whether the server is up, the model it recognises with, and the training state."""
        job = trainer.running()
        return {"status": "ok", "version": _version(), "work_dir": str(work),
                "model": recogniser.info(), "photos": config.photos_dir is not None,
                "training": job.id if job else None}

    @app.get("/api/people")
    def people() -> dict[str, Any]:
        """Every group of crops in processed/: person folders, loose crops, suggestions,
        singletons, other people of albums, rejected; with counts and up to 4 cover crops."""
        return {"groups": list_groups(processed)}

    @app.get("/api/crops")
    def crops(folder: str = "", offset: int = Query(0, ge=0),
              limit: int = Query(60, ge=1, le=PAGE_SIZE_MAX)) -> dict[str, Any]:
        """One page of the crops of a folder (relative to processed/; "" = loose crops)."""
        try:
            safe_folder(processed, folder)
        except UnsafePath:
            raise NotFoundError(f"no such folder: {folder}") from None
        return list_crops(processed, folder, offset, limit)

    @app.get("/api/crops/info")
    def info(path: str) -> dict[str, Any]:
        """The source photo and face box of a crop (from processed/manifest.jsonl)."""
        try:
            safe_file(processed, path)
        except UnsafePath:
            raise NotFoundError(f"no such crop: {path}") from None
        return crop_info(manifest.get(), path, config.photos_dir)



    def edit(fn, *args) -> dict[str, Any]:
        with edit_lock:
            try:
                result = fn(*args)
            except OSError as exc:
                raise HTTPException(http_status(exc), f"{exc.strerror or exc}: "
                                    f"{exc.filename or ''}") from None
        return _edit_dict(result)

    @app.post("/api/people/{name}/rename")
    def rename(name: str, body: RenameBody) -> dict[str, Any]:
        """Rename a person folder (e.g. person_03 -> alice); an existing name merges the two.
        Logged in moves.jsonl: `POST /api/undo` or `facerec annotate --undo` reverts it."""
        return edit(ann.rename_person, processed, name, body.new_name)

    @app.post("/api/moves")
    def moves(body: MovesBody) -> dict[str, Any]:
        """Move crops to a person, a new person, _rejected or _singletons (accept a suggestion:
        move it to its person; refuse it: to _singletons). Logged, undoable."""
        crops = list(body.crops)
        if body.folder is not None:
            try:
                safe_folder(processed, body.folder)
            except UnsafePath:
                raise NotFoundError(f"no such folder: {body.folder}") from None
            crops += list_crops(processed, body.folder, 0, 10**9)["crops"]
        if not crops:
            raise InvalidInputError("no crops given")
        return edit(ann.move_crops, processed, crops, body.to)

    @app.post("/api/undo")
    def undo() -> dict[str, Any]:
        """Undo the last logged operation (a page action or an annotate run)."""
        with edit_lock:
            result = ann.undo(processed)
        return {"op": result.op, "restored": result.restored, "removed_dirs": result.removed_dirs}

    # ---- API: predict
    @app.post("/api/predict")
    async def predict(request: Request) -> Any:
        """Multipart image(s) in field `files` (or `file`) -> `facerec predict --json`'s list:
        `[{"image", "faces": [{"box", "label", "confidence", "candidate", "probability",
        "detection_score", "source"}], "error", "width", "height"}]`. One unreadable image:
        4xx with the reason; several: each unreadable one has `error` set."""
        if not recogniser.ready:
            raise UnavailableError("no model yet: train one on the Train page (or `facerec "
                                   "train`), or restart with --checkpoint_path CKPT")
        uploads = await _read_uploads(request, config)
        results = await run_in_threadpool(recogniser.predict, uploads)
        if len(results) == 1 and results[0].error:
            status = 413 if results[0].error.startswith("too large") else 400
            raise HTTPException(status, f"cannot read {results[0].image}: {results[0].error}")
        return [r.to_dict() for r in results]

    # ---- API: train

    @app.post("/api/train", status_code=202)
    def train(body: TrainBody) -> dict[str, Any]:
        """Start split + train + evaluate on the person folders; the new model then recognises.
        Poll `GET /api/train/{id}`."""
        return trainer.start(TrainOptions(**body.model_dump())).to_dict()

    @app.get("/api/train/{job_id}")
    def train_status(job_id: str) -> dict[str, Any]:
        """state (running, done, failed), stage, epoch, per-epoch metrics, result or error."""
        job = trainer.jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no such training job: {job_id}")
        return job.to_dict()

    @app.get("/api/train")
    def train_jobs() -> dict[str, Any]:
        """Every job of this server run, newest last."""
        return {"jobs": [j.to_dict() for j in trainer.jobs.values()]}

    return app


# ------------------------------------------------------------------------------------- helpers
def _version() -> str:
    from facerec._version import __version__

    return __version__


def _bearer(request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _authorised(request, token: str | None) -> bool:
    """No token configured: everyone (loopback only). Otherwise the bearer header or the cookie
    set from a ``?token=`` link, compared in constant time."""
    if not token:
        return True
    for given in (_bearer(request), request.cookies.get(COOKIE)):
        if given and hmac.compare_digest(given.encode(), token.encode()):
            return True
    return False


def _unauthorised(request):
    from fastapi.responses import HTMLResponse, JSONResponse

    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": "missing or wrong token (send Authorization: Bearer "
                             "TOKEN)"}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
    return HTMLResponse("<!doctype html><title>facerec: token needed</title><p>This facerec "
                        "server needs its token: open the link it printed when it started "
                        "(<code>http://HOST:PORT/?token=...</code>).</p>", status_code=401)


def _host_allowed(request, config: ServeConfig) -> bool:
    """On loopback without a token, only loopback Host names: a DNS-rebinding page (evil.example
    resolving to 127.0.0.1) sends its own name and is refused. With a token, any Host."""
    if config.token:
        return True
    host = request.headers.get("host", "")
    name = urlsplit(f"//{host}").hostname or ""
    return name == "" or is_loopback(name)


def _same_origin(request) -> bool:
    """A browser sends Origin with a cross-site POST; it must name this server. Clients that are
    not browsers (curl, scripts) send none and pass."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")


def facerec_error_response(request, exc: FacerecError):
    """A :class:`FacerecError` raised by a route: ``{"detail": message}`` with the HTTP status of
    its class (:data:`facerec.errors.ERROR_STATUS`)."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"detail": str(exc)}, status_code=http_status(exc))


def _edit_dict(result) -> dict[str, Any]:
    return {"op": result.op, "moved": result.moved, "renamed": [list(r) for r in result.renamed],
            "merged": result.merged,
            "moves": [{"src": m.src, "dst": m.dst} for m in result.moves[:1000]]}


async def _read_uploads(request, config: ServeConfig) -> list:
    """The uploaded images, each at most ``max_upload_bytes``: the request size is checked before
    anything is read (Content-Length), then each file as it is read."""
    from fastapi import HTTPException
    from starlette.datastructures import UploadFile

    from facerec.serve.recognise import Upload

    limit = config.max_upload_bytes
    length = request.headers.get("content-length")
    if length is None:
        raise HTTPException(411, "Content-Length required")
    try:
        total = int(length)
    except ValueError:
        raise HTTPException(400, "bad Content-Length") from None
    if total > limit * config.max_files + 64 * 1024:
        raise HTTPException(413, f"request too large: at most {config.max_files} images of "
                            f"{limit // (1024 * 1024)} MB")
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise HTTPException(415, "send the images as multipart/form-data (field: files)")
    try:
        form = await request.form(max_files=config.max_files, max_fields=config.max_files)
    except HTTPException:
        raise
    except Exception as exc:  # malformed multipart, too many files
        raise HTTPException(400, f"bad upload: {getattr(exc, 'detail', None) or exc}") from None
    uploads = []
    try:
        for key, value in form.multi_items():
            if not isinstance(value, UploadFile) or key not in ("files", "file", "image"):
                continue
            data = await value.read(limit + 1)
            if len(data) > limit:
                raise HTTPException(413, f"{value.filename}: larger than "
                                    f"{limit // (1024 * 1024)} MB")
            uploads.append(Upload(name=value.filename or f"upload-{len(uploads)}", data=data))
    finally:
        await form.close()
    if not uploads:
        raise HTTPException(400, "no image in the request (multipart field: files)")
    return uploads


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
    model = app.state.recogniser.checkpoint
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
