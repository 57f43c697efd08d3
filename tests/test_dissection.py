"""``dissection``: disagreement of the members' input-gradient directions (hand-computable and on digits)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from memclean.ensemble import Ensemble, EnsembleConfig
from memclean.errors import MemcleanError
from memclean.noise import inject
from memclean.scores import score_dataset, scorer_class
from memclean.scores.dissection import Dissection, disagreement, projection
from memclean.train import Checkpoint, TrainConfig, select_device, train

CPU = select_device("cpu")


def _digits(n: int) -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    return (digits.images[:n] * (255 / 16)).astype(np.uint8)[:, None], digits.target[:n].astype(np.int64)


def _ensemble(directions: np.ndarray, in_mask: np.ndarray | None = None) -> Ensemble:
    k, n, _ = directions.shape
    mask = np.ones((k, n), bool) if in_mask is None else in_mask
    return Ensemble(mask, np.zeros((k, n, 3), np.float16), np.zeros(n, np.int64), extras={"dissection": directions})


def _brute_force(u: np.ndarray, use: np.ndarray) -> np.ndarray:
    """1 − mean over ordered pairs k≠l of the members used of cos(u_ki, u_li), one sample at a time."""
    out = []
    for i in range(u.shape[1]):
        ks = np.nonzero(use[:, i])[0]
        cos = [
            u[a, i] @ u[b, i] / (np.linalg.norm(u[a, i]) * np.linalg.norm(u[b, i]))
            for a, b in itertools.permutations(ks, 2)
        ]
        out.append(1.0 - np.mean(cos) if len(ks) >= 2 else np.nan)
    return np.array(out)


def test_identical_directions_score_zero_orthogonal_score_one():
    e = np.eye(4)
    same = np.stack([np.tile(e[0], (2, 1))] * 3)  # 3 members, 2 samples, every member along e0
    orth = e[:3, None, :].repeat(2, axis=1)  # member k along e_k: pairwise orthogonal
    opposite = np.stack([e[:1], -e[:1]])  # 2 members pointing opposite ways: cosine −1
    assert same.shape == orth.shape == (3, 2, 4)
    for directions, expected in [(same, 0.0), (orth, 1.0), (opposite, 2.0)]:
        result = Dissection().from_ensemble(_ensemble(directions.astype(np.float16)))
        np.testing.assert_allclose(result.scores, expected, atol=1e-12)
        assert result.scores.dtype == np.float64


def test_formula_matches_the_pairwise_mean_for_every_member_choice():
    rng = np.random.default_rng(0)
    k, n, d = 6, 40, 16
    u = rng.standard_normal((k, n, d))
    u /= np.linalg.norm(u, axis=2, keepdims=True)
    u[:, :10] = u[:1, :10] + 0.05 * rng.standard_normal((k, 10, d))  # some samples agree: scores well below 1
    u /= np.linalg.norm(u, axis=2, keepdims=True)
    in_mask = rng.random((k, n)) < 0.6
    in_mask[:2, 0], in_mask[2:, 0] = True, False  # sample 0: exactly two in
    in_mask[:, 1] = [True] * (k - 1) + [False]  # sample 1: one out -> NaN for ``out``
    ens = _ensemble(u.astype(np.float16), in_mask)
    for members, use in [("all", np.ones_like(in_mask)), ("in", in_mask), ("out", ~in_mask)]:
        scores = Dissection(members=members).from_ensemble(ens).scores
        np.testing.assert_allclose(scores, _brute_force(u, use), atol=2e-3)  # float16 storage
    # The closed form on exact unit vectors: 1 − (‖Σ u‖² − K)/(K(K−1)).
    scores, count = disagreement(u, np.ones((k, n), bool))
    closed = 1.0 - ((u.sum(axis=0) ** 2).sum(axis=1) - k) / (k * (k - 1))
    np.testing.assert_allclose(scores, closed, atol=1e-12)
    np.testing.assert_array_equal(count, k)
    assert scores[:10].max() < 0.2 < 0.6 < scores[10:].min()
    out_scores = Dissection(members="out").from_ensemble(ens).scores
    assert np.isnan(out_scores[1]) and np.isfinite(out_scores[0])


def test_zero_gradients_agree_with_nothing_and_stored_lengths_do_not_matter():
    u = np.zeros((3, 2, 2))
    u[:, 0] = [3.0, 0.0]  # same direction, lengths 3 (renormalised): score 0
    u[:, 1] = [1.0, 0.0]
    u[2, 1] = 0.0  # member 2 recorded a zero gradient for sample 1: its two cosines count as 0
    scores, _ = disagreement(u, np.ones((3, 2), bool))
    np.testing.assert_allclose(scores, [0.0, 1.0 - 2.0 / 6.0])


def test_missing_or_misshapen_probes_fail_with_one_line():
    ens = Ensemble(np.ones((3, 4), bool), np.zeros((3, 4, 2), np.float16), np.zeros(4, np.int64))
    with pytest.raises(RuntimeError, match="no dissection probes"):
        Dissection().from_ensemble(ens)
    ens.extras["dissection"] = np.zeros((3, 5, 8), np.float16)
    with pytest.raises(RuntimeError, match="shape"):
        Dissection().from_ensemble(ens)


def test_params_are_typed_with_ranges():
    cls = scorer_class("dissection")
    assert cls.defaults() == {"dims": 64, "members": "all"}
    assert not cls.default and cls.needs == "ensemble"
    bad_params: list[dict[str, Any]] = [{"dims": 1}, {"members": "some"}, {"dim": 8}]
    for bad in bad_params:
        with pytest.raises(MemcleanError, match=r"score\.scorers\.dissection"):
            cls.validate_params(bad)


def test_projection_is_fixed():
    a, b = projection(64, 8), projection(64, 8)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert a.shape == (64, 8) and not np.allclose(a.numpy(), projection(64, 8)[torch.randperm(64)].numpy())


@pytest.fixture(scope="module")
def checkpoint() -> Checkpoint:
    pixels, labels = _digits(90)
    last: list[Checkpoint] = []
    config = TrainConfig(epochs=2, batch_size=16, width=8, seed=1, eval_batch_size=1024, bf16=False)  # float32 math
    train(pixels, labels, 10, config, CPU, callbacks=[lambda cp: last.append(cp) if cp.is_last else None])
    return last[0]


def test_member_probe_gives_unit_projected_gradients_without_touching_the_model(checkpoint):
    cp = checkpoint
    model = cp.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]  # the last training step's
    scorer = Dissection(dims=16)
    values = scorer.member_probe(cp)
    assert values.shape == (len(cp.data), 16) and values.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(values, axis=1), 1.0, atol=1e-5)
    assert not model.training and [p.requires_grad for p in model.parameters()] == flags
    for p, g in zip(model.parameters(), grads):
        assert (p.grad is None) if g is None else torch.equal(p.grad, g)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    np.testing.assert_array_equal(values, scorer.member_probe(cp))  # deterministic
    # The batch size of the pass does not change any sample's direction (per-sample losses, eval mode).
    small = replace(cp, config=replace(cp.config, eval_batch_size=7))
    np.testing.assert_allclose(scorer.member_probe(small), values, atol=1e-5)
    # One sample at a time, by hand: the unit input gradient at the given label, projected and renormalised.
    proj = projection(64, 16)
    for i in [0, 5, 89]:
        x = cp.data.batch(slice(i, i + 1)).detach().requires_grad_(True)
        loss = F.cross_entropy(model(x), cp.data.labels[i : i + 1])
        (g,) = torch.autograd.grad(loss, x)
        v = (g.flatten() / g.norm()) @ proj
        np.testing.assert_allclose(values[i], (v / v.norm()).detach().numpy(), atol=1e-5)


@pytest.mark.slow
def test_flipped_digits_disagree_through_the_ensemble():
    pixels, labels = _digits(300)
    noisy = inject(labels, 10, "symmetric", 0.1, seed=3)
    outcome = score_dataset(
        pixels,
        noisy,
        10,
        {"dissection": {}},
        TrainConfig(epochs=10, batch_size=32, width=16, seed=2),
        CPU,
        ensemble=EnsembleConfig(members=5, epochs=10),
    )
    assert not outcome.failures
    assert outcome.ensemble is not None
    stored = outcome.ensemble.extras["dissection"]
    assert stored.shape == (5, 300, 64) and stored.dtype == np.float16
    scores = outcome.scores["dissection_score"].to_numpy()
    assert np.isfinite(scores).all()
    assert roc_auc_score(noisy != labels, scores) > 0.7
