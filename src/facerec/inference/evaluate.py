"""``facerec evaluate``: how good a checkpoint is on labelled images, closed and open set.

Library API::

    from facerec.inference.evaluate import evaluate, print_report, write_report
    report = evaluate("runs/.../best.ckpt", "dataset/test", unknown_dir="strangers/")
    report.accuracy, report.macro_f1, report.per_person, report.open_set
    write_report(report, "eval/")     # report.json, confusion_matrix.png, predictions.csv, ...

``data_path`` holds one folder per person (``dataset/test/<person>/``); every image under it is
predicted with :class:`facerec.inference.predict.Predictor` and compared with its folder name. A folder whose
name is not one of the checkpoint's people counts as unknown people (impostors), as does every image
under ``unknown_dir``. Input kinds (``input``): ``crops`` takes every image as one face crop (the
default for a ``facerec split`` dataset, recognised by ``labels.json`` next to or in ``data_path``,
so the numbers match training's test metrics); ``photos`` detects faces first and, when a photo has
several, uses the largest (or the one nearest the ``center``, ``pick``). A photo with no face found
is predicted as ``(no face)``.

Figures (genuine images = those of known people):

* ``accuracy``: share of genuine images given the right name (``unknown`` counts as wrong);
  ``closed_set_accuracy``: the best guess is right, whatever the threshold;
* ``macro_f1`` and per-person ``precision``/``recall``/``f1`` over the known people;
* open set, with impostors: ``fpir`` = share of impostor images accepted as someone, ``fnir`` =
  share of genuine images rejected or misidentified, both at the threshold in use; ``tpir_at_fpir``
  = share of genuine images accepted as the right person at the threshold that lets through at most
  1% of the impostors (set on the impostors themselves, so with few impostors it is coarse: the
  report gives their number).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facerec.errors import FacerecError
from facerec.safeio import check_output_location

__all__ = ["EvalReport", "evaluate", "print_report", "write_report", "confusion_png",
           "NO_FACE", "open_set_figures"]

NO_FACE = "(no face)"


@dataclass
class EvalReport:
    checkpoint: str
    data_path: str
    unknown_dir: str | None
    input: str
    threshold: float | None
    labels: list[str]
    n_images: int
    n_genuine: int
    n_impostor: int
    accuracy: float | None
    closed_set_accuracy: float | None
    macro_f1: float | None
    per_person: dict[str, dict[str, float]]
    confusion: dict[str, Any]            # rows (truth), columns (predicted), matrix
    misclassified: list[dict[str, Any]]
    open_set: dict[str, Any] | None
    no_face: int
    unreadable: list[dict[str, str]]
    predictions: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self, predictions: bool = False) -> dict:
        d = asdict(self)
        if not predictions:
            d.pop("predictions")
        return _clean(d)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def _is_split_dataset(root: Path) -> bool:
    return (root / "labels.json").is_file() or (root.parent / "labels.json").is_file()


def _scan(root: Path) -> list[tuple[Path, str]]:
    """(image, person) for every image under root/<person>/ (recursively)."""
    from facerec.images import iter_files
    from facerec.images import IMAGE_EXTS

    if not root.is_dir():
        raise FacerecError(f"data folder not found: {root}")
    out = []
    for person in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        out += [(f, person.name) for f in iter_files(person) if f.suffix.lower() in IMAGE_EXTS]
    if not out:
        raise FacerecError(f"no images in {root}/<person>/: evaluate needs one folder of images "
                           "per person (e.g. dataset/test from `facerec split`)")
    return out


def open_set_figures(correct: np.ndarray, genuine_score: np.ndarray, genuine_accept: np.ndarray,
                     impostor_score: np.ndarray, impostor_accept: np.ndarray,
                     target_fpir: float = 0.01) -> dict:
    """FPIR and FNIR of the decisions given; TPIR at ``target_fpir`` with the threshold set on the
    impostor scores (at most ``target_fpir`` of them strictly above it). Scores: NaN = no face."""
    gs = np.nan_to_num(np.asarray(genuine_score, float), nan=-np.inf)
    imp = np.nan_to_num(np.asarray(impostor_score, float), nan=-np.inf)
    correct = np.asarray(correct, bool)
    out: dict[str, Any] = {"n_genuine": int(len(gs)), "n_impostor": int(len(imp))}
    out["fpir"] = float(np.mean(impostor_accept)) if len(imp) else None
    out["fnir"] = float(1 - np.mean(np.asarray(genuine_accept, bool) & correct)) if len(gs) else None
    if len(imp) and len(gs):
        s = np.sort(imp)[::-1]
        k = int(math.floor(target_fpir * len(s)))
        t1 = float(s[k]) if k < len(s) else -math.inf
        out["target_fpir"] = target_fpir
        out["threshold_at_target"] = t1 if math.isfinite(t1) else None
        out["fpir_at_target"] = float(np.mean(imp > t1))
        out["tpir_at_fpir"] = float(np.mean((gs > t1) & correct))
    return out


def evaluate(checkpoint: str | os.PathLike, data_path: str | os.PathLike = "dataset/test", *,
             unknown_dir: str | os.PathLike | None = None, threshold: float | None = None,
             input: str = "auto", pick: str = "largest", runtime: str = "torch",
             device: str = "auto", batch_size: int = 16, progress: bool = True,
             predictor: Any = None) -> EvalReport:
    """Predict every image of ``data_path/<person>/`` (and ``unknown_dir``) and score it."""
    from facerec.recognition.decision import UNKNOWN
    from facerec.inference.predict import Predictor, collect_images, main_face

    if input not in ("auto", "crops", "photos"):
        raise FacerecError(f"unknown input kind {input!r}: use auto, crops or photos")
    root = Path(data_path)
    items = _scan(root)
    impostor_items: list[tuple[Path, str]] = []
    if unknown_dir is not None:
        impostor_items = [(p, UNKNOWN) for p, _, _ in collect_images([unknown_dir])]
    mode = input if input != "auto" else ("crops" if _is_split_dataset(root) else "photos")
    t0 = time.perf_counter()
    pred = predictor or Predictor(checkpoint, device=device, runtime=runtime, threshold=threshold,
                                  mode="crops" if mode == "crops" else "auto",
                                  batch_size=batch_size)
    labels = list(pred.labels)
    known = set(labels)
    warns = []
    strangers = sorted({t for _, t in items if t not in known})
    if strangers:
        warns.append(f"{len(strangers)} folder(s) of {root} are not people of the checkpoint "
                     f"({', '.join(strangers[:3])}{' ...' if len(strangers) > 3 else ''}): their "
                     "images count as unknown people (impostors)")
    truth = [t if t in known else UNKNOWN for _, t in items] + [UNKNOWN] * len(impostor_items)
    files = [p for p, _ in items] + [p for p, _ in impostor_items]
    # the unknown_dir may be given as photos while data_path holds crops: one predictor per kind
    results = list(pred.predict_paths(files[:len(items)], progress=progress))
    if impostor_items:
        imp_pred = pred
        if mode == "crops" and input == "auto" and not _is_split_dataset(Path(unknown_dir)):
            imp_pred = Predictor(checkpoint, device=device, runtime=runtime, threshold=threshold,
                                 mode="auto", batch_size=batch_size)
        results += list(imp_pred.predict_paths(files[len(items):], progress=progress))
    seconds = time.perf_counter() - t0

    rows = []
    unreadable = []
    for f, t, r in zip(files, truth, results):
        face = main_face(r, pick)
        if r.error:
            unreadable.append({"image": str(f), "error": r.error})
        rows.append({"image": str(f), "truth": t,
                     "predicted": face.label if face else NO_FACE,
                     "candidate": face.candidate if face else None,
                     "confidence": face.confidence if face else None,
                     "faces": len(r.faces), "error": r.error})
    ok_rows = [r for r in rows if not r["error"]]
    gen = [r for r in ok_rows if r["truth"] != UNKNOWN]
    imp = [r for r in ok_rows if r["truth"] == UNKNOWN]
    y_true = [r["truth"] for r in gen]
    y_pred = [r["predicted"] for r in gen]
    accuracy = float(np.mean([a == b for a, b in zip(y_true, y_pred)])) if gen else None
    closed = float(np.mean([r["candidate"] == r["truth"] for r in gen])) if gen else None
    present = [p for p in labels if p in set(y_true)]
    per_person, macro_f1 = _per_person(gen, imp, present)
    row_names, col_names, matrix = _confusion(ok_rows, present, labels, bool(imp))
    misclassified = [{k: r[k] for k in ("image", "truth", "predicted", "candidate", "confidence")}
                     for r in ok_rows if r["predicted"] != r["truth"]]
    open_set = _open_set(gen, imp, pred.threshold) if imp else None
    timings = dict(pred.timings)
    timings["total"] = seconds
    return EvalReport(
        checkpoint=str(checkpoint), data_path=str(root),
        unknown_dir=None if unknown_dir is None else str(unknown_dir), input=mode,
        threshold=pred.threshold, labels=labels, n_images=len(rows), n_genuine=len(gen),
        n_impostor=len(imp), accuracy=accuracy, closed_set_accuracy=closed, macro_f1=macro_f1,
        per_person=per_person,
        confusion={"rows": row_names, "columns": col_names, "matrix": matrix.tolist()},
        misclassified=misclassified, open_set=open_set,
        no_face=sum(r["predicted"] == NO_FACE for r in ok_rows), unreadable=unreadable,
        predictions=rows, timings=timings, warnings=warns)


def _per_person(gen: list[dict], imp: list[dict], present: list[str]
                ) -> tuple[dict[str, dict[str, float]], float | None]:
    """Precision, recall, F1 and support per person present, over the genuine images and the
    impostors (an impostor named alice is a false positive for alice); and their macro F1."""
    if not gen:
        return {}, None
    from sklearn.metrics import precision_recall_fscore_support

    all_true = [r["truth"] for r in gen + imp]
    all_pred = [r["predicted"] for r in gen + imp]
    p, rc, f1, sup = precision_recall_fscore_support(all_true, all_pred, labels=present,
                                                      zero_division=0)
    per_person = {name: {"precision": float(p[k]), "recall": float(rc[k]), "f1": float(f1[k]),
                         "support": int(sup[k])} for k, name in enumerate(present)}
    return per_person, float(np.mean(f1)) if len(f1) else None


def _confusion(ok_rows: list[dict], present: list[str], labels: list[str], impostors: bool
               ) -> tuple[list[str], list[str], np.ndarray]:
    """Truth rows (people present, then unknown), predicted columns (every label, unknown, no
    face), counts."""
    from facerec.recognition.decision import UNKNOWN

    row_names = present + ([UNKNOWN] if impostors else [])
    col_names = labels + [UNKNOWN, NO_FACE]
    ri = {n: i for i, n in enumerate(row_names)}
    ci = {n: i for i, n in enumerate(col_names)}
    matrix = np.zeros((len(row_names), len(col_names)), dtype=int)
    for r in ok_rows:
        matrix[ri[r["truth"]], ci[r["predicted"]]] += 1
    return row_names, col_names, matrix


def _open_set(gen: list[dict], imp: list[dict], threshold: float | None) -> dict:
    """The open-set figures (:func:`open_set_figures`) of genuine and impostor rows."""
    from facerec.recognition.decision import UNKNOWN

    def scores(rows: list[dict]) -> np.ndarray:
        return np.array([np.nan if r["confidence"] is None else r["confidence"] for r in rows],
                        float)

    figures = open_set_figures(
        correct=np.array([r["candidate"] == r["truth"] for r in gen], bool),
        genuine_score=scores(gen),
        genuine_accept=np.array([r["predicted"] == r["candidate"] for r in gen], bool),
        impostor_score=scores(imp),
        impostor_accept=np.array([r["predicted"] not in (UNKNOWN, NO_FACE) for r in imp], bool))
    figures["threshold"] = threshold
    figures["impostor_no_face"] = sum(r["predicted"] == NO_FACE for r in imp)
    return figures


# -------------------------------------------------------------------------------------- output
def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def print_report(report: EvalReport, file=None, max_misclassified: int = 20) -> None:
    """The readable report: summary, per-person table, open set, misclassified files."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout, highlight=False, soft_wrap=True)
    for w in report.warnings:
        console.print(f"warning: {w}")
    t = report.threshold
    summary = Table(title=f"facerec evaluate: {report.data_path}", show_header=False)
    summary.add_column()
    summary.add_column(justify="right")
    summary.add_row("images (genuine / unknown people)",
                    f"{report.n_images} ({report.n_genuine} / {report.n_impostor})")
    summary.add_row("input", report.input)
    summary.add_row("threshold", "none" if t is None else f"{t:.4f}")
    summary.add_row("accuracy", _pct(report.accuracy))
    summary.add_row("closed-set accuracy (best guess)", _pct(report.closed_set_accuracy))
    summary.add_row("macro-F1", "n/a" if report.macro_f1 is None else f"{report.macro_f1:.3f}")
    if report.no_face:
        summary.add_row("images without a face found", str(report.no_face))
    if report.unreadable:
        summary.add_row("unreadable images (left out)", str(len(report.unreadable)))
    if report.open_set:
        o = report.open_set
        summary.add_row("FPIR (unknown people accepted)", _pct(o.get("fpir")))
        summary.add_row("FNIR (genuine rejected or misidentified)", _pct(o.get("fnir")))
        if "tpir_at_fpir" in o:
            summary.add_row(f"TPIR at FPIR {_pct(o['target_fpir'])} "
                            f"({o['n_impostor']} impostor images)", _pct(o["tpir_at_fpir"]))
    console.print(summary)
    people = Table(title="per person")
    for col in ("person", "precision", "recall", "F1", "images"):
        people.add_column(col, justify="left" if col == "person" else "right")
    for name, m in report.per_person.items():
        people.add_row(name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}",
                       str(m["support"]))
    if report.per_person:
        console.print(people)
    if report.misclassified:
        console.print(f"misclassified ({len(report.misclassified)}):")
        for m in report.misclassified[:max_misclassified]:
            conf = "" if m["confidence"] is None else f" ({m['confidence']:.3f})"
            guess = f", best guess {m['candidate']}" if m["candidate"] not in (None,
                                                                             m["predicted"]) else ""
            console.print(f"  {m['image']}: {m['truth']} -> {m['predicted']}{conf}{guess}")
        if len(report.misclassified) > max_misclassified:
            console.print(f"  ... and {len(report.misclassified) - max_misclassified} more "
                          "(--report DIR writes them all)")
    for u in report.unreadable[:10]:
        console.print(f"  unreadable {u['image']}: {u['error']}")


