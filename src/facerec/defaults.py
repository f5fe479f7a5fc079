"""The defaults that several stages share, in one place: which detector and face model new work
uses, the detector's search settings, and how a ``--device`` string becomes a torch device.

Light module: torch is imported only inside :func:`resolve_device`.
"""

from __future__ import annotations

from typing import Any

#: the detector that finds faces for new work (a name of facerec.detection's registry): YuNet
#: 2023mar, more accurate on WIDER FACE and several times faster than MTCNN (docs/models.md)
DEFAULT_DETECTOR = "yunet"
#: the face model new work trains on (a frozen embedder of facerec.recognition's registry):
#: SFace 2021dec on 112 px aligned crops, 0.993 10-fold pair accuracy on lfw-dev against
#: dlib_face's 0.983; the sface+dlib_face ensemble measured no better (docs/models.md)
DEFAULT_BACKBONE = "sface"
#: the detector of crops and checkpoints that do not name theirs (made before detectors had names)
LEGACY_DETECTOR = "mtcnn"
#: smallest face searched for, in pixels of the detection copy
MIN_FACE_SIZE = 20
#: photos are detected on a copy downscaled to this longest side (0 or None: full size)
MAX_SIDE = 1600
#: predict and serve decode a photo to at most this longest side before cutting faces from it:
#: every phone photo (12 MP: 4032 px) whole, a 169-MP scan at 16 MP (its faces are found at
#: MAX_SIDE anyway, so none smaller than ~50 px of this copy); the memory of a decode and of the
#: image held for cropping stays ~70 MB instead of up to the 384 MB decode budget
PREDICT_MAX_SIDE = 4096


def resolve_device(device: Any = "auto"):
    """A torch device for ``auto`` (CUDA when there is one), ``cpu``, ``cuda``, ``cuda:1``...; a
    CUDA device without CUDA is a one-line :class:`~facerec.errors.FacerecError`."""
    import torch

    from facerec.errors import FacerecError

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise FacerecError(f"--device {device!r}: {exc} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FacerecError(f"device {device} requested but CUDA is not available (use --device cpu)")
    return device
