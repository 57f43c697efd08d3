"""The subset ensemble: in/out bookkeeping, coverage, and what the memorization estimators read from it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from memclean.ensemble import Ensemble, EnsembleConfig, coverage_members, out_mask, train_ensemble
from memclean.errors import MemcleanError
from memclean.noise import inject
from memclean.scores import create, score_dataset
from memclean.train import TrainConfig, select_device

CPU = select_device("cpu")


def _logits_for(predictions: np.ndarray, confidence: float = 4.0, classes: int = 3) -> np.ndarray:
    """K×N×C logits whose argmax is ``predictions`` (K×N)."""
    z = np.zeros((*predictions.shape, classes), np.float16)
    np.put_along_axis(z, predictions[..., None], confidence, axis=2)
    return z


def test_in_out_arithmetic_on_a_hand_computable_toy():
    # 4 members, 3 samples, all labelled 0.
    in_mask = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1], [0, 0, 1]], bool)
    predictions = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 1, 0]])
    ens = Ensemble(in_mask, _logits_for(predictions), np.zeros(3, np.int64))
    # Sample 0: in members 0,1 (both correct), out 2,3 (both wrong) -> memorization 1 - 0 = 1.
    # Sample 1: in 0,2 (correct, correct), out 1,3 (wrong, wrong) -> 1.
    # Sample 2: in 1,2,3 (correct x3), out 0 (wrong) -> 1 - 0 = 1; with sample 2 out of member 0 only.
    fz = create("fz_memorization")
    fz.attach(ens)
    np.testing.assert_allclose(fz.result().scores, [1.0, 1.0, 1.0])
    # Make sample 1 generalise: member 1 (out) predicts it right -> 1 - 1/2.
    predictions[1, 1] = 0
    ens = Ensemble(in_mask, _logits_for(predictions), np.zeros(3, np.int64))
    fz.attach(ens)
    np.testing.assert_allclose(fz.result().scores, [1.0, 0.5, 1.0])
    inside, n_in = ens.mean_where(ens.correct(), inside=True)
    outside, n_out = ens.mean_where(ens.correct(), inside=False)
    np.testing.assert_array_equal(n_in, [2, 2, 3])
    np.testing.assert_array_equal(n_out, [2, 2, 1])
    np.testing.assert_allclose(inside, [1.0, 1.0, 1.0])
    np.testing.assert_allclose(outside, [0.0, 0.5, 0.0])
    # C-score on correctness: 1 - held-out accuracy.
    cs = create("cscore", {"signal": "correct"})
    cs.attach(ens)
    np.testing.assert_allclose(cs.result().scores, [1.0, 0.5, 1.0])
    # Out-of-sample probabilities average only the members that did not train on the sample.
    oos = ens.out_of_sample_probabilities()
    p = ens.probabilities()
    np.testing.assert_allclose(oos[2], p[0, 2])
    np.testing.assert_allclose(oos[0], (p[2, 0] + p[3, 0]) / 2)


@pytest.mark.parametrize("ratio", [0.5, 0.7, 0.9])
def test_every_sample_is_in_and_out_and_members_do_not_depend_on_k(ratio):
    k = coverage_members(ratio)
    config = EnsembleConfig(members=k, subset_ratio=ratio, seed=4)
    out = out_mask(5000, config)
    assert out.any(axis=0).all() and (~out).any(axis=0).all()
    assert np.allclose(out.mean(axis=1), 1 - ratio, atol=0.03)  # each member trains on ~ratio of the samples
    more = out_mask(5000, EnsembleConfig(members=k + 7, subset_ratio=ratio, seed=4))
    np.testing.assert_array_equal(more[:k], out)  # member k is the same whatever K is
    assert not np.array_equal(out_mask(5000, EnsembleConfig(members=k, subset_ratio=ratio, seed=5)), out)


def test_too_few_members_is_one_line():
    pixels = np.zeros((10, 1, 8, 8), np.uint8)
    with pytest.raises(MemcleanError, match=r"use at least \d+"):
        train_ensemble(pixels, np.arange(10) % 2, 2, TrainConfig(epochs=1), EnsembleConfig(members=2), CPU)


def test_memorized_mislabels_score_high_and_no_ensemble_unless_asked():
    digits = load_digits()
    n = 400
    pixels = (digits.images[:n] * (255 / 16)).astype(np.uint8)[:, None]
    labels = digits.target[:n].astype(np.int64)
    noisy = inject(labels, 10, "symmetric", 0.05, seed=1)
    flipped = noisy != labels
    config = TrainConfig(epochs=24, batch_size=32, width=16, seed=0)
    scorers = {"fz_memorization": {}, "cscore": {}, "aum": {}}
    out = score_dataset(pixels, noisy, 10, scorers, config, CPU, ensemble=EnsembleConfig(members=6, epochs=24))
    assert out.ensemble is not None and out.ensemble.members == 6
    for name in ("fz_memorization", "cscore"):
        scores = out.scores[f"{name}_score"].to_numpy()
        top = np.argsort(-scores, kind="stable")[: flipped.sum()]
        assert flipped[top].mean() >= 0.6, (name, flipped[top].mean())
    # Memorised only when in: the members that trained on a flipped sample mostly fit its wrong label.
    inside, _ = out.ensemble.mean_where(out.ensemble.correct(), inside=True)
    outside, _ = out.ensemble.mean_where(out.ensemble.correct(), inside=False)
    assert inside[flipped].mean() > 0.5 > outside[flipped].mean()
    plain = score_dataset(pixels, noisy, 10, {"aum": {}}, TrainConfig(epochs=2, width=8), CPU)
    assert plain.ensemble is None


def test_the_ensemble_artifact_round_trips_byte_identically(tmp_path):
    from memclean.ensemble import load_ensemble, save_ensemble

    in_mask = np.array([[1, 0, 1], [0, 1, 1]], bool)
    ens = Ensemble(in_mask, _logits_for(np.array([[0, 1, 2], [2, 1, 0]])), np.array([0, 1, 2]))
    save_ensemble(ens, tmp_path / "a.npy", 3, 3)
    save_ensemble(ens, tmp_path / "b.npy", 3, 3)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    back = load_ensemble(tmp_path / "a.npy", ens.labels)
    assert back is not None
    np.testing.assert_array_equal(back.in_mask, in_mask)
    np.testing.assert_array_equal(back.logits, ens.logits)
    save_ensemble(None, tmp_path / "none.npy", 3, 3)
    assert load_ensemble(tmp_path / "none.npy", ens.labels) is None
    with pytest.raises(MemcleanError, match="not an ensemble of these 4 samples"):
        load_ensemble(tmp_path / "a.npy", np.arange(4))


def _digits(n: int = 240) -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    return (digits.images[:n] * (255 / 16)).astype(np.uint8)[:, None], digits.target[:n].astype(np.int64)


SMALL = TrainConfig(epochs=3, batch_size=32, width=8, seed=1)


def test_the_plan_fills_the_budget_but_never_skips_coverage():
    from memclean.ensemble import members_needed, plan

    trainer = TrainConfig(epochs=20)
    cpu = plan(10_000, trainer, EnsembleConfig(), CPU)
    assert cpu.members == max(members_needed(10_000, EnsembleConfig()), int(4.0 / 0.7))
    assert cpu.cost == pytest.approx(cpu.members * 0.7)
    gpu = plan(10_000, trainer, EnsembleConfig(), select_device("cpu").__class__("cuda"))
    assert gpu.members == int(45 / 0.7) == 64
    half = plan(10_000, trainer, EnsembleConfig(epochs=10, budget=8.0), CPU)
    assert half.members == int(8.0 / 0.35) and half.epochs == 10
    tiny = plan(10_000, trainer, EnsembleConfig(budget=0.1), CPU)
    assert tiny.members == members_needed(10_000, EnsembleConfig())  # coverage wins over the budget
    with pytest.raises(MemcleanError, match=r"use at least \d+"):
        plan(10_000, trainer, EnsembleConfig(members=2), CPU)


def test_several_subset_ratios_cycle_over_members_and_each_keeps_its_share():
    config = EnsembleConfig(members=40, subset_ratio=[0.5, 0.8], seed=2)
    out = out_mask(20_000, config)
    np.testing.assert_allclose(out[0::2].mean(axis=1), 0.5, atol=0.02)
    np.testing.assert_allclose(out[1::2].mean(axis=1), 0.2, atol=0.02)
    # The C-score averages the per-ratio held-out means: a sample right under every 0.5-member
    # that holds it out and wrong under every 0.8-member scores 1 - (1 + 0) / 2.
    in_mask = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], bool)  # members 0, 2 at ratio 0.5; 1, 3 at 0.8
    predictions = np.array([[1, 0], [1, 1], [1, 1], [0, 0]])  # sample 0 out of 1 (right) and 3 (wrong)
    ens = Ensemble(in_mask, _logits_for(predictions, classes=2), np.zeros(2, np.int64))
    ens.ratios = np.array([0.5, 0.8, 0.5, 0.8])
    cs = create("cscore", {"signal": "correct"})
    cs.attach(ens)
    # Sample 0: held out by members 1 (0.8, wrong: predicts 1) and 3 (0.8, right) -> ratio 0.8 only: 1 - 1/2.
    # Sample 1: held out by members 0 (0.5, right) and 2 (0.5, wrong) -> 1 - 1/2.
    np.testing.assert_allclose(cs.result().scores, [0.5, 0.5])
    ens.in_mask = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], bool)  # sample 0 out of 0 (0.5) and 1 (0.8)
    cs.attach(ens)
    # Sample 0: ratio 0.5 -> member 0 wrong (0); ratio 0.8 -> member 1 wrong (0): C = 0, score 1.
    # Sample 1: ratio 0.5 -> members 0 (right), 2 (wrong) = 1/2; ratio 0.8 -> none held out: C = 1/2.
    np.testing.assert_allclose(cs.result().scores, [1.0, 0.5])


def test_fz_memorization_has_a_standard_error():
    in_mask = np.array([[1, 1], [1, 0], [0, 1], [0, 0]], bool)
    predictions = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    ens = Ensemble(in_mask, _logits_for(predictions), np.zeros(2, np.int64))
    fz = create("fz_memorization")
    fz.attach(ens)
    res = fz.result()
    # Sample 0: in {0, 1}: correct 1, 1 (var 0); out {2, 3}: 0, 0 (var 0) -> mem 1, se 0.
    # Sample 1: in {0, 2}: 1, 1; out {1, 3}: 0, 0 -> mem 1, se 0.
    np.testing.assert_allclose(res.scores, [1.0, 1.0])
    np.testing.assert_allclose(res.columns["se"], [0.0, 0.0])
    predictions[3, 0] = 0  # sample 0 out: 0 and 1 -> mean 1/2, unbiased variance 1/2
    ens = Ensemble(in_mask, _logits_for(predictions), np.zeros(2, np.int64))
    fz.attach(ens)
    res = fz.result()
    assert res.scores[0] == pytest.approx(0.5)
    assert res.columns["se"][0] == pytest.approx(np.sqrt(0.0 / 2 + 0.5 / 2))


def test_more_members_reuse_the_cached_ones_bit_for_bit(tmp_path, caplog):
    pixels, labels = _digits()
    five = EnsembleConfig(members=5, seed=3)
    fresh = train_ensemble(pixels, labels, 10, SMALL, five, CPU, cache=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 5
    with caplog.at_level("INFO", logger="memclean.ensemble"):
        seven = train_ensemble(pixels, labels, 10, SMALL, EnsembleConfig(members=7, seed=3), CPU, cache=tmp_path)
    assert "reusing 5 cached member(s), training 2" in caplog.text
    np.testing.assert_array_equal(seven.logits[:5], fresh.logits)
    np.testing.assert_array_equal(seven.in_mask[:5], fresh.in_mask)
    # Without the cache the same seven members come out: a hit is exactly what training gives.
    plain = train_ensemble(pixels, labels, 10, SMALL, EnsembleConfig(members=7, seed=3), CPU)
    np.testing.assert_array_equal(plain.logits, seven.logits)
    # Other labels (or settings) never hit.
    flipped = labels.copy()
    flipped[0] = (flipped[0] + 1) % 10
    with caplog.at_level("INFO", logger="memclean.ensemble"):
        caplog.clear()
        train_ensemble(pixels, flipped, 10, SMALL, five, CPU, cache=tmp_path)
    assert "reusing" not in caplog.text
    # The key holds the settings as resolved on the device: a rule that resolves alike hits, one
    # that resolves differently (channels-last null is on for a CPU) trains again.
    same = replace(SMALL, channels_last=True) if SMALL.uses_channels_last(CPU) else replace(SMALL, channels_last=False)
    other = replace(same, channels_last=not same.channels_last)
    for config, hit in ((same, True), (other, False)):
        with caplog.at_level("INFO", logger="memclean.ensemble"):
            caplog.clear()
            train_ensemble(pixels, labels, 10, config, five, CPU, cache=tmp_path)
        assert ("reusing 5 cached member(s)" in caplog.text) is hit


def test_the_dask_executor_gives_the_local_bytes(tmp_path):
    pytest.importorskip("distributed")
    from memclean.ensemble import save_ensemble

    pixels, labels = _digits(160)
    scorers = {"cscore": {}, "fz_memorization": {}}
    config = EnsembleConfig(members=5, seed=1)
    local = score_dataset(pixels, labels, 10, scorers, SMALL, CPU, ensemble=config)
    dask = score_dataset(
        pixels, labels, 10, scorers, SMALL, CPU, ensemble=EnsembleConfig(members=5, seed=1, executor="dask")
    )
    assert local.ensemble is not None and dask.ensemble is not None
    save_ensemble(local.ensemble, tmp_path / "local.npy", len(labels), 10)
    save_ensemble(dask.ensemble, tmp_path / "dask.npy", len(labels), 10)
    assert (tmp_path / "local.npy").read_bytes() == (tmp_path / "dask.npy").read_bytes()
    pd.testing.assert_frame_equal(local.scores, dask.scores)


def test_worker_processes_give_the_one_thread_local_bytes(tmp_path):
    import torch

    from memclean.ensemble import save_ensemble

    pixels, labels = _digits(160)
    np.save(tmp_path / "pixels.npy", pixels)
    mapped = np.load(tmp_path / "pixels.npy", mmap_mode="r")  # travels to the workers by file name
    scorers = {"cscore": {}, "fz_memorization": {}}
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # what each worker process uses
    try:
        local = train_ensemble(pixels, labels, 10, SMALL, EnsembleConfig(members=5, seed=1), CPU)
    finally:
        torch.set_num_threads(previous)
    config = EnsembleConfig(members=5, seed=1, executor="processes")
    procs = score_dataset(mapped, labels, 10, scorers, SMALL, CPU, ensemble=config)
    assert procs.ensemble is not None
    save_ensemble(local, tmp_path / "local.npy", len(labels), 10)
    save_ensemble(procs.ensemble, tmp_path / "procs.npy", len(labels), 10)
    assert (tmp_path / "local.npy").read_bytes() == (tmp_path / "procs.npy").read_bytes()
