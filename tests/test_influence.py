"""Feldman & Zhang's influence: hand-computed in/out arithmetic, the blocked computation against a double loop,
and a planted duplicate found end to end."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits

import memclean.ensemble
from memclean.ensemble import Ensemble, EnsembleConfig, train_ensemble
from memclean.influence import (
    COLUMNS,
    FALLBACK_VARIANCE,
    block_size,
    fz_influence,
    pair_statistics,
    source_patterns,
)
from memclean.scores import create
from memclean.scores.influence import FZInfluence, split_rows
from memclean.train import TrainConfig

CPU = torch.device("cpu")

# 4 members × 4 samples, every label 0; member k predicts label 0 for sample i where CORRECT[k, i].
IN_MASK = np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]], bool)
CORRECT = np.array([[1, 1, 0, 1], [1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 0, 1]], float)
H = math.sqrt(0.5)  # se of a 1-vs-1 pair: both variances FALLBACK_VARIANCE


def _toy_ensemble(heldout: np.ndarray | None = None) -> Ensemble:
    logits = np.zeros((*CORRECT.shape, 2), np.float16)
    logits[..., 0] = np.where(CORRECT == 1, 2.0, -2.0)
    return Ensemble(IN_MASK, logits, np.zeros(4, np.int64), heldout=heldout)


def test_in_out_arithmetic_on_a_hand_computable_toy():
    assert FALLBACK_VARIANCE == 0.25
    stats = pair_statistics(IN_MASK, CORRECT)
    nan = np.nan
    # Target 3 is out of members 0,1,2 (correct 1,1,0). Source 0: in {0,1} (1,1) vs out {2} (0) -> 1, se 0
    # (the lone out member borrows the pooled variance, 0). Source 1: in {0,2} (1,0) vs out {1} (1) -> -0.5,
    # var_in 0.5, pooled (0.5 + 0)/(2+1-2) = 0.5 -> se sqrt(0.5/2 + 0.5/1). Source 2 likewise.
    # Target 2 is out of members 0,3 (correct 0,0): source 0 is in both (no out group -> NaN); sources 1, 3
    # split them 1 vs 1 -> 0 with se sqrt(0.25 + 0.25). Target 0 is out of member 2 only: every pair lacks a group.
    # Target 1 is out of members 1,3 (correct 0,1): source 2 in {1} -> 0 - 1 = -1; source 3 in {3} -> 1 - 0 = 1.
    expected = np.array(
        [
            [nan, nan, nan, nan],
            [nan, nan, -1.0, 1.0],
            [nan, 0.0, nan, 0.0],
            [1.0, -0.5, -0.5, nan],
        ]
    )
    np.testing.assert_allclose(stats.influence, expected, equal_nan=True)
    s75 = math.sqrt(0.75)
    np.testing.assert_allclose(
        stats.se,
        [[nan, nan, nan, nan], [nan, nan, H, H], [nan, H, nan, H], [0.0, s75, s75, nan]],
        equal_nan=True,
    )
    np.testing.assert_array_equal(stats.n_in, [[0, 1, 1, 0], [2, 0, 1, 1], [2, 1, 0, 1], [2, 2, 2, 0]])
    np.testing.assert_array_equal(stats.n_out, [[1, 0, 0, 1], [0, 2, 1, 1], [0, 1, 2, 1], [1, 1, 1, 3]])

    res = fz_influence(IN_MASK, CORRECT, top_k=2)
    want = pd.DataFrame(
        [
            (1, 3, 1, 1.0, H, 1, 1),
            (1, 2, 2, -1.0, H, 1, 1),
            (2, 1, 1, 0.0, H, 1, 1),
            (2, 3, 2, 0.0, H, 1, 1),  # a tie: the lower source first
            (3, 0, 1, 1.0, 0.0, 2, 1),
            (3, 1, 2, -0.5, s75, 2, 1),
        ],
        columns=list(COLUMNS),
    )
    pd.testing.assert_frame_equal(res.table, want)
    np.testing.assert_array_equal(res.targets, [0, 1, 2, 3])
    np.testing.assert_allclose(res.strongest, [nan, 1.0, 0.0, 1.0], equal_nan=True)
    np.testing.assert_allclose(res.strongest_se, [nan, H, H, 0.0], equal_nan=True)
    np.testing.assert_array_equal(res.strongest_source, [-1, 3, 1, 0])
    # Every pair has a one-member group: min_members=2 keeps none.
    assert fz_influence(IN_MASK, CORRECT, min_members=2).table.empty
    # Targets and sources restrict the pairs (a mask or positions).
    only = fz_influence(IN_MASK, CORRECT, targets=[3], sources=np.array([False, True, True, True]), top_k=5)
    assert list(only.table["source"]) == [1, 2] and list(only.table["rank"]) == [1, 2]


def test_the_scorer_on_the_toy():
    assert isinstance(create("fz_influence"), FZInfluence)
    assert FZInfluence().params == {"signal": "correct", "top_k": 5, "min_members": 2}
    scorer = FZInfluence(min_members=1)
    assert not scorer.oriented
    scorer.attach(_toy_ensemble())
    res = scorer.result()
    # Every row is a target (no held-out rows known); rows without an eligible source score 0.
    np.testing.assert_allclose(res.scores, [0.0, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(res.columns["se"], [np.nan, H, H, 0.0], equal_nan=True)
    np.testing.assert_allclose(res.columns["source"], [np.nan, 3, 1, 0], equal_nan=True)
    assert list(res.tables["influence"].columns) == list(COLUMNS) and len(res.tables["influence"]) == 7
    # Held-out row 3 is the only target; rows 0-2 its only sources.
    scorer.attach(_toy_ensemble(np.array([False, False, False, True])))
    res = scorer.result()
    np.testing.assert_allclose(res.scores, [0.0, 0.0, 0.0, 1.0])
    assert set(res.tables["influence"]["target"]) == {3}
    # Probability of the given label instead of correctness.
    ens = _toy_ensemble()
    scorer = FZInfluence(signal="probability", top_k=1, min_members=1)
    scorer.attach(ens)
    direct = fz_influence(ens.in_mask, ens.given_probability(), top_k=1)
    pd.testing.assert_frame_equal(scorer.result().tables["influence"], direct.table)


def test_split_rows():
    every = np.ones(3, bool)
    for heldout in (None, np.zeros(3, bool), np.ones(3, bool)):
        targets, sources = split_rows(heldout, 3)
        np.testing.assert_array_equal(targets, every)
        np.testing.assert_array_equal(sources, every)
    targets, sources = split_rows(np.array([True, False, False]), 3)
    np.testing.assert_array_equal(targets, [True, False, False])
    np.testing.assert_array_equal(sources, [False, True, True])


def _brute_force(in_mask, signal, targets, sources, top_k, min_members) -> pd.DataFrame:
    """The definition, one pair at a time."""
    rows = []
    for j in targets:
        held = ~in_mask[:, j]
        found = []
        for i in sources:
            if i == j:
                continue
            g_in, g_out = signal[held & in_mask[:, i], j], signal[held & ~in_mask[:, i], j]
            if len(g_in) < min_members or len(g_out) < min_members:
                continue
            ss_in, ss_out = ((g_in - g_in.mean()) ** 2).sum(), ((g_out - g_out.mean()) ** 2).sum()
            dof = len(g_in) + len(g_out) - 2
            pooled = (ss_in + ss_out) / dof if dof > 0 else 0.25
            var_in = ss_in / (len(g_in) - 1) if len(g_in) > 1 else pooled
            var_out = ss_out / (len(g_out) - 1) if len(g_out) > 1 else pooled
            se = math.sqrt(var_in / len(g_in) + var_out / len(g_out))
            found.append((-(g_in.mean() - g_out.mean()), i, se, len(g_in), len(g_out)))
        found.sort(key=lambda f: (f[0], f[1]))
        rows += [(j, i, rank, -neg, se, a, b) for rank, (neg, i, se, a, b) in enumerate(found[:top_k], 1)]
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype({c: np.int64 for c in ("target", "source", "rank", "n_in", "n_out")})


@pytest.mark.parametrize("design", ["random", "rotations"])
@pytest.mark.parametrize("signal_kind", ["correct", "probability"])
def test_blocked_computation_equals_the_double_loop(design, signal_kind):
    rng = np.random.default_rng(7)
    k, n = 9, 70
    if design == "random":
        in_mask = rng.random((k, n)) < 0.6
    else:  # few distinct patterns: many exact ties, resolved by source position
        in_mask = ~memclean.ensemble.out_mask(n, EnsembleConfig(members=k, subset_ratio=0.6, seed=3))
    signal = (rng.random((k, n)) < 0.7).astype(float) if signal_kind == "correct" else rng.random((k, n))
    targets = np.flatnonzero(rng.random(n) < 0.6)
    sources = np.flatnonzero(rng.random(n) < 0.7)  # overlaps the targets: a target is never its own source
    reps, _ = source_patterns(in_mask, sources)
    for top_k, min_members in ((1, 1), (4, 1), (3, 2)):
        want = _brute_force(in_mask, signal, targets, sources, top_k, min_members)
        for memory in (1, 30_000, 200_000, 2**30):  # blocks of 1 target, a few, many, all
            got = fz_influence(in_mask, signal, targets, sources, top_k, min_members, memory_bytes=memory)
            pd.testing.assert_frame_equal(got.table, want, check_exact=False, rtol=1e-12, atol=1e-12)
            first = want[want["rank"] == 1].set_index("target")
            strongest = pd.Series(got.strongest, index=got.targets)
            np.testing.assert_allclose(strongest[first.index], first["influence"], rtol=1e-12)
            assert strongest.drop(first.index).isna().all()
            np.testing.assert_array_equal(
                pd.Series(got.strongest_source, index=got.targets)[first.index], first["source"]
            )
    assert block_size(len(reps), len(sources), 1) == 1 and block_size(len(reps), len(sources), 30_000) < len(targets)


def test_memory_stays_within_the_budget():
    import tracemalloc

    rng = np.random.default_rng(1)
    k, n = 32, 2000
    in_mask, signal = rng.random((k, n)) < 0.7, (rng.random((k, n)) < 0.8).astype(float)
    budget = 4 * 2**20
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fz_influence(in_mask, signal, memory_bytes=budget)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    inputs = 3 * k * n * 8  # float64 copies of the K×N operands
    assert peak < budget + inputs + 2 * 2**20, peak  # vs 72 MB for one N×N float64 matrix


@pytest.mark.slow
def test_a_planted_duplicate_is_its_copy_s_top_influencer():
    n, members, epochs = 240, 20, 15
    digits = load_digits()
    pixels = (digits.images[:n] * (255 / 16)).astype(np.uint8)[:, None].copy()
    labels = digits.target[:n].astype(np.int64).copy()
    rng = np.random.default_rng(0)
    heldout = rng.permutation(n) < n // 4
    h, t = int(np.flatnonzero(heldout)[0]), int(np.flatnonzero(~heldout)[0])
    pixels[t] = pixels[h]  # a test image leaked into training ...
    labels[h] = labels[t] = (digits.target[h] + 3) % 10  # ... with the same wrong label
    config = TrainConfig(epochs=epochs, batch_size=32, width=16, seed=2)
    ens = train_ensemble(pixels, labels, 10, config, EnsembleConfig(members=members, epochs=epochs), CPU)
    ens.heldout = heldout
    scorer = FZInfluence(min_members=1)
    scorer.attach(ens)
    res = scorer.result()
    table = res.tables["influence"]
    top = table[(table["target"] == h) & (table["rank"] == 1)].iloc[0]
    assert top["source"] == t and top["influence"] > 0.5, table[table["target"] == h]
    assert top["n_in"] >= 1 and top["n_out"] >= 1
    assert res.columns["source"][h] == t and res.scores[h] == pytest.approx(top["influence"])
    assert set(table["target"]) <= set(np.flatnonzero(heldout)) and not set(table["source"]) & set(
        np.flatnonzero(heldout)
    )
    assert (res.scores[~heldout] == 0).all() and np.isfinite(res.scores).all()
    # Among the strongest pairs overall. With 20 members (4 independent rounds), maxima over 180 sources of
    # pairs with a 1-member group reach 1 by chance (a target one member gets wrong); min_members=2 (the
    # default) sets them aside.
    scorer = FZInfluence(min_members=2)
    scorer.attach(ens)
    strict = scorer.result()
    assert strict.columns["source"][h] == t, table[table["target"] == h]
    assert strict.scores[h] >= np.sort(strict.scores[heldout])[-2], np.sort(strict.scores[heldout])[-5:]
