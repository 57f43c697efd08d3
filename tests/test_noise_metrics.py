"""Mislabel injection (exact rate, never the true label) and detection metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from memclean.errors import MemcleanError
from memclean.metrics import detection_metrics, precision_at_k, roc_points
from memclean.noise import inject


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.1, 0.333])
def test_symmetric_exact_rate_never_true_label(rate):
    y = np.random.default_rng(0).integers(0, 7, 1001)
    noisy = inject(y, 7, "symmetric", rate, seed=3)
    flipped = noisy != y
    assert flipped.sum() == round(rate * len(y))
    assert noisy.min() >= 0 and noisy.max() < 7
    # Spread over the other classes.
    if rate > 0.3:
        assert len(np.unique((noisy - y)[flipped] % 7)) == 6


def test_injection_is_seeded():
    y = np.arange(500) % 10
    np.testing.assert_array_equal(inject(y, 10, "symmetric", 0.1, 1), inject(y, 10, "symmetric", 0.1, 1))
    assert not np.array_equal(inject(y, 10, "symmetric", 0.1, 1), inject(y, 10, "symmetric", 0.1, 2))


def test_asymmetric_pairs():
    y = np.arange(1000) % 4
    noisy = inject(y, 4, "asymmetric", 0.2, seed=0)
    flipped = noisy != y
    assert flipped.sum() == 200
    assert ((y[flipped] + 1) % 4 == noisy[flipped]).all()
    noisy = inject(y, 4, "asymmetric", 0.1, seed=0, pairs={2: 3})
    assert set(y[noisy != y]) == {2} and set(noisy[noisy != y]) == {3}
    with pytest.raises(MemcleanError, match="only 250 samples"):
        inject(y, 4, "asymmetric", 0.3, seed=0, pairs={2: 3})
    with pytest.raises(MemcleanError, match="invalid asymmetric pair"):
        inject(y, 4, "asymmetric", 0.1, pairs={2: 2})
    with pytest.raises(MemcleanError, match="unknown noise kind"):
        inject(y, 4, "pairflip", 0.1)
    with pytest.raises(MemcleanError, match="rate"):
        inject(y, 4, "symmetric", 1.5)


def test_metrics_agree_with_sklearn_and_handle_nonfinite():
    rng = np.random.default_rng(0)
    pos = rng.random(500) < 0.1
    scores = rng.normal(size=500) + 1.5 * pos
    m = detection_metrics(pos, scores)
    assert m["auroc"] == pytest.approx(roc_auc_score(pos, scores))
    assert m["ap"] == pytest.approx(average_precision_score(pos, scores))
    k = int(pos.sum())
    assert m["precision_at_k"] == pytest.approx(pos[np.argsort(-scores)[:k]].mean())
    # NaN ranks as most suspicious.
    s = scores.copy()
    s[~pos] = np.where(np.arange((~pos).sum()) < 3, np.nan, s[~pos])
    assert precision_at_k(pos, s, 3) == 0.0
    assert detection_metrics(np.zeros(5, bool), np.arange(5.0))["auroc"] is None


def test_roc_points_are_finite_and_thinned():
    rng = np.random.default_rng(1)
    pos = rng.random(5000) < 0.2
    roc = roc_points(pos, rng.normal(size=5000) + pos, max_points=50)
    assert list(roc.columns) == ["fpr", "tpr"] and len(roc) <= 50
    assert np.isfinite(roc.to_numpy()).all()
    assert roc.iloc[0].tolist() == [0.0, 0.0] and roc.iloc[-1].tolist() == [1.0, 1.0]
