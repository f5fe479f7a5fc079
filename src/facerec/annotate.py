"""``facerec annotate processed/``: assisted labelling of face crops.

- Loose crops (directly in ``processed/``, plus earlier ``_singletons/``) are grouped by identity
  into ``person_01/``, ``person_02/``, ... (largest first) for the user to rename. Faces nobody
  else matches go to ``_singletons/``.
- Crops unlikely to be faces or too poor to use go to ``_rejected/`` (``_rejected/<person>/`` when
  they came from a person folder): low detector score, tiny face, failed landmark fit, unreadable.
- When named person folders exist, a loose crop close to a known person is suggested in
  ``_suggested/<person>/`` instead of being clustered.
- Album mode (folders that ``facerec detect`` filled from per-person albums, or ``albums=True``):
  crops that are not the folder's dominant identity (other people in group photos) move to
  ``_others/<person>/`` for review.

Every move is written to ``processed/.facerec/moves.jsonl`` before it happens, and
:func:`undo` puts the files of the last run back where they were. Nothing is ever deleted.
One writer at a time: annotate and undo hold the lock of ``processed/`` (:mod:`facerec.safeio`).
A run killed midway (a ``begin`` without ``end`` in the log) is recognised by the next one, which
first puts back the files it had moved (and an interrupted undo is finished), and says so.

Clustering: scikit-learn's agglomerative clustering with Ward linkage on the face embeddings
(threshold 1.0 for dlib's 128-d descriptor), then every member whose mean distance to the other
members of its cluster exceeds 0.65 is split off (the same-person distance of dlib is ~0.6), so
that a stranger or a pair of strangers is never glued into a "person". On the 5-person celebrities
set this gives 6 pure clusters; on 96 LFW people, 107 clusters at 0.99 purity (bench/annotate.py).
"""

from __future__ import annotations

import functools
import json
import os
import stat
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facerec.crops import (
    CropInfo,
    Manifest,
    check_person_name,
    is_image,
    is_person_folder,
    list_images,
    person_folders,
    require_folder,
)
from facerec.errors import ConflictError, InvalidInputError, NotFoundError, shown
from facerec.safeio import META_DIR, display_path, folder_lock

MOVES_LOG = "moves.jsonl"
REJECTED = "_rejected"
SINGLETONS = "_singletons"
SUGGESTED = "_suggested"
OTHERS = "_others"

#: the folders annotate makes for its clusters: person_01, person_02, ... (largest first)
CLUSTER_PREFIX = "person_"


def is_unnamed_cluster(name: str) -> bool:
    """A person folder still named the way annotate named its cluster (``person_07``): nobody has
    given it a person's name yet."""
    number = name[len(CLUSTER_PREFIX):]
    return name.startswith(CLUSTER_PREFIX) and number.isascii() and number.isdigit()


#: thresholds on distances come from the embedder (Embedder.cluster_threshold...); these do not
SUGGEST_K = 3                    # a crop is compared with this many nearest crops of a person
DEFAULT_MIN_FACE = 24            # detector box side (original pixels) below which it is rejected
DEFAULT_MAX_FIT_ERROR = 0.45     # landmark fit vs detector eyes, in inter-ocular distances


@dataclass
class Move:
    src: str      # posix path relative to processed/
    dst: str
    reason: str


@dataclass
class AnnotateResult:
    processed_dir: str
    op: str | None = None
    dry_run: bool = False
    loose: int = 0
    known_people: int = 0
    clusters: dict[str, int] = field(default_factory=dict)     # new person_NN -> crops
    singletons: int = 0
    suggested: dict[str, int] = field(default_factory=dict)    # person -> crops
    others: dict[str, int] = field(default_factory=dict)       # album person -> crops
    rejected: Counter = field(default_factory=Counter)         # reason -> crops
    moves: list[Move] = field(default_factory=list)
    embedded: int = 0
    embedded_cached: int = 0
    embed_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)  # interrupted runs found and rolled back


@dataclass
class UndoResult:
    processed_dir: str
    op: str
    restored: int                   # moves put back (a folder renamed back counts once)
    removed_dirs: list[str]
    command: str = ""               # what the op was: annotate, move, rename (its log's begin)
    what: str = ""                  # that, in words: "move to _rejected", "rename person_03 to alice"
    crops: int = 0                  # crop files back where they were (those of renamed folders too)
    kept: int = 0                   # files a later operation had moved on: left where they are


def describe_op(command: str, params: dict | None) -> str:
    """An operation of the moves log in words, as the people page and ``--undo`` say it."""
    params = params or {}
    if command == "move" and params.get("to"):
        return f"move to {params['to']}"
    if command == "rename" and params.get("name"):
        return f"rename {params['name']} to {params.get('new_name')}"
    if command == "annotate":
        return "annotate run (clustering, suggestions, rejections)"
    return command or "operation"


