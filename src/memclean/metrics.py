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


#: The suffix of the all-rows (confounded) figures in ``validation.json``.
ALL_ROWS = "_all_rows"


def measured_metrics(is_flipped: np.ndarray, scores: np.ndarray, suspected_own: np.ndarray) -> dict[str, Any]:
    """Detection metrics among the rows not suspected beforehand, with the all-rows figures beside them.

    ``auroc``, ``ap``, ``precision_at_k``, ``k`` and ``n`` are measured on the rows with
    ``suspected_own`` false: injected flips (positives) against rows the first scoring run
    considered clean (negatives). A real label error of the dataset's own is not counted as
    a false positive there. ``auroc_all_rows``, ``ap_all_rows``, ``precision_at_k_all_rows``
    and ``n_all_rows`` are the same figures over every row (the own errors counted as
    negatives: confounded, lower when the scorer finds them).
    """
    y = np.asarray(is_flipped, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    measured = ~np.asarray(suspected_own, dtype=bool)
    inside = detection_metrics(y[measured], s[measured])
    everywhere = detection_metrics(y, s)
    return inside | {
        f"auroc{ALL_ROWS}": everywhere["auroc"],
        f"ap{ALL_ROWS}": everywhere["ap"],
        f"precision_at_k{ALL_ROWS}": everywhere["precision_at_k"],
        f"n{ALL_ROWS}": everywhere["n"],
    }


def measured_on(suspected_by: str | None, rows: int, flipped: int, excluded: int) -> dict[str, Any]:
    """What the gated metrics of ``validation.json`` mean: a sentence and the counts."""
    if suspected_by:
        text = (
            f"injected flips vs rows that {suspected_by} did not flag on the original labels; "
            f"the {excluded} rows it flagged (suspected own label errors) are excluded from injection "
            "and from auroc/ap/precision_at_k (the *_all_rows figures include them, as negatives)"
        )
    else:
        text = (
            "injected flips vs every other row: no scorer flagged own label errors beforehand "
            "(confident learning did not run), so a real error that scores high counts as a false positive"
        )
    return {
        "description": text,
        "rows": rows,
        "flipped": flipped,
        "own_suspected_excluded": excluded,
        "suspected_by": suspected_by,
    }
