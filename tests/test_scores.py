"""Scorers on tiny synthetic data: contract, orientation, determinism, failure isolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from memclean.errors import MemcleanError
from memclean.scores import Scorer, ScoreResult, available, combined_rank, create, score_dataset
from memclean.scores.base import _REGISTRY
from memclean.scores.curvature import curvature_pass, input_gradient
from memclean.train import ProxyCNN, TrainConfig, select_device, train

ALL = {
    "learning_speed": {},
    "aum": {},
    "forgetting": {},
    "el2n": {},
    "loss": {},
    "curvature": {"every": 2, "n_probes": 8},
    "combined": {},
}
CPU = torch.device("cpu")


def toy(n_per_class: int = 50, classes: int = 4, flips: int = 12, seed: int = 0):
    """8×8 grey images: a class-specific bar plus noise; ``flips`` labels planted wrong."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.normal(40, 20, size=(len(y), 1, 8, 8))
    for c in range(classes):
        rows = y == c
        x[rows, 0, 2 * c : 2 * c + 2, :] += 160
    x = np.clip(x, 0, 255).astype(np.uint8)
    noisy = y.copy()
    idx = rng.choice(len(y), flips, replace=False)
    noisy[idx] = (y[idx] + rng.integers(1, classes, flips)) % classes
    return x, y, noisy, noisy != y


CFG = TrainConfig(epochs=12, batch_size=32, width=8, lr=0.05)


@pytest.fixture(scope="module")
def toy_outcome():
    x, _, noisy, flipped = toy()
    return score_dataset(x, noisy, 4, ALL, CFG, CPU), flipped


def test_registry_lists_scorers_and_merges_defaults():
    assert {"curvature", "learning_speed", "aum", "forgetting", "el2n", "loss"} <= set(available())
    sc = create("curvature", {"n_probes": 3})
    assert sc.params["n_probes"] == 3 and sc.params["h"] == 1e-3
    with pytest.raises(MemcleanError, match="unknown key"):
        create("curvature", {"probes": 3})
    with pytest.raises(MemcleanError, match="unknown scorer"):
        create("nope")


def test_contract_shapes_and_suggested_label(toy_outcome):
    outcome, flipped = toy_outcome
    frame = outcome.scores
    assert len(frame) == len(flipped)
    assert set(outcome.scorer_names) == set(ALL)
    for name in outcome.scorer_names:
        assert np.isfinite(frame[f"{name}_score"]).all()
    assert frame["suggested_label"].between(0, 3).all()
    assert outcome.failures == {} and outcome.train.final_train_accuracy > 0.9


def test_planted_mislabels_rank_high(toy_outcome):
    outcome, flipped = toy_outcome
    # Curvature gets 8 probes here: with 2, the estimate on 200 samples is noisy.
    bars = {"learning_speed": 0.9, "aum": 0.9, "loss": 0.9, "el2n": 0.9, "combined": 0.9, "curvature": 0.9}
    for name, bar in bars.items():
        auroc = roc_auc_score(flipped, outcome.scores[f"{name}_score"])
        assert auroc > bar, f"{name}: AUROC {auroc:.3f}"
    # Orientation: the planted samples score higher on average for every scorer.
    for name in outcome.scorer_names:
        s = outcome.scores[f"{name}_score"].to_numpy()
        assert s[flipped].mean() > s[~flipped].mean(), name


def test_suggested_label_recovers_the_true_class():
    x, y, noisy, flipped = toy()
    out = score_dataset(x, noisy, 4, {"learning_speed": {}}, CFG, CPU)
    suggested = out.scores["suggested_label"].to_numpy()
    assert (suggested[flipped] == y[flipped]).mean() >= 0.75


def test_same_seed_gives_identical_scores():
    x, _, noisy, _ = toy(n_per_class=20, flips=4)
    cfg = TrainConfig(epochs=4, batch_size=16, width=8)
    a = score_dataset(x, noisy, 4, {"aum": {}, "curvature": {"every": 2}}, cfg, CPU).scores
    b = score_dataset(x, noisy, 4, {"aum": {}, "curvature": {"every": 2}}, cfg, CPU).scores
    cols = ["aum_score", "curvature_score"]
    np.testing.assert_array_equal(a[cols].to_numpy(), b[cols].to_numpy())
    c = score_dataset(x, noisy, 4, {"aum": {}}, TrainConfig(epochs=4, batch_size=16, width=8, seed=1), CPU).scores
    assert not np.array_equal(a["aum_score"].to_numpy(), c["aum_score"].to_numpy())


