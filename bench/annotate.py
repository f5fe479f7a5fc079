#!/usr/bin/env python
"""Benchmark of ``facerec annotate`` clustering and of the face embedding speed.

All 118 celebrities photos (train + val, 5 people) are detected with ``facerec detect`` as loose
photos (no person folders), then ``annotate`` groups the crops and the clusters are compared with
the true person, taken from each photo's source folder. In group photos only the largest face is
the labelled person; the other faces are counted apart ("other").

Reported:
- purity: for each cluster (singletons count as clusters), the share of its labelled faces that
  belong to its majority person, weighted by size; over the faces that were not rejected;
- clusters to cover 95% of the kept crops (largest first), and the number of non-singleton
  clusters (target: purity >= 0.95 with at most 7 non-singleton clusters for the 5 people);
- seconds per face to embed: cold (empty cache, with the default worker processes and with one)
  and cached (a rerun).

    .venv/bin/python bench/annotate.py [--data ../shared/data/celebrities] [--lfw]
    .venv/bin/python bench/annotate.py --loose60 [--embedder NAME]
    .venv/bin/python bench/annotate.py --embedder sface --lfw --sweep

``--lfw`` also runs the clustering on ../shared/data/lfw-dev (96 people, ~1,500 faces; slower).
``--loose60`` runs only the newcomer's test of ``facerec run`` on loose photos: 60 photos of 6
lfw-dev people (the first 6 by name with at least 10 photos, their first 10 photos by name),
loose in one folder, detected and annotated with the default embedder (or ``--embedder``); it
prints purity, completeness (for each person, the share of their faces in the one cluster that
holds most of them: a face left in _singletons, or rejected, counts against it), the clusters
with what they hold, and sklearn's homogeneity/completeness/V-measure.
``--embedder NAME``: the embedder (default: the default face model, facerec.defaults); the photos
are cropped as that embedder declares (its ``crop``: sface wants 112 px aligned crops, dlib_face
160 px box crops), found by the default detector, and its own distances are used. ``--sweep``:
also plans (dry runs, nothing moved) with the candidate distances of :data:`SWEEP` and scores
each plan the same way: how the embedder's distances were chosen (pure clusters first, then
fewest clusters to cover 95% of the faces).
Results are written to bench/results/annotate.json (annotate-<embedder>.json for an embedder that
is not the default; bench/results/annotate-loose60.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from facerec.annotate import annotate  # noqa: E402
from facerec.detection.detect import detect_folder  # noqa: E402
from facerec.recognition.embed import (  # noqa: E402
    DEFAULT_EMBEDDER,
    EmbeddingCache,
    EmbedStats,
    embed_files,
    get_embedder,
)

#: candidate (cluster threshold, member distance) per embedder for --sweep: euclidean distances
#: between the embedder's vectors (unit vectors for sface: sqrt(2 x cosine distance))
SWEEP = {
    "dlib_face": [(1.0, 0.65)],
    "sface": [(t, m) for t in (1.4, 1.6, 1.8, 2.0, 2.2) for m in (1.05, 1.1, 1.15, 1.2, 1.25)],
    "sface+dlib_face": [(t, m) for t in (0.9, 1.0, 1.1, 1.2, 1.3) for m in (0.7, 0.74, 0.78, 0.82)],
}


def _detect_for(emb, raw: Path, processed: Path) -> None:
    """Detect with the default detector, cropping as ``emb`` declares (its ``crop``)."""
    spec = emb.crop
    detect_folder(raw, processed, size=spec.size, margin=spec.margin, align=spec.align,
                  progress=False)


def _flatten(photos: list[tuple[str, Path]], raw: Path) -> None:
    for label, photo in photos:
        (raw / f"{label}__{photo.parent.parent.name}__{photo.name}").symlink_to(photo.resolve())


def _truth(processed: Path, pick: str) -> dict[str, str]:
    """crop name -> person (or "other" for the faces that are not the labelled one)."""
    out = {}
    for line in (processed / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        faces = record.get("faces") or []
        if not faces:
            continue
        person = record["path"].split("__")[0]
        if pick == "largest":
            main = max(range(len(faces)), key=lambda i: faces[i]["box"][2] * faces[i]["box"][3])
        else:  # nearest the centre of the photo (LFW's convention)
            cx, cy = record["width"] / 2, record["height"] / 2
            main = min(range(len(faces)), key=lambda i: (faces[i]["box"][0] + faces[i]["box"][2] / 2 - cx) ** 2
                       + (faces[i]["box"][1] + faces[i]["box"][3] / 2 - cy) ** 2)
        for i, face in enumerate(faces):
            out[Path(face["crop"]).name] = person if i == main else "other"
    return out


def _score(processed: Path, truth: dict[str, str]) -> dict:
    return _score_placed([p.relative_to(processed).as_posix() for p in processed.rglob("*.jpg")],
                         truth)


def _score_plan(moves, truth: dict[str, str]) -> dict:
    """The score of a dry run's plan (where each crop would go)."""
    placed = {Path(m.src).name: m.dst for m in moves}
    return _score_placed([placed.get(name, name) for name in truth], truth)