# ------------------------------------------------------------------------------------ clustering
def cluster_embeddings(vecs: np.ndarray, threshold: float = 1.0,
                       member_distance: float = 0.65,
                       sources: list[str] | None = None,
                       pair_distance: float | None = None) -> np.ndarray:
    """Cluster labels 0..K-1 ordered by cluster size (largest first, then first member).

    Ward-linkage agglomerative clustering cut at ``threshold``; then, repeatedly, the member whose
    mean distance to the rest of its cluster is largest is split off while that distance exceeds
    ``member_distance``, or while it shares its ``sources`` entry (the photo it was cut from)
    with another member: two faces of one photo are two people. A cluster of two is one person
    only if the pair is within ``pair_distance`` (the embedder's ``suggest_distance``: one pair
    is a single measurement, not the mean of many). The defaults suit dlib's descriptor.
    """
    from sklearn.cluster import AgglomerativeClustering

    vecs = np.asarray(vecs, np.float64)
    n = len(vecs)
    if n == 0:
        return np.zeros(0, dtype=int)
    if n == 1:
        return np.zeros(1, dtype=int)
    labels = AgglomerativeClustering(n_clusters=None, distance_threshold=threshold,
                                     linkage="ward").fit_predict(np.asarray(vecs, np.float64))
    labels = labels.copy()
    next_label = labels.max() + 1
    for c in np.unique(labels):
        idx = list(np.where(labels == c)[0])
        while len(idx) >= 2:
            sub = vecs[idx]
            d = np.sqrt(np.maximum(((sub[:, None, :] - sub[None, :, :]) ** 2).sum(-1), 0))
            mean = d.sum(1) / (len(idx) - 1)
            worst = int(np.argmax(mean))
            too_far = mean[worst] > member_distance or (
                len(idx) == 2 and pair_distance is not None and d[0, 1] > pair_distance)
            if not too_far:
                shared = _sharing_a_source([sources[i] for i in idx]) if sources else []
                if not shared:
                    break
                worst = max(shared, key=lambda k: mean[k])
            labels[idx[worst]] = next_label
            next_label += 1
            idx.pop(worst)
    # relabel: largest cluster first, ties by first member
    order = sorted(np.unique(labels), key=lambda c: (-(labels == c).sum(), np.where(labels == c)[0][0]))
    remap = {c: i for i, c in enumerate(order)}
    return np.array([remap[c] for c in labels], dtype=int)


def _sharing_a_source(sources: list[str]) -> list[int]:
    """Positions of the entries whose source another entry has too."""
    counts: dict[str, int] = {}
    for src in sources:
        counts[src] = counts.get(src, 0) + 1
    return [k for k, src in enumerate(sources) if counts[src] > 1]


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