def test_bf16_autocast_path_on_cpu():
    x, _, noisy, flipped = toy()
    cfg = TrainConfig(epochs=12, batch_size=32, width=8, bf16=True)
    out = score_dataset(x, noisy, 4, {"aum": {}, "curvature": {"every": 4}}, cfg, CPU)
    assert np.isfinite(out.scores["aum_score"]).all() and np.isfinite(out.scores["curvature_score"]).all()
    assert roc_auc_score(flipped, out.scores["aum_score"]) > 0.85


def test_bf16_and_channels_last_defaults_follow_the_device(monkeypatch):
    """bf16 null: on CUDA, and on a CPU only with native bf16; channels-last null: on CUDA and CPUs; explicit wins."""
    from memclean import train as train_mod

    assert isinstance(train_mod.cpu_has_native_bf16(), bool)  # reads /proc/cpuinfo (False off Linux)
    cfg = TrainConfig()
    cuda = torch.device("cuda")
    assert train_mod.uses_bf16(cuda, cfg) and cfg.uses_channels_last(cuda)
    # channels-last: null = on CUDA and on a CPU (not elsewhere, e.g. MPS); an explicit value wins
    assert cfg.uses_channels_last(CPU) and not TrainConfig(channels_last=False).uses_channels_last(CPU)
    assert not cfg.uses_channels_last(torch.device("mps")) and not TrainConfig(channels_last=False).uses_channels_last(
        cuda
    )
    for native in (True, False):
        monkeypatch.setattr(train_mod, "cpu_has_native_bf16", lambda native=native: native)
        assert train_mod.uses_bf16(CPU, cfg) is native
        assert train_mod.uses_bf16(CPU, TrainConfig(bf16=True)) and not train_mod.uses_bf16(
            CPU, TrainConfig(bf16=False)
        )
    assert not train_mod.uses_bf16(cuda, TrainConfig(bf16=False))


def test_width_default_follows_the_device_and_the_run_records_it():
    """width null: 16 channels on a CPU, 32 on CUDA; an explicit width wins; TrainResult and the log say which."""
    cfg = TrainConfig()
    assert cfg.width is None
    assert cfg.resolved_width(CPU) == 16 and cfg.resolved_width(torch.device("cuda")) == 32
    assert TrainConfig(width=8).resolved_width(torch.device("cuda")) == 8
    x, y, _, _ = toy()
    narrow = train(x, y, 4, TrainConfig(epochs=1, batch_size=32), CPU)
    wide = train(x, y, 4, TrainConfig(epochs=1, batch_size=32, width=32), CPU)
    assert narrow.config["width"] == 16 and wide.config["width"] == 32
    # The network really is narrower: the first block has half the channels.
    seen: list[int] = []
    train(
        x, y, 4, TrainConfig(epochs=1, batch_size=32), CPU, callbacks=[lambda cp: seen.append(first_channels(cp.model))]
    )
    assert seen == [16]


def first_channels(model: torch.nn.Module) -> int:
    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).out_channels


def test_curvature_default_schedule_is_the_last_epoch_on_a_cpu():
    """curvature every=null: one pass at the last epoch on a CPU (a pass costs ~3 epochs), every 4th on CUDA."""
    x, _, noisy, _ = toy()
    cfg = TrainConfig(epochs=6, batch_size=32, width=8)
    counted = {}
    for every in (None, 2):
        scorer = create("curvature", {} if every is None else {"every": every})
        train(x, noisy, 4, cfg, CPU, callbacks=[scorer.on_checkpoint])
        counted[every] = scorer._count
    assert counted == {None: 1, 2: 3}


class _Exploding(Scorer):
    name = "test_exploding"
    description = "raises at every checkpoint"

    def on_checkpoint(self, cp):
        raise RuntimeError("boom")

    def result(self):  # pragma: no cover - never reached
        return ScoreResult(np.zeros(1))


class _NaNs(Scorer):
    name = "test_nans"
    description = "a few non-finite scores"

    def on_checkpoint(self, cp):
        self.n = len(cp.logits)

    def result(self):
        s = np.arange(self.n, dtype=float)
        s[:3] = np.nan
        s[3] = np.inf
        return ScoreResult(s)


class _AllNaN(_NaNs):
    name = "test_all_nan"
    description = "no finite score at all"

    def result(self):
        return ScoreResult(np.full(self.n, np.nan))


@pytest.fixture
def test_scorers(monkeypatch):
    """Register the scorers above for one test only (the registry is global)."""
    for cls in (_Exploding, _NaNs, _AllNaN):
        monkeypatch.setitem(_REGISTRY, cls.name, cls)


