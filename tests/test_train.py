"""facerec train: dataset checks, the Lightning module and trainer, calibration, checkpoints, DDP.

Plumbing runs on small synthetic crop datasets with a fake 48-d embedder (registered below: the
frozen-backbone path without dlib's cost) or timm's tiny ``test_resnet`` (the trainable path).
Real photos: the session's celebrity crops (``_checkpoints.dataset``), and the full celebrities set
(slow). DDP runs two CPU processes (gloo) through the CLI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facerec.cli import main as cli_main
from facerec.recognition.embed import Embedder, register_embedder, to_rgb_array
from facerec.errors import FacerecError

REPO = Path(__file__).resolve().parents[1]
PEOPLE = ("alice", "bob", "carol")


# ------------------------------------------------------------------------------------------ helpers
@register_embedder("fake_face")
class FakeEmbedder(Embedder):
    """48-d "embedding": the crop shrunk to 4x4 RGB, centred. Separates the synthetic people."""

    name = "fake_face"
    dim = 48
    version = "1"

    def __init__(self, device: str = "auto") -> None:
        self.calls = 0

    def embed_raw(self, images, boxes=None):
        self.calls += len(images)
        out = []
        for im in images:
            small = Image.fromarray(to_rgb_array(im)).resize((4, 4), Image.BILINEAR)
            out.append(np.asarray(small, np.float32).reshape(-1) / 255.0 - 0.5)
        return np.stack(out).astype(np.float32), [{} for _ in images]


#: colour tint of each synthetic person over a shared, left-right symmetric "face": people 0-2 are
#: alike (cosine ~0.75 between them, as faces are); 3 (much brighter) is a stranger to them
TINTS = [(25, -12, -12), (-12, 25, -12), (-12, -12, 25), (70, 70, 70), (-60, -60, -60)]


def make_crop(person: int, seed: int, size: int = 48) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = (70 + 220 * np.abs(xx - 0.5) + 40 * np.sin(6 * yy))[..., None] * np.ones(3)
    img = base + np.array(TINTS[person], float) + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_dataset(root: Path, people=PEOPLE, counts=(4, 2, 1), size: int = 48,
                 labels: list[str] | None = None, first: int = 0) -> Path:
    """``root/{train,val,test}/<person>/*.jpg`` + labels.json; counts per split (0: no folder)."""
    for pi, name in enumerate(people):
        for split, n in zip(("train", "val", "test"), counts):
            if not n:
                continue
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(n):
                make_crop(first + pi, seed=zlib.crc32(f"{name}/{split}/{j}".encode()), size=size).save(
                    folder / f"{j}.jpg", quality=95)
    (root / "labels.json").write_text(json.dumps({"labels": sorted(labels or people)}))
    return root


@pytest.fixture(autouse=True, scope="module")
def _isolated(tmp_path_factory):
    """Embedding cache in a temp folder; one torch thread (the machine is small and shared)."""
    old = os.environ.get("FACEREC_CACHE_DIR")
    os.environ["FACEREC_CACHE_DIR"] = str(tmp_path_factory.mktemp("emb-cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    if old is None:
        os.environ.pop("FACEREC_CACHE_DIR", None)
    else:
        os.environ["FACEREC_CACHE_DIR"] = old
    os.environ.pop("FACEREC_RUN_NAME", None)


@pytest.fixture(autouse=True)
def _no_run_name_leak():
    os.environ.pop("FACEREC_RUN_NAME", None)
    yield
    os.environ.pop("FACEREC_RUN_NAME", None)


FAST = dict(progress=False, max_epochs=3, accelerator="cpu", batch_size=8)


def _train(tmp_path: Path, data: Path, **kw):
    from facerec.training import train

    opts = {**FAST, "backbone": "fake_face", "runs_dir": str(tmp_path / "runs"), **kw}
    return train(data_path=str(data), **opts)


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = cli_main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _sub_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"), PYTHONWARNINGS="ignore")
    env.pop("FACEREC_RUN_NAME", None)
    return env


# ------------------------------------------------------------------------------------ dataset checks
def test_scan_dataset_reads_splits_and_warns_on_missing_val(tmp_path):
    from facerec.training import scan_dataset

    data = make_dataset(tmp_path / "ds", counts=(3, 0, 0))
    info = scan_dataset(data)
    assert info.labels == sorted(PEOPLE)
    assert info.count("train") == 9 and info.count("val") == 0 and info.people_in("train") == 3
    assert any("val not found" in w for w in info.warnings)
    assert any("test not found" in w for w in info.warnings)


@pytest.mark.parametrize("case, expected", [
    ("no_folder", "dataset folder not found"),
    ("no_labels", "labels.json not found"),
    ("bad_json", "cannot read"),
    ("empty", "empty dataset: no face crops"),
    ("extra_folder", "labels.json mismatch: val/dave not in"),
    ("missing_person", "labels.json mismatch: no training crops for 'dave'"),
    ("reserved", "'unknown' is reserved"),
])
def test_bad_datasets_are_one_line_errors(tmp_path, capsys, case, expected):
    data = tmp_path / "ds"
    if case != "no_folder":
        make_dataset(data, counts=(2, 1, 0))
    if case == "no_labels":
        (data / "labels.json").unlink()
    elif case == "bad_json":
        (data / "labels.json").write_text("{not json")
    elif case == "empty":
        for p in data.glob("*/*/*.jpg"):
            p.unlink()
    elif case == "extra_folder":
        make_dataset(data, people=("dave",), counts=(0, 1, 0), labels=list(PEOPLE), first=3)
    elif case == "missing_person":
        (data / "labels.json").write_text(json.dumps({"labels": [*PEOPLE, "dave"]}))
    elif case == "reserved":
        make_dataset(data, people=("unknown",), counts=(2, 0, 0), labels=[*PEOPLE, "unknown"], first=3)
    rc, out, err = _cli(["train", "--data_path", str(data), "--quiet"], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facerec train: error: "), err
    assert expected in lines[0]


def test_unknown_backbone_and_foreign_checkpoint_are_one_line_errors(tmp_path, capsys):
    data = make_dataset(tmp_path / "ds", counts=(2, 1, 0))
    rc, _, err = _cli(["train", "--data_path", str(data), "--backbone", "resnet_nope", "--quiet"],
                      capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "unknown backbone 'resnet_nope'" in err and "timm model name" in err

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, foreign)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    for path in (foreign, garbage, tmp_path / "missing.ckpt"):
        rc, _, err = _cli(["train", "--data_path", str(data), "--backbone", "fake_face",
                           "--ckpt_path", str(path), "--quiet"], capsys)
        assert rc == 2 and len(err.strip().splitlines()) == 1, err
        assert "not a facerec checkpoint" in err or "checkpoint not found" in err

    from facerec.recognition.model import load_checkpoint

    with pytest.raises(FacerecError, match="not a facerec checkpoint"):
        load_checkpoint(foreign)


def test_train_console_is_one_line_per_epoch_then_the_result_and_the_next_step(tmp_path, capsys,
                                                                              caplog):
    """No Lightning tips, device lines, model summary, "Restoring states" or empty lines: one line
    per epoch, how training stopped (early, and why), then the result and the next step last."""
    import logging

    caplog.set_level(logging.INFO)
    data = make_dataset(tmp_path / "ds", counts=(4, 2, 2))
    rc, out, err = _cli(["train", str(data), "--backbone", "fake_face", "--max_epochs", "40",
                         "--monitor", "val_acc", "--patience", "2", "--out", str(tmp_path / "runs"),
                         "--name", "console"], capsys)
    assert rc == 0, err
    said = out + err + "\n".join(r.getMessage() for r in caplog.records)  # Lightning logs
    for noise in ("litlogger", "Tip", "GPU available", "TPU available", "FLOPs", "Restoring states",
                  "Loaded model weights", "Trainable params"):
        assert noise not in said, noise
    lines = out.splitlines()
    assert "" not in lines and not any("\r" in line for line in lines)
    epochs = [line for line in lines if re.match(r"epoch +\d+/40  ", line)]
    ran = re.search(r"^Trained (\d+) of at most 40 epochs in .*Stopped early: val_acc had not "
                    r"improved for 2 epochs \(--patience\)\. Best: epoch (\d+)\.$", out, re.M)
    assert ran, out
    assert len(epochs) == int(ran.group(1)) < 40
    assert re.search(r"val_acc \d+\.\d%", epochs[-1]) and re.search(r"val_loss \d\.\d{3}", epochs[-1])
    assert lines[-2].startswith("Best checkpoint: ") and lines[-1].startswith("Next: ")
    best = lines[-2].split(": ", 1)[1]
    assert f"epoch={int(ran.group(2)) - 1}-" in Path(best).name
    assert " predict " in lines[-1] and lines[-1].endswith(f"--checkpoint_path {best}")
    # --quiet: no epoch lines; --verbose: Lightning's own messages are back
    rc, out, err = _cli(["train", str(data), "--backbone", "fake_face", "--max_epochs", "2",
                         "--out", str(tmp_path / "runs"), "--quiet"], capsys)
    assert rc == 0 and not re.search(r"^epoch ", out, re.M)
    caplog.clear()
    rc, out, err = _cli(["train", str(data), "--backbone", "fake_face", "--max_epochs", "2",
                         "--out", str(tmp_path / "runs"), "--quiet", "--verbose"], capsys)
    assert rc == 0 and any("GPU available" in r.getMessage() for r in caplog.records)


def test_gpus_without_cuda_is_a_clear_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    data = make_dataset(tmp_path / "ds", counts=(2, 1, 0))
    rc, _, err = _cli(["train", "--data_path", str(data), "--backbone", "fake_face", "--gpus", "1",
                       "--quiet"], capsys)
    assert rc == 2 and "no GPU is available" in err and len(err.strip().splitlines()) == 1


# -------------------------------------------------------------------------------- frozen backbone
def test_train_frozen_backbone_end_to_end(tmp_path, capsys):
    from facerec.recognition.model import load_checkpoint

    data = make_dataset(tmp_path / "ds", counts=(4, 2, 2))
    rc, out, err = _cli(["train", "--data_path", str(data), "--backbone", "fake_face",
                         "--max_epochs", "4", "--runs_dir", str(tmp_path / "runs"),
                         "--name", "e2e", "--quiet"], capsys)
    assert rc == 0, err
    assert "train samples: 12\n" in out and "valid samples: 6\n" in out
    assert out.index("train samples") < out.index("Best checkpoint:")
    best = Path(re.search(r"^Best checkpoint: (.+)$", out, re.M).group(1))
    assert re.fullmatch(r"epoch=\d+-step=\d+\.ckpt", best.name)
    run = tmp_path / "runs" / "e2e" / "version_0"
    assert best.parent == run / "checkpoints" and best.is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "hparams.yaml").is_file() and list(run.glob("events.out.tfevents.*"))
    assert re.search(r"Final metrics: val_acc=1\.0000  val_f1=1\.0000", out)

    # self-contained, safe checkpoint
    ckpt = torch.load(best, map_location="cpu", weights_only=True)
    info = ckpt["facerec"]
    assert info["facerec_format"] == 1 and info["facerec_version"]
    assert info["labels"] == sorted(PEOPLE)
    assert info["backbone"]["name"] == "fake_face" and info["backbone"]["dim"] == 48
    assert info["calibration"]["method"] == "hold-out-person"
    assert info["calibration"]["impostor_max"] < info["threshold"] <= 1.0

    clf = load_checkpoint(best)
    crops = [make_crop(i, seed=1000 + i) for i in range(3)]
    labels, scores = clf.predict_crops(crops)
    assert labels == sorted(PEOPLE) and all(s >= clf.threshold for s in scores)
    stranger = make_crop(3, seed=7)  # a person never in the dataset
    (label,), (score,) = clf.predict_crops([stranger])
    assert label == "unknown" and score < clf.threshold
    assert clf.predict_crops(crops, threshold=1.01)[0] == ["unknown"] * 3
    assert clf.predict_crops([stranger], threshold=-1.0)[0] != ["unknown"]


def test_features_are_cached_between_runs(tmp_path):
    from facerec.recognition.embed import get_embedder

    data = make_dataset(tmp_path / "ds", counts=(3, 1, 0))
    emb = get_embedder("fake_face")
    _train(tmp_path, data, name="a", max_epochs=1)
    calls = emb.calls
    assert calls >= 2 * 12  # every crop and its mirror
    _train(tmp_path, data, name="b", max_epochs=1)
    assert emb.calls == calls  # second run: all from the cache


def test_resume_continues_the_same_run(tmp_path):
    data = make_dataset(tmp_path / "ds", counts=(4, 1, 0))
    first = _train(tmp_path, data, name="res", max_epochs=2, patience=0)
    last = Path(first.last_checkpoint)
    assert torch.load(last, weights_only=True)["epoch"] == 1
    second = _train(tmp_path, data, max_epochs=4, patience=0, ckpt_path=str(last))
    assert second.run_name == "res" and second.run_dir == first.run_dir  # same version folder
    assert second.epochs == 2  # epochs 2 and 3 only
    ck = torch.load(second.last_checkpoint, weights_only=True)
    assert ck["epoch"] == 3 and ck["global_step"] == 4 * 2  # 12 crops / batch 8 = 2 steps

    other = make_dataset(tmp_path / "other", people=("dave", "erin"), counts=(2, 1, 0), first=3)
    with pytest.raises(FacerecError, match="trained on other people"):
        _train(tmp_path, other, ckpt_path=str(last))
    with pytest.raises(FacerecError, match="backbone"):
        _train(tmp_path, data, backbone="test_resnet", ckpt_path=str(last))


def test_single_person_trains_person_vs_unknown(tmp_path, capsys):
    from facerec.recognition.calibration import FALLBACK_PRIOR_THRESHOLD
    from facerec.recognition.model import load_checkpoint

    data = make_dataset(tmp_path / "ds", people=("alice",), counts=(4, 1, 0))
    result = _train(tmp_path, data, name="solo", max_epochs=2)
    assert any("single person" in w and "person-vs-unknown" in w for w in result.warnings)
    clf = load_checkpoint(result.best_checkpoint)
    assert clf.labels == ["alice"]
    assert clf.threshold == pytest.approx(FALLBACK_PRIOR_THRESHOLD)
    info = torch.load(result.best_checkpoint, weights_only=True)["facerec"]
    assert info["calibration"]["method"] == "prior"
    labels, _ = clf.predict_crops([make_crop(0, seed=99), make_crop(3, seed=5)])
    assert labels == ["alice", "unknown"]

    with pytest.raises(FacerecError, match="single person.*at least two"):
        _train(tmp_path, data, backbone="test_resnet", image_size=32)


def test_generated_run_names_and_torchrun_without_name(monkeypatch):
    from facerec.training import generate_run_name, resolve_run_name

    names = {generate_run_name() for _ in range(20)}
    assert all(re.fullmatch(r"[a-z]+-[a-z]+-\d{3}", n) for n in names) and len(names) > 1
    monkeypatch.setenv("WORLD_SIZE", "2")  # processes started by torchrun / srun
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    for var in ("SLURM_JOB_ID", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(FacerecError, match="give --name"):
        resolve_run_name(None)
    for env in ({"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}, {"SLURM_JOB_ID": "1234"}):
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        a = resolve_run_name(None)
        monkeypatch.delenv("FACEREC_RUN_NAME")
        assert resolve_run_name(None) == a  # every process of the job picks the same name
        monkeypatch.delenv("FACEREC_RUN_NAME")


# -------------------------------------------------------------------------------------- calibration
def test_calibration_holds_each_person_out():
    from facerec.recognition.calibration import calibrate_threshold

    rng = np.random.default_rng(0)
    k, d = 8, 16
    centres = rng.normal(size=(k, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(k), 10)
    z = centres[y] + 0.15 * rng.normal(size=(len(y), d))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sums = np.zeros((k, d))
    np.add.at(sums, y, z)
    counts = np.bincount(y, minlength=k).astype(float)
    protos = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    cal = calibrate_threshold(z, y, protos, proto_sums=sums, proto_counts=counts,
                              member=np.ones(len(y), bool), target_fpir=0.01)
    t = cal["threshold"]
    impostor = max((z[i] @ protos[c]) for i in range(len(y)) for c in range(k) if c != y[i])
    assert t > impostor  # 8 people at 99% confidence: above every impostor seen
    assert cal["est_fpir"] == 0.0 and cal["est_fnir"] < 0.1
    # hold-one-face-out genuine scores are lower than the in-sample ones
    in_sample = calibrate_threshold(z, y, protos, target_fpir=0.01)
    assert cal["genuine_median"] < in_sample["genuine_median"]
    # a looser target lowers the threshold
    assert calibrate_threshold(z, y, protos, target_fpir=0.5, confidence=0.5)["threshold"] < t
    one = calibrate_threshold(z[y == 0], np.zeros(10, int), protos[:1], prior=0.9)
    assert one["method"] == "prior" and one["threshold"] == 0.9


# -------------------------------------------------------------------------------------------- timm
def test_timm_backbone_trains_and_predicts(tmp_path):
    from facerec.recognition.model import load_checkpoint

    data = make_dataset(tmp_path / "ds", counts=(4, 1, 1), size=40)
    result = _train(tmp_path, data, backbone="test_resnet", image_size=32, max_epochs=2,
                    batch_size=6, num_workers=0, name="timm")
    assert {"val_acc", "val_f1", "test_acc", "test_fnir"} <= set(result.metrics)
    assert result.epochs == 2 and result.seconds_per_epoch > 0
    ckpt = torch.load(result.best_checkpoint, weights_only=True)
    pre = ckpt["facerec"]["preprocess"]
    assert pre["input_size"] == 32 and len(pre["mean"]) == 3 and len(pre["std"]) == 3
    assert ckpt["facerec"]["backbone"]["kind"] == "timm"
    assert any(k.startswith("model.backbone.") for k in ckpt["state_dict"])
    clf = load_checkpoint(result.best_checkpoint)
    labels, scores = clf.predict_crops([make_crop(i, seed=3) for i in range(3)], threshold=-1.0)
    assert set(labels) <= set(PEOPLE) and len(scores) == 3
    # prototypes are the head's class directions: a face's score is its cosine to one of them
    z = clf.embed_crops([make_crop(0, seed=3)])
    idx, score, _, _ = clf.predict_features(z)
    assert float(score[0]) == pytest.approx(float(z[0] @ clf.head_prototypes()[idx[0]]), abs=1e-5)


def test_pretrained_weights_unavailable_is_clear(monkeypatch):
    import huggingface_hub.constants as hf

    from facerec.recognition.backbones import create_timm_model

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-facerec-test")
    with pytest.raises(FacerecError, match="cannot load ImageNet weights for test_resnet.*without "
                                           "--pretrained"):
        create_timm_model("test_resnet", pretrained=True)


# --------------------------------------------------------------------------------- subprocesses
def test_ddp_two_cpu_processes(tmp_path):
    """--accelerator cpu --devices 2 --strategy ddp: two gloo processes, each on half the data."""
    data = make_dataset(tmp_path / "ds", counts=(8, 1, 0), size=40)  # 24 train crops
    cmd = [sys.executable, "-m", "facerec.cli", "train", "--data_path", str(data),
           "--backbone", "test_resnet", "--image_size", "32", "--batch_size", "4",
           "--num_workers", "0", "--max_epochs", "2", "--accelerator", "cpu", "--devices", "2",
           "--strategy", "ddp", "--name", "ddp", "--runs_dir", str(tmp_path / "runs"),
           "--verbose"]
    # --verbose: Lightning's notes of the process group setup are shown only with it
    proc = subprocess.run(cmd, cwd=tmp_path, env=_sub_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    both = proc.stdout + proc.stderr
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in both and "distributed_backend=gloo" in both
    assert proc.stdout.count("train samples: 24") == 1  # printed by rank 0 only
    assert proc.stdout.count("epoch 2/2 ") == 1  # one line per epoch, from rank 0 only
    best = Path(re.search(r"^Best checkpoint: (.+)$", proc.stdout, re.M).group(1))
    # 24 crops on 2 processes = 12 each = 3 steps of 4 per epoch (one process: 6 steps)
    epoch, step = map(int, re.fullmatch(r"epoch=(\d+)-step=(\d+)\.ckpt", best.name).groups())
    assert step == 3 * (epoch + 1)
    last = torch.load(best.parent / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1 and last["global_step"] == 6
    assert torch.load(best, weights_only=True)["facerec"]["threshold"] is not None


def test_root_train_py_with_the_original_flags(tmp_path):
    """``python train.py`` at the repository root: default --data_path dataset, generated name."""
    make_dataset(tmp_path / "dataset", counts=(3, 1, 0), size=40)  # 9 crops: 2 batches of 4
    cmd = [sys.executable, str(REPO / "train.py"), "--max_epochs", "1", "--learning_rate", "0.001",
           "--backbone", "test_resnet", "--batch_size", "4", "--num_workers", "0", "--seed", "7",
           "--image_size", "32", "--quiet"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_sub_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = Path(re.search(r"^Best checkpoint: (.+)$", proc.stdout, re.M).group(1))
    rel = best.relative_to(tmp_path) if best.is_absolute() else best
    assert re.fullmatch(r"runs/[a-z]+-[a-z]+-\d{3}/version_0/checkpoints/epoch=0-step=2\.ckpt",
                        rel.as_posix()), rel
    hp = (tmp_path / rel).parents[1] / "hparams.yaml"
    assert "learning_rate: 0.001" in hp.read_text()


# -------------------------------------------------------------------------------------- real photos
def test_real_crops_dlib_face(tmp_path, celebrities, monkeypatch):
    """The session's real celebrity crops (3 people): dlib_face learns them and the held-out crops
    are recognised; the threshold comes from holding each person out."""
    import _checkpoints
    import _facecrops

    from facerec.recognition.model import load_checkpoint

    monkeypatch.setenv("FACEREC_CACHE_DIR", str(_facecrops.cache_dir()))  # shared with the session
    data = _checkpoints.dataset(celebrities)
    result = _train(tmp_path, data, backbone="dlib_face", max_epochs=30, name="real")
    assert result.metrics["val_acc"] == 1.0 and result.metrics["test_acc"] == 1.0
    clf = load_checkpoint(result.best_checkpoint)
    crops = sorted((data / "test").glob("*/*.jpg"))
    labels, scores = clf.predict_crops(crops)
    assert labels == [p.parent.name for p in crops]
    info = torch.load(result.best_checkpoint, weights_only=True)["facerec"]
    assert info["calibration"]["method"] == "hold-out-person"
    assert info["calibration"]["impostor_max"] < info["threshold"] < max(scores) + 1e-6


