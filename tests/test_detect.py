"""`facerec detect`: the library API, the folder stage, bad input, resume after SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facerec import FaceDetector
from facerec.detection.align import to_crop_coords
from facerec.cli import main
from facerec.detection.cropping import crop_face
from facerec.detection.detect import detect_folder, read_manifest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(device="cpu")


@pytest.fixture(scope="module")
def portrait(data_dir) -> Path:
    return data_dir / "celebrities/val/jerry_seinfeld/httpaurorasblogcomwpcontentuploadsjerryseinfeldpublicityshotjpg.jpg"


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_public_api_accepts_path_pil_and_array(detector, portrait):
    from_path = detector.detect(portrait)
    from_pil = detector.detect(Image.open(portrait))
    from_array = detector.detect(np.array(Image.open(portrait).convert("RGB")))
    assert len(from_path) == len(from_pil) == len(from_array) >= 1
    face = from_path[0]
    assert len(face.box) == 4 and len(face.landmarks) == 5 and 0.9 < face.score <= 1.0
    np.testing.assert_allclose(from_path[0].box, from_array[0].box, atol=1e-6)
    assert detector.detect_batch([]) == []


def test_large_photo_is_detected_downscaled_in_original_pixels(detector, portrait):
    image = Image.open(portrait).convert("RGB")
    factor = 4000 / max(image.size)
    big = image.resize((round(image.width * factor), round(image.height * factor)), Image.BICUBIC)
    small_faces = detector.detect(image)
    big_faces = FaceDetector(device="cpu", max_side=1000).detect(big)
    assert len(big_faces) >= 1
    expected = np.array(small_faces[0].box) * factor
    # same face, reported in the big photo's pixels (tolerance: a few % of the face size)
    np.testing.assert_allclose(big_faces[0].box, expected, atol=0.08 * expected[2])


def test_crops_box_and_aligned(detector, portrait):
    image = Image.open(portrait).convert("RGB")
    face = detector.detect(image)[0]
    crop, matrix = crop_face(image, face, size=160, margin=0.2)
    assert crop.size == (160, 160)
    eyes = to_crop_coords(np.array(face.landmarks[:2]), matrix)
    assert (eyes > 20).all() and (eyes < 140).all()
    aligned, matrix = crop_face(image, face, size=112, margin=0.0, align=True)
    assert aligned.size == (112, 112)
    eyes = to_crop_coords(np.array(face.landmarks[:2]), matrix)
    assert abs(eyes[0, 1] - eyes[1, 1]) < 3  # aligned: eyes level
    np.testing.assert_allclose(eyes, [[38.3, 51.7], [73.5, 51.5]], atol=6)


def _bad_files(folder: Path, photo: Path) -> None:
    folder.mkdir(parents=True)
    shutil.copy(photo, folder / "good.jpg")
    data = photo.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("not a photo")
    (folder / "fake.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    Image.open(photo).convert("CMYK").save(folder / "cmyk.jpg")
    rgba = Image.open(photo).convert("RGBA")
    rgba.save(folder / "rgba.png")
    im = Image.open(photo).convert("RGB").rotate(90, expand=True)  # stored sideways...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...with EXIF saying: rotate 90 degrees clockwise to display
    im.save(folder / "rotated.jpg", exif=exif.tobytes(), quality=95)
    (folder / ".hidden.jpg").write_bytes(data)


def test_bad_input_is_reported_never_fatal_and_raw_is_untouched(tmp_path, portrait, capsys):
    raw = tmp_path / "raw"
    _bad_files(raw, portrait)
    before = _hashes(raw)
    # partial success: the bad files are skipped, listed, and the exit status says so
    assert main(["detect", str(raw), "--out", str(tmp_path / "out"), "--quiet"]) == 3
    out = capsys.readouterr().out
    assert "faces found" in out and "skipped: truncated" in out
    assert _hashes(raw) == before  # the user's photos are never modified
    records = read_manifest(tmp_path / "out")
    assert ".hidden.jpg" not in records
    assert records["empty.jpg"]["error"].startswith("empty file")
    assert records["notes.txt"]["error"].startswith("not an image")
    assert records["fake.png"]["error"].split(":")[0] in ("corrupt", "truncated")
    assert records["truncated.jpg"]["error"].startswith("truncated")
    for name in ("good.jpg", "cmyk.jpg", "rgba.png", "rotated.jpg"):
        assert records[name]["error"] is None and len(records[name]["faces"]) >= 1, name
    # EXIF applied: the rotated copy reports the upright size and the same face position
    good, rotated = records["good.jpg"], records["rotated.jpg"]
    assert (rotated["width"], rotated["height"]) == (good["width"], good["height"])
    np.testing.assert_allclose(rotated["faces"][0]["box"], good["faces"][0]["box"], atol=4)
    for record in records.values():
        for face in record["faces"]:
            assert set(face) >= {"box", "score", "landmarks", "crop"}
            assert (tmp_path / "out" / face["crop"]).is_file()


def test_albums_keep_their_person_folder_and_names_never_collide(tmp_path, celebrities):
    raw = tmp_path / "raw"
    for person in ("madonna", "elton_john"):
        (raw / person / "sub").mkdir(parents=True)
        photo = sorted((celebrities / "val" / person).glob("*.jpg"))[0]
        shutil.copy(photo, raw / person / "same.jpg")
        shutil.copy(photo, raw / person / "sub" / "same.jpg")  # same name, deeper folder
    shutil.copy(photo, raw / "loose.jpg")
    summary = detect_folder(raw, tmp_path / "out", progress=False)
    crops = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.jpg"))
    assert summary.faces == len(crops) >= 5
    assert {c.split("/")[0] for c in crops} == {"madonna", "elton_john", crops[0].split("/")[0]} | {
        c.split("/")[0] for c in crops}
    assert any("/" not in c for c in crops)  # the loose photo's crop is loose
    assert len([c for c in crops if c.startswith("madonna/")]) == 2  # two photos, two distinct names


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["detect", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "input folder not found" in err and len(err.splitlines()) == 1
    (tmp_path / "empty").mkdir()
    assert main(["detect", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "input folder is empty" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.jpg").write_bytes(b"x")
    assert main(["detect", str(tmp_path / "raw"), "--out", str(tmp_path / "afile" / "out")]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err


def test_rerun_skips_done_photos(tmp_path, celebrities):
    raw = tmp_path / "raw"
    raw.mkdir()
    for photo in sorted((celebrities / "val" / "mindy_kaling").glob("*.jpg"))[:3]:
        shutil.copy(photo, raw)
    first = detect_folder(raw, tmp_path / "out", progress=False)
    crops = sorted((tmp_path / "out").rglob("*.jpg"))
    second = detect_folder(raw, tmp_path / "out", progress=False)
    assert first.photos_read == 3 and second.photos_read == 0 and second.already_done == 3
    assert second.faces == first.faces
    assert sorted((tmp_path / "out").rglob("*.jpg")) == crops

    # a touched file (new mtime, same bytes) is hashed, found unchanged and not detected again;
    # a file with new content is detected again
    photos = sorted(raw.glob("*.jpg"))
    os.utime(photos[0], ns=(1, 1))
    Image.open(photos[1]).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos[1])
    third = detect_folder(raw, tmp_path / "out", progress=False)
    assert third.photos_read == 1 and third.already_done == 2
    records = read_manifest(tmp_path / "out")
    assert records[photos[0].name]["mtime_ns"] == 1
    assert records[photos[1].name]["sha256"] == hashlib.sha256(photos[1].read_bytes()).hexdigest()


def test_resume_after_sigkill(tmp_path, celebrities):
    """Kill `facerec detect` mid-run with SIGKILL, rerun: complete, valid, no duplicates."""
    raw = tmp_path / "raw"
    for photo in sorted((celebrities / "train").glob("*/*.jpg"))[:40]:
        (raw / photo.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, raw / photo.parent.name)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "facerec.cli", "detect", str(raw), "--out", str(out), "--quiet",
           "--batch_size", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = out / "manifest.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists() and manifest.read_bytes().count(b"\n") >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = manifest.read_bytes().count(b"\n")
    assert 0 < partial < 40, "the run should have been killed part-way"
    # simulate the worst case too: a torn last line and a half-written temporary crop
    with open(manifest, "ab") as handle:
        handle.write(b'{"path": "torn')
    (out / next(iter(os.listdir(raw)))).mkdir(exist_ok=True)
    (out / next(iter(os.listdir(raw))) / ".x.jpg.tmp-123").write_bytes(b"half")

    summary = detect_folder(raw, out, progress=False)
    assert summary.already_done >= partial and summary.already_done + summary.photos_read == 40
    lines = manifest.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == len({r["path"] for r in records}) == 40
    listed = {f["crop"] for r in records for f in r["faces"]}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*")
               if p.is_file() and ".facerec" not in p.parts} - {"manifest.jsonl"}
    assert listed == on_disk  # no duplicate, orphan or temporary files
    for crop in listed:
        Image.open(out / crop).verify()


def test_process_raw_data_wrapper(tmp_path, portrait):
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(portrait, raw / "p.jpg")
    out = subprocess.run([sys.executable, str(REPO / "process_raw_data.py"), "--quiet"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "processed" / "manifest.jsonl").exists()
    assert "Next step" in out.stdout and "one folder per person" in out.stdout
