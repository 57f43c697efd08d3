"""Turn-over dropout: fixed per-sample masks, gradients confined to them, and the ``tdo`` scorer on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from torch import nn

from memclean.errors import MemcleanError
from memclean.noise import inject
from memclean.scores import score_dataset, scorer_class
from memclean.tdo import TurnOverNet, kept_units, unit_masks
from memclean.train import ProxyCNN, TrainConfig


def test_masks_are_fixed_per_index_and_balanced():
    idx = np.arange(50)
    first = unit_masks(idx, 16, 0.5, seed=7, layer=1)
    np.testing.assert_array_equal(first, unit_masks(idx, 16, 0.5, seed=7, layer=1))
    # A sample's mask depends on its index only, not on the batch it comes in.
    np.testing.assert_array_equal(first[[31, 4]], unit_masks(np.array([31, 4]), 16, 0.5, seed=7, layer=1))
    assert (first.sum(axis=1) == 8).all()
    assert len({row.tobytes() for row in first}) > 40  # masks differ between samples
    assert not np.array_equal(first, unit_masks(idx, 16, 0.5, seed=8, layer=1))
    assert not np.array_equal(first, unit_masks(idx, 16, 0.5, seed=7, layer=2))
    assert kept_units(10, 0.3) == 3
    assert (unit_masks(idx, 10, 0.3, seed=7).sum(axis=1) == 3).all()
    assert kept_units(4, 0.05) == 1 and kept_units(4, 0.95) == 3


@pytest.mark.parametrize("layers", ["all", "penultimate"])
def test_flipped_mask_is_the_complement(layers):
    torch.manual_seed(0)
    model = TurnOverNet(ProxyCNN(1, 3, (8, 8), width=4), layers, keep=0.25)
    table = model.mask_table(20, seed=3, device=torch.device("cpu"))
    assert table.shape == (20, model.units)
    torch.testing.assert_close(table, model.mask_table(20, seed=3, device=torch.device("cpu")), rtol=0, atol=0)
    like = torch.zeros(())
    for site, width in enumerate(model.widths):
        own = model._scaled(table, site, False, like)
        flipped = model._scaled(table, site, True, like)
        assert ((own > 0) ^ (flipped > 0)).all()  # disjoint and covering
        k = kept_units(width, 0.25)
        assert ((own > 0).sum(1) == k).all()
        torch.testing.assert_close(own.max(), torch.tensor(width / k))  # inverted-dropout scale
        torch.testing.assert_close(flipped.max(), torch.tensor(width / (width - k)))


def _grad_after_one_sample(layers: str):
    torch.manual_seed(0)
    model = TurnOverNet(ProxyCNN(1, 3, (8, 8), width=4), layers, keep=0.5)
    table = model.mask_table(10, seed=1, device=torch.device("cpu"))
    x = torch.randn(1, 1, 8, 8)
    model.train()
    loss = F.cross_entropy(model(x, table[[6]]), torch.tensor([2]))
    loss.backward()
    convs = [m for m in model.net.features if isinstance(m, nn.Conv2d)]
    masks = [table[6, a:b] for a, b in model._slices]
    return model, convs, masks


def test_penultimate_mask_confines_the_head_gradient():
    model, _, (m,) = _grad_after_one_sample("penultimate")
    grad = model.net.head.weight.grad
    assert grad is not None and grad.shape[1] == len(m) == 8
    assert (grad[:, ~m] == 0).all()  # units off in the sample's mask learn nothing from it
    assert (grad[:, m].abs().sum(0) > 0).all()


def test_channel_masks_confine_every_conv_gradient():
    model, convs, masks = _grad_after_one_sample("all")
    assert [len(m) for m in masks] == [4, 4, 8]  # after each ReLU: block 0 (two convs), block 1
    g0, g1, g2 = (c.weight.grad for c in convs)
    assert g0 is not None and g1 is not None and g2 is not None
    # conv 0 → mask 0; conv 1 reads mask 0 and writes mask 1; conv 2 reads mask 1 and writes mask 2.
    assert (g0[~masks[0]] == 0).all() and (g0[masks[0]].abs().flatten(1).sum(1) > 0).all()
    for grad, m_in, m_out in [(g1, masks[0], masks[1]), (g2, masks[1], masks[2])]:
        touched = grad.abs().sum(dim=(2, 3)) > 0
        assert not (touched & ~(m_out[:, None] & m_in[None, :])).any()
        assert touched[m_out][:, m_in].any()
    head = model.net.head.weight.grad
    assert head is not None and (head[:, ~masks[2]] == 0).all()


def test_params_are_checked():
    cls = scorer_class("tdo")
    assert cls.default is False and cls.needs == "tdo"
    assert cls.defaults() == {"keep": 0.3, "epochs": None, "layers": "penultimate"}
    for bad in ({"keep": 1.0}, {"layers": "heads"}, {"epochs": 0}, {"other": 1}):
        with pytest.raises(MemcleanError, match="score.scorers.tdo"):
            cls.validate_params(bad)


@pytest.mark.slow
def test_tdo_ranks_injected_mislabels_on_digits():
    digits = load_digits()
    pixels = (digits.images[:300] * (255 / 16)).astype(np.uint8)[:, None]
    labels = digits.target[:300].astype(np.int64)
    noisy = inject(labels, 10, "symmetric", 0.1, seed=3)
    config = TrainConfig(epochs=10, batch_size=32, width=16, seed=2)
    out = score_dataset(pixels, noisy, 10, {"tdo": {}}, config, torch.device("cpu"))
    assert not out.failures
    scores = out.scores["tdo_score"].to_numpy()
    assert scores.shape == (300,) and np.isfinite(scores).all()
    assert roc_auc_score(noisy != labels, scores) > 0.7
