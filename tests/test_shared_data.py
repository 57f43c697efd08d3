"""Opt-in: ingest the full real datasets from ../shared/data (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import SHARED_DATA
from memclean.ingest import ingest
from memclean.sources import list_hf_parquet, list_idx

pytestmark = [pytest.mark.shared_data, pytest.mark.slow]

MNIST = SHARED_DATA / "mnist"
CIFAR = SHARED_DATA / "cifar10"


@pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte.gz").exists(), reason="../shared/data/mnist absent")
def test_full_mnist_idx(tmp_path):
    result = ingest(list_idx(MNIST), tmp_path / "p.npy")
    s = result.samples
    assert len(s) == 70_000 and (s["status"] == "ok").all()
    assert (s["split"] == "train").sum() == 60_000 and (s["split"] == "test").sum() == 10_000
    pixels = result.pixels
    assert pixels.shape == (70_000, 1, 28, 28)
    train = s[s["split"] == "train"]
    # Known facts of the official release (see ../shared/data/README.md).
    assert np.bincount(train["label"].to_numpy(), minlength=10).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert abs(float(pixels[:60_000].mean()) - 33.318) < 0.01


@pytest.mark.skipif(not (CIFAR / "train.parquet").exists(), reason="../shared/data/cifar10 absent")
def test_full_cifar10_parquet(tmp_path):
    listing = list_hf_parquet(CIFAR)
    assert listing.classes[:3] == ["airplane", "automobile", "bird"] and len(listing.classes) == 10
    result = ingest(listing, tmp_path / "p.npy")
    s = result.samples
    assert len(s) == 60_000 and (s["status"] == "ok").all()
    assert (s["split"] == "train").sum() == 50_000 and (s["split"] == "test").sum() == 10_000
    assert result.pixels.shape == (60_000, 3, 32, 32)
    for split, per_class in (("train", 5_000), ("test", 1_000)):
        counts = np.bincount(s.loc[s["split"] == split, "label"].to_numpy(), minlength=10)
        assert counts.tolist() == [per_class] * 10