# ------------------------------------------------------------------------------------- moves log
class MoveLog:
    """Append-only ``processed/.facerec/moves.jsonl``: one line per event of an operation."""

    def __init__(self, processed: Path) -> None:
        self.processed = processed
        self.path = processed / META_DIR / MOVES_LOG

    def events(self) -> list[dict]:
        if not self.path.is_file():
            return []
        out = []
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue  # a torn last line from a killed run
                if isinstance(ev, dict) and "op" in ev:
                    out.append(ev)
        return out

    def append(self, events: list[dict]) -> int:
        """Append ``events``; returns the log's size before (see :meth:`truncate`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab+") as handle:
            end = handle.seek(0, os.SEEK_END)
            if end > 0:  # a line torn by a kill or a full disk: end it, so ours stay whole
                handle.seek(end - 1)
                if handle.read(1) != b"\n":
                    handle.write(b"\n")
            for ev in events:
                handle.write((json.dumps(ev) + "\n").encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        return end

    def truncate(self, size: int) -> None:
        """Cut the log back to ``size`` bytes (what :meth:`append` returned): an operation that
        failed and was put back leaves the log as it was."""
        with open(self.path, "rb+") as handle:
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())


def _new_op_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


# -------------------------------------------------------------------------------------- annotate
def annotate(processed_dir: str | os.PathLike, *, threshold: float | None = None,
             member_distance: float | None = None, suggest_distance: float | None = None,
             album_distance: float | None = None, albums: bool | None = None,
             reject: bool = True, min_score: float | None = None,
             min_face: float = DEFAULT_MIN_FACE, max_fit_error: float = DEFAULT_MAX_FIT_ERROR,
             dry_run: bool = False, embedder: Any = None, cache: Any = None,
             progress: bool = True, device: str = "auto",
             embed_engine: Any = None) -> AnnotateResult:
    """Sort the crops of ``processed_dir`` (see the module docstring). Returns what was done.

    ``albums``: None = album mode for person folders that ``facerec detect`` filled from albums
    (the manifest says their crops were written there), True = for every person folder, False =
    never. ``dry_run``: plan only, move nothing. ``embedder``: a name or an embedder (default:
    the model the crops were cut for, :func:`facerec.recognition.backbones.backbone_for_crops`,
    on ``device``); the thresholds default to that embedder's; ``min_score`` to the operating
    point of the detector the crops were made with (its ``default_min_score``). ``cache``:
    embedding cache (see :func:`facerec.recognition.embed.embed_files`); ``embed_engine``: where
    the crops missing from it are embedded (``engine`` of that function, such as
    :class:`facerec.distributed.embed.RayEmbedEngine`; None: this process).
    """
    processed = require_folder(processed_dir)
    if embedder is None:
        from facerec.cropspec import read_processed_spec
        from facerec.recognition.backbones import backbone_for_crops

        embedder = backbone_for_crops(read_processed_spec(processed))
    if isinstance(embedder, str):
        from facerec.recognition.embed import get_embedder

        embedder = get_embedder(embedder, device=device)
    if dry_run:  # plans only: never waits for, or changes, anything
        return _annotate(processed, threshold, member_distance, suggest_distance, album_distance,
                         albums, reject, min_score, min_face, max_fit_error, dry_run, embedder,
                         cache, progress, embed_engine)
    with folder_lock(processed, "annotate"):
        recovered = recover_interrupted(processed)
        result = _annotate(processed, threshold, member_distance, suggest_distance,
                           album_distance, albums, reject, min_score, min_face, max_fit_error,
                           dry_run, embedder, cache, progress, embed_engine)
        result.recovered = recovered
        return result


def _annotate(processed: Path, threshold, member_distance, suggest_distance, album_distance,
              albums, reject, min_score, min_face, max_fit_error, dry_run, embedder, cache,
              progress, embed_engine=None) -> AnnotateResult:
    from facerec.recognition.embed import EmbedStats, embed_files, get_embedder

    emb = get_embedder(embedder) if isinstance(embedder, str) else embedder
    # defaults suited to the embedder (dlib: 1.0, 0.65, 0.55, 0.6)
    threshold = emb.cluster_threshold if threshold is None else float(threshold)
    member_distance = emb.member_distance if member_distance is None else float(member_distance)
    suggest_distance = emb.suggest_distance if suggest_distance is None else float(suggest_distance)
    album_distance = emb.album_distance if album_distance is None else float(album_distance)
    if min_score is None:  # the score scale is the detector's that found these crops
        from facerec.cropspec import CropSpec, read_processed_spec
        from facerec.detection.detect import detector_class

        spec = read_processed_spec(processed) or CropSpec()
        min_score = detector_class(spec.detector_name).default_min_score
    result = AnnotateResult(processed_dir=str(processed), dry_run=dry_run)

    if dry_run:
        pending = [op for op, _ in _interrupted(MoveLog(processed).events())]
        if pending:
            result.warnings.append(f"run {pending[-1]} was interrupted; a real run first puts back "
                                   "the files it moved (this plan does not account for that)")
    manifest = Manifest(processed)
    loose_paths = list_images(processed) + list_images(processed / SINGLETONS)
    people = person_folders(processed)
    album_names = _album_folders(people, manifest, albums)
    result.loose = len(loose_paths)
    result.known_people = sum(1 for files in people.values() if files)
    if not loose_paths and not any(people.values()):
        raise NotFoundError(f"no face crops in {processed} (run `facerec detect PHOTOS --out "
                            f"{processed}` first)")

    infos: list[CropInfo] = [manifest.info(p) for p in loose_paths]
    person_of: list[str | None] = [None] * len(infos)
    for name, files in people.items():
        for p in files:
            infos.append(manifest.info(p))
            person_of.append(name)
    stats = EmbedStats()
    vecs, quality = embed_files([i.path for i in infos], emb, cache=cache, progress=progress,
                                landmarks=[i.landmarks for i in infos], return_quality=True,
                                on_error="nan", stats=stats, engine=embed_engine)
    result.embedded, result.embedded_cached = stats.computed, stats.cached
    result.embed_seconds = stats.seconds

    plan = _Plan(infos, person_of, vecs, len(loose_paths), result)
    _reject_poor(plan, quality, album_names, reject, min_score, min_face, max_fit_error)
    for name in sorted(album_names):
        _album_others(plan, name, threshold, member_distance, album_distance)
    _suggest(plan, people, suggest_distance)
    _cluster(plan, threshold, member_distance, set(people) | {
        p.name for p in processed.iterdir() if p.is_dir()}, pair_distance=suggest_distance)
    moves = plan.moves

    moves = _dedupe_targets(processed, [m for m in moves if m.src != m.dst])
    result.moves = moves
    if dry_run or not moves:
        return result
    result.op = _apply(processed, moves, {
        "threshold": threshold, "member_distance": member_distance,
        "suggest_distance": suggest_distance, "album_distance": album_distance,
        "albums": sorted(album_names), "reject": reject, "min_score": min_score,
        "min_face": min_face, "max_fit_error": max_fit_error, "embedder": emb.cache_id})
    return result


@dataclass
class _Plan:
    """The crops annotate decides on (loose ones first) and what it has decided so far."""

    infos: list[CropInfo]
    person_of: list[str | None]  # the person folder a crop is in (None: loose)
    vecs: np.ndarray
    n_loose: int
    result: AnnotateResult
    moves: list[Move] = field(default_factory=list)
    status: list[str] = field(default_factory=list)  # "" = still to decide

    def __post_init__(self) -> None:
        self.status = ["" for _ in self.infos]

    def move(self, i: int, target: str, why: str) -> None:
        self.moves.append(Move(self.infos[i].rel, f"{target}/{self.infos[i].path.name}", why))


def _reject_poor(plan: _Plan, quality: list, album_names: set[str], reject: bool, min_score: float,
                 min_face: float, max_fit_error: float) -> None:
    """Unreadable crops, and (REJECT) low-score, tiny or badly fitted ones, go to _rejected/; the
    user's labelled crops (person folders that are not albums) are never touched."""
    # fit errors are only meaningful if the manifest landmarks map into the crops as expected
    fit_errors = [q.fit_error for q in quality if q.fit_error is not None]
    trust_fit = bool(fit_errors) and np.mean(np.array(fit_errors) > max_fit_error) < 0.5
    if fit_errors and not trust_fit:
        plan.result.warnings.append("most crops disagree with the manifest landmarks: landmark-fit "
                                    "check skipped (were the crops made with other settings?)")

    def reason(i: int) -> str | None:
        q, info = quality[i], plan.infos[i]
        if q.error:
            return "unreadable"
        if not reject:
            return None
        if info.score is not None and info.score < min_score:
            return "low detector score"
        if info.face_size is not None and info.face_size < min_face:
            return "tiny face"
        if not q.geometry_ok or (trust_fit and q.fit_error is not None and q.fit_error > max_fit_error):
            return "failed landmark fit"
        return None

    for i, owner in enumerate(plan.person_of):
        if owner is not None and owner not in album_names:
            plan.status[i] = "known"
            continue
        why = reason(i)
        if why:
            plan.status[i] = "rejected"
            plan.result.rejected[why] += 1
            plan.move(i, REJECTED + (f"/{owner}" if owner else ""), f"rejected: {why}")


