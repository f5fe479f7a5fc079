"""Optional dependencies: which extra provides a missing module, said in one line.

``pip install facerec`` runs detect, predict, verify, enroll/forget and export. Training and
the stages around it, the web UI, videos and cloud storage are extras (pyproject.toml); using one
without it installed is a :class:`MissingExtraError` naming the ``pip install`` that fixes it,
not an ``ImportError`` traceback. Light module: nothing imported.
"""

from __future__ import annotations

from facerec.errors import MissingExtraError

#: top-level module -> the extra that installs it
EXTRA_OF = {
    "lightning": "train", "lightning_fabric": "train", "pytorch_lightning": "train",
    "torchmetrics": "train", "timm": "train", "tensorboard": "train", "optuna": "train",
    "sklearn": "train", "fsspec": "train", "yaml": "train",
    "fastapi": "serve", "uvicorn": "serve", "multipart": "serve", "python_multipart": "serve",
    "starlette": "serve",
    "av": "video", "scipy": "video",
    "s3fs": "s3", "gcsfs": "gcs", "sky": "cloud", "ray": "ray",
}


def missing_extra(exc: ModuleNotFoundError, what: str = "this") -> MissingExtraError | None:
    """The one-line error for a module of an extra that is not installed, or None when the
    missing module belongs to no extra (a real bug, shown as it is)."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None
    return MissingExtraError(f"{what} needs facerec's optional '{extra}' dependencies (module "
                             f"{top!r} is not installed): pip install 'facerec[{extra}]'")
