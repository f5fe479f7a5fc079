"""Every kind of file a user's photo folder may hold loads as RGB or fails with a short reason."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from facerec import images
from facerec.images import ImageLoadError, iter_files, load_image


def _photo(size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    src = _photo().convert("RGBA" if mode in ("LA", "RGBA") else "RGB")
    if mode == "I;16":
        im = Image.fromarray((np.asarray(src.convert("L"), np.uint16) * 257).astype("<u2"))
        assert im.mode.startswith("I;16")
    elif mode in ("I", "F"):
        im = src.convert("L").convert(mode)
    else:
        im = src.convert(mode)
    fmt = {"CMYK": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG")
    path = tmp_path / f"x.{fmt.lower()}"
    im.save(path, format=fmt)
    loaded = load_image(path)
    assert loaded.image.mode == "RGB"
    assert loaded.image.size == (64, 48)
    if mode == "I;16":  # 16-bit values are scaled down, not clipped to white
        assert 20 < np.asarray(loaded.image).mean() < 235


def test_transparent_areas_become_white(tmp_path):
    im = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    im.save(tmp_path / "t.png")
    assert load_image(tmp_path / "t.png").image.getpixel((5, 5)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    loaded = load_image(tmp_path / "r.jpg")
    assert loaded.image.size == (20, 40)
    assert (loaded.width, loaded.height) == (20, 40)
    top = np.asarray(loaded.image)[:15].mean()
    bottom = np.asarray(loaded.image)[25:].mean()
    assert top > 200 > 50 > bottom  # the white half is now on top


def test_heic_loads(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    try:
        pillow_heif.from_pillow(_photo()).save(tmp_path / "p.heic", quality=90)
    except Exception as exc:  # pragma: no cover - wheel without an encoder
        pytest.skip(f"no HEIF encoder: {exc}")
    loaded = load_image(tmp_path / "p.heic")
    assert loaded.image.mode == "RGB" and loaded.image.size == (64, 48)


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"hello, this is not a photo", "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image"),
])
def test_bad_files_fail_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    assert info.value.reason == reason


def test_truncated_and_corrupt_jpeg(tmp_path):
    buffer = io.BytesIO()
    _photo((256, 256)).save(buffer, format="JPEG")
    data = buffer.getvalue()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / "cut.jpg")
    assert info.value.reason == "truncated"
    (tmp_path / "garbled.jpg").write_bytes(data[:200] + b"\xff\xd9" + b"\x00" * 500)
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / "garbled.jpg")
    assert info.value.reason in ("corrupt", "truncated")


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    _photo((100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 5000)
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / "big.png")
    assert info.value.reason == "too large"
    assert "100x100" in str(info.value)


def test_bomb_over_pillows_own_limit(tmp_path):
    # a 1-bit PNG that declares ~200 MP compresses to a tiny file
    Image.new("1", (15000, 14000)).save(tmp_path / "bomb.png")
    with pytest.raises(ImageLoadError) as info:
        load_image(tmp_path / "bomb.png")
    assert info.value.reason == "too large"


def test_max_side_downscales_and_reports_original_size(tmp_path):
    _photo((3000, 2000)).save(tmp_path / "big.jpg", quality=90)
    loaded = load_image(tmp_path / "big.jpg", max_side=800)
    assert max(loaded.image.size) == 800
    assert (loaded.width, loaded.height) == (3000, 2000)
    assert loaded.scale == pytest.approx(800 / 3000)


def test_iter_files_skips_hidden_and_excluded(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "out").mkdir()
    for p in ["a/1.jpg", ".hidden/2.jpg", ".3.jpg", "4.jpg", "out/5.jpg"]:
        (tmp_path / p).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_files(tmp_path, exclude=tmp_path / "out")]
    assert found == ["4.jpg", "a/1.jpg"]


def test_every_stage_takes_the_same_image_types(tmp_path):
    """split copies .tif/.webp crops; train must see them too (one IMAGE_EXTS for all)."""
    import json

    from facerec.crops import list_images
    from facerec.training import scan_dataset

    for split, person, name in (("train", "a", "x.tif"), ("train", "a", "y.webp"),
                                ("train", "b", "z.jpg")):
        (tmp_path / split / person).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / split / person / name)
    (tmp_path / "labels.json").write_text(json.dumps({"labels": ["a", "b"]}))
    assert scan_dataset(tmp_path).count("train") == 3
    assert [p.name for p in list_images(tmp_path / "train" / "a")] == ["x.tif", "y.webp"]