def _album_others(plan: _Plan, name: str, threshold: float, member_distance: float,
                  album_distance: float) -> None:
    """Album mode: keep the dominant identity of album folder NAME, move the others to _others/."""
    idx = [i for i in range(plan.n_loose, len(plan.infos))
           if plan.person_of[i] == name and not plan.status[i]]
    keep = _album_keep(plan.vecs, idx, plan.infos, threshold, member_distance, album_distance)
    for i in idx:
        if i in keep:
            plan.status[i] = "known"
        else:
            plan.status[i] = "other"
            plan.result.others[name] = plan.result.others.get(name, 0) + 1
            plan.move(i, f"{OTHERS}/{name}", f"not the main person of album {name}")


def _suggest(plan: _Plan, people: dict[str, list[Path]], suggest_distance: float) -> None:
    """Loose crops close to a known person go to _suggested/<person>/."""
    gallery: dict[str, np.ndarray] = {}
    for name in people:
        members = [i for i in range(plan.n_loose, len(plan.infos))
                   if plan.person_of[i] == name and plan.status[i] == "known"]
        if members:
            gallery[name] = plan.vecs[members]
    todo = [i for i in range(plan.n_loose) if not plan.status[i]]
    if not gallery or not todo:
        return
    names = sorted(gallery)
    scores = np.full((len(todo), len(names)), np.inf)
    for j, name in enumerate(names):
        d = _pairwise(plan.vecs[todo].astype(np.float64), gallery[name].astype(np.float64))
        k = min(SUGGEST_K, d.shape[1])
        scores[:, j] = np.sort(d, axis=1)[:, :k].mean(1)
    best = np.argmin(scores, axis=1)
    for row, i in enumerate(todo):
        if scores[row, best[row]] <= suggest_distance:
            name = names[best[row]]
            plan.status[i] = "suggested"
            plan.result.suggested[name] = plan.result.suggested.get(name, 0) + 1
            plan.move(i, f"{SUGGESTED}/{name}", f"suggested for {name}")


def _cluster(plan: _Plan, threshold: float, member_distance: float, taken: set[str],
             pair_distance: float | None = None) -> None:
    """The remaining loose crops: clusters of two or more become person_NN/ (numbers not in
    TAKEN), the rest _singletons/."""
    todo = [i for i in range(plan.n_loose) if not plan.status[i]]
    labels = cluster_embeddings(plan.vecs[todo].astype(np.float64), threshold, member_distance,
                                sources=[plan.infos[i].source for i in todo],
                                pair_distance=pair_distance)
    number = 0
    cluster_names: dict[int, str] = {}
    for c in range(labels.max() + 1 if len(labels) else 0):
        members = [todo[k] for k in np.where(labels == c)[0]]
        if len(members) < 2:
            continue
        number += 1
        while f"{CLUSTER_PREFIX}{number:02d}" in taken:
            number += 1
        cluster_names[c] = f"{CLUSTER_PREFIX}{number:02d}"
        plan.result.clusters[cluster_names[c]] = len(members)
    for k, i in enumerate(todo):
        folder = cluster_names.get(int(labels[k]))
        if folder is None:
            plan.result.singletons += 1
            plan.move(i, SINGLETONS, "singleton")
        else:
            plan.move(i, folder, "cluster")


def _album_folders(people: dict[str, list[Path]], manifest: Manifest, albums: bool | None) -> set[str]:
    if albums is False:
        return set()
    if albums is True:
        return {name for name, files in people.items() if files}
    out = set()
    for name, files in people.items():
        for p in files:
            hit = manifest.by_name.get(p.name)
            if hit and str(hit[1].get("crop", "")).split("/")[0] == name and "/" in hit[1]["crop"]:
                out.add(name)
                break
    return out


def _album_keep(vecs: np.ndarray, idx: list[int], infos: list[CropInfo], threshold: float,
                member_distance: float, album_distance: float) -> set[int]:
    """Crops of an album folder that show its dominant identity."""
    if len(idx) < 3:
        return set(idx)  # too few to tell who the album is about
    sub = vecs[idx].astype(np.float64)
    labels = cluster_embeddings(sub, threshold, member_distance)
    main = np.where(labels == 0)[0]
    if len(main) < 2:
        return set(idx)  # no identity repeats: nothing to compare against
    centre = sub[main].mean(0)
    dist = np.linalg.norm(sub - centre, axis=1)
    keep = {idx[k] for k in range(len(idx)) if labels[k] == 0 or dist[k] <= album_distance}
    # one photo shows a person once: of several crops from one source photo keep the closest
    by_source: dict[str, list[int]] = defaultdict(list)
    for k, i in enumerate(idx):
        if i in keep:
            by_source[infos[i].source].append(k)
    for ks in by_source.values():
        if len(ks) > 1:
            best = min(ks, key=lambda k: dist[k])
            for k in ks:
                if k != best:
                    keep.discard(idx[k])
    return keep


def _dedupe_targets(processed: Path, moves: list[Move]) -> list[Move]:
    """Never overwrite: a target that exists (or is planned twice) gets a ``_1``, ``_2`` suffix."""
    planned: set[str] = set()
    out = []
    for m in moves:
        dst = m.dst
        stem, dot, ext = dst.rpartition(".")
        n = 0
        while dst in planned or os.path.lexists(processed / dst):  # a dangling link too
            n += 1
            dst = f"{stem}_{n}.{ext}" if dot else f"{m.dst}_{n}"
        planned.add(dst)
        out.append(Move(m.src, dst, m.reason))
    return out


