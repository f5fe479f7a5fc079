"""The people page's API: the groups and crops of ``processed/`` (read), and its edits (rename,
move, undo), each through :mod:`facerec.annotate` (logged in ``processed/.facerec/moves.jsonl``,
undone by ``facerec annotate --undo`` as well as by the page) and serialized by the edit lock,
so two renames at once never interleave."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

import facerec.annotate as ann
from facerec.errors import InvalidInputError, NotFoundError, shown
from facerec.serve.files import UnsafePath, safe_file, safe_folder
from facerec.serve.people import crop_info, list_crops, list_groups
from facerec.serve.state import ServeState, State

PAGE_SIZE_MAX = 500
#: the longest text field taken (a person name is at most 100 characters: facerec.crops)
TEXT_MAX = 1000

router = APIRouter()


class RenameBody(BaseModel):
    new_name: str = Field(..., max_length=TEXT_MAX,
                          description="new name; an existing person = merge")


class MovesBody(BaseModel):
    to: str = Field(..., max_length=TEXT_MAX,
                    description="a person (created if new), _rejected or _singletons")
    crops: list[Annotated[str, Field(max_length=TEXT_MAX)]] = Field(
        default_factory=list, max_length=100_000, description="crop paths relative to processed/")
    folder: str | None = Field(None, max_length=TEXT_MAX, description="or: every crop of this "
                               "folder (e.g. _suggested/alice to accept all suggestions)")


# --------------------------------------------------------------------------------------- reading
@router.get("/api/people")
def people(state: State) -> dict[str, Any]:
    """Every group of crops in processed/: person folders, loose crops, suggestions,
    singletons, other people of albums, rejected; with counts and up to 4 cover crops."""
    return {"groups": list_groups(state.workspace.processed)}


@router.get("/api/crops")
def crops(state: State, folder: str = "", offset: int = Query(0, ge=0),
          limit: int = Query(60, ge=1, le=PAGE_SIZE_MAX)) -> dict[str, Any]:
    """One page of the crops of a folder (relative to processed/; "" = loose crops)."""
    processed = state.workspace.processed
    try:
        safe_folder(processed, folder)
    except UnsafePath:
        raise NotFoundError(f"no such folder: {shown(folder)}") from None
    return list_crops(processed, folder, offset, limit)


@router.get("/api/crops/info")
def info(path: str, state: State) -> dict[str, Any]:
    """The source photo and face box of a crop (from processed/manifest.jsonl)."""
    try:
        safe_file(state.workspace.processed, path)
    except UnsafePath:
        raise NotFoundError(f"no such crop: {shown(path)}") from None
    return crop_info(state.manifest.get(), path, state.workspace.photos)


# --------------------------------------------------------------------------------------- editing
def _edit(state: ServeState, fn, *args) -> dict[str, Any]:
    """``fn(processed, *args)`` under the edit lock; its :class:`~facerec.annotate.EditResult`
    as JSON. A :class:`~facerec.errors.FacerecError` or an ``OSError`` (a full disk...) goes to
    the app's handler: the edit was put back, and the log is as it was."""
    with state.edit_lock:
        result = fn(state.workspace.processed, *args)
    return {"op": result.op, "moved": result.moved, "renamed": [list(r) for r in result.renamed],
            "merged": result.merged,
            "moves": [{"src": m.src, "dst": m.dst} for m in result.moves[:1000]],
            "recovered": [state.public_text(line) for line in result.recovered]}


@router.post("/api/people/{name}/rename")
def rename(name: str, body: RenameBody, state: State) -> dict[str, Any]:
    """Rename a person folder (e.g. person_03 -> alice); an existing name merges the two.
    Logged in moves.jsonl: `POST /api/undo` or `facerec annotate --undo` reverts it."""
    return _edit(state, ann.rename_person, name, body.new_name)


@router.post("/api/moves")
def moves(body: MovesBody, state: State) -> dict[str, Any]:
    """Move crops to a person, a new person, _rejected or _singletons (accept a suggestion:
    move it to its person; refuse it: to _singletons). Logged, undoable."""
    processed = state.workspace.processed
    crops = list(body.crops)
    if body.folder is not None:
        try:
            safe_folder(processed, body.folder)
        except UnsafePath:
            raise NotFoundError(f"no such folder: {shown(body.folder)}") from None
        crops += list_crops(processed, body.folder, 0, 10**9)["crops"]
    if not crops:
        raise InvalidInputError("no crops given")
    return _edit(state, ann.move_crops, crops, body.to)


@router.post("/api/undo")
def undo(state: State) -> dict[str, Any]:
    """Undo the last logged operation (a page action or an annotate run): ``what`` it was in
    words, ``crops`` put back."""
    with state.edit_lock:
        result = ann.undo(state.workspace.processed)
    return {"op": result.op, "restored": result.restored, "removed_dirs": result.removed_dirs,
            "command": result.command, "what": result.what, "crops": result.crops,
            "kept": result.kept}


@router.post("/api/cluster")
def cluster(state: State) -> dict[str, Any]:
    """Cluster the loose crops (and those seen once) as ``facerec annotate`` does: clusters of one
    person into new person_NN folders, faces close to a named person into _suggested/, poor crops
    into _rejected/. Logged like an annotate run: `POST /api/undo` reverts it. The embedder is
    annotate's: the model the folder's crops were cut for."""
    with state.edit_lock:
        # a FacerecError or an OSError goes to the app's handler (paths made relative there)
        result = ann.annotate(state.workspace.processed, embedder=None, progress=False,
                              device=state.config.device)
    return {"op": result.op, "loose": result.loose, "clusters": result.clusters,
            "singletons": result.singletons, "suggested": result.suggested,
            "rejected": dict(result.rejected), "moved": len(result.moves)}
