"""``facerec split processed/ --out dataset/``: train/val/test folders from labelled crops.

Writes ``dataset/{train,val,test}/<person>/`` (hard links where possible, else copies),
``dataset/labels.json`` = ``{"labels": [sorted person names]}`` and ``dataset/split.json`` (which
source photo went where). ``processed/`` is only read.

How crops are assigned:

- Every crop of one source photo (known from ``processed/manifest.jsonl``; a crop it does not know
  is its own source) lands in the same split, and so do near-duplicates: crops of one person whose
  face embeddings are closer than ``dup_distance`` (the same photo at another size or crop),
  grouped with complete linkage so that groups never chain across a whole album.
- Each source photo gets a number in [0, 1) from a hash of (seed, source path): below ``test`` it
  goes to test, below ``test + val`` to val, else train. A group takes the most held-out split of
  its photos. This depends on nothing else, so adding photos later never moves an existing crop
  from test (or val) to train.
- Per person, a minimum is then enforced: with 3 or more photos at least one goes to test and one
  to val (the train photos with the smallest hash are promoted) and one stays in train. A person
  with 1 photo gets train only, with 2 train and val, and a warning. When ``dataset/split.json``
  exists, earlier val/test assignments are kept, so promotions are stable too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facerec._version import __version__
from facerec.cropspec import read_processed_spec
from facerec.crops import Manifest, check_person_name, list_images, person_folders, require_folder
from facerec.manifest import sha256_file
from facerec.errors import ConflictError, InvalidInputError, NotFoundError
from facerec.safeio import META_DIR, atomic_write, display_path, folder_lock, remove_temporaries

SPLITS = ("train", "val", "test")
_RANK = {"train": 0, "val": 1, "test": 2}
SPLIT_JSON = "split.json"
LABELS_JSON = "labels.json"
#: written (under ``dataset/.facerec/``) before the first change to the dataset and removed once
#: split.json is written: its presence means a split was interrupted midway
JOURNAL = "split-journal.json"


@dataclass
class SplitResult:
    processed_dir: str
    out_dir: str
    labels: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)   # person -> split -> crops
    sources: dict[str, str] = field(default_factory=dict)             # source -> split
    groups_merged: int = 0           # source photos joined to another one as near-duplicates
    unchanged: bool = False          # the dataset was already up to date: nothing written
    recovered: str | None = None     # an interrupted split of out_dir was found (and redone)
    linked: int = 0
    copied: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Crop:
    person: str
    path: Path
    rel: str
    source: str
    sha256: str


def _unit_hash(seed: int | str, key: str) -> float:
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        return True


def split_dataset(processed_dir: str | os.PathLike = "processed",
                  out_dir: str | os.PathLike = "dataset", val: float = 0.1, test: float = 0.1,
                  seed: int = 42, force: bool = False, dedup: str = "embedding",
                  dup_distance: float | None = None, link: bool = True,
                  embedder: Any = None, cache: Any = None,
                  progress: bool = True) -> SplitResult:
    """Build ``out_dir`` from the person folders of ``processed_dir`` (see the module docstring).

    ``dedup``: "embedding" (near-duplicates by face embedding) or "none" (same photo only);
    ``dup_distance``: embedding distance below which crops count as one photo (default: the
    embedder's ``duplicate_distance``); ``embedder``: default, the model the crops were cut for.
    ``link``: hard-link files where the filesystem allows (else copy). ``force``: replace a
    dataset built from other input. Returns counts per person and split.

    One writer at a time (a lock under ``out_dir/.facerec/``). A split killed midway (its journal
    is there, split.json not written) is recognised by the next run, which rebuilds the dataset
    without ``force`` and says so in ``recovered``.
    """
    processed = require_folder(processed_dir)
    out = Path(out_dir)
    for name, frac in (("val", val), ("test", test)):
        if not 0.0 <= float(frac) < 1.0:
            raise InvalidInputError(f"--{name} must be between 0 and 1, got {frac}")
    if val + test >= 1.0:
        raise InvalidInputError("--val + --test must leave something for train, got "
                                f"{val + test:g}")
    if dedup not in ("embedding", "none"):
        raise InvalidInputError(f"--dedup must be 'embedding' or 'none', got {dedup!r}")
    _check_out_dir(processed, out)
    existed = out.exists()
    try:
        with folder_lock(out, "split"):
            return _split_locked(processed, out, val, test, seed, force, dedup, dup_distance,
                                 link, embedder, cache, progress)
    except BaseException:
        if not existed and out.is_dir() and not _has_content(out):
            shutil.rmtree(out, ignore_errors=True)  # only our lock was there: leave no trace
        raise


def _split_locked(processed: Path, out: Path, val: float, test: float, seed: int, force: bool,
                  dedup: str, dup_distance: float | None, link: bool, embedder: Any, cache: Any,
                  progress: bool) -> SplitResult:
    journal = out / META_DIR / JOURNAL
    remove_temporaries(out / META_DIR)
    for name in (SPLIT_JSON, LABELS_JSON):
        for tmp in out.glob(f".{name}.tmp-*"):
            tmp.unlink()

    result = SplitResult(processed_dir=str(processed), out_dir=str(out))
    crops = _labelled_crops(processed, result)
    names = sorted({c.person for c in crops})
    result.labels = names

    if dedup == "embedding":
        from facerec.recognition.backbones import backbone_for_crops
        from facerec.recognition.embed import get_embedder

        if embedder is None:  # the model the crops were cut for
            embedder = backbone_for_crops(read_processed_spec(processed))
        embedder = get_embedder(embedder) if isinstance(embedder, str) else embedder
        if dup_distance is None:
            dup_distance = embedder.duplicate_distance
    params = {"val": float(val), "test": float(test), "seed": seed, "dedup": dedup,
              "dup_distance": float(dup_distance) if dedup == "embedding" else None}
    fingerprint = hashlib.sha256(json.dumps(
        [params, sorted((c.rel, c.sha256) for c in crops)]).encode()).hexdigest()
    previous = _read_previous(out)
    interrupted = _read_journal(journal)
    if previous is not None and previous.get("input", {}).get("fingerprint") == fingerprint \
            and _files_intact(out, previous):
        if interrupted is not None:  # killed after split.json was written: nothing to redo
            journal.unlink(missing_ok=True)
        result.unchanged = True
        result.counts = previous.get("counts", {})
        result.sources = {k: v["split"] for k, v in previous.get("sources", {}).items()}
        result.warnings = previous.get("warnings", [])
        return result
    if interrupted is not None:
        result.recovered = (f"found an interrupted split of {display_path(out)} (started "
                            f"{interrupted.get('started', '?')}, stopped before it finished): "
                            "rebuilding it")
        force = True  # its train/val/test are facerec's own, half written
    if _has_content(out) and not force:
        if previous is None:
            raise ConflictError(f"{out} exists and was not made by `facerec split`; "
                                "choose another --out or use --force to replace its train/val/test")
        raise ConflictError(f"{out} was built from other input or settings (or changed since); "
                            "use --force to rebuild it")

    # ---- groups: same source photo, plus near-duplicates of one person
    uf = _UnionFind()
    for c in crops:
        uf.find(c.source)
    if dedup == "embedding":
        result.groups_merged = _link_near_duplicates(crops, uf, dup_distance, embedder, cache,
                                                     progress, result)
    groups: dict[str, list[str]] = defaultdict(list)
    for source in sorted({c.source for c in crops}):
        groups[uf.find(source)].append(source)

    split_of = _assign(crops, uf, groups, previous, seed, val, test, names, result)

    # ---- write (the journal first: a kill from here on is recognised by the next run)
    atomic_write(journal, lambda tmp: tmp.write_text(json.dumps({
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid(),
        "fingerprint": fingerprint}), encoding="utf-8"))
    if out.exists() and (force or previous is not None):
        for split in SPLITS:
            if (out / split).exists():
                shutil.rmtree(out / split)
    out.mkdir(parents=True, exist_ok=True)
    files = _write_splits(crops, uf, split_of, out, link, val, test, names, result)
    sources = {s: {"split": split_of[gid], "group": gid}
               for gid, members in groups.items() for s in members}
    result.sources = {s: v["split"] for s, v in sources.items()}
    # the crop recipe travels with the dataset (through datastores too) to train and predict
    spec = read_processed_spec(processed)
    _write_json(out / LABELS_JSON, {"labels": names, **({"crop": spec.to_dict()} if spec else {})})
    _write_json(out / SPLIT_JSON, {
        "version": 1, "tool": f"facerec {__version__}", "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "params": params,
        "input": {"processed_dir": str(processed.resolve()), "fingerprint": fingerprint,
                  "crops": len(crops)},
        "labels": names, "counts": result.counts, "warnings": result.warnings,
        "sources": dict(sorted(sources.items())), "files": files,
    })
    journal.unlink(missing_ok=True)
    return result


def _labelled_crops(processed: Path, result: SplitResult) -> list[_Crop]:
    """Every crop in a person folder, with its source photo's identity (from the manifest)."""
    manifest = Manifest(processed)
    crops: list[_Crop] = []
    for name, files in person_folders(processed).items():
        if not files:
            result.warnings.append(f"{name}: empty folder, skipped")
            continue
        try:  # the folder name becomes a label: the one name rule (no bidi override, ...)
            check_person_name(name, "person folder name")
        except InvalidInputError as exc:
            raise InvalidInputError(f"{exc} (in {display_path(processed)}: rename the folder)") \
                from None
        for path in files:
            info = manifest.info(path, size=(0, 0))
            digest = info.source[7:] if info.source.startswith("sha256:") else sha256_file(path)
            crops.append(_Crop(name, path, info.rel, info.source, digest))
    if not crops:
        loose = len(list_images(processed))
        hint = (f" ({loose} loose crops: run `facerec annotate {processed}` and give the person "
                "folders names)" if loose else " (one folder of face crops per person expected)")
        raise NotFoundError(f"no labelled crops in {processed}{hint}")
    return crops


def _assign(crops: list[_Crop], uf: _UnionFind, groups: dict[str, list[str]],
            previous: dict | None, seed: int, val: float, test: float, names: list[str],
            result: SplitResult) -> dict[str, str]:
    """Group id -> split: hash thresholds, the most held-out split of a group, earlier splits
    kept (sticky), then the per-person minimums (promotions by hash order)."""
    prev_sources = {}
    if previous is not None and previous.get("params", {}).get("seed") == seed:
        prev_sources = {k: v.get("split") for k, v in previous.get("sources", {}).items()}
    u = {s: _unit_hash(seed, s) for s in uf.parent}

    def base(source: str) -> str:
        return "test" if u[source] < test else "val" if u[source] < test + val else "train"

    split_of: dict[str, str] = {}
    locked: set[str] = set()
    for gid, members in groups.items():
        cands = [base(s) for s in members]
        held = [prev_sources[s] for s in members if prev_sources.get(s) in ("val", "test")]
        if held:
            locked.add(gid)
        split_of[gid] = max(cands + held, key=_RANK.__getitem__)
    group_u = {gid: min(u[s] for s in members) for gid, members in groups.items()}

    person_groups: dict[str, list[str]] = defaultdict(list)
    for c in crops:
        gid = uf.find(c.source)
        if gid not in person_groups[c.person]:
            person_groups[c.person].append(gid)
    for name in names:
        gids = sorted(person_groups[name], key=lambda g: (group_u[g], g))
        _balance(name, gids, split_of, locked, group_u, val, test, result)
    return split_of


def _write_splits(crops: list[_Crop], uf: _UnionFind, split_of: dict[str, str], out: Path,
                  link: bool, val: float, test: float, names: list[str],
                  result: SplitResult) -> dict[str, dict]:
    """Each crop linked or copied to OUT/<split>/<person>/; returns split.json's ``files``."""
    counts = {name: {s: 0 for s in SPLITS} for name in names}
    files: dict[str, dict] = {}
    for c in sorted(crops, key=lambda c: c.rel):
        split = split_of[uf.find(c.source)]
        target = out / split / c.person / c.path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if _link_or_copy(c.path, target, link):
            result.linked += 1
        else:
            result.copied += 1
        counts[c.person][split] += 1
        files[f"{split}/{c.person}/{c.path.name}"] = {"from": c.rel, "source": c.source}
    for name in names:
        missing = [s for s in SPLITS if counts[name][s] == 0 and (s == "train" or
                   (s == "val" and val > 0) or (s == "test" and test > 0))]
        if missing and not any(w.startswith(f"{name}:") for w in result.warnings):
            result.warnings.append(f"{name}: no crops in {', '.join(missing)}")
    result.counts = counts
    return files


def _balance(name: str, gids: list[str], split_of: dict[str, str], locked: set[str],
             group_u: dict[str, float], val: float, test: float, result: SplitResult) -> None:
    """Per-person minimums: tiny classes go to train first, then val; otherwise >= 1 of each."""
    n = len(gids)

    def count(split: str) -> int:
        return sum(1 for g in gids if split_of[g] == split)

    if n <= 2:
        # train first, then val (the photo with the larger hash trains, as the hash would have
        # it); earlier val/test assignments (locked) are kept
        second = "val" if val > 0 else "test" if test > 0 else "train"
        free = sorted((g for g in gids if g not in locked), key=lambda g: -group_u[g])
        for g in free:
            split_of[g] = ""
        for g in free:
            split_of[g] = "train" if count("train") == 0 else second
        want_all = [s for s in SPLITS if s == "train" or (s == "val" and val > 0)
                    or (s == "test" and test > 0)]
        lacking = [s for s in want_all if count(s) == 0]
        if lacking:
            result.warnings.append(f"{name}: only {n} photo{'s' if n > 1 else ''}, "
                                   f"no crops in {', '.join(lacking)}")
        return
    for split, frac in (("test", test), ("val", val)):
        if frac > 0 and count(split) == 0:
            cands = [g for g in gids if split_of[g] == "train"]  # smallest hash first
            if len(cands) > 1:
                split_of[cands[0]] = split
    if count("train") == 0:
        cands = [g for g in reversed(gids) if g not in locked and split_of[g] != "train"]
        for g in sorted(cands, key=lambda g: (split_of[g] == "test", -group_u[g])):
            split_of[g] = "train"  # prefer giving up a val photo, then the largest hash
            break


def _link_near_duplicates(crops: list[_Crop], uf: _UnionFind, dup_distance: float, embedder: Any,
                          cache: Any, progress: bool, result: SplitResult) -> int:
    from sklearn.cluster import AgglomerativeClustering

    from facerec.recognition.embed import embed_files

    vecs, quality = embed_files([c.path for c in crops], embedder, cache=cache, progress=progress,
                                return_quality=True, on_error="nan")
    bad = [c.rel for c, q in zip(crops, quality) if q.error]
    if bad:
        result.warnings.append(f"{len(bad)} crops could not be embedded (near-duplicate check "
                               f"skipped for them), e.g. {bad[0]}")
    merged = 0
    by_person: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(crops):
        if np.all(np.isfinite(vecs[i])):
            by_person[c.person].append(i)
    for idx in by_person.values():
        if len(idx) < 2:
            continue
        labels = AgglomerativeClustering(n_clusters=None, distance_threshold=dup_distance,
                                         linkage="complete").fit_predict(vecs[idx].astype(np.float64))
        first: dict[int, int] = {}
        for k, lab in zip(idx, labels):
            if lab in first:
                merged += uf.union(crops[first[lab]].source, crops[k].source)
            else:
                first[lab] = k
    return merged


def _check_out_dir(processed: Path, out: Path) -> None:
    p, o = processed.resolve(), out.resolve()
    if o == p or p in o.parents:
        raise InvalidInputError(f"--out {out} is inside {processed}: it would be taken for a "
                                "person folder; choose a folder outside it")
    if o in p.parents:
        raise InvalidInputError(f"{processed} is inside --out {out}; choose another --out")
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out} exists and is not a folder")