def _check_real_folders(processed: Path, paths: list[str], *, whole: bool = False) -> None:
    """The folders that the moves and renames of an operation read from and write into (the
    parents of ``paths``; with ``whole`` the paths themselves) must be real folders inside
    processed/, or not exist yet (the operation makes them): a link would put crops outside the
    work folder, where no page sees them, and a file cannot hold any."""
    checked: set[str] = set()
    for rel in paths:
        parts = rel.split("/")
        for depth in range(1, len(parts) + (1 if whole else 0)):
            folder = "/".join(parts[:depth])
            if folder in checked:
                continue
            checked.add(folder)
            try:
                mode = os.lstat(processed / folder).st_mode
            except FileNotFoundError:
                break  # made by the operation, and so is everything below it
            if stat.S_ISLNK(mode):
                raise InvalidInputError(f"{shown(folder)} is a link: crops are moved only within "
                                        "real folders inside processed/ (replace the link by a "
                                        "folder)")
            if not stat.S_ISDIR(mode):
                raise InvalidInputError(f"{shown(folder)} is a file, not a folder of crops")


def _new_dirs(processed: Path, moves: list[Move]) -> list[str]:
    """The folders the moves need that do not exist yet, parents first."""
    new_dirs: list[str] = []
    for m in moves:
        parent = Path(m.dst).parent
        chain = []
        while parent != Path(".") and not (processed / parent).exists():
            chain.append(parent.as_posix())
            parent = parent.parent
        for d in reversed(chain):
            if d not in new_dirs:
                new_dirs.append(d)
    return new_dirs


def _apply(processed: Path, moves: list[Move], params: dict, *, command: str = "annotate",
           renames: list[Move] = (), rmdirs: list[str] = ()) -> str:
    """Log the plan, then rename folders, move the files and remove the folders emptied by them.
    The log comes first so a crash can still be undone. ``renames`` are whole-folder renames
    (one event however many crops: renaming a 10,000-crop person is one ``os.rename``).

    Every source and target must be a real folder inside processed/ (checked before anything is
    logged). When a step fails (a file that appeared meanwhile, a full disk, Ctrl-C), what was
    done is put back and the log is cut back to what it was, so the user's last action stays
    the one that Undo takes back."""
    _check_real_folders(processed, [m.src for m in renames], whole=True)
    _check_real_folders(processed, [m.dst for m in [*renames, *moves]] + [m.src for m in moves])
    log = MoveLog(processed)
    op = _new_op_id()
    new_dirs = _new_dirs(processed, [*renames, *moves])
    events = [{"op": op, "event": "begin", "command": command, "time": time.time(),
               "params": params}]
    events += [{"op": op, "event": "mkdir", "path": d} for d in new_dirs]
    events += [{"op": op, "event": "rename", "src": m.src, "dst": m.dst, "reason": m.reason}
               for m in renames]
    events += [{"op": op, "event": "move", "src": m.src, "dst": m.dst, "reason": m.reason}
               for m in moves]
    events += [{"op": op, "event": "rmdir", "path": d} for d in rmdirs]
    mark = log.append(events)
    done: list[tuple[Path, Path]] = []
    try:
        for d in new_dirs:
            (processed / d).mkdir(exist_ok=True)
        for m in [*renames, *moves]:
            src, dst = processed / m.src, processed / m.dst
            if os.path.lexists(dst):  # appeared since planning: never overwrite
                raise ConflictError(f"{shown(m.dst)} appeared meanwhile: nothing was moved, "
                                    "try again")
            os.rename(src, dst)
            done.append((src, dst))
    except BaseException:
        _put_back(processed, done, new_dirs)  # if this fails too, the log's begin stays: the
        log.truncate(mark)                    # next edit or annotate run recovers it
        raise
    for d in rmdirs:
        try:
            (processed / d).rmdir()  # only if empty: a file that arrived meanwhile stays
        except OSError:
            pass
    log.append([{"op": op, "event": "end", "time": time.time(), "moved": len(moves)}])
    return op


def _put_back(processed: Path, done: list[tuple[Path, Path]], new_dirs: list[str]) -> None:
    """Undo the first steps of an operation that failed midway: the moves done, newest first,
    then the folders it made (when empty)."""
    for src, dst in reversed(done):
        os.rename(dst, src)
    for d in reversed(new_dirs):
        try:
            (processed / d).rmdir()
        except OSError:
            pass


# ----------------------------------------------------------------- manual moves (facerec serve)
@dataclass
class EditResult:
    """What :func:`move_crops` or :func:`rename_person` did (``op``: its id in the moves log;
    ``recovered``: the interrupted runs finished first, one line each)."""

    processed_dir: str
    op: str | None
    moved: int = 0
    renamed: list[tuple[str, str]] = field(default_factory=list)
    merged: bool = False
    moves: list[Move] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)


#: where crops can be moved besides a person folder
MOVE_TARGETS = (REJECTED, SINGLETONS)


def _person(name: object) -> str:
    """A name typed by the user for a person (surrounding spaces dropped), by the one rule."""
    return check_person_name(str(name).strip(), "person name")


def check_crop_path(processed: Path, rel: str) -> Path:
    """``processed/rel`` for a crop path relative to processed/, which must stay inside it (no
    ``..``, no hidden parts such as ``.facerec/``, no symlink) and be an image file."""
    parts = str(rel).split("/")
    if (not rel or "\\" in rel or "\0" in rel
            or any(p in ("", ".", "..") or p.startswith(".") for p in parts)):
        raise InvalidInputError(f"invalid crop path {shown(rel)}")
    path = processed / Path(*parts)
    try:
        if path.is_symlink() or not is_image(path) \
                or not path.resolve().is_relative_to(processed.resolve()):  # a symlinked folder
            raise NotFoundError(f"no such crop: {shown(rel)}")
    except OSError:  # a name too long for the file system...
        raise NotFoundError(f"no such crop: {shown(rel)}") from None
    return path