def confusion_png(confusion: dict, path: str | os.PathLike, title: str = "") -> None:
    """Draw the confusion matrix (rows: truth, columns: predicted; counts, shaded by row share)
    as a PNG with Pillow."""
    from PIL import Image, ImageDraw

    from facerec.inference.predict import label_font

    rows, cols = confusion["rows"], confusion["columns"]
    m = np.asarray(confusion["matrix"], dtype=float).reshape(len(rows), len(cols))
    cell = 44 if max(len(rows), len(cols)) <= 20 else 24
    font = label_font(13 if cell > 30 else 10)
    small = label_font(11 if cell > 30 else 9)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def tw(text, f=font):
        b = probe.textbbox((0, 0), text, font=f)
        return b[2] - b[0], b[3] - b[1]

    left = max([tw(r)[0] for r in rows] + [60]) + 16
    top_h = max([tw(c)[0] for c in cols] + [60]) + 16
    title_h = 28
    w = left + cell * len(cols) + 20
    h = title_h + top_h + cell * len(rows) + 40
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((10, 6), title or "confusion matrix (rows: truth, columns: predicted)", fill="black",
           font=font)
    # column names, rotated
    for j, c in enumerate(cols):
        cw, ch = tw(c)
        label = Image.new("RGBA", (cw + 4, ch + 6), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((2, 0), c, fill="black", font=font)
        label = label.rotate(90, expand=True)
        x = left + j * cell + (cell - label.width) // 2
        img.paste(label, (x, title_h + top_h - label.height - 6), label)
    row_sum = np.maximum(m.sum(axis=1, keepdims=True), 1)
    for i, r in enumerate(rows):
        y = title_h + top_h + i * cell
        rw, rh = tw(r)
        d.text((left - rw - 8, y + (cell - rh) // 2), r, fill="black", font=font)
        for j in range(len(cols)):
            x = left + j * cell
            share = m[i, j] / row_sum[i, 0]
            diag = j < len(cols) and cols[j] == r
            base = (40, 140, 60) if diag else (200, 60, 40)
            colour = tuple(int(255 - share * (255 - c)) for c in base)
            d.rectangle([x, y, x + cell, y + cell], fill=colour, outline=(200, 200, 200))
            if m[i, j]:
                text = str(int(m[i, j]))
                cw, ch = tw(text, small)
                d.text((x + (cell - cw) / 2, y + (cell - ch) / 2 - 2), text,
                       fill="white" if share > 0.55 else "black", font=small)
    d.text((left, h - 30), "columns: predicted label", fill="gray", font=small)
    img.save(path)


def write_report(report: EvalReport, out_dir: str | os.PathLike) -> Path:
    """report.json, confusion_matrix.png, predictions.csv, misclassified.csv in ``out_dir``."""
    out = Path(out_dir)
    check_output_location(out, filter(None, (report.data_path, report.unknown_dir)), "--out folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FacerecError(f"cannot create {out}: {exc.strerror or exc}") from None
    (out / "report.json").write_text(json.dumps(report.to_dict(predictions=True), indent=1))
    confusion_png(report.confusion, out / "confusion_matrix.png",
                  f"{Path(report.checkpoint).name} on {report.data_path}")
    cols = ("image", "truth", "predicted", "candidate", "confidence", "faces", "error")
    with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as handle:
        w = csv.writer(handle)
        w.writerow(cols)
        for r in report.predictions:
            w.writerow(["" if r[c] is None else r[c] for c in cols])
    cols = ("image", "truth", "predicted", "candidate", "confidence")
    with open(out / "misclassified.csv", "w", newline="", encoding="utf-8") as handle:
        w = csv.writer(handle)
        w.writerow(cols)
        for r in report.misclassified:
            w.writerow(["" if r[c] is None else r[c] for c in cols])
    return out