def _has_content(out: Path) -> bool:
    return out.is_dir() and any(p.name != META_DIR for p in out.iterdir())


def _read_journal(path: Path) -> dict | None:
    """The journal of an interrupted split (an unreadable one counts: it was being written)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_previous(out: Path) -> dict | None:
    path = out / SPLIT_JSON
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _files_intact(out: Path, previous: dict) -> bool:
    files = previous.get("files", {})
    if not (out / LABELS_JSON).is_file():
        return False
    expected = set(files)
    present = {p.relative_to(out).as_posix() for s in SPLITS if (out / s).is_dir()
               for p in (out / s).rglob("*") if p.is_file()}
    return expected == present


def _link_or_copy(src: Path, dst: Path, link: bool) -> bool:
    if dst.exists():
        dst.unlink()
    if link:
        try:
            os.link(src, dst)
            return True
        except OSError:
            pass
    shutil.copy2(src, dst)
    return False


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1) + "\n",
                                                  encoding="utf-8"))


def print_split_summary(result: SplitResult, file=None) -> None:
    """The table printed by ``facerec split``."""
    import sys

    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout, highlight=False, soft_wrap=True)
    if result.recovered:
        console.print(f"note: {result.recovered}")
    state = " (up to date: nothing changed)" if result.unchanged else ""
    table = Table(title=f"facerec split: {result.processed_dir} -> {result.out_dir}{state}")
    table.add_column("person")
    for s in SPLITS:
        table.add_column(s, justify="right")
    table.add_column("total", justify="right")
    totals = {s: 0 for s in SPLITS}
    for name in sorted(result.counts):
        row = result.counts[name]
        for s in SPLITS:
            totals[s] += row.get(s, 0)
        table.add_row(name, *(str(row.get(s, 0)) for s in SPLITS), str(sum(row.values())))
    table.add_row("all", *(str(totals[s]) for s in SPLITS), str(sum(totals.values())), style="bold")
    console.print(table)
    if not result.unchanged:
        console.print(f"{len(result.sources)} source photos; {result.groups_merged} joined to a "
                      f"near-duplicate; {result.linked} files hard-linked, {result.copied} copied")
    for w in result.warnings:
        console.print(f"warning: {w}")