def _locked(command: str):
    """Run an edit of processed/ holding its writer lock (the CLI and the server may both edit),
    after finishing any run that was interrupted (:func:`recover_interrupted`), so an edit never
    lands on the half-done state of a killed run."""
    def wrap(edit):
        @functools.wraps(edit)
        def locked(processed_dir, *args, **kwargs):
            processed = require_folder(processed_dir)
            with folder_lock(processed, f"annotate ({command})"):
                recovered = recover_interrupted(processed, finish=True)
                result = edit(processed, *args, **kwargs)
                result.recovered = recovered
                return result
        return locked
    return wrap


def finish_interrupted(processed_dir: str | os.PathLike) -> list[str]:
    """Finish the runs of ``processed_dir`` that were killed midway (what :func:`move_crops` and
    :func:`rename_person` do first), holding its lock; ``facerec serve`` calls it when it starts
    and before a training reads the person folders. Returns one line per run finished."""
    processed = require_folder(processed_dir)
    if not MoveLog(processed).path.is_file():  # nothing was ever moved: nothing to finish
        return []
    with folder_lock(processed, "annotate (recovery)"):
        return recover_interrupted(processed, finish=True)


@_locked("move")
def move_crops(processed_dir: str | os.PathLike, crops: list[str], to: str,
               *, command: str = "move") -> EditResult:
    """Move crops (paths relative to processed/) into person folder ``to`` (created if new), or
    into ``_rejected`` / ``_singletons``: logged like an annotate run, so ``facerec annotate
    --undo`` puts them back. Crops already there are left alone. The target must be a real
    folder inside processed/ (or a new one), never a link or a file."""
    processed = Path(processed_dir)
    target = to if to in MOVE_TARGETS else _person(to)
    moves = []
    for rel in dict.fromkeys(crops):  # a crop listed twice moves once
        path = check_crop_path(processed, rel)
        if path.parent.relative_to(processed).as_posix() != target:
            moves.append(Move(rel, f"{target}/{path.name}", f"{command} to {target}"))
    moves = _dedupe_targets(processed, moves)
    if not moves:
        return EditResult(str(processed), None)
    op = _apply(processed, moves, {"to": target}, command=command,
                rmdirs=_emptied_folders(processed, moves))
    return EditResult(str(processed), op, moved=len(moves), moves=moves)


def _emptied_folders(processed: Path, moves: list[Move]) -> list[str]:
    """The folders that MOVES take every crop out of: a person's or cluster's folder, or a
    ``_suggested/<person>`` or ``_others/<album>``, not ``processed/`` itself nor ``_rejected`` or
    ``_singletons``. They are removed after the moves (only if empty then: a file that arrived
    meanwhile stays), so an emptied cluster does not linger as a "0 crops" person; an undo puts
    the crops, and so the folder, back."""
    leaving: dict[str, set[str]] = defaultdict(set)
    for m in moves:
        leaving[Path(m.src).parent.as_posix()].add(Path(m.src).name)
    out = []
    for folder, names in leaving.items():
        if folder in (".", REJECTED, SINGLETONS) or (processed / folder).is_symlink():
            continue
        try:
            left = [e.name for e in os.scandir(processed / folder) if e.name not in names]
        except OSError:
            continue
        if not left:
            out.append(folder)
    return sorted(out)


@_locked("rename")
def rename_person(processed_dir: str | os.PathLike, name: str, new_name: str) -> EditResult:
    """Rename person folder ``name`` to ``new_name``; when ``new_name`` exists this is a merge
    (the crops move in, never overwriting, and the emptied folder is removed). Its suggestions
    (``_suggested/<name>``) follow. Logged, so ``facerec annotate --undo`` reverts it. Both must
    be real folders inside processed/ (or ``new_name`` a new one), never links or files."""
    processed = Path(processed_dir)
    name = str(name)
    if not is_person_folder(name) or "/" in name or "\\" in name or name in (".", "..") \
            or len(name.encode("utf-8", "surrogateescape")) > 255:  # no folder has such a name
        raise InvalidInputError(f"invalid person folder {shown(name)}")
    new_name = _person(new_name)
    if not (processed / name).is_dir() or (processed / name).is_symlink():
        raise NotFoundError(f"no such person folder: {shown(name)}")
    if name == new_name:
        raise InvalidInputError(f"{shown(name)} is already called {shown(new_name)}")
    renames: list[Move] = []
    moves: list[Move] = []
    rmdirs: list[str] = []
    _check_real_folders(processed, [new_name, f"{SUGGESTED}/{new_name}"], whole=True)
    merged = (processed / new_name).exists()
    for src, dst in ((name, new_name), (f"{SUGGESTED}/{name}", f"{SUGGESTED}/{new_name}")):
        if not (processed / src).is_dir():
            continue
        if not (processed / dst).exists():
            renames.append(Move(src, dst, f"rename {name} to {new_name}"))
            continue
        moves += [Move(f"{src}/{p.name}", f"{dst}/{p.name}", f"merge {name} into {new_name}")
                  for p in list_images(processed / src)]
        rmdirs.append(src)
    moves = _dedupe_targets(processed, moves)
    op = _apply(processed, moves, {"name": name, "new_name": new_name}, command="rename",
                renames=renames, rmdirs=rmdirs)
    return EditResult(str(processed), op, moved=len(moves),
                      renamed=[(m.src, m.dst) for m in renames], merged=merged, moves=moves)


