"""The open-set "unknown" threshold: calibrated by holding each person out in turn.

The threshold is the lowest cosine-to-prototype score whose false-positive identification rate
(FPIR: a stranger taken for someone known) stays under the target with the asked confidence,
resampling *people* (a look-alike produces many high impostor scores at once, so people, not
photos, are the unit of chance). Numpy only.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

#: the threshold of a model with nobody to calibrate against, when its backbone has no prior
#: of its own (:attr:`facerec.recognition.embed.Embedder.prior_threshold`)
FALLBACK_PRIOR_THRESHOLD = 0.9


def _fpir_upper(t: float, groups: list[np.ndarray], draws: np.ndarray, sizes: np.ndarray,
                confidence: float) -> tuple[float, float]:
    """(pooled FPIR, its ``confidence`` upper bound over people resampled) at threshold t."""
    hits = np.array([(g >= t).sum() for g in groups], dtype=np.float64)
    pooled = hits.sum() / max(sizes.sum(), 1)
    if draws.size == 0:
        return pooled, pooled
    boot = (draws @ hits) / np.maximum(draws @ sizes, 1)
    return pooled, float(np.quantile(boot, confidence))


def calibrate_threshold(features: ArrayLike, labels: ArrayLike,
                        prototypes: ArrayLike, *,
                        proto_sums: np.ndarray | None = None, proto_counts: np.ndarray | None = None,
                        member: np.ndarray | None = None, predicted: np.ndarray | None = None,
                        target_fpir: float = 0.01, confidence: float = 0.99, bootstrap: int = 1000,
                        seed: int = 0, prior: float | None = None) -> dict:
    """Open-set threshold on the cosine-to-prototype score, by holding each person out in turn.

    ``features`` (N, D) unit rows with ``labels`` (N,); ``prototypes`` (K, D) unit rows. Impostor
    scores: each face against every *other* person's prototype (the best one). Genuine scores:
    each face against its own prototype, recomputed without the face itself when it is a
    ``member`` of the prototype (``proto_sums``/``proto_counts`` are the unnormalised sums and
    counts). ``predicted``: the head's labels, to count misidentified genuine faces.
    The threshold is the lowest at which the FPIR is <= ``target_fpir`` with ``confidence``, people
    being resampled (``bootstrap`` draws). With fewer than two people there are no impostors and
    ``prior`` is used. Returns a JSON-able dict (``threshold``, ``est_fpir``, ``est_fnir``, ...).
    """
    z = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    P = np.asarray(prototypes, dtype=np.float64)
    keep = np.isfinite(z).all(axis=1)
    z, y = z[keep], y[keep]
    if member is not None:
        member = np.asarray(member, bool)[keep]
    if predicted is not None:
        predicted = np.asarray(predicted)[keep]
    k = P.shape[0]
    n = len(z)
    base = {"method": "hold-out-person", "target_fpir": float(target_fpir),
            "confidence": float(confidence), "n_faces": int(n), "n_people": int(k)}
    if n == 0:
        return {**base, "threshold": float(prior if prior is not None else FALLBACK_PRIOR_THRESHOLD),
                "method": "prior", "reason": "no faces to calibrate on"}
    S = z @ P.T  # (n, k)
    genuine = S[np.arange(n), y].copy()
    if member is not None and proto_sums is not None and proto_counts is not None:
        sums = np.asarray(proto_sums, dtype=np.float64)
        counts = np.asarray(proto_counts, dtype=np.float64)
        m = member & (counts[y] > 1)
        loo = sums[y[m]] - z[m]
        loo /= np.maximum(np.linalg.norm(loo, axis=1, keepdims=True), 1e-12)
        genuine[m] = (z[m] * loo).sum(axis=1)
        # a face that is its person's only example has no held-out genuine score
        single = member & (counts[y] <= 1)
        genuine[single] = np.nan
    correct = np.ones(n, bool) if predicted is None else (predicted == y)
    if k < 2:
        t = float(prior if prior is not None else FALLBACK_PRIOR_THRESHOLD)
        g = genuine[np.isfinite(genuine)]
        return {**base, "threshold": t, "method": "prior",
                "reason": "a single person: no impostors to calibrate on",
                "est_fnir": float(np.mean(g < t)) if len(g) else None, "n_genuine": int(len(g))}
    Si = S.copy()
    Si[np.arange(n), y] = -np.inf
    impostor = Si.max(axis=1)
    people = np.unique(y)
    groups = [np.sort(impostor[y == p]) for p in people]
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    rng = np.random.default_rng(seed)
    if len(people) >= 2 and bootstrap > 0:
        picks = rng.integers(0, len(people), size=(bootstrap, len(people)))
        draws = np.zeros((bootstrap, len(people)))
        np.add.at(draws, (np.repeat(np.arange(bootstrap), len(people)), picks.ravel()), 1.0)
    else:
        draws = np.zeros((0, len(people)))
    cands = np.unique(np.concatenate([impostor, [impostor.max() + 1e-6]]))
    cands = np.minimum(cands + 1e-6, 1.0 + 1e-6)
    lo, hi = 0, len(cands) - 1  # the last candidate (above every impostor) always qualifies
    while lo < hi:
        mid = (lo + hi) // 2
        if _fpir_upper(cands[mid], groups, draws, sizes, confidence)[1] <= target_fpir:
            hi = mid
        else:
            lo = mid + 1
    t = float(cands[lo])
    pooled, upper = _fpir_upper(t, groups, draws, sizes, confidence)
    ok = np.isfinite(genuine)
    fnir = float(np.mean(~((genuine[ok] >= t) & correct[ok]))) if ok.any() else None
    return {**base, "threshold": t, "est_fpir": float(pooled), "est_fpir_upper": float(upper),
            "est_fnir": fnir, "n_impostor": int(n), "n_genuine": int(ok.sum()),
            "impostor_max": float(impostor.max()),
            "genuine_median": float(np.median(genuine[ok])) if ok.any() else None}
