"""Load benchmark of ``facerec serve``'s ``POST /api/predict`` against ``facerec predict`` on a folder.

    .venv/bin/python bench/serve.py                       # 8 clients x 50 requests, 127.0.0.1 only
    .venv/bin/python bench/serve.py --clients 4 --requests 20

1. A work folder like ``make run``'s: ``facerec run ../shared/data/celebrities/train --work WORK``
   (kept in ``--work``, so a rerun skips it), i.e. 5 people from per-person albums.
2. ``facerec serve WORK`` starts in a subprocess on 127.0.0.1 (a free port) and loads that model.
3. ``--clients`` threads each send ``--requests`` requests, one photo each, cycling through the 25
   held-out photos of ``celebrities/val``; every request has a timeout and the whole run a deadline
   (``--deadline``), so it always stops by itself. Reported: errors (non-200, or an answer that
   differs from the CLI's for that photo), p50/p95/max latency, requests/s.
4. In the same run, ``facerec predict --json`` on a folder holding the same photos as many times
   (clients x requests files, symlinks): wall time (with the model load) and images/s.

Nothing is sent anywhere but 127.0.0.1. Results: ``bench/results/serve.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEREC_TEST_DATA", REPO.parent / "shared" / "data"))


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"),
                                                       os.environ.get("PYTHONPATH", "")]))


def _facerec(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facerec.cli", *args], env=_env(), text=True,
                          capture_output=True, **kw)


def make_work(work: Path, epochs: int) -> None:
    if any((work / "runs").glob("**/*.ckpt")):
        print(f"work folder {work}: reused")
        return
    print(f"facerec run {DATA / 'celebrities' / 'train'} --work {work} ...", flush=True)
    r = _facerec("run", str(DATA / "celebrities" / "train"), "--work", str(work), "--max_epochs",
                 str(epochs), "--device", "cpu", "--quiet", timeout=3600)
    if r.returncode != 0:
        sys.exit(f"facerec run failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(work: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "facerec.cli", "serve", str(work), "--port",
                             str(port), "--device", "cpu"], env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"facerec serve exited: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                if json.load(r)["model"]["checkpoint"]:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit("facerec serve did not come up in 300 s")


def load(port: int, photos: list[Path], clients: int, requests: int, deadline_s: float,
         expected: dict[str, list]) -> dict:
    import httpx

    url = f"http://127.0.0.1:{port}/api/predict"
    blobs = [(p.name, p.read_bytes()) for p in photos]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + deadline_s

    def client(k: int) -> None:
        with httpx.Client(timeout=120) as http:
            for j in range(requests):
                if time.monotonic() > stop_at:
                    with lock:
                        errors.append("deadline: not sent")
                    continue
                name, data = blobs[(k * requests + j) % len(blobs)]
                t0 = time.perf_counter()
                try:
                    r = http.post(url, files={"files": (name, data, "image/jpeg")})
                    ok = r.status_code == 200
                    why = "" if ok else f"HTTP {r.status_code}: {r.text[:120]}"
                    if ok and [f["label"] for f in r.json()[0]["faces"]] != expected.get(name):
                        ok, why = False, f"{name}: labels differ from facerec predict's"
                except httpx.HTTPError as exc:
                    ok, why = False, f"{type(exc).__name__}: {exc}"
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt) if ok else errors.append(why)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {"clients": clients, "requests": clients * requests, "ok": len(latencies),
            "errors": len(errors), "error_examples": sorted(set(errors))[:5],
            "seconds": round(wall, 2), "requests_per_s": round(len(latencies) / wall, 2),
            "p50_ms": round(float(np.percentile(lat, 50)) * 1000, 1),
            "p95_ms": round(float(np.percentile(lat, 95)) * 1000, 1),
            "max_ms": round(float(np.max(lat)) * 1000, 1)}


def cli_predict(checkpoint: str, photos: list[Path], copies: int, tmp: Path) -> tuple[dict, dict]:
    folder = tmp / "predict-folder"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for i in range(copies):
        p = photos[i % len(photos)]
        (folder / f"{i:04d}_{p.name}").symlink_to(p.resolve())
    t0 = time.perf_counter()
    r = _facerec("predict", "--checkpoint_path", checkpoint, "--image_path", str(folder), "--json",
                 "--device", "cpu", "--quiet", "--timing", timeout=3600)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"facerec predict failed: {r.stderr[-2000:]}")
    results = json.loads(r.stdout)
    labels = {Path(x["image"]).name.split("_", 1)[1]: [f["label"] for f in x["faces"]]
              for x in results}
    timing = next((line for line in r.stderr.splitlines() if "image(s)" in line), "")
    return ({"images": len(results), "seconds": round(wall, 2),
             "images_per_s": round(len(results) / wall, 2), "timing": timing.strip()}, labels)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=50, help="per client")
    ap.add_argument("--deadline", type=float, default=1800, help="seconds for the load phase")
    ap.add_argument("--work", default=str(REPO / "bench" / "results" / "serve-work"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--serve_first", action="store_true",
                    help="run the server's load before the CLI's folder (default: after)")
    args = ap.parse_args()
    work = Path(args.work)
    make_work(work, args.epochs)
    sys.path.insert(0, str(REPO / "src"))
    from facerec.workspace import Workspace

    checkpoint = str(Workspace(work).best_checkpoint())
    photos = sorted((DATA / "celebrities" / "val").glob("*/*.jpg"))
    n = args.clients * args.requests

    def serve(expected: dict[str, list]) -> dict:
        port = free_port()
        server = start_server(work, port)
        try:
            return load(port, photos, args.clients, args.requests, args.deadline, expected)
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()

    # the answers are checked against the CLI's: with --serve_first, from a quick CLI pass over
    # the distinct photos, so that the load on a shared machine falls on the other order too
    if args.serve_first:
        _, expected = cli_predict(checkpoint, photos, len(photos), work)
        served = serve(expected)
        cli, _ = cli_predict(checkpoint, photos, n, work)
    else:
        cli, expected = cli_predict(checkpoint, photos, n, work)
        served = serve(expected)
    print(f"facerec predict on a folder of {n} images: {cli}", flush=True)
    print(f"facerec serve, {args.clients} clients x {args.requests} requests: {served}")
    result = {"checkpoint": checkpoint, "photos": len(photos), "serve": served, "predict_cli": cli,
              "order": "serve first" if args.serve_first else "predict first",
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    out = REPO / "bench" / "results" / "serve.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\n| | requests/images | errors | p50 ms | p95 ms | per s |\n|---|---|---|---|---|---|\n"
          f"| facerec serve ({args.clients} clients) | {served['requests']} | {served['errors']} | "
          f"{served['p50_ms']} | {served['p95_ms']} | {served['requests_per_s']} |\n"
          f"| facerec predict (folder) | {cli['images']} | - | - | - | {cli['images_per_s']} |\n"
          f"written to {out}")
    if served["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