def _score_placed(paths: list[str], truth: dict[str, str]) -> dict:
    clusters: dict[str, list[str]] = {}
    rejected = []
    for rel in paths:
        name, parts = Path(rel).name, Path(rel).parts
        folder = parts[0] if len(parts) > 1 else ""
        if folder == "_rejected":
            rejected.append(truth[name])
        elif folder in ("_singletons", ""):
            clusters[f"single:{name}"] = [truth[name]]
        else:
            clusters.setdefault(folder, []).append(truth[name])
    kept = sum(len(v) for v in clusters.values())
    majority = labelled = 0
    for members in clusters.values():
        known = [m for m in members if m != "other"]
        if known:
            majority += Counter(known).most_common(1)[0][1]
            labelled += len(known)
    sizes = sorted((len(v) for v in clusters.values()), reverse=True)
    cover = int(np.searchsorted(np.cumsum(sizes), 0.95 * kept) + 1)
    people = {t for t in truth.values() if t != "other"}
    return {
        "people": len(people), "faces": len(truth), "kept": kept, "rejected": len(rejected),
        "rejected_labelled_faces": sum(1 for r in rejected if r != "other"),
        "purity": round(majority / max(labelled, 1), 4),
        "non_singleton_clusters": sum(1 for s in sizes if s >= 2),
        "singletons": sum(1 for s in sizes if s == 1),
        "clusters_to_cover_95pct": cover,
        "largest_clusters": sizes[:10],
    }


def run(name: str, photos: list[tuple[str, Path]], pick: str, work: Path, speed: bool,
        embedder: str = DEFAULT_EMBEDDER, sweep: bool = False) -> dict:
    raw, processed = work / f"raw-{name}", work / f"processed-{name}"
    raw.mkdir()
    _flatten(photos, raw)
    emb = get_embedder(embedder)
    t0 = time.perf_counter()
    _detect_for(emb, raw, processed)
    detect_s = time.perf_counter() - t0
    truth = _truth(processed, pick)
    out: dict = {"photos": len(photos), "embedder": emb.cache_id,
                 "crop": emb.crop.describe(), "detect_seconds": round(detect_s, 1)}
    crops = sorted(processed.glob("*.jpg"))
    cache_dir = work / f"cache-{name}"
    if speed:
        for label, workers in (("cold_1_process", 1), ("cold_default_workers", None)):
            shutil.rmtree(cache_dir, ignore_errors=True)
            stats = EmbedStats()
            embed_files(crops, emb, cache=EmbeddingCache(cache_dir), progress=False,
                        workers=workers, stats=stats)
            out[f"embed_{label}_s_per_face"] = round(stats.seconds / stats.computed, 4)
        stats = EmbedStats()
        t0 = time.perf_counter()
        embed_files(crops, emb, cache=EmbeddingCache(cache_dir), progress=False, stats=stats)
        cached = time.perf_counter() - t0
        out["embed_cached_s_per_face"] = round(cached / len(crops), 6)
        out["embed_cached_total_s"] = round(cached, 3)
        assert stats.computed == 0
    if sweep:
        plans = []
        for threshold, member in SWEEP.get(embedder, []):
            plan = annotate(processed, threshold=threshold, member_distance=member, dry_run=True,
                            embedder=emb, cache=cache_dir, progress=False)
            score = _score_plan(plan.moves, truth)
            plans.append({"threshold": threshold, "member_distance": member,
                          **{k: score[k] for k in ("purity", "non_singleton_clusters",
                                                   "singletons", "clusters_to_cover_95pct",
                                                   "rejected")}})
        out["sweep"] = plans
    t0 = time.perf_counter()
    result = annotate(processed, embedder=emb, cache=cache_dir, progress=False)
    out["annotate_seconds"] = round(time.perf_counter() - t0, 1)
    out["distances"] = {k: round(getattr(emb, k), 4) for k in (
        "cluster_threshold", "member_distance", "suggest_distance", "duplicate_distance",
        "album_distance")}
    out.update(_score(processed, truth))
    out["rejected_by_reason"] = dict(result.rejected)
    return out