# ------------------------------------------------------------------------------------------ undo
def undo(processed_dir: str | os.PathLike) -> UndoResult:
    """Put back every file moved by the last ``annotate`` run that was not undone yet."""
    processed = require_folder(processed_dir)
    with folder_lock(processed, "annotate --undo"):
        recover_interrupted(processed, finish_undo_only=True)
        log = MoveLog(processed)
        events = log.events()
        undone = {ev["op"] for ev in events if ev.get("event") == "undo"}
        ops = [ev["op"] for ev in events if ev.get("event") == "begin" and ev["op"] not in undone]
        if not ops:
            raise ConflictError(f"nothing to undo in {processed} (no annotate run recorded)")
        return _rollback(processed, log, events, ops[-1])


def _interrupted(events: list[dict]) -> list[tuple[str, str]]:
    """(op, what) of each run that was killed midway: "annotate" (a ``begin`` without ``end``)
    or "undo" (an ``undo_begin`` without ``undo``). Oldest first."""
    seen: dict[str, set[str]] = {}
    order: list[str] = []
    for ev in events:
        op = ev["op"]
        if op not in seen:
            seen[op] = set()
            order.append(op)
        seen[op].add(str(ev.get("event")))
    out = []
    for op in order:
        kinds = seen[op]
        if "undo" in kinds:
            continue
        if "undo_begin" in kinds:
            out.append((op, "undo"))
        elif "begin" in kinds and "end" not in kinds:
            out.append((op, "annotate"))
    return out


def recover_interrupted(processed_dir: str | os.PathLike, finish_undo_only: bool = False,
                        finish: bool = False) -> list[str]:
    """Deal with the runs that were killed midway, so that half-filled ``person_NN/`` folders are
    never taken for labelled people, and finish interrupted undos. Returns one line per run
    recovered (empty: nothing was interrupted). The caller holds the lock.

    An interrupted annotate run or edit is rolled back (what ``facerec annotate`` does before
    sorting again), or with ``finish`` completed from its logged plan (what an edit does first:
    the user edits what the killed run was making). A rollback never reverts what a later logged
    operation built on (a cluster renamed to ``alice``, crops moved on to ``bob``): those files
    stay where the later operations put them.

    ``finish_undo_only``: leave interrupted runs alone (``--undo`` rolls the last one back
    itself)."""
    processed = Path(processed_dir)
    log = MoveLog(processed)
    events = log.events()
    lines = []
    for op, what in reversed(_interrupted(events)):  # newest first, as undo goes
        if finish_undo_only and what == "annotate":
            continue
        command = next((str(ev.get("command", "annotate")) for ev in events
                        if ev["op"] == op and ev.get("event") == "begin"), "annotate")
        command = "annotate run" if command == "annotate" else f"{command} edit"
        if what == "undo":
            res = _rollback(processed, log, events, op)
            lines.append(f"an undo of {op} was interrupted: finished it ({res.restored} more "
                         "file(s) put back)")
        elif finish:
            moved = _finish(processed, log, events, op)
            lines.append(f"{command} {op} of {display_path(processed)} was interrupted: finished "
                         f"it ({moved} more file(s) moved)")
        else:
            res = _rollback(processed, log, events, op, keep=_later_claims(events, op))
            kept = (f"; kept {res.kept} that later operations moved on" if res.kept else "")
            lines.append(f"{command} {op} of {display_path(processed)} was interrupted: put back "
                         f"the {res.restored} file(s) it had moved{kept} before sorting again")
        events = log.events()
    return lines


def _later_claims(events: list[dict], op: str) -> tuple[set[str], set[str]]:
    """What the operations logged after ``op`` (and not undone) took over: the files they moved
    away and the folders they renamed. A rollback of ``op`` leaves these alone."""
    undone = {ev["op"] for ev in events if ev.get("event") == "undo"}
    begins = [ev["op"] for ev in events if ev.get("event") == "begin"]
    later = set(begins[begins.index(op) + 1:]) - undone - {op} if op in begins else set()
    files = {str(ev["src"]) for ev in events if ev["op"] in later and ev.get("event") == "move"}
    folders = {str(ev["src"]) for ev in events
               if ev["op"] in later and ev.get("event") == "rename"}
    return files, folders


def _claimed(path: str, claims: tuple[set[str], set[str]] | None) -> bool:
    if claims is None:
        return False
    files, folders = claims
    return path in files or any(path.startswith(f + "/") for f in folders)


def _finish(processed: Path, log: MoveLog, events: list[dict], op: str) -> int:
    """Complete interrupted operation ``op`` from its logged plan: the folders it was to make,
    the renames and moves not done yet (their source still there, their target free), the
    folders it was to remove (when empty); then log its ``end``. Returns the moves done."""
    mine = [ev for ev in events if ev["op"] == op]
    for ev in mine:
        if ev.get("event") == "mkdir":
            path = processed / str(ev["path"])
            if not os.path.lexists(path):
                path.mkdir(parents=True, exist_ok=True)
    moved = 0
    for ev in mine:
        if ev.get("event") not in ("rename", "move"):
            continue
        src, dst = processed / str(ev["src"]), processed / str(ev["dst"])
        if os.path.lexists(src) and not os.path.lexists(dst) and dst.parent.is_dir() \
                and not dst.parent.is_symlink():
            os.rename(src, dst)
            moved += 1
    for ev in mine:
        if ev.get("event") == "rmdir":
            try:
                (processed / str(ev["path"])).rmdir()
            except OSError:
                pass
    log.append([{"op": op, "event": "end", "time": time.time(), "moved": moved,
                 "finished": True}])
    return moved


