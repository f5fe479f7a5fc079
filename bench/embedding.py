"""The face embedder: dlib-bin's network against our PyTorch port, and what it buys end to end.

    .venv/bin/python bench/embedding.py                      # every part; JSON in bench/results/
    .venv/bin/python bench/embedding.py --only throughput    # or predict, compare, annotate
    .venv/bin/python bench/embedding.py --before_src OLD/src # also time an older facerec (before)

Parts (every comparison runs in the same process or the same run, alternating, best of rounds):

* **throughput**: faces per second of ``dlib.face_recognition_model_v1.compute_face_descriptor``
  and of :class:`facerec.recognition.dlib_net.DlibResNet` on the same 64 real chips (lfw-dev), at batch 1 and
  32, with 1 and 2 threads (each thread count in its own process, with OMP/OpenBLAS/MKL limits set
  before anything loads). The FLOP-bound limit is the network's GFLOPs per face (counted from its
  layers) over the GFLOP/s of a 2048x2048 float32 matmul measured in the same process. With a
  GPU: batch 256 in float32 and float16.
* **predict**: ``Predictor`` warm latency per single-face lfw-dev photo, one photo per call, split
  into detect / embed / classify (``Predictor.timings``), with torch's default threads and with 1; cold start = ``facerec predict`` on one
  photo in a fresh process (wall clock); folder throughput = ``facerec predict --json`` on the
  120-photo folder of *compare* (process start included).
* **compare**: the comparison a user makes, on 120 lfw-dev photos (2 per person, 60 people):
  ``facerec predict --image_path FOLDER --json`` (a new process each time) against the
  face_recognition library's approach in-process (dlib's HOG detector, 5 landmarks, dlib's
  descriptor, the nearest of 100 known faces), same photos, alternating; facerec also with
  ``OMP_NUM_THREADS=1`` (``facerec_1thread``) and with every usable CPU (``facerec_allthreads``)
  beside the thread policy's choice (``facerec``), and ``--before_src``'s facerec if given;
  ``--busy 1`` runs it all with one core kept busy by another process.
  facerec's checkpoint is trained (``facerec train``, defaults) on the crops of the same 100 known
  faces (50 other photos of 50 of those people, 2 each).
* **annotate**: ``facerec annotate`` on lfw-dev crops with a cold (empty) embedding cache, this
  source tree and ``--before_src`` (the dlib-bin network), alternating.

The machine this was written on has 2 cores shared with other jobs: numbers move by 2x between
runs; compare the side-by-side ratios of one run rather than absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEREC_TEST_DATA", REPO.parent / "shared" / "data"))
LFW = DATA / "lfw-dev"
RESULTS = REPO / "bench" / "results" / "embedding"
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def env_for(src: Path, threads: int | None = None, cache: Path | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src))
    if threads:
        env.update({v: str(threads) for v in THREAD_VARS})
    if cache is not None:
        env["FACEREC_CACHE_DIR"] = str(cache)
    return env


def lfw_people() -> list[Path]:
    return sorted(p for p in LFW.iterdir() if p.is_dir() and len(list(p.glob("*.jpg"))) >= 4)


# -------------------------------------------------------------------------------------- throughput
def real_chips(n: int = 64) -> np.ndarray:
    from PIL import Image

    from facerec.recognition.dlib_face import DlibChipper

    photos = [sorted(p.glob("*.jpg"))[0] for p in lfw_people()][:n]
    chips, rows, _ = DlibChipper().chips([Image.open(p) for p in photos])
    return np.stack(chips)


def network_gflops() -> float:
    """Multiply-adds x 2 of every conv and the fc, per 150x150 face."""
    import torch

    from facerec.recognition.dlib_net import DlibResNet

    net = DlibResNet()
    flops = []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels
            flops.append(2 * k * output.numel())
        elif isinstance(module, torch.nn.Linear):
            flops.append(2 * module.in_features * module.out_features)

    for m in net.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.zeros(1, 3, 150, 150))
    return sum(flops) / 1e9


def matmul_gflops(rounds: int = 5) -> float:
    import torch

    a = torch.randn(2048, 2048)
    best = float("inf")
    with torch.inference_mode():
        a @ a
        for _ in range(rounds):
            t0 = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - t0)
    return 2 * 2048 ** 3 / best / 1e9


def throughput_worker(threads: int, rounds: int) -> dict:
    """One thread count, in this process (the thread limits are set by the parent)."""
    import dlib
    import torch

    from facerec.recognition.dlib_face import dlib_models_dir
    from facerec.recognition.embed import get_embedder

    torch.set_num_threads(threads)
    chips = real_chips()
    ref_net = dlib.face_recognition_model_v1(
        str(dlib_models_dir() / "dlib_face_recognition_resnet_model_v1.dat"))
    ours = get_embedder("dlib_face", device="cpu", batch_size=32)
    ours.embed_chips(chips[:2])

    def run_dlib(batch: int, n: int) -> float:
        t0 = time.perf_counter()
        for s in range(0, n, batch):
            ref_net.compute_face_descriptor(list(chips[s:s + batch]))
        return n / (time.perf_counter() - t0)

    def run_ours(batch: int, n: int) -> float:
        t0 = time.perf_counter()
        for s in range(0, n, batch):
            ours.embed_chips(chips[s:s + batch])
        return n / (time.perf_counter() - t0)

    out: dict = {"threads": threads}
    for batch, n in ((1, 16), (32, 64)):
        run_dlib(batch, batch)  # warm both at this batch size
        run_ours(batch, batch)
        d, o = [], []
        for _ in range(rounds):  # alternating
            d.append(run_dlib(batch, n))
            o.append(run_ours(batch, n))
        out[f"batch{batch}"] = {"dlib_faces_per_s": max(d), "ours_faces_per_s": max(o),
                                "ratio": max(o) / max(d), "dlib_all": d, "ours_all": o}
    gf = network_gflops()
    mm = matmul_gflops()
    out.update(gflops_per_face=gf, matmul_gflops_per_s=mm, flop_bound_faces_per_s=mm / gf,
               ours_share_of_bound=out["batch32"]["ours_faces_per_s"] / (mm / gf))
    if torch.cuda.is_available():
        out["cuda"] = cuda_throughput(chips)
    return out


def cuda_throughput(chips: np.ndarray) -> dict:
    import torch

    from facerec.recognition.dlib_net import load_dlib_resnet

    res = {"device": torch.cuda.get_device_name()}
    x = torch.from_numpy(np.concatenate([chips] * 4)).permute(0, 3, 1, 2).float().cuda()
    for dtype in (torch.float32, torch.float16):
        net = load_dlib_resnet().cuda().to(dtype=dtype, memory_format=torch.channels_last)
        xx = x.to(dtype=dtype, memory_format=torch.channels_last)
        with torch.inference_mode():
            for _ in range(3):
                net(xx)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(20):
                net(xx)
            torch.cuda.synchronize()
        res[str(dtype).split(".")[-1]] = 20 * len(xx) / (time.perf_counter() - t0)
    return res


def bench_throughput(rounds: int) -> dict:
    out = {}
    for threads in (1, 2):
        proc = subprocess.run([sys.executable, __file__, "--worker_threads", str(threads),
                               "--rounds", str(rounds)], env=env_for(REPO / "src", threads),
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        out[f"threads{threads}"] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(out[f"threads{threads}"], indent=1), flush=True)
    return out


# ----------------------------------------------------------------------------------------- compare
def compare_photos(work: Path) -> tuple[Path, list[Path], list[tuple[Path, str]]]:
    """(folder of the 120 test photos, their paths, 100 known (photo, person)): people sorted by
    name; test = photos 1-2 of the first 60 people; known = photos 3-4 of the first 50."""
    people = lfw_people()[:60]
    folder = work / "compare-photos"
    tests, known = [], []
    for i, person in enumerate(people):
        photos = sorted(person.glob("*.jpg"))
        for p in photos[:2]:
            target = folder / p.name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, target)
            tests.append(target)
        if i < 50:
            known += [(p, person.name) for p in photos[2:4]]
    return folder, tests, known


def known_checkpoint(work: Path, known: list[tuple[Path, str]], src: Path) -> Path:
    """facerec trained (defaults) on the known photos: detect -> split -> train."""
    marker = work / "known-checkpoint.txt"
    if marker.is_file() and Path(marker.read_text().strip()).is_file():
        return Path(marker.read_text().strip())
    raw = work / "known-raw"
    for photo, person in known:
        (raw / person).mkdir(parents=True, exist_ok=True)
        shutil.copy2(photo, raw / person / photo.name)
    env = env_for(src, cache=work / "cache")
    for args in (["detect", str(raw), "--out", str(work / "known-processed"), "--quiet"],
                 ["split", str(work / "known-processed"), "--out", str(work / "known-dataset"),
                  "--force"],
                 ["train", "--data_path", str(work / "known-dataset"), "--accelerator", "cpu",
                  "--runs_dir", str(work / "runs")]):
        proc = subprocess.run([sys.executable, "-m", "facerec.cli", *args], env=env, cwd=work,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"facerec {args[0]} failed: {proc.stderr[-2000:]}")
    ckpt = [line.split(":", 1)[1].strip() for line in proc.stdout.splitlines()
            if line.startswith("Best checkpoint:")][-1]
    ckpt_path = Path(ckpt) if Path(ckpt).is_absolute() else work / ckpt
    marker.write_text(str(ckpt_path))
    return ckpt_path


class FaceRecognitionApproach:
    """What face_recognition does: HOG detector (upsample 1), 5 landmarks, dlib's descriptor,
    nearest known face within 0.6."""

    def __init__(self, known: list[tuple[Path, str]]) -> None:
        import dlib

        from facerec.recognition.dlib_face import dlib_models_dir

        models = dlib_models_dir()
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(
            str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        encodings = [self.encode(p) for p, _ in known]
        self.known = np.array([e[0] for e in encodings if e])
        self.names = [n for (p, n), e in zip(known, encodings) if e]

    def encode(self, path: Path) -> list[np.ndarray]:
        from PIL import Image

        img = np.asarray(Image.open(path).convert("RGB"))
        return [np.asarray(self.net.compute_face_descriptor(img, self.shape(img, box)))
                for box in self.detector(img, 1)]

    def predict_folder(self, photos: list[Path]) -> list[list[str]]:
        out = []
        for p in photos:
            names = []
            for enc in self.encode(p):
                d = np.linalg.norm(self.known - enc, axis=1)
                names.append(self.names[int(d.argmin())] if d.min() <= 0.6 else "unknown")
            out.append(names)
        return out


def facerec_predict_folder(src: Path, ckpt: Path, folder: Path, cache: Path,
                           threads: int | None = None) -> tuple[float, list]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "facerec.cli", "predict", "--checkpoint_path",
                           str(ckpt), "--image_path", str(folder), "--json", "--quiet",
                           "--device", "cpu"],
                          env=env_for(src, threads, cache=cache), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"facerec predict failed: {proc.stderr[-2000:]}")
    return wall, json.loads(proc.stdout)


def bench_compare(work: Path, rounds: int, before_src: Path | None) -> dict:
    folder, tests, known = compare_photos(work)
    ckpt = known_checkpoint(work, known, REPO / "src")
    approach = FaceRecognitionApproach(known)
    runs: dict[str, list[float]] = {"facerec": [], "facerec_1thread": [],
                                    "facerec_allthreads": [], "face_recognition": []}
    if before_src is not None:
        runs["facerec_before"] = []
    faces = {}
    for _ in range(rounds):
        wall, result = facerec_predict_folder(REPO / "src", ckpt, folder, work / "cache")
        runs["facerec"].append(len(tests) / wall)
        faces["facerec"] = sum(len(r["faces"]) for r in result)
        # OMP_NUM_THREADS=1: on a machine whose cores are busy with other work, one thread per
        # process avoids OpenMP threads waiting for each other at every layer
        wall, result = facerec_predict_folder(REPO / "src", ckpt, folder, work / "cache", 1)
        runs["facerec_1thread"].append(len(tests) / wall)
        # every usable CPU, whatever else runs (torch's own default): what the policy avoids
        wall, result = facerec_predict_folder(REPO / "src", ckpt, folder, work / "cache",
                                              len(os.sched_getaffinity(0)))
        runs["facerec_allthreads"].append(len(tests) / wall)
        t0 = time.perf_counter()
        names = approach.predict_folder(tests)
        runs["face_recognition"].append(len(tests) / (time.perf_counter() - t0))
        faces["face_recognition"] = sum(len(n) for n in names)
        if before_src is not None:
            wall, result = facerec_predict_folder(before_src, ckpt, folder, work / "cache")
            runs["facerec_before"].append(len(tests) / wall)
    best = {k: max(v) for k, v in runs.items()}
    out = {"photos": len(tests), "known_faces": len(approach.names), "photos_per_s": best,
           "all_rounds": runs, "faces_found": faces,
           "ratio_facerec_over_face_recognition": best["facerec"] / best["face_recognition"],
           "ratio_facerec_1thread_over_face_recognition": (best["facerec_1thread"]
                                                           / best["face_recognition"]),
           "ratio_facerec_allthreads_over_face_recognition": (best["facerec_allthreads"]
                                                              / best["face_recognition"])}
    if before_src is not None:
        out["ratio_before_over_face_recognition"] = (best["facerec_before"]
                                                     / best["face_recognition"])
    out["checkpoint"] = str(ckpt)
    print(json.dumps(out, indent=1), flush=True)
    return out


# ----------------------------------------------------------------------------------------- predict
def warm_latency(predictor, photos: list[Path], rounds: int) -> dict:
    """Best-of-rounds mean ms per photo, one photo per call (what a warm ``predict`` costs)."""
    best: dict | None = None
    for _ in range(rounds):
        for key in ("detect", "embed", "classify", "load"):
            predictor.timings[key] = 0.0
        t0 = time.perf_counter()
        single = 0
        for p in photos:
            result = predictor.predict_image(p)
            single += len(result.faces) == 1
        wall = (time.perf_counter() - t0) / len(photos)
        split = {k: predictor.timings[k] / len(photos) * 1000
                 for k in ("detect", "embed", "classify", "load")}
        if best is None or wall * 1000 < best["total_ms"]:
            best = {"total_ms": wall * 1000, **{f"{k}_ms": v for k, v in split.items()},
                    "photos": len(photos), "single_face_photos": single}
    return best or {}


def bench_predict(work: Path, rounds: int) -> dict:
    import torch

    from facerec.inference.predict import Predictor

    folder, tests, known = compare_photos(work)
    ckpt = known_checkpoint(work, known, REPO / "src")
    photos = tests[:20]
    predictor = Predictor(ckpt, device="cpu")
    predictor.warm_up()
    list(predictor.predict_paths(photos[:2]))
    default_threads = torch.get_num_threads()
    warm = {}
    # torch's default (one thread per core) and one thread: on a machine whose cores are busy
    # with other work, OpenMP threads waiting for each other at every layer can cost more than
    # the second core gives
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        warm[f"threads{threads}"] = warm_latency(predictor, photos, rounds)
    torch.set_num_threads(default_threads)
    cold = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "facerec.cli", "predict", "--checkpoint_path",
                               str(ckpt), "--image_path", str(photos[0]), "--device", "cpu"],
                              env=env_for(REPO / "src", cache=work / "cache"),
                              capture_output=True, text=True)
        cold.append(time.perf_counter() - t0)
        assert proc.returncode == 0, proc.stderr[-2000:]
    folder_walls = [facerec_predict_folder(REPO / "src", ckpt, folder, work / "cache")[0]
                    for _ in range(rounds)]
    out = {"warm_per_photo": warm, "cold_start_s": min(cold), "cold_all": cold,
           "folder_photos": len(tests), "folder_photos_per_s": len(tests) / min(folder_walls)}
    print(json.dumps(out, indent=1), flush=True)
    return out


# ---------------------------------------------------------------------------------------- annotate
def bench_annotate(work: Path, rounds: int, before_src: Path | None, crops: int = 300) -> dict:
    """Cold-cache ``facerec annotate`` on lfw-dev crops (the first 3 photos of every person)."""
    raw = work / "annotate-raw"
    if not raw.is_dir():
        for person in lfw_people():
            for p in sorted(person.glob("*.jpg"))[:3]:
                raw.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, raw / p.name)  # loose photos: annotate clusters them
    template = work / "annotate-processed"
    if not template.is_dir():
        proc = subprocess.run([sys.executable, "-m", "facerec.cli", "detect", str(raw), "--out",
                               str(template), "--quiet"], env=env_for(REPO / "src"),
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    n_crops = len(list(template.glob("*.jpg")))
    sources = {"after": REPO / "src"}
    if before_src is not None:
        sources["before"] = before_src
    runs: dict[str, list[float]] = {k: [] for k in sources}
    for r in range(rounds):
        for name, src in sources.items():
            target = work / f"annotate-{name}"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(template, target)
            cache = work / f"annotate-cache-{name}-{r}"
            shutil.rmtree(cache, ignore_errors=True)
            # the converted network (not embeddings) may stay cached, as for any user
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "facerec.cli", "annotate", str(target),
                                   "--quiet", "--cache_dir", str(cache)], env=env_for(src),
                                  capture_output=True, text=True)
            runs[name].append(time.perf_counter() - t0)
            assert proc.returncode == 0, proc.stderr[-2000:]
    out = {"crops": n_crops, "seconds": {k: min(v) for k, v in runs.items()}, "all_rounds": runs}
    if before_src is not None:
        out["speedup"] = out["seconds"]["before"] / out["seconds"]["after"]
    print(json.dumps(out, indent=1), flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("throughput", "predict", "compare", "annotate"),
                        action="append")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", default=str(REPO / "bench" / "work" / "embedding"))
    parser.add_argument("--before_src", default=None,
                        help="src/ of an older facerec to time too (predict compare, annotate)")
    parser.add_argument("--busy", type=int, default=0,
                        help="keep this many cores busy (a busy loop in another process each) "
                        "for the whole run: the 'one core busy' condition of docs/speed.md")
    parser.add_argument("--worker_threads", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    if args.worker_threads:
        print(json.dumps(throughput_worker(args.worker_threads, args.rounds)))
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    before = Path(args.before_src).resolve() if args.before_src else None
    parts = args.only or ["throughput", "predict", "compare", "annotate"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {"cpu_count": os.cpu_count(), "note": "shared machine: compare ratios of one run"}
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
             for _ in range(args.busy)]
    try:
        run_parts(parts, args, work, before, results)
    finally:
        for loop in loops:
            loop.kill()
    return 0


def run_parts(parts: list[str], args: argparse.Namespace, work: Path, before: Path | None,
              results: dict) -> None:
    suffix = f"-busy{args.busy}" if args.busy else ""
    for part in parts:
        print(f"== {part}", flush=True)
        if part == "throughput":
            results[part] = bench_throughput(args.rounds)
        elif part == "predict":
            results[part] = bench_predict(work, args.rounds)
        elif part == "compare":
            results[part] = bench_compare(work, args.rounds, before)
        else:
            results[part] = bench_annotate(work, args.rounds, before)
        results[part]["busy_cores"] = args.busy
        (RESULTS / f"{part}{suffix}.json").write_text(json.dumps(results[part], indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
