"""The ``sface+dlib_face`` ensemble: the weighted concatenation of SFace's and dlib's unit
embeddings, on one aligned crop both can read (:data:`ENSEMBLE_CROP`).

A composite embedder (``composite = True``): made of two registered ones, chosen by name only,
never inferred as the model of a folder of crops. Measured on lfw-dev it is no better than
``sface`` alone at twice the cost (docs/models.md), so it is an option, not the default.

Light module: torch is imported by its members when their networks are first needed.
"""

from __future__ import annotations

import numpy as np

from facerec.cropspec import CropSpec
from facerec.recognition.embed import Embedder, FaceQuality, get_embedder, register_embedder

__all__ = ["ENSEMBLE_CROP", "ENSEMBLE_WEIGHTS_SQUARED", "SFaceDlibEmbedder"]

#: the ensemble's crop: aligned, margin 0.25, 140 px: the smallest crop whose centre is SFace's
#: 112 px template face cut as is (140 / 1.25 = 112) and that holds all of dlib's chip (its fit
#: in MTCNN's box, DLIB_BOX_IN_TEMPLATE_112): both models read it at no cost in accuracy
#: (bench/recognition.py --only pairs: sface 0.9930 10-fold / TAR 0.9943 as on its 112 px crop;
#: dlib_face 0.9837 / 0.9822 vs 0.9833 / 0.9841 on its 160 px box crop; 168 px / 0.5 and
#: 224 px / 1.0 give the very same numbers)
ENSEMBLE_CROP = CropSpec(size=140, margin=0.25, align=True)
#: (w_s**2, w_d**2): Fisher weights, w_i**2 proportional to d'_i / s_i (s_i: the pooled std of
#: model i's cosine distance over same- and different-person pairs, d'_i its separation in those
#: units): each distance standardised, then weighted by how well it separates, on every lfw-dev
#: pair at ENSEMBLE_CROP (bench/recognition.py --only pairs: "fisher"; sface d' 5.90, s 0.0965;
#: dlib_face d' 4.26, s 0.0272)
ENSEMBLE_WEIGHTS_SQUARED = (0.2811, 0.7189)