def _rollback(processed: Path, log: MoveLog, events: list[dict], op: str,
              keep: tuple[set[str], set[str]] | None = None) -> UndoResult:
    """Put back the files that run ``op`` moved (those it did not move yet stay), remove the
    folders it created if empty, and log an ``undo``. ``keep`` (:func:`_later_claims`): the
    files and folders later operations took over, which stay where they are."""
    # moves were done after folder renames: undo them first
    moves = [ev for ev in events if ev["op"] == op and ev.get("event") == "move"]
    moves += [ev for ev in events if ev["op"] == op and ev.get("event") == "rename"]
    dirs = [ev["path"] for ev in events if ev["op"] == op and ev.get("event") == "mkdir"]

    begin = next((ev for ev in events if ev["op"] == op and ev.get("event") == "begin"), {})
    todo = []
    kept = 0
    found: dict[str, list[Path]] | None = None
    for ev in reversed(moves):
        src, dst = processed / ev["src"], processed / ev["dst"]
        if _claimed(str(ev["dst"]), keep):
            kept += 1  # a later operation moved it on (or renamed its folder): it stays
            continue
        if dst.exists() and not src.exists():
            todo.append((dst, src))
        elif src.exists() and not dst.exists():
            continue  # never moved (the run stopped before it)
        elif src.exists() and dst.exists():
            raise ConflictError(f"cannot undo: both {shown(ev['src'])} and {shown(ev['dst'])} "
                                "exist; move one of them away and retry")
        else:
            # the file was moved on since, e.g. its person_06/ folder renamed to alice/ by hand:
            # crop names are unique (facerec detect makes them so), so find it by name
            if found is None:
                found = _files_by_name(processed)
            hits = found.get(dst.name, []) if ev.get("event") == "move" else []
            if len(hits) != 1:
                raise ConflictError(f"cannot undo: {shown(ev['dst'])} is gone (renamed or moved "
                                    "since?); put it back and retry")
            todo.append((hits[0], src))
    log.append([{"op": op, "event": "undo_begin", "time": time.time()}])
    crops = sum(sum(1 for f in dst.rglob("*") if is_image(f)) if dst.is_dir() else 1
                for dst, _ in todo)
    for dst, src in todo:
        src.parent.mkdir(parents=True, exist_ok=True)
        os.rename(dst, src)
    removed = []
    for d in reversed(dirs):  # deepest last-created first
        path = processed / d
        try:
            path.rmdir()  # only if empty: anything the user put there stays
            removed.append(d)
        except OSError:
            pass
    log.append([{"op": op, "event": "undo", "time": time.time(), "restored": len(todo),
                 "kept": kept}])
    command = str(begin.get("command") or "")
    return UndoResult(processed_dir=str(processed), op=op, restored=len(todo), removed_dirs=removed,
                      command=command, what=describe_op(command, begin.get("params")),
                      crops=crops, kept=kept)


def _files_by_name(processed: Path) -> dict[str, list[Path]]:
    """Every file under processed/ (bookkeeping ``.facerec/`` and hidden files aside) by name."""
    out: dict[str, list[Path]] = defaultdict(list)
    for dirpath, dirnames, filenames in os.walk(processed):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if not f.startswith("."):
                out[f].append(Path(dirpath) / f)
    return out


# --------------------------------------------------------------------------------------- summary
def print_annotate_summary(result: AnnotateResult, file=None) -> None:
    """The table printed by ``facerec annotate``."""
    import sys

    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout, highlight=False, soft_wrap=True)
    for line in result.recovered:
        console.print(f"note: {line}")
    title = f"facerec annotate: {result.processed_dir}" + (" (dry run: nothing moved)" if result.dry_run else "")
    if not (result.clusters or result.singletons or result.suggested or result.others
            or result.rejected):
        console.print(f"{title}: nothing to sort ({result.loose} loose crops, "
                      f"{result.known_people} person folders; every crop is already in place)")
        for w in result.warnings:
            console.print(f"warning: {w}")
        return
    table = Table(title=title)
    table.add_column("folder")
    table.add_column("crops", justify="right")
    table.add_column("what")
    for name, n in result.clusters.items():
        table.add_row(f"{name}/", str(n), "new cluster: rename the folder to the person's name")
    if result.singletons:
        table.add_row(f"{SINGLETONS}/", str(result.singletons), "faces seen once")
    for name, n in sorted(result.suggested.items()):
        table.add_row(f"{SUGGESTED}/{name}/", str(n), f"look like {name}: check, then move into {name}/")
    for name, n in sorted(result.others.items()):
        table.add_row(f"{OTHERS}/{name}/", str(n), f"not the main person of album {name}")
    for why, n in sorted(result.rejected.items()):
        table.add_row(f"{REJECTED}/", str(n), f"rejected: {why}")
    console.print(table)
    done = result.embedded + result.embedded_cached
    line = f"{result.loose} loose crops, {result.known_people} person folders; embedded {done} faces"
    if result.embedded:
        line += (f" ({result.embedded} computed in {result.embed_seconds:.1f} s, "
                 f"{result.embed_seconds / result.embedded:.3f} s/face; {result.embedded_cached} cached)")
    console.print(line)
    for w in result.warnings:
        console.print(f"warning: {w}")
    if result.moves and not result.dry_run:
        from facerec.hints import command_line

        console.print(f"moved {len(result.moves)} files (log: {META_DIR}/{MOVES_LOG}); undo with: "
                      f"{command_line('annotate', '--undo', result.processed_dir)}")
    elif not result.moves:
        console.print("nothing to move")


def print_undo_summary(result: UndoResult, file=None) -> None:
    import sys

    from rich.console import Console

    console = Console(file=file or sys.stdout, highlight=False, soft_wrap=True)
    console.print(f"facerec annotate --undo: undid the {result.what or 'run'} ({result.op}): "
                  f"{result.crops} crop(s) back where they were in {result.processed_dir}"
                  + (f"; removed empty folders: {', '.join(result.removed_dirs)}" if result.removed_dirs else ""))