def _largest_face_crops(photos: list[Path], targets: list[Path]) -> None:
    from facerec.detection.cropping import crop_face
    from facerec.detection.detect import FaceDetector
    from facerec.images import load_image

    det = FaceDetector(device="cpu")
    for photo, target in zip(photos, targets):
        img = load_image(photo).image
        faces = det.detect(img)
        assert faces, f"no face in {photo}"
        face = max(faces, key=lambda f: f.box[2] * f.box[3])
        target.parent.mkdir(parents=True, exist_ok=True)
        crop_face(img, face, size=160, margin=0.2)[0].save(target, quality=95)


@pytest.mark.slow
def test_celebrities_val_photos_25_of_25(tmp_path, celebrities):
    """All train photos -> detect -> album labels -> split; the 25 val photos are recognised."""
    from facerec.recognition.model import load_checkpoint

    data, extra = tmp_path / "dataset", tmp_path / "valphotos"
    photos, targets = [], []
    people = sorted(d.name for d in (celebrities / "train").iterdir() if d.is_dir())
    for person in people:
        files = sorted((celebrities / "train" / person).glob("*.jpg"))
        for j, f in enumerate(files):
            split = "train" if j < len(files) - 4 else ("val" if j < len(files) - 2 else "test")
            photos.append(f)
            targets.append(data / split / person / f.name)
        for f in sorted((celebrities / "val" / person).glob("*.jpg")):
            photos.append(f)
            targets.append(extra / person / f.name)
    _largest_face_crops(photos, targets)
    (data / "labels.json").write_text(json.dumps({"labels": people}))
    result = _train(tmp_path, data, backbone="dlib_face", max_epochs=100, name="celebs")
    clf = load_checkpoint(result.best_checkpoint)
    crops = sorted(extra.glob("*/*.jpg"))
    preds = clf.classify_crops(crops)
    assert len(crops) == 25
    assert [p.candidate for p in preds] == [c.parent.name for c in crops]
    assert sum(p.label == c.parent.name for p, c in zip(preds, crops)) >= 23  # accepted too


