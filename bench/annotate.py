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

``--lfw`` also runs the clustering on ../shared/data/lfw-dev (96 people, ~1,500 faces; slower).
``--loose60`` runs only the newcomer's test of ``facerec run`` on loose photos: 60 photos of 6
lfw-dev people (the first 6 by name with at least 10 photos, their first 10 photos by name),
loose in one folder, detected and annotated with the default embedder (or ``--embedder``); it
prints purity, completeness (for each person, the share of their faces in the one cluster that
holds most of them: a face left in _singletons, or rejected, counts against it), the clusters
with what they hold, and sklearn's homogeneity/completeness/V-measure.
Results are written to bench/results/annotate.json (bench/results/annotate-loose60.json).
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
from facerec.recognition.embed import EmbeddingCache, EmbedStats, embed_files  # noqa: E402


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
    clusters: dict[str, list[str]] = {}
    rejected = []
    for p in processed.rglob("*.jpg"):
        folder = p.relative_to(processed).parts[0]
        if folder == "_rejected":
            rejected.append(truth[p.name])
        elif folder == "_singletons":
            clusters[f"single:{p.name}"] = [truth[p.name]]
        else:
            clusters.setdefault(folder, []).append(truth[p.name])
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


def run(name: str, photos: list[tuple[str, Path]], pick: str, work: Path, speed: bool) -> dict:
    raw, processed = work / f"raw-{name}", work / f"processed-{name}"
    raw.mkdir()
    _flatten(photos, raw)
    t0 = time.perf_counter()
    detect_folder(raw, processed, progress=False)
    detect_s = time.perf_counter() - t0
    truth = _truth(processed, pick)
    out: dict = {"photos": len(photos), "detect_seconds": round(detect_s, 1)}
    crops = sorted(processed.glob("*.jpg"))
    cache_dir = work / f"cache-{name}"
    if speed:
        for label, workers in (("cold_1_process", 1), ("cold_default_workers", None)):
            shutil.rmtree(cache_dir, ignore_errors=True)
            stats = EmbedStats()
            embed_files(crops, cache=EmbeddingCache(cache_dir), progress=False, workers=workers,
                        stats=stats)
            out[f"embed_{label}_s_per_face"] = round(stats.seconds / stats.computed, 4)
        stats = EmbedStats()
        t0 = time.perf_counter()
        embed_files(crops, cache=EmbeddingCache(cache_dir), progress=False, stats=stats)
        cached = time.perf_counter() - t0
        out["embed_cached_s_per_face"] = round(cached / len(crops), 6)
        out["embed_cached_total_s"] = round(cached, 3)
        assert stats.computed == 0
    t0 = time.perf_counter()
    result = annotate(processed, cache=cache_dir, progress=False)
    out["annotate_seconds"] = round(time.perf_counter() - t0, 1)
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
    from facerec.recognition.embed import DEFAULT_EMBEDDER

    photos = loose60_photos(data)
    raw, processed = work / "raw-loose60", work / "processed-loose60"
    raw.mkdir()
    for person, photo in photos:
        (raw / f"{person}__{photo.name}").symlink_to(photo.resolve())
    t0 = time.perf_counter()
    detect_folder(raw, processed, progress=False)
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
    parser.add_argument("--embedder", default=None, help="--loose60: the embedder (default: the "
                        "default face model)")
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
    args.out = args.out or str(REPO / "bench" / "results" / "annotate.json")
    data = Path(args.data)
    photos = [(p.parent.name, p) for split in ("train", "val")
              for p in sorted((data / split).glob("*/*.jpg"))]
    if not photos:
        print(f"no photos under {data}/train|val/<person>/", file=sys.stderr)
        return 2
    results = {}
    with tempfile.TemporaryDirectory(prefix="facerec-bench-") as tmp:
        results["celebrities"] = run("celebrities", photos, "largest", Path(tmp), speed=True)
        print(json.dumps({"celebrities": results["celebrities"]}, indent=1))
        if args.lfw:
            lfw = data.parent / "lfw-dev"
            lfw_photos = [(p.parent.name, p) for p in sorted(lfw.glob("*/*.jpg"))]
            # _flatten wants <split>/<person>/ paths; LFW has <person>/ only
            results["lfw-dev"] = run("lfw", [(person, p) for person, p in lfw_photos], "centre",
                                     Path(tmp), speed=False)
            print(json.dumps({"lfw-dev": results["lfw-dev"]}, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
