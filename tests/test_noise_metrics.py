"""Mislabel injection (exact rate, never the true label) and detection metrics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from memclean.errors import MemcleanError
from memclean.metrics import detection_metrics, precision_at_k, roc_points
from memclean.noise import inject, instance_flips, own_suspects


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


def test_own_suspects_rule_and_fallback():
    issue = np.array([1.0, 0.0, np.nan, 0.0, 1.0])
    np.testing.assert_array_equal(own_suspects(issue, 5), [True, False, False, False, True])
    np.testing.assert_array_equal(own_suspects(None, 3), [False, False, False])  # no column: nothing excluded
    with pytest.raises(MemcleanError, match="rerun the score stage"):
        own_suspects(issue, 4)


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
def test_flips_avoid_suspected_rows_and_keep_the_count(kind):
    y = np.arange(1000) % 5
    suspected = np.random.default_rng(0).random(1000) < 0.2
    noisy = inject(y, 5, kind, 0.1, seed=4, eligible=~suspected)
    flipped = noisy != y
    assert flipped.sum() == 100 and not (flipped & suspected).any()
    # All rows eligible: exactly the draws of the plain call (results stay reproducible).
    np.testing.assert_array_equal(
        inject(y, 5, kind, 0.1, seed=4, eligible=np.ones(1000, bool)), inject(y, 5, kind, 0.1, 4)
    )
    with pytest.raises(MemcleanError, match="flips requested"):
        inject(y, 5, kind, 0.5, seed=4, eligible=np.arange(1000) < 100)


def test_instance_flips_by_hand():
    y = np.array([0, 1, 2, 0])
    p = np.array([[1.0, 0.0, 0.0], [0.1, 0.2, 0.7], [0.3, 0.6, 0.1], [0.2, 0.5, 0.3]])
    # epsilon 0: row 0 (p[y] = 1) has weight 0 and can never flip; the other three all flip.
    noisy = instance_flips(y, p, 3, seed=0, epsilon=0.0)
    np.testing.assert_array_equal(noisy, [0, 2, 1, 1])  # each to argmax over the other classes
    noisy = instance_flips(y, p, 2, seed=0, eligible=np.array([True, True, False, True]), epsilon=0.0)
    np.testing.assert_array_equal(noisy, [0, 2, 2, 1])
    with pytest.raises(MemcleanError, match="only 3 rows can flip"):
        instance_flips(y, p, 4, seed=0, epsilon=0.0)
    # Ties go to the lowest other class; a row without finite probabilities is never drawn.
    tie = np.array([[0.5, 0.25, 0.25], [np.nan, np.nan, np.nan]])
    np.testing.assert_array_equal(instance_flips(np.array([0, 1]), tie, 1, seed=3), [1, 1])
    assert np.array_equal(instance_flips(y, p, 0, seed=0), y)


def test_instance_flips_follow_the_confusion_weights():
    y = np.zeros(2, dtype=np.int64)
    p = np.array([[0.1, 0.9], [0.9, 0.1]])  # weights 0.9 and 0.1 (+ epsilon)
    picks = np.array([instance_flips(y, p, 1, seed=s)[0] == 1 for s in range(2000)])
    assert picks.mean() == pytest.approx(0.9, abs=0.03)


def test_instance_kind_exact_rate_seeded_and_never_true_label():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 500)
    p = rng.dirichlet(np.ones(4), size=500)
    suspected = rng.random(500) < 0.1
    a = inject(y, 4, "instance", 0.1, seed=1, eligible=~suspected, probabilities=p)
    flipped = a != y
    assert flipped.sum() == 50 and not (flipped & suspected).any()
    others = p.copy()
    others[np.arange(500), y] = -np.inf
    np.testing.assert_array_equal(a[flipped], others[flipped].argmax(axis=1))
    np.testing.assert_array_equal(a, inject(y, 4, "instance", 0.1, seed=1, eligible=~suspected, probabilities=p))
    assert not np.array_equal(a, inject(y, 4, "instance", 0.1, seed=2, eligible=~suspected, probabilities=p))
    # Confusable rows (p of the given label 0.2, weight 0.8) take most flips; confident ones (0.97) few.
    confusable = np.arange(500) % 2 == 0
    q = np.repeat(np.where(confusable, 0.05, 0.01)[:, None], 4, axis=1)
    q[np.arange(500), y] = np.where(confusable, 0.2, 0.97)
    q[np.arange(500), (y + 1) % 4] = np.where(confusable, 0.7, 0.01)
    flipped = inject(y, 4, "instance", 0.1, seed=1, probabilities=q) != y
    assert (flipped & confusable).sum() >= 0.85 * flipped.sum()
    with pytest.raises(MemcleanError, match="probabilities"):
        inject(y, 4, "instance", 0.1)
