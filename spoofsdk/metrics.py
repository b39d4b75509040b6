"""Presentation attack detection metrics (ISO/IEC 30107-3), numpy only.

Convention everywhere: ``labels`` are 1 for a bona fide (live, ``real``) sample and 0 for
an attack; ``scores`` are P(real); a sample is accepted as real when ``score >= threshold``.

- APCER: share of attacks accepted as real (the security error).
- BPCER: share of real samples rejected as attacks (the convenience error).
- ACER: their mean. EER: the rate where APCER = BPCER.

Written once here and imported by ``spoofsdk calibrate``, the trainer and the benchmarks.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# np.trapz was renamed np.trapezoid in NumPy 2.0 (and removed later); the runtime supports both,
# because Raspberry Pi OS's picamera2 needs the system's NumPy 1.x.
_trapezoid = getattr(np, "trapezoid", None) or getattr(np, "trapz")

__all__ = [
    "ErrorRates",
    "error_rates",
    "roc_curve",
    "roc_auc",
    "eer",
    "threshold_at_apcer",
    "threshold_at_bpcer",
    "bpcer_at_apcer",
    "confusion_matrix",
    "classification_report",
    "summary",
]


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (attack) or 1 (real)")
    if not np.isfinite(s).all():
        bad = np.flatnonzero(~np.isfinite(s))
        # The positions, for a caller to find the crops (a NaN here is a model that could not score them).
        raise ValueError(f"scores must be finite: {bad.size} of {s.size} are not (at index {', '.join(map(str, bad[:5]))}"
                         + (", ..." if bad.size > 5 else "") + ")")
    return y, s


@dataclass(frozen=True)
class ErrorRates:
    threshold: float
    apcer: float
    bpcer: float
    acer: float
    accuracy: float

    def to_dict(self) -> dict:
        return asdict(self)


def error_rates(labels, scores, threshold: float) -> ErrorRates:
    """APCER, BPCER, ACER and accuracy at ``threshold``. Undefined rates (no sample of a class) are NaN."""
    y, s = _check(labels, scores)
    accept = s >= threshold
    attacks, reals = y == 0, y == 1
    apcer = float(accept[attacks].mean()) if attacks.any() else float("nan")
    bpcer = float((~accept[reals]).mean()) if reals.any() else float("nan")
    accuracy = float((accept == reals).mean()) if y.size else float("nan")
    return ErrorRates(float(threshold), apcer, bpcer, (apcer + bpcer) / 2.0, accuracy)


def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(apcer, 1 - bpcer, thresholds)`` for every distinct threshold, from strictest to most lenient.

    In ROC terms, the false positive rate is APCER (attacks accepted) and the true positive
    rate is 1 - BPCER (reals accepted). The first point is (0, 0) at threshold +inf.
    """
    y, s = _check(labels, scores)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC needs both real and attack samples")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    distinct = np.r_[np.flatnonzero(np.diff(s_sorted)), y.size - 1]
    tp = np.cumsum(y_sorted)[distinct]
    fp = (distinct + 1) - tp
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    thresholds = np.r_[np.inf, s_sorted[distinct]]
    return fpr, tpr, thresholds


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve: the probability that a random real sample outscores a random attack (ties count half)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(_trapezoid(tpr, fpr))


def eer(labels, scores) -> tuple[float, float]:
    """``(eer, threshold)``: the equal error rate, interpolated on the ROC, and a threshold that reaches it."""
    fpr, tpr, thr = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    diff = fpr - fnr  # rises from -1 to +1 along the curve
    i = int(np.argmax(diff >= 0))
    if i == 0:
        return float(fpr[0]), float(np.nextafter(thr[1], np.inf))
    d0, d1 = diff[i - 1], diff[i]
    t = 0.0 if d1 == d0 else -d0 / (d1 - d0)
    rate = float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))
    # The operating point at or just past the crossing: the threshold of point i.
    threshold = float(thr[i]) if np.isfinite(thr[i]) else float(thr[i - 1])
    return rate, threshold


