"""A real browser (Debian's chromium + chromium-driver, through Selenium) against a real
``facerec serve`` process on 127.0.0.1, on real crops of ``celebrities``: name a cluster, move a crop,
undo, train on the Train page, then recognise a held-out photo on the Recognise page. And the
hardening issue's browser items: no page can be framed by another local origin (item 2), and the
API docs page works with no network, from this server's files only (item 13); the pages run
under their Content-Security-Policy without a single violation.

Screenshots of each page go to the test's tmp folder (and to $FACEREC_SHOTS_DIR when set).
``make test BROWSER=1`` (and CI) installs chromium where apt can (as root); elsewhere these tests
skip and say how to enable them; in CI ($CI set) a missing browser fails them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import _facecrops
import _servework

pytest.importorskip("fastapi", reason="facerec[serve] is not installed")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _browser() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        why = ("chromium / chromedriver not installed: `make test BROWSER=1` installs Debian's "
               "chromium and chromium-driver (as root, with apt-get)")
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(celebrities: Path, tmp_path: Path):
    """``facerec serve WORK --photos PHOTOS`` in a subprocess: (url, work folder)."""
    work = _servework.copy_of(celebrities, tmp_path / "work")
    yield from _serve(work, tmp_path, ["--photos", str(work / "photos")])


@pytest.fixture()
def bare_server(tmp_path: Path):
    """``facerec serve WORK`` on a few synthetic crops, no model: (url, work folder)."""
    from PIL import Image

    work = tmp_path / "work"
    for i in range(3):
        (work / "processed" / "person_01").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40), (40 * i, 90, 160)).save(
            work / "processed" / "person_01" / f"c{i}.jpg")
    yield from _serve(work, tmp_path, [])


def _serve(work: Path, tmp_path: Path, extra: list[str]):
    port = _free_port()
    env = dict(os.environ, FACEREC_CACHE_DIR=str(_facecrops.cache_dir()),
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "facerec.cli", "serve", str(work), *extra,
                             "--port", str(port), "--device", "cpu"],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=2) as r:
                    if json.load(r)["status"] == "ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("facerec serve did not start: " + (tmp_path / "server.log").read_text())
            time.sleep(0.5)
        yield url, work
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _chrome(*extra: str):
    chromium, driver = _browser()
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--disable-background-networking", "--window-size=1280,1000", *extra):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console: CSP reports
    d = webdriver.Chrome(service=Service(driver), options=options)
    d.implicitly_wait(0)
    return d


@pytest.fixture()
def browser():
    d = _chrome()
    try:
        yield d
    finally:
        d.quit()


@pytest.fixture()
def offline_browser():
    """A browser with no network: every host name but 127.0.0.1 fails to resolve."""
    d = _chrome("--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1")
    try:
        yield d
    finally:
        d.quit()


def _csp_violations(d) -> list[str]:
    return [e["message"] for e in d.get_log("browser")
            if "Content Security Policy" in e["message"] or "Refused to" in e["message"]]


def _wait(what, timeout: float = 30.0, every: float = 0.2):
    """Poll ``what()`` until it returns something truthy (its value), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = what()
            if last:
                return last
        except Exception as exc:  # element not there yet, stale after a re-render
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out waiting: {last!r}")


