"""Images from inside the work folder (crops, the confusion matrix) and, with ``--photos``, the
source photos: :func:`facerec.serve.files.safe_file` decides what may be sent."""

from fastapi import APIRouter
from fastapi.responses import FileResponse

from facerec.errors import NotFoundError
from facerec.serve.files import UnsafePath, safe_file
from facerec.serve.state import State

router = APIRouter()


@router.get("/files/{path:path}", include_in_schema=False)
def work_file(path: str, state: State):
    try:
        return FileResponse(safe_file(state.workspace.root, path))
    except UnsafePath:
        raise NotFoundError("not found") from None


@router.get("/photos/{path:path}", include_in_schema=False)
def photo_file(path: str, state: State):
    if state.workspace.photos is None:
        raise NotFoundError("no photos folder (start with --photos PHOTOS)")
    try:
        return FileResponse(safe_file(state.workspace.photos, path))
    except UnsafePath:
        raise NotFoundError("not found") from None