def threshold_at_apcer(labels, scores, target_apcer: float) -> float:
    """The lowest threshold whose APCER does not exceed ``target_apcer`` (so BPCER is as low as allowed)."""
    if not 0.0 <= target_apcer <= 1.0:
        raise ValueError(f"target APCER must be in [0, 1], got {target_apcer}")
    y, s = _check(labels, scores)
    attack_scores = np.sort(s[y == 0])[::-1]
    if attack_scores.size == 0:
        raise ValueError("choosing a threshold at an APCER needs attack samples")
    allowed = int(np.floor(target_apcer * attack_scores.size + 1e-9))
    if allowed >= attack_scores.size:
        return float(np.min(s))
    # Accept at most `allowed` attacks: the threshold sits just above the (allowed+1)-th highest attack score.
    return float(np.nextafter(attack_scores[allowed], np.inf))


def threshold_at_bpcer(labels, scores, target_bpcer: float) -> float:
    """The highest threshold whose BPCER does not exceed ``target_bpcer`` (so APCER is as low as allowed).

    It is the score of the real sample that must still be accepted: rejecting at most
    ``floor(target_bpcer * n_real)`` real samples.
    """
    if not 0.0 <= target_bpcer <= 1.0:
        raise ValueError(f"target BPCER must be in [0, 1], got {target_bpcer}")
    y, s = _check(labels, scores)
    real_scores = np.sort(s[y == 1])
    if real_scores.size == 0:
        raise ValueError("choosing a threshold at a BPCER needs real samples")
    allowed = int(np.floor(target_bpcer * real_scores.size + 1e-9))
    if allowed >= real_scores.size:
        return float(np.nextafter(np.max(s), np.inf))
    # Reject at most `allowed` real samples: the (allowed+1)-th lowest real score must still pass.
    return float(real_scores[allowed])


def bpcer_at_apcer(labels, scores, target_apcer: float) -> float:
    """BPCER at the threshold chosen by :func:`threshold_at_apcer` (e.g. BPCER@APCER=5 %)."""
    return error_rates(labels, scores, threshold_at_apcer(labels, scores, target_apcer)).bpcer


def confusion_matrix(labels, scores, threshold: float) -> np.ndarray:
    """2x2 counts, rows = truth (attack, real), columns = decision (attack, real)."""
    y, s = _check(labels, scores)
    pred = (s >= threshold).astype(np.int64)
    m = np.zeros((2, 2), dtype=np.int64)
    np.add.at(m, (y, pred), 1)
    return m


def classification_report(labels, scores, threshold: float) -> dict:
    """Per-class precision, recall, F1 and support, keyed 'spoof' and 'real'."""
    m = confusion_matrix(labels, scores, threshold)
    report = {}
    for idx, name in ((0, "spoof"), (1, "real")):
        tp = m[idx, idx]
        predicted, support = m[:, idx].sum(), m[idx, :].sum()
        precision = tp / predicted if predicted else float("nan")
        recall = tp / support if support else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if predicted and support and (precision + recall) else 0.0
        report[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(support)}
    return report


def summary(labels, scores, threshold: float) -> dict:
    """Every headline figure at once: AUC, EER, APCER/BPCER/ACER at ``threshold``, BPCER@APCER 5 % and 1 %."""
    y, s = _check(labels, scores)
    out: dict = {"n": int(y.size), "n_real": int(y.sum()), "n_attack": int((1 - y).sum())}
    out.update(error_rates(y, s, threshold).to_dict())
    out["confusion_matrix"] = confusion_matrix(y, s, threshold).tolist()
    out["per_class"] = classification_report(y, s, threshold)
    if out["n_real"] and out["n_attack"]:
        out["auc"] = roc_auc(y, s)
        out["eer"], out["eer_threshold"] = eer(y, s)
        out["bpcer_at_apcer_5"] = bpcer_at_apcer(y, s, 0.05)
        out["bpcer_at_apcer_1"] = bpcer_at_apcer(y, s, 0.01)
    return out
