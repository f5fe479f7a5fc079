"""`facerec detect`: the local engine vs `--engine ray` with 1 and 2 workers on the same photos.

    .venv/bin/python bench/ray_engine.py                      # 500 photos, 3 repeats, all configs
    .venv/bin/python bench/ray_engine.py --photos 200 --repeats 2 --configs local ray-1w ray-2w

**Photos** (``$FACEREC_TEST_DATA``, default ../shared/data): a mix, since lfw-dev's photos are all
250 x 250 px: the 118 ``celebrities`` photos (~300 px, one face each), 100 WIDER FACE validation
photos (``detection/``, 1024 px wide, crowds), and lfw-dev photos for the rest. The same files,
copied once, for every configuration.

**Configurations** (each repeat a fresh process and a fresh output folder):

* ``local``: ``facerec detect`` as it is (torch's default threads: this machine's cores);
  ``local-1t``: the same with 1 torch thread;
* ``ray-1w``: ``--engine ray`` with 1 worker (an actor holding the detector, with as many torch
  threads as the CPUs it reserves: the whole machine less decoding's share);
* ``ray-1w1t``: 1 worker with 1 thread, ``ray-2w``: 2 workers with 1 thread each (the scaling
  of workers at a fixed number of threads per worker, as on a cluster of many small workers);
* ``decode``: what a decoding task does (read, sha256, decode, to an array), on one core,
  without Ray: how many CPUs a cluster needs to feed its detector workers.

Ray's overhead is ``ray-1w1t`` against ``local-1t`` (the same detector threads; on a machine
shared with other work, torch's 2-thread runs suffer most from the contention), and also
``ray-1w`` against ``local``; the scaling is ``ray-2w`` against ``ray-1w1t``.

Each Ray run starts its local Ray (``num_cpus`` = this machine's cores) first; **photos/s** is the
stage alone (``detect_ray``, with Ray already up: a cluster runs for many stages), the Ray start is
reported beside it. Min and median over the repeats. **Memory**: peak resident set (VmHWM) of
each detector actor and decoding worker process, sampled from /proc during the run, and of the
local engine's process. The results go to bench/results/ray_engine.json.
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
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEREC_TEST_DATA", REPO.parent / "shared" / "data"))
#: name -> (Ray workers (None: the local engine), torch threads per worker (None: the default))
CONFIGS = {"local": (None, None), "local-1t": (None, 1), "ray-1w": (1, None),
           "ray-1w1t": (1, 1), "ray-2w": (2, 1), "decode": (0, None)}


def make_photos(root: Path, count: int) -> dict:
    """Copy the mix (see the module docstring) to ``root``; what it holds."""
    celebrities = sorted((DATA / "celebrities").glob("*/*/*.jpg"))
    wider = sorted((DATA / "detection" / "images").glob("*/*.jpg"))[:100]
    lfw = sorted((DATA / "lfw-dev").rglob("*.jpg"))
    picks = (celebrities + wider)[:count]
    picks += lfw[: count - len(picks)]
    for i, photo in enumerate(picks):
        target = root / f"{i // 100:02d}" / f"{i:04d}-{photo.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(photo, target)
    return {"photos": len(picks), "celebrities": min(len(celebrities), count),
            "wider": len([p for p in picks if p in wider]),
            "lfw": len([p for p in picks if p in lfw])}


class PeakMemory:
    """Peak RSS (VmHWM, MiB) of this machine's Ray worker processes by their title, sampled."""

    def __init__(self) -> None:
        self.peaks: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
                    if not title.startswith("ray::"):
                        continue
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                hwm = next((int(line.split()[1]) / 1024 for line in status.splitlines()
                            if line.startswith("VmHWM:")), 0.0)
                titles, old = self.peaks.get(int(pid), ("", 0.0))
                if title not in titles.split("|"):
                    titles = f"{titles}|{title}"
                self.peaks[int(pid)] = (titles, max(hwm, old))
            self._stop.wait(0.5)

    def by_kind(self) -> dict[str, list[float]]:
        """Peaks by what the process ran: detector actor, decoding (tasks), or only idle."""
        out: dict[str, list[float]] = {}
        for titles, peak in self.peaks.values():
            kind = ("detector actor" if "DetectWorker" in titles else
                    "decoding worker" if "decode_batch" in titles else
                    "listing worker" if "list_folder" in titles else
                    "other ray worker (" + titles.strip("|").replace("|", ", ") + ")")
            out.setdefault(kind, []).append(round(peak))
        return out


