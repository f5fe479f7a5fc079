"""dlib's face descriptor (``dlib_face``): dlib's 5-point fit and aligned 150x150 chip, and its
face ResNet ported to PyTorch (:mod:`facerec.recognition.dlib_net`).

The fit runs inside a face rectangle on the crop: the detector's box mapped into the crop when the
caller knows it (``boxes=``), else the box that ``facerec detect`` leaves in the middle of every
box crop (``margin`` around it, from the crop spec). Given the detector's landmarks too
(``landmarks=``, crop pixels), the fit is checked against them: a fit whose eyes land far from the
detector's is flagged (:class:`~facerec.recognition.embed.FaceQuality`), which is how ``annotate``
spots crops that are unlikely to be faces or too poor to use.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facerec.cropspec import CropSpec
from facerec.errors import FacerecError
from facerec.recognition.embed import (Embedder, FaceQuality, lazy_torch_net, register_embedder,
                                      to_rgb_array)


#: where MTCNN's face box lies in a face aligned on the 112x112 ArcFace template: centre x, centre
#: y, side of the square dlib's fit should run in (the median box centre, and the median box
#: height = max(w, h), as in facerec detect's box crops), measured on the 1,301 lfw-dev faces
#: (bench/recognition.py --only pairs: "mtcnn_box_in_template"). The template's own square sits
#: 8 px higher and is 8% larger: dlib's fit inside it loses 1.5 points of pair accuracy.
DLIB_BOX_IN_TEMPLATE_112 = (54.6, 64.2, 103.9)


def dlib_models_dir() -> Path:
    """Folder holding the dlib model files of ``face_recognition_models`` (located, never imported:
    importing it needs ``pkg_resources``)."""
    from facerec.weights import WHEEL_FILES

    return WHEEL_FILES["dlib_shape5"].located().parent


class DlibChipper:
    """dlib's 5-point landmark fit and aligned face chip (``dlib.get_face_chip``, 150x150, padding
    0.25): what dlib's face ResNet is fed. dlib only; no network (ONNX runtimes use it alone).

    The fit runs inside a face rectangle on the crop: the given box, else the box ``facerec
    detect`` leaves in the middle of every crop (``margin`` of context around it). With ``align``
    the crops are aligned on the ArcFace template (``facerec detect --align``) with ``margin``
    around it: the box is where MTCNN's box lies in such a face (:data:`DLIB_BOX_IN_TEMPLATE_112`;
    the ``sface+dlib_face`` ensemble's crops).
    """

    chip_size = 150
    chip_padding = 0.25

    def __init__(self, margin: float = 0.2, align: bool = False) -> None:
        import dlib

        self.margin = float(margin)
        self.align = bool(align)
        from facerec.weights import wheel_file

        path = wheel_file("dlib_shape5")
        try:
            self._shape = dlib.shape_predictor(str(path))
        except RuntimeError as exc:  # corrupt or another kind of file
            raise FacerecError(f"cannot load dlib landmark model {path}: {exc}") from exc
        self._dlib = dlib
        self._lock = threading.Lock()  # dlib objects are not documented as thread-safe

    def default_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The face box ``facerec detect`` leaves in a crop: centred, 1/(1+margin) of its side
        (detect crops a square of side max(w, h) * (1 + margin) around the box); in an aligned
        crop (``align``), MTCNN's box in the template square (see the class docstring)."""
        if self.align:
            from facerec.detection.align import template_face_box

            x0, y0, x1, y1 = template_face_box(width, height, self.margin)
            sx, sy = (x1 - x0) / 112.0, (y1 - y0) / 112.0
            cx, cy, side = DLIB_BOX_IN_TEMPLATE_112
            return (x0 + (cx - side / 2) * sx, y0 + (cy - side / 2) * sy,
                    x0 + (cx + side / 2) * sx, y0 + (cy + side / 2) * sy)
        fw, fh = width / (1 + self.margin), height / (1 + self.margin)
        return ((width - fw) / 2, (height - fh) / 2, (width + fw) / 2, (height + fh) / 2)

    def fit_landmarks(self, img: np.ndarray, box: Sequence[float] | None = None):
        """dlib ``full_object_detection`` (5 points) fitted inside ``box`` (default: centred box)."""
        h, w = img.shape[:2]
        x0, y0, x1, y1 = box if box is not None else self.default_box(w, h)
        rect = self._dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
        with self._lock:
            return self._shape(img, rect)

    def chip(self, image: Any, box: Any = None) -> np.ndarray:
        """The aligned 150x150 RGB uint8 chip of one crop."""
        img = to_rgb_array(image)
        shape = self.fit_landmarks(img, box)
        return self._dlib.get_face_chip(img, shape, size=self.chip_size, padding=self.chip_padding)

    def chips(self, images: Sequence[Any], boxes: Sequence[Any] | None = None
              ) -> tuple[list[np.ndarray], list[int], list[dict[str, Any]]]:
        """(chips, the indices of the images they come from, a meta dict per image: the fitted
        points and the image size, or ``{"error": ...}`` for an image that could not be used)."""
        chips: list[np.ndarray] = []
        rows: list[int] = []
        metas: list[dict[str, Any]] = [{} for _ in images]
        for i, image in enumerate(images):
            try:
                img = to_rgb_array(image)
                shape = self.fit_landmarks(img, boxes[i] if boxes is not None else None)
                chips.append(self._dlib.get_face_chip(img, shape, size=self.chip_size,
                                                      padding=self.chip_padding))
                metas[i] = {"points": [[p.x, p.y] for p in shape.parts()],
                            "size": [int(img.shape[1]), int(img.shape[0])]}
                rows.append(i)
            except Exception as exc:  # noqa: BLE001 - unreadable/odd input: NaN row, see meta
                metas[i] = {"error": f"{type(exc).__name__}: {exc}", "reason": "could not embed"}
        return chips, rows, metas