def loose60_photos(lfw: Path, people: int = 6, per_person: int = 10) -> list[tuple[str, Path]]:
    """The newcomer's 60-photo test: the first PEOPLE lfw-dev people by name with at least
    PER_PERSON photos, their first PER_PERSON photos by name."""
    chosen = [d for d in sorted(lfw.iterdir())
              if d.is_dir() and len(list(d.glob("*.jpg"))) >= per_person][:people]
    return [(d.name, p) for d in chosen for p in sorted(d.glob("*.jpg"))[:per_person]]


def completeness_report(processed: Path, truth: dict[str, str]) -> dict:
    """Purity and completeness of the folders annotate made, per person and per cluster."""
    from sklearn.metrics import homogeneity_completeness_v_measure

    where: dict[str, str] = {}        # crop name -> its cluster ("single:<name>" for singletons)
    for p in processed.rglob("*.jpg"):
        folder = p.relative_to(processed).parts[0] if p.parent != processed else "(loose)"
        where[p.name] = f"single:{p.name}" if folder == "_singletons" else folder
    people = sorted({t for t in truth.values() if t != "other"})
    per_person = {}
    for person in people:
        faces = [c for c, t in truth.items() if t == person]
        homes = Counter(where[c] for c in faces if where.get(c, "_rejected") != "_rejected")
        best, n = homes.most_common(1)[0] if homes else ("-", 0)
        per_person[person] = {"faces": len(faces), "in_main_cluster": n, "main_cluster": best,
                              "singletons": sum(1 for c in faces if where.get(c, "").startswith("single:")),
                              "rejected": sum(1 for c in faces if where.get(c) == "_rejected"),
                              "elsewhere": {k: v for k, v in homes.items() if k != best}}
    clusters: dict[str, Counter] = {}
    for crop, folder in where.items():
        if not folder.startswith(("single:", "_rejected")):
            clusters.setdefault(folder, Counter())[truth.get(crop, "other")] += 1
    kept = [(truth[c], where[c]) for c in truth if truth[c] != "other"
            and where.get(c, "_rejected") != "_rejected"]
    labelled = sum(v["faces"] for v in per_person.values())
    majority = sum(cnt.most_common(1)[0][1] for cnt in
                   (Counter(t for t, w in kept if w == folder) for folder in {w for _, w in kept}))
    h, c, v = homogeneity_completeness_v_measure([t for t, _ in kept], [w for _, w in kept])
    return {
        "people": len(people), "labelled_faces": labelled, "kept_labelled_faces": len(kept),
        "purity": round(majority / max(len(kept), 1), 4),
        "completeness": round(sum(v["in_main_cluster"] for v in per_person.values())
                              / max(labelled, 1), 4),
        "clusters": len(clusters), "pure_clusters": sum(1 for cnt in clusters.values()
                                                         if len(+cnt) == 1),
        "cluster_contents": {k: dict(v) for k, v in sorted(clusters.items())},
        "per_person": per_person,
        "sklearn": {"homogeneity": round(h, 4), "completeness": round(c, 4),
                    "v_measure": round(v, 4)},
    }