@register_embedder("sface+dlib_face")
class SFaceDlibEmbedder(Embedder):
    """The ensemble of SFace and dlib's descriptor: ``[w_s * u_sface, w_d * u_dlib]``, the
    weighted concatenation of the two unit embeddings (``w_s**2 + w_d**2 = 1``: unit length), so
    its cosine is ``w_s**2 * cos_sface + w_d**2 * cos_dlib`` and every cosine path (prototypes,
    thresholds, verify, clustering) works unchanged.

    Both models read the same crop (``crop``, :data:`ENSEMBLE_CROP`): an aligned crop with
    ``margin`` of context, whose centre square is SFace's template face and inside which dlib fits
    its own 5 points and cuts its 150x150 chip (:class:`~facerec.recognition.dlib_face.DlibChipper`
    with ``align``: in MTCNN's box of a template-aligned face). A row is NaN when either model
    could not embed the crop. On lfw-dev it is no better than SFace alone (bench/recognition.py
    --only pairs), at twice the cost: ``sface`` stays the default.
    """

    name = "sface+dlib_face"
    dim = 256
    version = "1"
    metric = "cosine"
    composite = True
    crop = ENSEMBLE_CROP
    #: cosine distance: the most accurate cut on one view of every lfw-dev pair
    #: (bench/recognition.py --only pairs, the "fisher" row at ENSEMBLE_CROP, "crop_only")
    same_person_threshold = 0.25
    # annotate/split distances (euclidean between the unit embeddings), measured as sface's:
    # cluster_threshold and member_distance from bench/annotate.py --embedder sface+dlib_face
    # --lfw --sweep (every candidate 0.9992 pure on lfw-dev, 1.0 on celebrities; the fewest
    # clusters to cover 95% of the faces: 97 on lfw-dev, 6 on celebrities); the others carried
    # over from dlib's at the same share of different-person pairs (suggest, album) or of
    # same-person pairs (duplicate) by bench/recognition.py --only pairs
    cluster_threshold = 1.3
    member_distance = 0.82
    suggest_distance = 0.71
    duplicate_distance = 0.30
    album_distance = 0.70
    #: bench/recognition.py --only pairs, "single_person": equal false accepts and rejects
    #: (0.810, 0.01% of each)
    prior_threshold = 0.81
    #: bench/recognition.py --only pairs: <= 1% false accepts on every lfw-dev pair (the rule of
    #: bench/verify_lfw.py, on the same crops)
    verify_threshold = 0.2718
    uses_processes = False
    settings = {"margin": (float, 0.0, 4.0), "batch_size": (int, 1, 4096)}

    def __init__(self, device: str = "auto", margin: float = ENSEMBLE_CROP.margin,
                 batch_size: int = 64, half: bool | None = None) -> None:
        self.margin = float(margin)
        self.batch_size = max(1, int(batch_size))
        if self.margin != self.crop.margin:  # the same template face at 112 px
            self.crop = CropSpec(size=round(112 * (1 + self.margin)), margin=self.margin,
                                 align=True)
        kwargs = {"device": device, "margin": self.margin, "batch_size": self.batch_size}
        if half is not None:
            kwargs["half"] = half
        self.sface = get_embedder("sface", **kwargs)
        self.dlib = get_embedder("dlib_face", align=True, **kwargs)
        self.device = self.sface.device
        w2 = np.asarray(ENSEMBLE_WEIGHTS_SQUARED, dtype=np.float64)
        self.weights = np.sqrt(w2 / w2.sum())

    @property
    def cache_id(self) -> str:
        extra = "" if self.margin == ENSEMBLE_CROP.margin else f"-m{self.margin:g}"
        return f"{self.name}-v{self.version}{extra}"

    def combine(self, sface: np.ndarray, dlib: np.ndarray) -> np.ndarray:
        """``[w_s * unit(sface), w_d * unit(dlib)]`` along the last axis (NaN stays NaN)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            us = sface / np.linalg.norm(sface, axis=-1, keepdims=True)
            ud = dlib / np.linalg.norm(dlib, axis=-1, keepdims=True)
        return np.concatenate([self.weights[0] * us, self.weights[1] * ud],
                              axis=-1).astype(np.float32)

    def embed_raw(self, images, boxes=None):
        vs, ms = self.sface.embed_raw(images)
        vd, md = self.dlib.embed_raw(images, boxes=boxes)
        return self.combine(vs, vd), self._metas(ms, md)

    def embed_views(self, images, boxes=None):
        vs, ms = self.sface.embed_views(images)
        vd, md = self.dlib.embed_views(images, boxes=boxes)
        return self.combine(vs, vd), self._metas(ms, md)

    @staticmethod
    def _metas(ms, md):
        out = []
        for s, d in zip(ms, md):
            meta = {"sface": s, "dlib_face": d}
            if s.get("error") or d.get("error"):
                meta["error"] = s.get("error") or d.get("error")
                meta["reason"] = s.get("reason") or d.get("reason") or "could not embed"
            out.append(meta)
        return out

    def assess(self, meta, landmarks=None):
        """Both models' checks: usable only when both are."""
        if meta.get("error") or "sface" not in meta:
            return super().assess(meta if meta.get("error") else {"error": "not embedded"})
        qs = self.sface.assess(meta["sface"], landmarks)
        qd = self.dlib.assess(meta["dlib_face"], landmarks)
        fits = [f for f in (qs.fit_error, qd.fit_error) if f is not None]
        reasons = list(dict.fromkeys(qs.reasons + qd.reasons))
        return FaceQuality(ok=qs.ok and qd.ok, error=qs.error or qd.error,
                           fit_error=max(fits) if fits else None, eye_distance=qd.eye_distance,
                           geometry_ok=qs.geometry_ok and qd.geometry_ok, reasons=reasons)