@register_embedder("dlib_face")
class DlibFaceEmbedder(Embedder):
    """dlib's 128-d ResNet face descriptor (99.38% on LFW; same person below ~0.6 euclidean).

    dlib-bin fits the 5 landmarks and cuts the aligned 150x150 chip (``dlib.get_face_chip``); the
    network itself is our PyTorch port (:mod:`facerec.recognition.dlib_net`, the same descriptors to ~1e-6),
    batched (``batch_size`` chips per forward pass), channels-last, on ``device`` (``auto``: CUDA
    when available, in float16 there). ``margin`` is the context ``facerec detect`` left around the
    face box in each crop (used when no box is given); ``num_jitters`` > 0 averages that many
    jittered copies of each chip (``dlib.jitter_image``; slower, a bit better). ``align``: the
    crops are aligned on the ArcFace template instead (see :class:`DlibChipper`; how the
    ``sface+dlib_face`` ensemble uses it: not a checkpoint setting).
    """

    name = "dlib_face"
    dim = 128
    # 2: landmark fit in the box detect leaves (1/(1+margin) of the crop)
    # 3: the torch network; the mirror view is the mirrored chip (one batch with the chip)
    version = "3"
    metric = "euclidean"
    same_person_threshold = 0.6
    chip_size = 150
    chip_padding = 0.25
    #: a fit whose eye centres are further than this (x inter-ocular distance) from MTCNN's fails
    max_fit_error = 0.45
    #: torch parallelises one batch over the cores itself: no worker processes in embed_files
    uses_processes = False
    #: "" for dlib's network; "-ft<N>-<digest of the weights>" for a fine-tuned copy (with_tail)
    _tuned_id = ""
    # box crops with context: dlib fits its own landmarks inside the face box of the crop
    crop = CropSpec(size=160, margin=0.2, align=False)
    #: measured on LFW-dev pairs (~0.6% false accepts, ~0.5% false rejects): the analogue of
    #: face_recognition's 0.6 euclidean tolerance, as a cosine to the person's prototype
    prior_threshold = 0.93
    #: bench/verify_lfw.py on all lfw-dev pairs: <= 1% false accepts (docs/enroll-verify.md)
    verify_threshold = 0.0883
    finetune_levels = 5  # len(dlib_net.LEVELS), not imported here (torch); a test checks
    settings = {"margin": (float, 0.0, 2.0), "num_jitters": (int, 0, 100),
                "batch_size": (int, 1, 4096)}
    network_input_size = 150  # dlib's aligned chip

    def __init__(self, device: str = "auto", margin: float = 0.2, num_jitters: int = 0,
                 batch_size: int = 64, half: bool | None = None, align: bool = False) -> None:
        self.chipper = DlibChipper(margin=margin, align=align)
        self.margin = self.chipper.margin
        self.align = self.chipper.align
        if self.align:  # the template face at 112 px, as the ensemble's crop
            self.crop = CropSpec(size=round(112 * (1 + self.margin)), margin=self.margin,
                                 align=True)
        self.num_jitters = int(num_jitters)
        self.batch_size = max(1, int(batch_size))
        self._half = half
        self._net = None
        self._net_lock = threading.Lock()
        from facerec.defaults import resolve_device

        self.torch_device = resolve_device(device)
        self.device = str(self.torch_device)

    @property
    def cache_id(self) -> str:
        extra = "" if (self.margin, self.num_jitters) == (0.2, 0) else f"-m{self.margin:g}-j{self.num_jitters}"
        extra += "-aligned" if self.align else ""
        # a fine-tuned network's descriptors are keyed by its weights: never mixed with dlib's
        return f"{self.name}-v{self.version}{extra}{self._tuned_id}"

    def with_tail(self, tail: Any) -> DlibFaceEmbedder:
        """This embedder (same landmarks, chips, batching, device) with the last levels of its
        network replaced by a copy of ``tail`` (a :class:`facerec.recognition.dlib_net.DlibTail`, from
        ``facerec train --finetune``). Its cache id names the weights' digest."""
        import copy

        import torch

        from facerec.recognition.dlib_net import load_dlib_resnet

        self.net  # noqa: B018 - loads the base network: sets the dtype used below
        clone = copy.copy(self)  # shares the landmark model
        clone._net_lock = threading.Lock()
        net = load_dlib_resnet().with_tail(tail)
        clone._net = net.to(self.torch_device, dtype=self.dtype,
                            memory_format=torch.channels_last).eval()
        digest = hashlib.sha256()
        for key, value in sorted(tail.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().float().cpu().numpy().tobytes())
        clone._tuned_id = f"-ft{len(tail.levels)}-{digest.hexdigest()[:16]}"
        return clone

    def trunk(self, chips: np.ndarray, upto: int, mirror: bool = True) -> np.ndarray:
        """The activations entering level ``upto`` of dlib's network for 150x150 RGB uint8 chips:
        (N, 2, C, H, W) with ``mirror`` (chip, mirror image), else (N, 1, C, H, W); float32 on
        the CPU. What ``facerec train --finetune`` computes once per crop."""
        import torch

        net = self.net
        chips = np.asarray(chips, dtype=np.uint8).reshape(-1, self.chip_size, self.chip_size, 3)
        step = max(1, self.batch_size // (2 if mirror else 1))
        out = []
        with torch.inference_mode():
            for s in range(0, len(chips), step):
                x = torch.from_numpy(chips[s:s + step]).to(self.torch_device).permute(0, 3, 1, 2)
                n = len(x)
                if mirror:
                    x = torch.cat([x, x.flip(3)])
                x = x.to(self.dtype, memory_format=torch.channels_last)
                a = net.trunk(x, upto).float().contiguous().cpu()
                out.append(torch.stack([a[:n], a[n:]], 1) if mirror else a[:, None])
        return torch.cat(out).numpy()

    @property
    def net(self):
        """The torch network on this embedder's device (loaded at first use)."""
        return lazy_torch_net(self, "facerec.recognition.dlib_net:load_dlib_resnet")

    @classmethod
    def input_cutter(cls, settings):
        chipper = DlibChipper(margin=float(settings.get("margin", 0.2)))
        return lambda images: chipper.chips(images)[:2]

    @classmethod
    def finetune_tail(cls, levels: int, pretrained: bool = False):
        from facerec.recognition.dlib_net import DlibTail, load_dlib_resnet

        return DlibTail(levels, load_dlib_resnet() if pretrained else None)

    def torch_network(self, tail: Any = None):
        from facerec.recognition.dlib_net import load_dlib_resnet

        net = load_dlib_resnet()
        return (net.with_tail(tail) if tail is not None else net).float().eval()

    def default_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        return self.chipper.default_box(width, height)

    def fit_landmarks(self, img: np.ndarray, box: Sequence[float] | None = None):
        return self.chipper.fit_landmarks(img, box)

    def chip(self, image: Any, box: Any = None) -> np.ndarray:
        """dlib's aligned 150x150 face chip for one crop (what the network sees)."""
        return self.chipper.chip(image, box)

    def embed_chips(self, chips: np.ndarray | Sequence[np.ndarray], mirror: bool = False
                    ) -> np.ndarray:
        """Descriptors of 150x150 RGB uint8 chips: (N, 128), or (N, 2, 128) with ``mirror`` (each
        chip and its left-right mirror image, computed in the same batches)."""
        chips = np.asarray(chips, dtype=np.uint8).reshape(-1, self.chip_size, self.chip_size, 3)
        if len(chips) == 0:
            return np.zeros((0, 2, self.dim) if mirror else (0, self.dim), dtype=np.float32)
        if self.num_jitters > 0:  # dlib's jittering (random crops, flips, scales), averaged
            import dlib

            return np.asarray([self._forward(np.asarray(dlib.jitter_image(
                np.ascontiguousarray(c), self.num_jitters)), mirror).mean(axis=0)
                for c in chips], dtype=np.float32)
        return self._forward(chips, mirror)

    def _forward(self, chips: np.ndarray, mirror: bool) -> np.ndarray:
        import torch

        net = self.net
        views = 2 if mirror else 1
        step = max(1, self.batch_size // views)  # a batch holds whole (chip, mirror) pairs
        out = []
        with torch.inference_mode():
            for s in range(0, len(chips), step):
                x = torch.from_numpy(chips[s:s + step]).to(self.torch_device)
                x = x.permute(0, 3, 1, 2)  # NHWC bytes viewed as NCHW: already channels-last
                if mirror:
                    x = torch.cat([x, x.flip(3)])
                x = x.to(self.dtype, memory_format=torch.channels_last)
                y = net(x).float().cpu().numpy()
                out.append(np.stack([y[:len(y) // 2], y[len(y) // 2:]], axis=1) if mirror
                           else y)
        return np.concatenate(out).astype(np.float32)

    def embed_raw(self, images, boxes=None):
        vecs, metas = self._embed(images, boxes, mirror=False)
        return vecs, metas

    def embed_views(self, images, boxes=None):
        return self._embed(images, boxes, mirror=True)

    def _embed(self, images, boxes, mirror: bool):
        n = len(images)
        shape = (n, 2, self.dim) if mirror else (n, self.dim)
        vecs = np.full(shape, np.nan, dtype=np.float32)
        chips, rows, metas = self.chipper.chips(images, boxes)
        if rows:
            vecs[rows] = self.embed_chips(np.stack(chips), mirror=mirror)
        return vecs, metas

    def assess(self, meta, landmarks=None):
        """Checks the 5-point fit: plausible geometry, and agreement with MTCNN's eyes if given.

        dlib's points: 0-1 and 2-3 are the corners of each eye, 4 the base of the nose.
        """
        if meta.get("error") or "points" not in meta:
            return super().assess(meta if meta.get("error") else {"error": "no landmark fit"})
        pts = np.asarray(meta["points"], dtype=np.float64)
        width, height = meta["size"]
        eye_a, eye_b, nose = pts[0:2].mean(0), pts[2:4].mean(0), pts[4]
        iod = float(np.linalg.norm(eye_a - eye_b))
        q = FaceQuality(eye_distance=iod)
        side = min(width, height)
        mid = (eye_a + eye_b) / 2
        axis = (eye_b - eye_a) / max(iod, 1e-6)
        normal = np.array([-axis[1], axis[0]])
        nose_drop = abs(float((nose - mid) @ normal))
        inside = bool(np.all(pts >= -0.1 * side) and np.all(pts[:, 0] <= width * 1.1)
                      and np.all(pts[:, 1] <= height * 1.1))
        if iod < 0.12 * side or iod > 0.8 * side or nose_drop < 0.25 * iod or not inside:
            q.geometry_ok = False
            q.reasons.append("implausible landmark fit")
        if landmarks is not None:
            lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
            if lm.shape[0] >= 2 and np.all(np.isfinite(lm[:2])):
                ref_iod = max(float(np.linalg.norm(lm[0] - lm[1])), 1e-6)
                # which eye dlib lists first differs from MTCNN's order: take the better pairing
                e1 = max(np.linalg.norm(eye_a - lm[0]), np.linalg.norm(eye_b - lm[1]))
                e2 = max(np.linalg.norm(eye_a - lm[1]), np.linalg.norm(eye_b - lm[0]))
                q.fit_error = float(min(e1, e2) / ref_iod)
                if q.fit_error > self.max_fit_error:
                    q.reasons.append("landmark fit disagrees with the detector")
        q.ok = not q.reasons
        return q