def test_in_process_calls_get_their_own_run_names(tmp_path):
    """The sweep calls train() repeatedly in one process: no name leaks from one call to the next."""
    data = make_dataset(tmp_path / "ds", counts=(2, 1, 0))
    a = _train(tmp_path, data, max_epochs=1)
    b = _train(tmp_path, data, max_epochs=1)
    assert a.run_name != b.run_name and "FACEREC_RUN_NAME" not in os.environ
    assert Path(a.run_dir).name == Path(b.run_dir).name == "version_0"


def test_config_file_flags_win_and_hparams_yaml_reads_back(tmp_path, capsys):
    """--config FILE (YAML of TrainConfig fields) under the command-line flags; the run's
    hparams.yaml records every option and reruns the same experiment through --config."""
    import yaml

    from facerec.training.config import TrainConfig, read_config_file

    data = make_dataset(tmp_path / "ds", counts=(4, 2, 1))
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "data_path": str(data), "backbone": "fake_face", "max_epochs": 9, "dropout": 0.2,
        "warmup_epochs": 0.5, "log_every_n_steps": 1, "accelerator": "cpu", "batch_size": 8,
        "runs_dir": str(tmp_path / "runs"), "progress": False, "augment": False}))
    rc, out, err = _cli(["train", "--config", str(config), "--max_epochs", "2", "--name", "cfg"],
                        capsys)
    assert rc == 0, err
    hparams = tmp_path / "runs" / "cfg" / "version_0" / "hparams.yaml"
    recorded = yaml.safe_load(hparams.read_text())["train_config"]
    assert recorded["max_epochs"] == 2 and recorded["dropout"] == 0.2  # flag wins, file fills in
    assert recorded["warmup_epochs"] == 0.5 and recorded["augment"] is False
    again = read_config_file(hparams)
    assert again == TrainConfig(**{**recorded, "name": None, "ckpt_path": None})

    config.write_text("max_epochs: 2\nlearning_rat: 0.1\n")
    rc, _, err = _cli(["train", "--config", str(config)], capsys)
    assert rc == 2 and "unknown train option(s): learning_rat" in err and len(err.splitlines()) == 1
    config.write_text("max_epochs: ten\n")
    rc, _, err = _cli(["train", "--config", str(config)], capsys)
    assert rc == 2 and "max_epochs: expected int, not 'ten'" in err


