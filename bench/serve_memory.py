#!/usr/bin/env python
"""Peak memory of ``facerec serve`` under the worst uploads that its limits let through.

    .venv/bin/python bench/serve_memory.py [--checkpoint_path CKPT] [--clients 4]
    .venv/bin/python bench/serve_memory.py --src OTHER/src --phases single,request   # before

1. The uploads are built in a temporary folder, each a tiny file that decodes huge
   (``tests/_bigimages.py``): a 13000 x 13000 16-bit greyscale PNG (~350 KB), a 13000 x 13000
   1-bit PNG, a 13000 x 13000 palette PNG with transparency (decoded through RGBA), a 9000 x 9000
   RGBA PNG, a 9700 x 9700 8-bit RGB PNG (the largest that decodes whole within one image's
   budget), a 13000 x 13000 RGBA PNG (refused: its own pixels do not fit) and a 13000 x 13000 JPEG.
2. ``facerec serve`` starts in a subprocess on 127.0.0.1 (a free port), on a work folder with an
   empty processed/ and ``--checkpoint_path`` (default: the model of ``bench/serve.py``'s work
   folder, made by it when missing).
3. Phases (``--phases``): ``single``: each upload alone, one request after the other;
   ``request``: one request holding 16 images (the most a request may hold) of the worst kinds;
   ``concurrent``: ``--clients`` requests of 4 worst images each, sent at once.
   Each request has a timeout and the run a deadline: it always stops by itself.
4. Memory is the server process's own: the baseline is its resident size after a warm-up
   prediction of a small photo; before each phase its peak is reset (``/proc/PID/clear_refs``)
   and after it the peak (``VmHWM``) is read: the growth is peak - baseline. Also reported: the
   resident size after the last phase (what stays).

Nothing is sent anywhere but 127.0.0.1. Results: ``bench/results/serve_memory.json`` (the target:
growth <= 1 GB in every phase).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import _bigimages  # noqa: E402

GB = 1 << 30


def build_uploads(folder: Path) -> dict[str, Path]:
    """The worst uploads, by name (see the module docstring)."""
    b = _bigimages
    made = {
        "png16_grey_13000": lambda p: b.png(p, 13000, 13000, bit_depth=16, color_type=0),
        "png1_13000": lambda p: b.png(p, 13000, 13000, bit_depth=1, color_type=0, value=0x55),
        "png_palette_alpha_13000": lambda p: b.png(p, 13000, 13000, color_type=3, value=1,
                                                   transparent=True),
        "png_rgba_9000": lambda p: b.png(p, 9000, 9000, color_type=6),
        "png_rgb_9700": lambda p: b.png(p, 9700, 9700, color_type=2),
        "png_rgba_13000": lambda p: b.png(p, 13000, 13000, color_type=6),
        "jpeg_13000": lambda p: b.jpeg(p, 13000, 13000),
    }
    out = {}
    for name, make in made.items():
        path = folder / (name + (".jpg" if name.startswith("jpeg") else ".png"))
        if not path.exists():
            make(path)
        out[name] = path
    return out


# ------------------------------------------------------------------------------------- server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)


def start_server(work: Path, checkpoint: str, src: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=os.environ.get(
        "OMP_NUM_THREADS", "2"))
    proc = subprocess.Popen([sys.executable, "-m", "facerec.cli", "serve", str(work),
                             "--checkpoint_path", checkpoint, "--port", str(port), "--device",
                             "cpu"], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"facerec serve exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/health", timeout=2) as r:
                if json.load(r)["model"]["checkpoint"]:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("facerec serve did not start in 300 s")


def post_images(url: str, paths: list[Path], timeout: float) -> tuple[int, str]:
    """POST /api/predict with ``paths`` as multipart field ``files``: (status, start of body)."""
    boundary = uuid.uuid4().hex
    parts = []
    for p in paths:
        parts.append((f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
                      f"filename=\"{p.name}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                     .encode() + p.read_bytes() + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/api/predict", data=body, method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read(300).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(300).decode("utf-8", "replace")
    except OSError as exc:
        return 0, f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------- phases
def run_phases(url: str, pid: int, uploads: dict[str, Path], singles: dict[str, Path],
               small: Path, phases: list[str], clients: int, timeout: float) -> dict:
    post_images(url, [small], timeout)  # warm-up: the model and the detector are loaded
    time.sleep(1)
    baseline = _status(pid)["VmRSS"]
    report: dict = {"baseline_rss": baseline, "phases": {}}

    def phase(name: str, action) -> None:
        _reset_peak(pid)
        t0 = time.perf_counter()
        answers = action()
        peak = _status(pid)["VmHWM"]
        report["phases"][name] = {"growth": peak - baseline, "seconds":
                                  round(time.perf_counter() - t0, 1), "answers": answers}
        print(f"{name:40s} peak growth {(peak - baseline) / GB:6.2f} GB   "
              f"{[a[0] for a in answers]}", flush=True)

    worst = ["png16_grey_13000", "png_palette_alpha_13000", "png_rgb_9700", "jpeg_13000"]
    if "single" in phases:
        for name, path in singles.items():
            phase(f"single: {name}", lambda path=path: [post_images(url, [path], timeout)])
    if "request" in phases:
        many = [uploads[worst[i % len(worst)]] for i in range(16)]
        phase("request: 16 images", lambda: [post_images(url, many, timeout * 4)])
    if "concurrent" in phases:
        def at_once():
            answers: list = [None] * clients
            paths = [uploads[n] for n in worst]

            def client(k: int) -> None:
                answers[k] = post_images(url, paths, timeout * 4)
            threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout * 8)
            return [a or (0, "timed out") for a in answers]
        phase(f"concurrent: {clients} requests x 4 images", at_once)
    time.sleep(2)
    report["rss_after"] = _status(pid)["VmRSS"]
    report["max_growth"] = max(p["growth"] for p in report["phases"].values())
    return report


def default_checkpoint() -> str:
    sys.path.insert(0, str(REPO / "bench"))
    from serve import make_work  # bench/serve.py: facerec run on celebrities/train

    work = REPO / "bench" / "results" / "serve-work"
    make_work(work, 30)
    sys.path.insert(0, str(REPO / "src"))
    from facerec.workspace import Workspace

    return str(Workspace(work).best_checkpoint())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint_path", default=None)
    ap.add_argument("--src", default=str(REPO / "src"), help="the facerec source to serve with")
    ap.add_argument("--phases", default="single,request,concurrent")
    ap.add_argument("--only", default=None, help="the uploads of the single phase, by name "
                    "(comma-separated; default: all)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=300, help="seconds per request")
    ap.add_argument("--files", default=None, help="folder to keep the uploads in (default: temp)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "serve_memory.json"))
    args = ap.parse_args()
    checkpoint = args.checkpoint_path or default_checkpoint()
    with tempfile.TemporaryDirectory(prefix="facerec-serve-memory-") as tmp:
        tmp = Path(tmp)
        files = Path(args.files) if args.files else tmp / "uploads"
        files.mkdir(parents=True, exist_ok=True)
        print("building the uploads ...", flush=True)
        uploads = build_uploads(files)
        singles = {k: v for k, v in uploads.items()
                   if args.only is None or k in args.only.split(",")}
        small = _bigimages.jpeg(tmp / "small.jpg", 640, 480)
        (tmp / "work" / "processed").mkdir(parents=True)
        proc, url = start_server(tmp / "work", checkpoint, Path(args.src), tmp / "server.log")
        try:
            report = run_phases(url, proc.pid, uploads, singles, small,
                                args.phases.split(","), args.clients, args.timeout)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        report.update(src=args.src, files={k: v.stat().st_size for k, v in uploads.items()})
    print(f"max peak growth {report['max_growth'] / GB:.2f} GB (target <= 1 GB); resident after: "
          f"+{(report['rss_after'] - report['baseline_rss']) / GB:.2f} GB")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
