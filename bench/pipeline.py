"""The whole facerec pipeline on ``celebrities``, through the CLI, timed; open set; predict latency.

    .venv/bin/python bench/pipeline.py                        # all parts, bench/results/predict/
    .venv/bin/python bench/pipeline.py --only pipeline        # or: openset, latency

**pipeline**: ``facerec detect`` the 93 train photos (one album per person) -> ``facerec annotate``
(album mode: other people's faces and poor crops set aside; the album name is the label) ->
``facerec split`` -> ``facerec train`` (defaults: dlib_face) -> ``facerec predict --json`` on the 25
``val`` photos as full photos (the labelled person is the most prominent face: the largest box).
Each stage is a fresh process with a fresh embedding cache; its wall time is reported.
Top-1 = the largest face's label (at the stored threshold) is the album's person; target 25/25.

**openset**: for each of the 5 people in turn, the annotated crops of the 4 others are split and
trained on; ``facerec evaluate`` then runs on the 20 ``val`` photos of the 4 (genuine) with every
photo of the 5th (train + val, ~19-27) as ``--unknown_dir``: FPIR, FNIR at the stored threshold,
TPIR at FPIR 1% (set on the impostor photos themselves). Reported per held-out person and pooled.

**latency** (CPU, the dlib_face checkpoint of the pipeline part): cold start of ``facerec predict``
on one photo, process start to the first line of output; warm per-photo latency (one photo per call
on a warmed-up :class:`facerec.inference.predict.Predictor`); folder throughput (photos/s) on the 118
celebrities photos with the time split into loading, detection, embedding and classification.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FACEREC = [sys.executable, "-m", "facerec.cli"]


def run(args: list[str], work: Path, env: dict, log: str) -> tuple[float, str]:
    """Run a facerec command; (wall seconds, stdout). Fails loudly."""
    t0 = time.perf_counter()
    proc = subprocess.run([*FACEREC, *args], cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    (work / f"{log}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"facerec {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    return wall, proc.stdout


def best_checkpoint(stdout: str) -> str:
    for line in stdout.splitlines():
        if line.startswith("Best checkpoint: "):
            return line.split(": ", 1)[1].strip()
    raise SystemExit("no 'Best checkpoint:' line in the train output")


def environment(work: Path) -> dict:
    env = dict(os.environ)
    env["FACEREC_CACHE_DIR"] = str(work / "cache")
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def largest(faces: list[dict]) -> dict | None:
    return max(faces, key=lambda f: f["box"][2] * f["box"][3]) if faces else None


# -------------------------------------------------------------------------------------- pipeline
def bench_pipeline(data: Path, work: Path) -> dict:
    celeb = data / "celebrities"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = environment(work)
    stages: dict[str, float] = {}
    stages["detect"], _ = run(["detect", str(celeb / "train"), "--out", "processed", "--quiet"],
                              work, env, "1-detect")
    stages["annotate"], out = run(["annotate", "processed", "--quiet"], work, env, "2-annotate")
    stages["split"], _ = run(["split", "processed", "--out", "dataset", "--quiet"], work, env,
                             "3-split")
    stages["train"], out = run(["train", "--data_path", "dataset", "--runs_dir", "runs", "--name",
                                "celeb", "--quiet"], work, env, "4-train")
    ckpt = best_checkpoint(out)
    stages["predict"], out = run(["predict", "--checkpoint_path", ckpt, "--image_path",
                                  str(celeb / "val"), "--json", "--quiet", "--timing"], work, env,
                                 "5-predict")
    results = json.loads(out)
    rows = []
    for r in results:
        truth = Path(r["image"]).parent.name
        face = largest(r["faces"])
        rows.append({"image": Path(r["image"]).name, "truth": truth, "faces": len(r["faces"]),
                     "label": face["label"] if face else None,
                     "candidate": face["candidate"] if face else None,
                     "confidence": face["confidence"] if face else None})
    timing = (work / "5-predict.log").read_text().split("--- stderr ---")[1].strip().splitlines()
    counts = {p.name: len(list(p.glob("*.jpg"))) for p in sorted((work / "processed").iterdir())
              if p.is_dir()}
    return {
        "checkpoint": ckpt,
        "stage_seconds": stages,
        "total_seconds": sum(stages.values()),
        "processed_folders": counts,
        "val_photos": len(rows),
        "top1_correct": sum(r["label"] == r["truth"] for r in rows),
        "closed_set_correct": sum(r["candidate"] == r["truth"] for r in rows),
        "rejected_as_unknown": sum(r["label"] == "unknown" for r in rows),
        "no_face": sum(r["faces"] == 0 for r in rows),
        "errors": [r for r in rows if r["label"] != r["truth"]],
        "predict_timing_line": timing[-1] if timing else "",
        "threshold": json.loads(json.dumps(_threshold(ckpt, work))),
    }


def _threshold(ckpt: str, work: Path) -> float | None:
    import torch

    return torch.load(work / ckpt if not Path(ckpt).is_absolute() else ckpt, map_location="cpu",
                      weights_only=True)["facerec"]["threshold"]


# --------------------------------------------------------------------------------------- openset
def bench_openset(data: Path, work: Path, pipeline_work: Path) -> dict:
    celeb = data / "celebrities"
    processed = pipeline_work / "processed"
    if not processed.is_dir():
        raise SystemExit(f"run the pipeline part first ({processed} missing)")
    work.mkdir(parents=True, exist_ok=True)
    env = environment(work)
    shutil.copytree(pipeline_work / "cache", work / "cache", dirs_exist_ok=True)
    people = sorted(d.name for d in (celeb / "val").iterdir() if d.is_dir())
    folds = {}
    totals = {"impostors": 0, "accepted": 0, "genuine": 0, "genuine_failed": 0}
    for held in people:
        fold = work / held
        shutil.rmtree(fold, ignore_errors=True)
        fold.mkdir()
        shutil.copytree(processed, fold / "processed",
                        ignore=lambda d, names: [held] if Path(d) == processed else [])
        run(["split", "processed", "--out", "dataset", "--quiet"], fold, env, "split")
        _, out = run(["train", "--data_path", "dataset", "--runs_dir", "runs", "--name", "fold",
                      "--quiet"], fold, env, "train")
        ckpt = best_checkpoint(out)
        known = fold / "val-known"
        for p in people:
            if p != held:
                (known / p).mkdir(parents=True)
                for f in (celeb / "val" / p).glob("*.jpg"):
                    (known / p / f.name).symlink_to(f)
        unknown = fold / "unknown"
        unknown.mkdir()
        for split in ("train", "val"):
            for f in (celeb / split / held).glob("*.jpg"):
                (unknown / f"{split}_{f.name}").symlink_to(f)
        _, out = run(["evaluate", "--checkpoint_path", ckpt, "--data_path", str(known),
                      "--unknown_dir", str(unknown), "--json", "--quiet", "--report", "report"],
                     fold, env, "evaluate")
        rep = json.loads(out)
        o = rep["open_set"]
        folds[held] = {"threshold": rep["threshold"], "accuracy": rep["accuracy"],
                       "closed_set_accuracy": rep["closed_set_accuracy"],
                       "n_genuine": o["n_genuine"], "n_impostor": o["n_impostor"],
                       "fpir": o["fpir"], "fnir": o["fnir"], "tpir_at_fpir_1pct": o["tpir_at_fpir"],
                       "impostor_no_face": o["impostor_no_face"]}
        totals["impostors"] += o["n_impostor"]
        totals["accepted"] += round(o["fpir"] * o["n_impostor"])
        totals["genuine"] += o["n_genuine"]
        totals["genuine_failed"] += round(o["fnir"] * o["n_genuine"])
        print(held, json.dumps(folds[held]), flush=True)
    pooled = {"fpir": totals["accepted"] / max(1, totals["impostors"]),
              "fnir": totals["genuine_failed"] / max(1, totals["genuine"]),
              "mean_tpir_at_fpir_1pct": statistics.mean(f["tpir_at_fpir_1pct"] for f in
                                                        folds.values()), **totals}
    return {"folds": folds, "pooled": pooled}


# --------------------------------------------------------------------------------------- latency
def bench_latency(data: Path, work: Path, ckpt: str, repeats: int = 3) -> dict:
    celeb = data / "celebrities"
    env = environment(work)
    photo = sorted((celeb / "val" / "madonna").glob("*.jpg"))[0]
    cold = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.Popen([*FACEREC, "predict", "--checkpoint_path", ckpt, "--image_path",
                                 str(photo), "--device", "cpu"], cwd=work, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        first = proc.stdout.readline()
        cold.append(time.perf_counter() - t0)
        proc.wait()
        assert first.startswith("Predicted class:"), first
    sys.path.insert(0, str(REPO / "src"))
    from facerec.inference.predict import Predictor

    t0 = time.perf_counter()
    pred = Predictor(ckpt, device="cpu")
    pred.warm_up()
    in_process_start = time.perf_counter() - t0
    photos = sorted((celeb / "val").glob("*/*.jpg"))
    per_photo, parts = [], {"load": [], "detect": [], "embed": [], "classify": []}
    for p in photos:
        before = dict(pred.timings)
        t0 = time.perf_counter()
        pred.predict_image(p)
        per_photo.append(time.perf_counter() - t0)
        for k in parts:
            parts[k].append(pred.timings[k] - before[k])
    folder = sorted((celeb / "train").glob("*/*.jpg")) + photos
    fresh = Predictor(ckpt, device="cpu", batch_size=16)
    fresh.warm_up()
    fresh.timings = {k: 0.0 for k in fresh.timings}
    fresh.counts = {k: 0 for k in fresh.counts}
    t0 = time.perf_counter()
    n_faces = sum(len(r.faces) for r in fresh.predict_paths(folder))
    wall = time.perf_counter() - t0
    import torch

    return {
        "cold_start_seconds": cold, "cold_start_median": statistics.median(cold),
        "in_process_load_and_warm_up_seconds": in_process_start,
        "warm_per_photo_ms": {"median": 1000 * statistics.median(per_photo),
                              "p90": 1000 * sorted(per_photo)[int(0.9 * len(per_photo))],
                              "photos": len(per_photo),
                              "median_by_stage": {k: 1000 * statistics.median(v)
                                                  for k, v in parts.items()}},
        "folder": {"photos": len(folder), "faces": n_faces, "seconds": wall,
                   "photos_per_second": len(folder) / wall,
                   "stage_seconds": {k: round(v, 3) for k, v in fresh.timings.items()}},
        "torch_threads": torch.get_num_threads(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--work", default=str(REPO / "bench" / "results" / "predict"))
    ap.add_argument("--only", choices=("pipeline", "openset", "latency"))
    args = ap.parse_args()
    data, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out_file = work / "pipeline.json"
    out = json.loads(out_file.read_text()) if out_file.is_file() else {}
    out["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                      "platform": platform.platform(),
                      "load_average_at_start": os.getloadavg()}
    if args.only in (None, "pipeline"):
        out["pipeline"] = bench_pipeline(data, work / "pipeline")
        print(json.dumps({"pipeline": out["pipeline"]}, indent=1), flush=True)
        out_file.write_text(json.dumps(out, indent=1))
    if args.only in (None, "openset"):
        out["openset"] = bench_openset(data, work / "openset", work / "pipeline")
        print(json.dumps({"openset": out["openset"]}, indent=1), flush=True)
        out_file.write_text(json.dumps(out, indent=1))
    if args.only in (None, "latency"):
        ckpt = out.get("pipeline", {}).get("checkpoint")
        if not ckpt:
            raise SystemExit("run the pipeline part first (no checkpoint)")
        ckpt = str((work / "pipeline" / ckpt).resolve())
        out["latency"] = bench_latency(data, work / "pipeline", ckpt)
        print(json.dumps({"latency": out["latency"]}, indent=1), flush=True)
    out["machine"]["load_average_at_end"] = os.getloadavg()
    out_file.write_text(json.dumps(out, indent=1))
    print(f"wrote {out_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
