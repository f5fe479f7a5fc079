"""Non-maximum suppression: torchvision's compiled kernel, without importing torchvision.

``import torchvision`` imports its models, whose ``ops.roi_align`` imports ``torch._dynamo``:
1.5-1.9 s of a 4-second cold ``facerec predict``, for one function. The kernel itself lives in
torchvision's native library, which registers ``torch.ops.torchvision.nms`` when loaded; this
module loads that file (found with ``importlib.util.find_spec``, which runs none of the
package's code) and keeps torchvision's own ``batched_nms`` strategy, so results are identical
(tests/test_yunet.py and the MTCNN parity tests compare them). Where the library cannot be
loaded (another torchvision layout), torchvision is imported after all.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import torch

__all__ = ["batched_nms", "nms"]

#: native libraries that register the torchvision ops, newest layout first
_LIBRARIES = ("_C_stable", "_C")


@functools.lru_cache(maxsize=1)
def _kernel():
    """``torch.ops.torchvision.nms``, loaded from the library file, else torchvision's ``nms``."""
    spec = importlib.util.find_spec("torchvision")
    folder = Path(next(iter(spec.submodule_search_locations or []), "")) if spec else None
    for name in _LIBRARIES if folder else ():
        for lib in sorted(folder.glob(f"{name}.*so")) + sorted(folder.glob(f"{name}.pyd")):
            try:
                torch.ops.load_library(str(lib))
                return torch.ops.torchvision.nms
            except (OSError, RuntimeError, AttributeError):
                continue
    from torchvision.ops import nms as torchvision_nms

    return torchvision_nms


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes (x1, y1, x2, y2) kept, by decreasing score (torchvision's ``nms``)."""
    return _kernel()(boxes, scores, float(iou_threshold))


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """NMS within each category of ``idxs`` (torchvision's ``batched_nms``, same strategy: one
    NMS per category above 4000 coordinates on the CPU, else one over offset boxes)."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    if boxes.numel() > (4000 if boxes.device.type == "cpu" else 100_000):
        keep_mask = torch.zeros_like(scores, dtype=torch.bool)
        for class_id in torch.unique(idxs):
            members = torch.where(idxs == class_id)[0]
            keep_mask[members[nms(boxes[members], scores[members], iou_threshold)]] = True
        kept = torch.where(keep_mask)[0]
        return kept[scores[kept].sort(descending=True)[1]]
    offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)