def _shot(d, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    d.save_screenshot(str(path))
    extra = os.environ.get("FACEREC_SHOTS_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path


def _card(d, folder: str):
    from selenium.webdriver.common.by import By

    return d.find_element(By.CSS_SELECTOR, f'.card[data-folder="{folder}"]')


def _status(d) -> str:
    return d.find_element("id", "status").text


def test_label_train_and_recognise_in_the_browser(server, browser, celebrities, tmp_path):
    from selenium.webdriver.common.by import By

    url, work = server
    processed = work / "processed"
    d = browser

    # ---- no model yet: the recognise page says how to get one
    d.get(f"{url}/recognise")
    _wait(lambda: d.find_element("id", "no-model").is_displayed())
    assert "Train page" in d.find_element("id", "no-model").text
    assert not d.find_element("id", "drop").is_displayed()
    _shot(d, tmp_path, "recognise-no-model")

    # ---- people page: name the cluster of Elton John's crops
    d.get(f"{url}/people")
    _wait(lambda: _status(d) == "ready")
    elton = _servework.cluster_of(processed, "elton_john")
    card = _card(d, elton)
    _wait(lambda: len(card.find_elements(By.CSS_SELECTOR, "img.crop")) > 0)
    _wait(lambda: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
                      for i in d.find_elements(By.CSS_SELECTOR, "img.crop")[:8]))
    d.execute_script("arguments[0].dispatchEvent(new MouseEvent('mouseenter'))",
                     card.find_elements(By.CSS_SELECTOR, "img.crop")[0])
    _wait(lambda: d.find_element("id", "preview-box").is_displayed())  # source photo + box
    _shot(d, tmp_path, "people-before")
    crops = sorted(p.name for p in (processed / elton).glob("*.jpg"))
    card.find_element(By.CSS_SELECTOR, ".rename-input").send_keys("Elton John")
    card.find_element(By.CSS_SELECTOR, ".rename-btn").click()
    _wait(lambda: _card(d, "Elton John"))
    assert sorted(p.name for p in (processed / "Elton John").glob("*.jpg")) == crops
    assert not (processed / elton).exists()
    for person, name in (("jerry_seinfeld", "Jerry Seinfeld"), ("ben_afflek", "Ben Affleck")):
        folder = _servework.cluster_of(processed, person)
        c = _card(d, folder)
        c.find_element(By.CSS_SELECTOR, ".rename-input").send_keys(name)
        c.find_element(By.CSS_SELECTOR, ".rename-btn").click()
        _wait(lambda name=name: _card(d, name))

    # ---- move a crop out of the singletons to the rejected, then undo it
    single = _wait(lambda: _card(d, "_singletons").find_elements(By.CSS_SELECTOR, "img.crop"))[0]
    rel = single.get_attribute("data-crop")
    single.click()
    assert d.find_element("id", "selection").text == "1 selected"
    d.find_element("id", "reject-btn").click()
    _wait(lambda: (processed / "_rejected" / Path(rel).name).is_file())
    assert not (processed / rel).exists()
    _wait(lambda: "moved 1" in _status(d))
    _shot(d, tmp_path, "people-after-move")
    d.find_element("id", "undo-btn").click()
    _wait(lambda: (processed / rel).is_file())
    assert not (processed / "_rejected" / Path(rel).name).exists()
    _wait(lambda: _status(d).startswith("undone: move to _rejected (1 crop back where it was)"))
    # and one to a new person through the "move to" box, undone too
    crop = _wait(lambda: _card(d, "Ben Affleck").find_elements(By.CSS_SELECTOR, "img.crop"))[0]
    moved = crop.get_attribute("data-crop")
    crop.click()
    d.find_element("id", "move-to").send_keys("Someone Else")
    d.find_element("id", "move-btn").click()
    _wait(lambda: (processed / "Someone Else" / Path(moved).name).is_file())
    _wait(lambda: _card(d, "Someone Else"))
    d.find_element("id", "undo-btn").click()
    _wait(lambda: (processed / moved).is_file() and not (processed / "Someone Else").exists())
    _wait(lambda: _status(d).startswith("undone: move to Someone Else"))
    _shot(d, tmp_path, "people")

    # ---- train page: split + train + evaluate, live progress, result
    d.get(f"{url}/train")
    _wait(lambda: "Elton John" in d.find_element("id", "people").text)
    epochs = d.find_element("id", "max-epochs")
    epochs.clear()
    epochs.send_keys("8")
    d.find_element("id", "train-btn").click()
    _wait(lambda: "running" in d.find_element("id", "job-state").text or
          "done" in d.find_element("id", "job-state").text)
    _wait(lambda: "done" in d.find_element("id", "job-state").text
          or "failed" in d.find_element("id", "job-state").text, timeout=600, every=1)
    assert "done" in d.find_element("id", "job-state").text, d.find_element("id", "progress").text
    assert "epoch 8 / 8" in d.find_element("id", "job-epoch").text
    assert "stopped early" not in d.find_element("id", "job-epoch").text
    assert "test accuracy" in d.find_element("id", "result-accuracy").text
    # every number as what it is: accuracies in %, losses with three decimals
    header = [th.text for th in d.find_elements(By.CSS_SELECTOR, "#progress th")]
    row = [td.text for td in d.find_elements(By.CSS_SELECTOR, "#progress tr")[-1]
           .find_elements(By.TAG_NAME, "td")]
    cells = dict(zip(header, row))
    assert cells["epoch"] == "8" and cells["val_acc"].endswith(" %"), cells
    assert re.fullmatch(r"\d+\.\d{3}", cells["val_loss"]) and re.fullmatch(r"\d+\.\d{3}", cells["train_loss"])
    _wait(lambda: d.execute_script("const i = document.getElementById('confusion');"
                                   " return i && i.complete && i.naturalWidth > 0"))
    _shot(d, tmp_path, "train")

    # ---- recognise page: a held-out photo of Elton John gets his (page-given) name
    photo = sorted((celebrities / "val" / "elton_john").glob("*.jpg"))[0]
    d.get(f"{url}/recognise")
    _wait(lambda: "Elton John" in d.find_element("id", "model").text)
    d.find_element("id", "file-input").send_keys(str(photo))
    face = _wait(lambda: d.find_elements(By.CSS_SELECTOR, "li.face"), timeout=120)[0]
    assert face.get_attribute("data-label") == "Elton John"
    _wait(lambda: d.find_element(By.CSS_SELECTOR, ".result").get_attribute("data-drawn") == "1")
    # the canvas shows the photo with the box drawn: some pixels are the "known" green
    green = d.execute_script("""
        const c = document.querySelector('.result canvas');
        const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < px.length; i += 4)
          if (px[i] === 40 && px[i + 1] === 200 && px[i + 2] === 60) n++;
        return n;""")
    assert green > 100
    shown = json.loads(d.find_element("id", "json").text)
    assert shown[0]["image"] == photo.name
    assert set(shown[0]) == {"image", "faces", "error", "width", "height"}
    assert set(shown[0]["faces"][0]) == {"box", "label", "confidence", "candidate", "probability",
                                         "detection_score", "source"}
    # a photo is shown large enough to see, small ones scaled up
    shown_w, shown_h = json.loads(d.find_element(By.CSS_SELECTOR, ".result").get_attribute("data-shown"))
    assert shown_w >= 480 and d.find_element(By.CSS_SELECTOR, ".result canvas").size["width"] >= 480
    _shot(d, tmp_path, "recognise")

    # ---- a group: labels inside the photo, none over another; an unreadable photo says why
    group = _group_photo(photo, tmp_path / "group.jpg")
    torn = tmp_path / "torn.jpg"
    torn.write_bytes(photo.read_bytes()[:400])
    _choose_files(d, group, torn)
    _wait(lambda: d.find_element(By.CSS_SELECTOR, '.result[data-image="group.jpg"]')
          .get_attribute("data-drawn") == "1", timeout=120)
    card = d.find_element(By.CSS_SELECTOR, '.result[data-image="group.jpg"]')
    labels = json.loads(card.get_attribute("data-labels"))
    width, height = json.loads(card.get_attribute("data-shown"))
    assert len(labels) == len(card.find_elements(By.CSS_SELECTOR, "li.face")) >= 4
    # drawn where each box starts, the labels would collide or leave the photo: a real test
    answer = next(r for r in json.loads(d.find_element("id", "json").text) if r["image"] == "group.jpg")
    k = width / answer["width"]
    naive = [(f["box"][0] * k, f["box"][1] * k - h, w, h)
             for f, (_, _, w, h) in zip(answer["faces"], labels)]
    assert any(x + w > width for x, _, w, _ in naive) or any(
        a[0] < b[0] + b[2] and b[0] < a[0] + a[2] for i, a in enumerate(naive) for b in naive[i + 1:])
    for x, y, w, h in labels:
        assert 0 <= x and x + w <= width + 0.5 and 0 <= y and y + h <= height + 0.5, (x, y, w, h)
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            assert (a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1]
                    or b[1] + b[3] <= a[1]), (a, b)
    bad = d.find_element(By.CSS_SELECTOR, '.result.error[data-image="torn.jpg"]')
    assert "Could not read this photo" in bad.text and not bad.find_elements(By.TAG_NAME, "canvas")
    _shot(d, tmp_path, "recognise-group")
    # one photo alone that cannot be read: the request is refused; the page says so in its place
    _choose_files(d, torn)
    _wait(lambda: not d.find_elements(By.CSS_SELECTOR, '.result[data-image="group.jpg"]'))
    bad = d.find_element(By.CSS_SELECTOR, '.result.error[data-image="torn.jpg"]')
    assert "Could not read this photo" in bad.text and "400" not in bad.text
    assert not d.find_elements(By.CSS_SELECTOR, ".result:not(.error)")
    assert "error" in d.find_element("id", "status").get_attribute("class")
    for name in ("people", "train", "recognise"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000


def _choose_files(d, *paths: Path) -> None:
    """Choose PATHS in the recognise page's file input (replacing the previous choice)."""
    box = d.find_element("id", "file-input")
    d.execute_script("arguments[0].value = ''", box)
    box.send_keys("\n".join(str(p) for p in paths))


def _group_photo(photo: Path, out: Path) -> Path:
    """Five copies of the face of PHOTO (a portrait) side by side, shoulder to shoulder, the last
    against the right edge: labels drawn where the boxes start would run into each other and
    off the photo."""
    from PIL import Image, ImageOps

    with Image.open(photo) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
    tile = im.resize((round(im.width * 220 / im.height), 220))
    # whole faces (a face cut at its cheeks scores below the detectors' operating points), each
    # tile overlapping the background at the edge of the one before: close enough that labels
    # drawn at the boxes would collide
    tile = tile.crop((round(tile.width * 0.2), 0, round(tile.width * 0.8), tile.height))
    step = round(tile.width * 0.78)
    strip = Image.new("RGB", (step * 4 + tile.width, tile.height), "white")
    for i in range(5):
        strip.paste(tile, (i * step, 0))
    strip.save(out, quality=92)
    return out


def _section_title(d, kind: str) -> str:
    from selenium.webdriver.common.by import By

    h2 = d.find_element(By.CSS_SELECTOR, f"#section-{kind} h2")
    return d.execute_script("return arguments[0].firstChild.textContent", h2)  # not the button


def _rects_overlap(a: dict, b: dict) -> bool:
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


def test_people_page_counts_preview_emptied_clusters_move_to_undo_and_clustering(server, browser,
                                                                                tmp_path):
    """The people page's frictions, each in a real browser: section counts are crops, the hover
    preview sits beside the crop and goes when the pointer leaves, an emptied cluster disappears,
    the "move to" box forgets a name that a merge removed, Undo says what it undid, and loose crops
    are clustered from the page."""
    from selenium.webdriver.common.by import By

    url, work = server
    processed = work / "processed"
    d = browser
    d.get(f"{url}/people")
    _wait(lambda: _status(d) == "ready")

    # ---- section counts are crops, not folders
    rejected = len(list((processed / "_rejected").rglob("*.jpg")))
    people = sorted(processed.glob("person_*"))
    in_people = sum(len(list(p.glob("*.jpg"))) for p in people)
    assert rejected >= 1 and _section_title(d, "rejected").endswith(
        f"({rejected} crop{'s' if rejected != 1 else ''})")
    assert _section_title(d, "person").endswith(f"({len(people)} folders, {in_people} crops)")

    # ---- the preview: beside the hovered crop (never over it), gone when the pointer leaves
    card = _card(d, people[0].name)
    crop = _wait(lambda: card.find_elements(By.CSS_SELECTOR, "img.crop"))[0]
    _wait(lambda: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0",
                                   crop))
    d.execute_script("arguments[0].dispatchEvent(new MouseEvent('mouseenter'))", crop)
    preview = d.find_element("id", "preview")
    _wait(lambda: preview.is_displayed() and d.find_element("id", "preview-box").is_displayed())
    assert not _rects_overlap(preview.rect, crop.rect), (preview.rect, crop.rect)
    _shot(d, tmp_path, "people-preview")
    d.execute_script("arguments[0].dispatchEvent(new MouseEvent('mouseleave'))", crop)
    _wait(lambda: not preview.is_displayed())

    # ---- a name typed in "move to", then merged away, is not left in the box
    victim = people[-1].name
    first = _wait(lambda: _card(d, victim).find_elements(By.CSS_SELECTOR, "img.crop"))[0]
    first.click()
    d.find_element("id", "move-to").send_keys("Someone Else")
    d.find_element("id", "move-btn").click()
    _wait(lambda: _card(d, "Someone Else"))
    assert d.find_element("id", "move-to").get_attribute("value") == "Someone Else"  # still there
    c = _card(d, "Someone Else")
    c.find_element(By.CSS_SELECTOR, ".rename-input").send_keys(people[0].name)
    c.find_element(By.CSS_SELECTOR, ".rename-btn").click()
    _wait(lambda: _status(d).startswith("merged Someone Else"))
    assert d.find_element("id", "move-to").get_attribute("value") == ""

    # ---- Undo says what it undid, in words
    d.find_element("id", "undo-btn").click()
    _wait(lambda: _status(d) == f"undone: rename Someone Else to {people[0].name} "
                                 "(1 crop back where it was)")
    d.find_element("id", "undo-btn").click()
    _wait(lambda: _status(d).startswith("undone: move to Someone Else (1 crop"))

    # ---- a cluster emptied by moves disappears (no "0 crops" card); undo brings it back
    card = _card(d, victim)
    n = len(list((processed / victim).glob("*.jpg")))
    _wait(lambda: len(card.find_elements(By.CSS_SELECTOR, "img.crop")) == n)
    for img in card.find_elements(By.CSS_SELECTOR, "img.crop"):
        img.click()
    d.find_element("id", "reject-btn").click()
    _wait(lambda: _status(d) == f"moved {n} to _rejected")
    assert not d.find_elements(By.CSS_SELECTOR, f'.card[data-folder="{victim}"]')
    assert not (processed / victim).exists()
    d.find_element("id", "undo-btn").click()
    _wait(lambda: _card(d, victim) and (processed / victim).is_dir())

    # ---- loose crops are clustered from the page: undo the annotate run, then cluster again
    d.find_element("id", "undo-btn").click()
    _wait(lambda: _status(d).startswith("undone: annotate run"))
    loose = len(list(processed.glob("*.jpg")))
    assert loose >= 10 and not list(processed.glob("person_*"))
    _wait(lambda: d.find_element(By.CSS_SELECTOR, "#section-loose #cluster-btn"))
    _shot(d, tmp_path, "people-loose")
    d.find_element("id", "cluster-btn").click()
    _wait(lambda: _status(d).startswith(f"clustered {loose} loose crops: "), timeout=300)
    clusters = sorted(p.name for p in processed.glob("person_*"))
    assert len(clusters) >= 3 and not list(processed.glob("*.jpg"))
    for name in clusters:
        assert _card(d, name)
    assert not d.find_elements(By.CSS_SELECTOR, "#section-loose")
    _shot(d, tmp_path, "people")


