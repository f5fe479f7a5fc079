"""``POST /api/predict``: uploaded photos through the server's model, one image at a time
(:class:`~facerec.serve.recognise.Recogniser`), answered like ``facerec predict --json``."""

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from facerec.errors import UnavailableError, shown
from facerec.serve.recognise import Upload
from facerec.serve.state import ServeConfig, State

router = APIRouter()


@router.post("/api/predict")
async def predict(request: Request, state: State) -> Any:
    """Multipart image(s) in field `files` (or `file`) -> `facerec predict --json`'s list:
    `[{"image", "faces": [{"box", "label", "confidence", "candidate", "probability",
    "detection_score", "source"}], "error", "width", "height"}]`. One unreadable image:
    4xx with the reason; several: each unreadable one has `error` set."""
    if not state.recogniser.ready:
        raise UnavailableError("no model yet: train one on the Train page (or `facerec "
                               "train`), or restart with --checkpoint_path CKPT")
    form = await read_form(request, state.config)
    try:  # the images stay in the form's spooled files until their turn (one at a time)
        uploads = form_uploads(form, state.config)
        results = await run_in_threadpool(state.recogniser.predict, uploads)
    finally:
        await form.close()
    if len(results) == 1 and results[0].error:
        status = 413 if results[0].error.startswith("too large") else 400
        raise HTTPException(status, f"cannot read {shown(results[0].image)}: {results[0].error}")
    return [r.to_dict() for r in results]


async def read_form(request: Request, config: ServeConfig) -> Any:
    """The multipart form of the request (its files spooled to disk by Starlette): the request
    size is checked before anything is read (Content-Length; the body limit of
    :class:`~facerec.serve.security.BodyLimit` holds for a chunked one). The HTTP-level refusals
    (411, 413, 415, a malformed multipart body) are ``HTTPException``s."""
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
        return await request.form(max_files=config.max_files, max_fields=config.max_files)
    except HTTPException:
        raise
    except Exception as exc:  # malformed multipart, too many files
        detail = str(getattr(exc, "detail", None) or exc)[:200]
        raise HTTPException(400, f"bad upload: {detail}") from None


def form_uploads(form: Any, config: ServeConfig) -> list[Upload]:
    """The images of the form (fields ``files``, ``file`` or ``image``), each at most
    ``max_upload_bytes``, as uploads that read their spooled file when their turn
    comes."""
    from starlette.datastructures import UploadFile

    limit = config.max_upload_bytes
    uploads = []
    for key, value in form.multi_items():
        if not isinstance(value, UploadFile) or key not in ("files", "file", "image"):
            continue
        name = (value.filename or f"upload-{len(uploads)}")[:255]
        size = value.size if value.size is not None else value.file.seek(0, 2)
        if size > limit:
            raise HTTPException(413, f"{shown(name)}: larger than {limit // (1024 * 1024)} MB")
        uploads.append(Upload(name=name, file=value.file))
    if not uploads:
        raise HTTPException(400, "no image in the request (multipart field: files)")
    return uploads