def one(config: str, raw: Path, out: Path, batch_size: int) -> dict:
    """One run of CONFIG, in this process (the parent starts a fresh process per run)."""
    import resource

    workers, threads = CONFIGS[config]
    if workers == 0:  # what one decoding task does per photo, on one core, no Ray
        from facerec.distributed.pipeline import decode_item

        files = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*") if p.is_file())
        t0 = time.perf_counter()
        for rel in files:
            decode_item({"root": str(raw), "rel": rel}, {})
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"seconds": seconds, "photos": len(files), "faces": 0,
                "memory_mib": {"decoding process": [round(peak)]}}
    if workers is None:
        import torch

        from facerec.detection.detect import detect_folder

        if threads:
            torch.set_num_threads(threads)

        t0 = time.perf_counter()
        summary = detect_folder(raw, out, batch_size=batch_size, progress=False)
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"seconds": seconds, "photos": summary.photos_read, "faces": summary.faces,
                "memory_mib": {"local process": [round(peak)]}}
    import logging

    import ray

    from facerec.distributed.detect import detect_ray

    t0 = time.perf_counter()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.ERROR,
             log_to_driver=False)
    started = time.perf_counter() - t0
    with PeakMemory() as memory:
        t0 = time.perf_counter()
        summary = detect_ray(raw, out, batch_size=batch_size, workers=workers, threads=threads,
                             progress=False)
        seconds = time.perf_counter() - t0
    ray.shutdown()
    driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "ray_start_seconds": started, "photos": summary.photos_read,
            "faces": summary.faces, "memory_mib": {**memory.by_kind(), "driver": [round(driver)]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "ray_engine.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: CONFIG RAW OUT
    parser.add_argument("--raw", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, Path(args.raw), Path(args.target), args.batch_size)))
        return
    work = Path(tempfile.mkdtemp(prefix="facerec-bench-ray-"))
    try:
        mix = make_photos(work / "raw", args.photos)
        print(f"photos: {mix}", flush=True)
        runs: dict[str, list[dict]] = {c: [] for c in args.configs}
        for repeat in range(args.repeats):  # interleaved: the machine's load hits all alike
            for config in args.configs:
                target = work / f"out-{config}-{repeat}"
                proc = subprocess.run([sys.executable, __file__, "--one", config, "--raw",
                                       str(work / "raw"), "--target", str(target),
                                       "--batch_size", str(args.batch_size)],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"{config} failed:\n{proc.stderr[-3000:]}")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                result["load_average"] = os.getloadavg()[0]
                runs[config].append(result)
                print(f"{config} #{repeat}: {result['photos'] / result['seconds']:.2f} photos/s "
                      f"({result['seconds']:.1f}s, load {result['load_average']:.1f}) "
                      f"memory {result['memory_mib']}", flush=True)
                shutil.rmtree(target, ignore_errors=True)
        report(runs, mix, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(runs: dict[str, list[dict]], mix: dict, args) -> None:
    table = {}
    for config, results in runs.items():
        rates = [r["photos"] / r["seconds"] for r in results]
        table[config] = {"photos_per_s_max": round(max(rates), 3),
                         "photos_per_s_median": round(statistics.median(rates), 3),
                         "seconds_min": round(min(r["seconds"] for r in results), 1),
                         "ray_start_seconds": [round(r.get("ray_start_seconds", 0), 1)
                                               for r in results],
                         "memory_mib": results[-1]["memory_mib"], "faces": results[-1]["faces"]}
    def ratio(a: str, b: str) -> float | None:
        if a in table and b in table:
            return round(table[a]["photos_per_s_median"] / table[b]["photos_per_s_median"], 3)
        return None

    derived = {"ray_1w1t_over_local_1t": ratio("ray-1w1t", "local-1t"),
               "ray_1w_over_local": ratio("ray-1w", "local"),
               "ray_2w_over_ray_1w1t": ratio("ray-2w", "ray-1w1t"),
               "ray_2w_over_ray_1w": ratio("ray-2w", "ray-1w")}
    out = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                       "platform": platform.platform()},
           "photos": mix, "batch_size": args.batch_size, "repeats": args.repeats,
           "table": table, "derived": derived, "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({"table": table, "derived": derived}, indent=1))


if __name__ == "__main__":
    main()