def test_train_json_is_the_only_stdout(tmp_path, capsys):
    data = make_dataset(tmp_path / "ds", counts=(4, 2, 1))
    rc, out, err = _cli(["train", "--data_path", str(data), "--backbone", "fake_face", "--max_epochs",
                         "2", "--runs_dir", str(tmp_path / "runs"), "--quiet", "--json"], capsys)
    assert rc == 0, err
    result = json.loads(out)  # "train samples" and "Best checkpoint:" went to stderr
    assert Path(result["best_checkpoint"]).is_file() and result["labels"] == sorted(PEOPLE)
    assert "Best checkpoint:" in err


def test_every_option_is_a_train_flag_and_a_sweep_flag(capsys):
    from facerec.training.config import cli_fields, option

    with pytest.raises(SystemExit):
        cli_main(["train", "--help"])
    train_help = capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["sweep", "--help"])
    sweep_help = capsys.readouterr().out
    for f in cli_fields():
        if f.name == "data_path":  # the positional DATA (docs/cli.md); --data_path still works
            assert "DATA" in train_help and "DATA" in sweep_help
            continue
        assert option(f) in train_help, option(f)
        if f.name not in ("name", "runs_dir", "ckpt_path"):
            assert option(f) in sweep_help, option(f)
    for flag in ("--dropout", "--warmup_epochs", "--log_every_n_steps"):
        assert flag in train_help
    # the sweep's own run folder: a resume checkpoint is refused, not dropped
    with pytest.raises(SystemExit):
        cli_main(["sweep", "--ckpt_path", "x.ckpt"])
    assert "unrecognized arguments: --ckpt_path" in capsys.readouterr().err