def run_loose60(work: Path, data: Path, embedder: str | None) -> dict:
    photos = loose60_photos(data)
    raw, processed = work / "raw-loose60", work / "processed-loose60"
    raw.mkdir()
    for person, photo in photos:
        (raw / f"{person}__{photo.name}").symlink_to(photo.resolve())
    t0 = time.perf_counter()
    _detect_for(get_embedder(embedder or DEFAULT_EMBEDDER), raw, processed)
    detect_s = time.perf_counter() - t0
    truth = _truth(processed, "centre")
    t0 = time.perf_counter()
    annotate(processed, embedder=embedder or DEFAULT_EMBEDDER, cache=work / "cache-loose60",
             progress=False)
    out = {"embedder": embedder or DEFAULT_EMBEDDER, "photos": len(photos),
           "people_names": sorted({p for p, _ in photos}), "faces": len(truth),
           "detect_seconds": round(detect_s, 1),
           "annotate_seconds": round(time.perf_counter() - t0, 1)}
    out.update(completeness_report(processed, truth))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "celebrities"))
    parser.add_argument("--lfw", action="store_true", help="also cluster lfw-dev (96 people)")
    parser.add_argument("--loose60", action="store_true",
                        help="only the 60 loose lfw-dev photos of 6 people (see above)")
    parser.add_argument("--embedder", default=None, help="the embedder (default: the default "
                        "face model)")
    parser.add_argument("--sweep", action="store_true",
                        help="also score dry runs with the candidate distances of SWEEP")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.loose60:
        lfw = Path(args.data).parent / "lfw-dev"
        with tempfile.TemporaryDirectory(prefix="facerec-bench-") as tmp:
            result = run_loose60(Path(tmp), lfw, args.embedder)
        print(json.dumps(result, indent=1))
        print(f"loose60 ({result['embedder']}): purity {result['purity']:.3f}, completeness "
              f"{result['completeness']:.3f} ({result['clusters']} clusters, "
              f"{result['pure_clusters']} pure; sklearn homogeneity "
              f"{result['sklearn']['homogeneity']:.3f}, completeness "
              f"{result['sklearn']['completeness']:.3f})")
        out = Path(args.out or REPO / "bench" / "results" / "annotate-loose60.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"written to {out}")
        return 0
    embedder = args.embedder or DEFAULT_EMBEDDER
    tail = "" if embedder == DEFAULT_EMBEDDER else f"-{embedder}"
    args.out = args.out or str(REPO / "bench" / "results" / f"annotate{tail}.json")
    data = Path(args.data)
    photos = [(p.parent.name, p) for split in ("train", "val")
              for p in sorted((data / split).glob("*/*.jpg"))]
    if not photos:
        print(f"no photos under {data}/train|val/<person>/", file=sys.stderr)
        return 2
    results = {}
    with tempfile.TemporaryDirectory(prefix="facerec-bench-") as tmp:
        results["celebrities"] = run("celebrities", photos, "largest", Path(tmp), speed=True,
                                     embedder=embedder, sweep=args.sweep)
        print(json.dumps({"celebrities": results["celebrities"]}, indent=1))
        if args.lfw:
            lfw = data.parent / "lfw-dev"
            lfw_photos = [(p.parent.name, p) for p in sorted(lfw.glob("*/*.jpg"))]
            # _flatten wants <split>/<person>/ paths; LFW has <person>/ only
            results["lfw-dev"] = run("lfw", [(person, p) for person, p in lfw_photos], "centre",
                                     Path(tmp), speed=False, embedder=embedder,
                                     sweep=args.sweep)
            print(json.dumps({"lfw-dev": results["lfw-dev"]}, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
