"""The crop recipe travels from detect to predict (issue 10): a model trained on ``--align`` crops
crops new faces the same way at prediction time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import _facecrops
from facerec.cropspec import CropSpec, read_processed_spec
from facerec.errors import FacerecError
from facerec.manifest import read_manifest

PEOPLE = ("ben_afflek", "elton_john", "jerry_seinfeld")


def _raw(root: Path, celebrities: Path, per_person: int) -> Path:
    raw = root / "raw"
    for person in PEOPLE:
        (raw / person).mkdir(parents=True)
        photos = [p for p in sorted((celebrities / "train" / person).glob("*.jpg"))
                  if p.name != _facecrops.GROUP_PHOTOS.get(person)][:per_person]
        for p in photos:
            shutil.copy(p, raw / person / p.name)
    return raw


def test_aligned_crops_are_predicted_with_aligned_crops(tmp_path, celebrities, monkeypatch):
    import facerec.detection.cropping
    import facerec.detection.detect
    from facerec.detection.detect import detect_folder
    from facerec.inference.predict import Predictor
    from facerec.split import split_dataset
    from facerec.training import train

    monkeypatch.setenv("FACEREC_CACHE_DIR", str(_facecrops.cache_dir()))
    raw = _raw(tmp_path, celebrities, 4)
    processed = tmp_path / "processed"
    # the legacy detector, aligned at 128 px with a 0.2 margin: a recipe no model declares
    detect_folder(raw, processed, detector="mtcnn", align=True, size=128, margin=0.2,
                  progress=False)
    spec = read_processed_spec(processed)
    assert (spec.align, spec.size, spec.detector["name"]) == (True, 128, "mtcnn")

    dataset = tmp_path / "dataset"
    split_dataset(processed, dataset, val=0.25, test=0.0, progress=False)
    assert json.loads((dataset / "labels.json").read_text())["crop"] == spec.to_dict()

    result = train(data_path=str(dataset), runs_dir=str(tmp_path / "runs"), max_epochs=2,
                   progress=False, patience=0, test=False, accelerator="cpu")
    info = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)["facerec"]
    assert CropSpec.from_preprocess(info["preprocess"]) == spec

    # predict one training photo and catch the crop it makes
    # (every stage cuts faces through facerec.detection.cropping.crop_faces: spy on it)
    made = []
    real_crop_faces = facerec.detection.cropping.crop_faces

    def spy(*args, **kwargs):
        found = real_crop_faces(*args, **kwargs)
        made.extend(np.asarray(face.crop, dtype=np.float32) for faces in found for face in faces)
        return found

    monkeypatch.setattr(facerec.detection.cropping, "crop_faces", spy)
    photo = sorted((raw / "elton_john").glob("*.jpg"))[0]
    predictor = Predictor(result.best_checkpoint, device="cpu")
    assert (predictor.align, predictor.crop_size) == (True, 128)
    predictor.predict_image(photo)
    record = read_manifest(processed)[f"elton_john/{photo.name}"]
    trained_on = [np.asarray(Image.open(processed / f["crop"]), dtype=np.float32)
                  for f in record["faces"]]
    assert made and trained_on
    best = min(np.abs(m - t).mean() for m in made for t in trained_on if m.shape == t.shape)
    assert best < 3.0  # the same crop up to JPEG noise
    box = np.asarray(facerec.detection.cropping.crop_face(Image.open(photo).convert("RGB"),
                                    facerec.detection.detect.FaceDetector(device="cpu").detect(photo)[0],
                                    128, spec.margin, False)[0], dtype=np.float32)
    assert min(np.abs(box - t).mean() for t in trained_on) > 3 * best + 5  # and a box crop is not

    # verify and enroll crop the same way (verify used to box-crop aligned checkpoints' faces)
    from facerec.inference.verify import Verifier

    made.clear()
    features, _ = Verifier(result.best_checkpoint, device="cpu", pick="largest").faces([photo])
    assert len(features) == 1 and made
    assert min(np.abs(m - t).mean() for m in made for t in trained_on if m.shape == t.shape) < 3.0


def test_detect_refuses_to_mix_crop_recipes(tmp_path, celebrities):
    from facerec.detection.detect import detect_folder

    raw = _raw(tmp_path, celebrities, 1)
    processed = tmp_path / "processed"
    legacy = {"size": 160, "margin": 0.2, "align": False}
    detect_folder(raw, processed, progress=False, **legacy)
    assert read_processed_spec(processed) == CropSpec(detector=read_processed_spec(processed).detector)
    with pytest.raises(FacerecError, match="crops made as 160 px box crops"):
        detect_folder(raw, processed, progress=False, **{**legacy, "align": True})
    detect_folder(raw, processed, progress=False, **legacy)  # the same recipe resumes fine
    detect_folder(raw, processed, progress=False)  # no recipe given: the folder's own


def test_old_checkpoints_keep_their_box_crops():
    assert CropSpec.from_preprocess({"crop_margin": 0.3}) == CropSpec(margin=0.3)
    assert CropSpec.from_preprocess(None) == CropSpec()