def test_a_failing_scorer_is_reported_not_fatal(test_scorers):
    x, _, noisy, _ = toy(n_per_class=10, flips=2)
    cfg = TrainConfig(epochs=2, batch_size=16, width=8)
    out = score_dataset(x, noisy, 4, {"test_exploding": {}, "aum": {}, "test_nans": {}}, cfg, CPU)
    assert "boom" in out.failures["test_exploding"]
    assert "aum_score" in out.scores and "test_exploding_score" not in out.scores
    assert out.nonfinite == {"test_nans": 4}
    assert out.scores["test_nans_score"].isna().sum() == 4
    with pytest.raises(MemcleanError, match="every scorer failed"):
        score_dataset(x, noisy, 4, {"test_exploding": {}}, cfg, CPU)


def test_an_all_nan_scorer_is_a_failed_scorer(test_scorers):
    x, _, noisy, _ = toy(n_per_class=10, flips=2)
    out = score_dataset(
        x, noisy, 4, {"test_all_nan": {}, "aum": {}}, TrainConfig(epochs=2, batch_size=16, width=8), CPU
    )
    assert out.failures["test_all_nan"] == "no finite score for any sample"
    assert "test_all_nan_score" not in out.scores and "aum_score" in out.scores


def test_combined_rank_averages_ranks():
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([3.0, 2.0, np.nan])
    np.testing.assert_allclose(combined_rank([a, b]), [0.25, 0.25, 1.0])


def test_curvature_is_per_sample_independent_of_batching():
    torch.manual_seed(0)
    model = ProxyCNN(1, 3, (8, 8), width=4).eval()
    x = torch.randn(10, 1, 8, 8)
    y = torch.randint(0, 3, (10,))
    # Sum-reduced loss: a sample's input gradient does not depend on its batch.
    full = input_gradient(model, x, y)
    part = input_gradient(model, x[:4], y[:4])
    torch.testing.assert_close(full[:4], part)
    # Same generator state and batch -> same curvature; values finite, one per sample.
    c1 = curvature_pass(model, [(x, y)], 1e-3, 3, torch.Generator().manual_seed(5))
    c2 = curvature_pass(model, [(x, y)], 1e-3, 3, torch.Generator().manual_seed(5))
    np.testing.assert_array_equal(c1, c2)
    assert c1.shape == (10,) and np.isfinite(c1).all() and (c1 > 0).all()
    # Weight gradients are never computed and requires_grad is restored.
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_train_validates_inputs():
    x = np.zeros((4, 1, 8, 8), np.uint8)
    with pytest.raises(MemcleanError, match="labels must lie"):
        train(x, np.array([0, 1, 2, 5]), 3, TrainConfig(epochs=1), CPU)
    with pytest.raises(MemcleanError, match="4 images but 3 labels"):
        train(x, np.array([0, 1, 2]), 3, TrainConfig(epochs=1), CPU)
    with pytest.raises(MemcleanError, match="score.trainer.epoch: unknown key"):
        TrainConfig.from_params({"epoch": 3})
    with pytest.raises(MemcleanError, match="score.trainer.epochs: Input should be greater than or equal to 1"):
        TrainConfig.from_params({"epochs": 0})
    assert select_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(MemcleanError, match="no CUDA"):
            select_device("cuda")


def test_checkpoint_schedule_always_includes_last_epoch():
    assert TrainConfig(epochs=10, eval_every=4).checkpoints() == [2, 6, 10]
    assert TrainConfig(epochs=3, eval_every=1).checkpoints() == [1, 2, 3]


@pytest.mark.parametrize("channels_last", [False, True])
def test_training_depends_on_the_pixel_values_not_their_memory_layout(channels_last):
    """The same images as a transposed view of N×H×W×C memory train to the same bytes (to_device copies to N×C×H×W)."""
    grey, y, _, _ = toy()
    x = np.concatenate([grey, 255 - grey, grey // 2], axis=1)  # three channels, so the layouts differ
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    assert not nhwc.flags["C_CONTIGUOUS"] and np.array_equal(nhwc, x)
    logits = []
    for pixels in (x, nhwc):
        seen: list = []
        config = TrainConfig(epochs=2, batch_size=32, channels_last=channels_last)
        train(pixels, y, 4, config, CPU, callbacks=[seen.append])
        logits.append(seen[-1].logits)
    assert logits[0].tobytes() == logits[1].tobytes()
