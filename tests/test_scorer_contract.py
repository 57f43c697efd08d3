"""The contract every registered scorer keeps, checked on a toy run for each one in the registry.

A new scorer module gets these checks without editing this file: shape, no
non-finite values, determinism (same seed → same scores), orientation (higher
= more suspicious: injected mislabels score higher), a description and typed
params with defaults. Every registered scorer runs, opt-in (ensemble) ones too.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from memclean.ensemble import EnsembleConfig
from memclean.noise import inject
from memclean.scores import COMBINED, available, describe, score_dataset, scorer_class
from memclean.train import TrainConfig, select_device

N = 300


@pytest.fixture(scope="module")
def toy() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    digits = load_digits()
    pixels = (digits.images[:N] * (255 / 16)).astype(np.uint8)[:, None]
    labels = digits.target[:N].astype(np.int64)
    noisy = inject(labels, 10, "symmetric", 0.1, seed=3)
    return pixels, noisy, noisy != labels


@pytest.fixture(scope="module")
def runs(toy):
    pixels, noisy, _ = toy
    config = TrainConfig(epochs=10, batch_size=32, width=16, seed=2)
    cpu = select_device("cpu")
    every = {**{name: {} for name in available()}, COMBINED: {}}  # opt-in scorers too
    ensemble = EnsembleConfig(members=5, epochs=10)
    return [score_dataset(pixels, noisy, 10, every, config, cpu, ensemble=ensemble) for _ in range(2)]


@pytest.mark.parametrize("name", [*available(), COMBINED])
def test_scorer_contract(name, toy, runs):
    _, _, flipped = toy
    first, second = runs
    assert name not in first.failures, first.failures.get(name)
    scores = first.scores[f"{name}_score"].to_numpy()
    assert scores.shape == (N,) and scores.dtype == np.float64
    assert np.isfinite(scores).all()
    np.testing.assert_array_equal(scores, second.scores[f"{name}_score"].to_numpy())
    if name == COMBINED or scorer_class(name).oriented:
        assert roc_auc_score(flipped, scores) > 0.6, "higher must mean more suspicious"
    assert describe(name)


@pytest.mark.parametrize("name", available())
def test_scorer_params_are_typed_with_defaults(name):
    cls = scorer_class(name)
    defaults = cls.defaults()
    assert cls.validate_params(defaults) == defaults
    assert cls.description