def test_train_page_says_when_training_stopped_early(server, browser, tmp_path):
    """A job that ended before its last epoch says so, and why, beside "epoch 23 / 30" (rendered
    from a finished job as GET /api/train/{id} returns it)."""
    url, _ = server
    d = browser
    d.get(f"{url}/train")
    _wait(lambda: "model" in _status(d))
    job = {"id": "abc123", "state": "done", "stage": "", "epoch": 23, "max_epochs": 30,
           "history": [{"epoch": 23, "train_loss": 0.31234, "train_acc": 1.0, "val_loss": 0.4471,
                        "val_acc": 0.95, "val_f1": 0.9333}], "error": None,
           "result": {"checkpoint": "runs/x/version_0/checkpoints/epoch=2-step=3.ckpt",
                      "labels": ["a", "b"], "people": 2, "threshold": 0.93, "metrics": {},
                      "epochs": 23, "max_epochs": 30, "accuracy": 1.0, "confusion_png": None,
                      "stopped_early": "val_loss had not improved for 20 epochs (--patience)",
                      "best_epoch": 3}}
    d.execute_script("showJob(arguments[0])", job)
    text = d.find_element("id", "job-epoch").text
    assert text.startswith("epoch 23 / 30") and "stopped early: val_loss had not improved for 20 " \
        "epochs" in text and "epoch 3" in text
    cells = [td.text for td in d.find_elements("css selector", "#progress td")]
    assert cells == ["23", "0.312", "100.0 %", "0.447", "95.0 %", "0.933"]
    assert "trained 23 of at most 30 epochs" in d.find_element("id", "result").text
    _shot(d, tmp_path, "train-stopped-early")


