"""Detection metrics of scores against injected flips: AUROC, AP, precision@k, ROC.

Non-finite scores rank as the most suspicious (a scorer that blows up on a
sample should not hide it); their count is reported separately by the caller.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def _finite(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(s)
    if finite.all():
        return s
    top = s[finite].max() + 1.0 if finite.any() else 1.0
    return np.where(finite, s, top)


def precision_at_k(is_positive: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Fraction of positives among the ``k`` highest scores (ties: lower index first)."""
    if k <= 0:
        return float("nan")
    order = np.lexsort((np.arange(len(scores)), -_finite(scores)))
    return float(np.asarray(is_positive, bool)[order[:k]].mean())


def detection_metrics(is_positive: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """AUROC, average precision and precision@k (k = number of positives)."""
    y = np.asarray(is_positive, dtype=bool)
    s = _finite(scores)
    k = int(y.sum())
    if k == 0 or k == len(y):
        return {"auroc": None, "ap": None, "precision_at_k": None, "k": k, "n": len(y)}
    return {
        "auroc": float(roc_auc_score(y, s)),
        "ap": float(average_precision_score(y, s)),
        "precision_at_k": precision_at_k(y, s, k),
        "k": k,
        "n": len(y),
    }


def roc_points(is_positive: np.ndarray, scores: np.ndarray, max_points: int = 200) -> pd.DataFrame:
    """ROC curve as a frame with finite ``fpr``, ``tpr`` (thresholds dropped), thinned."""
    fpr, tpr, _ = roc_curve(np.asarray(is_positive, bool), _finite(scores), drop_intermediate=True)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return pd.DataFrame({"fpr": np.round(fpr, 6), "tpr": np.round(tpr, 6)})
