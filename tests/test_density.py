"""The ``kde_density`` scorer: the pure kNN kernel-density score on toy features, then a short real run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from memclean.errors import MemcleanError
from memclean.noise import inject
from memclean.scores import create, score_dataset, scorer_class
from memclean.scores.density import kde_label_scores, kernel_bandwidth
from memclean.train import TrainConfig


def two_clusters() -> tuple[np.ndarray, np.ndarray]:
    """Two tight 2-D clusters of 5 points, 100 apart; point 2 of cluster A carries B's label."""
    offsets = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5]], dtype=np.float64)
    features = np.vstack([offsets, offsets + 100.0])
    labels = np.array([0, 0, 1, 0, 0, 1, 1, 1, 1, 1])
    return features, labels


def test_the_odd_label_in_a_cluster_scores_highest():
    features, labels = two_clusters()
    scores = kde_label_scores(features, labels, neighbors=4)
    assert scores.shape == (10,) and scores.dtype == np.float64
    assert int(np.argmax(scores)) == 2
    # Its 4 neighbours are the rest of cluster A, all labelled 0: none agrees.
    assert scores[2] == pytest.approx(1.0)
    # Cluster B agrees completely; cluster A's others have the odd one among their 4 neighbours.
    np.testing.assert_allclose(scores[5:], 0.0, atol=1e-12)
    assert np.all((scores[[0, 1, 3, 4]] > 0.0) & (scores[[0, 1, 3, 4]] < 1.0))


def test_hand_computed_weights():
    # 1-D: x=0 (label 0); neighbours at 1 (label 0) and 2 (label 1). k=2, distances of the 3 rows:
    # row 0: [1, 2], row 1: [1, 1], row 2: [1, 2]; median = 1, so sigma = 1.
    features = np.array([[0.0], [1.0], [2.0]])
    labels = np.array([0, 0, 1])
    scores = kde_label_scores(features, labels, neighbors=2)
    w_near, w_far = np.exp(-0.5), np.exp(-2.0)  # exp(-d²/2σ²) at d = 1, 2
    expected_0 = 1.0 - w_near / (w_near + w_far)
    np.testing.assert_allclose(scores, [expected_0, 0.5, 1.0], rtol=1e-6)


def test_more_neighbours_than_samples_and_tiny_inputs():
    features, labels = two_clusters()
    capped = kde_label_scores(features, labels, neighbors=500)
    np.testing.assert_array_equal(capped, kde_label_scores(features, labels, neighbors=9))
    assert np.isfinite(capped).all()
    np.testing.assert_array_equal(kde_label_scores(np.zeros((1, 3)), np.array([4]), neighbors=5), [0.0])
    np.testing.assert_allclose(kde_label_scores(np.array([[0.0], [1.0]]), np.array([0, 1])), [1.0, 1.0])


def test_a_class_with_a_single_member_and_duplicates():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(30, 4))
    labels = np.repeat([0, 1, 2], 10)
    labels[7] = 3  # the only sample of class 3
    features[20:25] = features[20]  # exact duplicates: zero distances
    scores = kde_label_scores(features, labels, neighbors=6)
    assert np.isfinite(scores).all()
    assert scores[7] == pytest.approx(1.0)  # no neighbour can share a label nobody else has
    # 4 duplicates at distance 0 (weight 1 each) outweigh the 2 other neighbours (weight ≤ 1 each).
    assert np.all(scores[20:25] == scores[20]) and scores[20] <= 1 / 3 + 1e-12
    # Every point identical: the bandwidth falls back and the weights are equal.
    same = kde_label_scores(np.ones((6, 2)), np.array([0, 0, 0, 0, 0, 1]), neighbors=5)
    np.testing.assert_allclose(same, [0.2, 0.2, 0.2, 0.2, 0.2, 1.0])


def test_isolated_samples_do_not_underflow():
    features, labels = two_clusters()
    features = np.vstack([features, [[1e6, -1e6]]])
    labels = np.append(labels, 0)
    scores = kde_label_scores(features, labels, neighbors=3, bandwidth=0.01)
    assert np.isfinite(scores).all()


def test_deterministic_and_bandwidth_matters():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 200)
    first = kde_label_scores(features, labels, neighbors=15)
    np.testing.assert_array_equal(first, kde_label_scores(features.copy(), labels.copy(), neighbors=15))
    assert np.all((first >= 0.0) & (first <= 1.0))
    assert not np.allclose(first, kde_label_scores(features, labels, neighbors=15, bandwidth=0.1))


def test_kernel_bandwidth_is_the_scaled_median_with_fallbacks():
    assert kernel_bandwidth(np.array([[1.0, 2.0], [3.0, 10.0]]), 2.0) == pytest.approx(5.0)
    assert kernel_bandwidth(np.array([0.0, 0.0, 0.0, 4.0])) == pytest.approx(4.0)
    assert kernel_bandwidth(np.zeros((3, 2))) == 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="labels"):
        kde_label_scores(np.zeros((3, 2)), np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="neighbors"):
        kde_label_scores(np.zeros((3, 2)), np.zeros(3, dtype=int), neighbors=0)
    with pytest.raises(MemcleanError, match="neighbors"):
        create("kde_density", {"neighbors": 0})
    with pytest.raises(MemcleanError, match="bandwidth"):
        create("kde_density", {"bandwidth": -1.0})


def test_registered_with_typed_defaults():
    cls = scorer_class("kde_density")
    assert cls.default is True and cls.oriented
    assert cls.defaults() == {"neighbors": 20, "bandwidth": 1.0}
    with pytest.raises(RuntimeError, match="last checkpoint"):
        cls().result()


def test_real_run_ranks_flipped_digits_high():
    digits = load_digits()
    n = 300
    pixels = (digits.images[:n] * (255 / 16)).astype(np.uint8)[:, None]
    labels = digits.target[:n].astype(np.int64)
    noisy = inject(labels, 10, "symmetric", 0.1, seed=3)
    flipped = noisy != labels
    config = TrainConfig(epochs=10, batch_size=32, width=16, seed=2)
    out = score_dataset(pixels, noisy, 10, {"kde_density": {}}, config, torch.device("cpu"))
    assert not out.failures
    scores = out.scores["kde_density_score"].to_numpy()
    assert scores.shape == (n,) and np.isfinite(scores).all()
    assert roc_auc_score(flipped, scores) > 0.7