# ------------------------------------------------------------------------ the hardening issue
def test_another_local_origin_cannot_frame_the_pages(bare_server, browser, tmp_path):
    """Item 2: an iframe of /people on another local origin clicked Undo (same-origin clicks pass
    the Origin check). Chromium now refuses to show any page of the server in a frame."""
    import http.server
    import threading

    url, work = bare_server
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text(
        f'<!doctype html><title>elsewhere</title><iframe id="f" src="{url}/people" '
        'width="800" height="600"></iframe>')

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path / "site"), **kwargs)

        def log_message(self, *args):
            pass
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        d = browser
        d.get(f"http://127.0.0.1:{other.server_address[1]}/index.html")
        time.sleep(3)  # the frame had its chance to load
        refusals = [e["message"] for e in d.get_log("browser")
                    if "frame" in e["message"].lower() or "refused" in e["message"].lower()]
        d.switch_to.frame(d.find_element("id", "f"))
        inside = d.execute_script("return [document.URL, !!document.getElementById('undo-btn')]")
        d.switch_to.default_content()
        assert inside[1] is False and not inside[0].startswith(url), (inside, refusals)
        assert refusals, "Chromium said nothing about the refused frame"
    finally:
        other.shutdown()


def test_docs_work_offline_from_this_servers_files(bare_server, offline_browser):
    """Item 13: /docs loaded an unpinned script from a CDN next to the token cookie, and was blank
    offline. With no network, Chromium shows every operation of the API, having fetched nothing
    but this server's own files, and no CSP violation."""
    from selenium.webdriver.common.by import By

    url, _ = bare_server
    d = offline_browser
    d.get(f"{url}/docs")
    _wait(lambda: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 8, timeout=60)
    paths = {e.get_attribute("data-path") or e.text for e in
             d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    for route in ("/api/predict", "/api/people", "/api/moves", "/api/undo", "/api/train",
                  "/api/health"):
        assert any(route in p for p in paths), (route, paths)
    fetched = d.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert fetched and all(f.startswith(url + "/") for f in fetched), fetched
    assert not _csp_violations(d)


def test_the_pages_run_under_their_csp_without_a_violation(bare_server, browser):
    url, _ = bare_server
    d = browser
    for page in ("people", "train", "recognise"):
        d.get(f"{url}/{page}")
        _wait(lambda: d.execute_script("return document.readyState") == "complete")
        time.sleep(1)
        assert not _csp_violations(d), page
    _wait(lambda: d.find_element("id", "no-model").is_displayed())  # its script ran
