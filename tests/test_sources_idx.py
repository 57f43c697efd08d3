"""IDX defects: short, empty and corrupt files are one-line errors; raw + .gz copies are read once."""

from __future__ import annotations

import gzip
import logging
import shutil

import numpy as np
import pytest
from test_sources import write_idx

from memclean.errors import MemcleanError
from memclean.ingest import ingest
from memclean.sources import list_idx


def write_raw_idx(path, array):
    write_idx(path, array, compress=False)


@pytest.fixture
def mnist_like(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    rng = np.random.default_rng(0)
    write_raw_idx(root / "train-images-idx3-ubyte", rng.integers(0, 256, (4, 5, 5)))
    write_raw_idx(root / "train-labels-idx1-ubyte", np.array([0, 1, 2, 1]))
    return root


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00\x08\x03\x00", r"too short \(5 bytes\) for its 3-dimension header"),
        (b"\x00\x00", r"too short \(2 bytes\)"),
        (b"\x00\x00\x0d\x03\x00", "unsupported magic"),
    ],
)
def test_short_idx_file_is_a_one_line_error(mnist_like, data, message):
    (mnist_like / "train-images-idx3-ubyte").write_bytes(data)
    with pytest.raises(MemcleanError, match=message) as info:
        list_idx(mnist_like)
    assert "\n" not in str(info.value)


def test_zero_image_idx_file_is_a_one_line_error(mnist_like):
    write_raw_idx(mnist_like / "train-images-idx3-ubyte", np.zeros((0, 28, 28)))
    write_raw_idx(mnist_like / "train-labels-idx1-ubyte", np.zeros((0,)))
    with pytest.raises(MemcleanError, match=r"train-images-idx3-ubyte holds no images \(shape \(0, 28, 28\)\)"):
        list_idx(mnist_like)


def test_corrupt_gzip_is_a_one_line_error(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, np.zeros((2, 4, 4)))
    data = path.read_bytes()
    path.write_bytes(data[:10] + bytes(len(data) - 18) + data[-8:])
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(2))
    with pytest.raises(MemcleanError, match="cannot read IDX file train-images-idx3-ubyte.gz"):
        list_idx(tmp_path)


def test_raw_and_gz_copies_side_by_side_read_the_raw_one(mnist_like, tmp_path, caplog):
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        with open(mnist_like / name, "rb") as src, gzip.open(mnist_like / f"{name}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    with caplog.at_level(logging.WARNING, logger="memclean.sources"):
        listing = list_idx(mnist_like)
    assert [i.sample_id for i in listing.items] == ["train/0", "train/1", "train/2", "train/3"]
    assert {i.source.split("#")[0] for i in listing.items} == {"train-images-idx3-ubyte"}
    assert listing.notes["ignored_files"] == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert "ignoring train-images-idx3-ubyte.gz" in caplog.text
    result = ingest(listing, tmp_path / "p.npy")  # no "sample_id not unique"
    assert len(result.samples) == 4 and (result.samples["status"] == "ok").all()


def test_images_and_labels_may_differ_in_compression(mnist_like):
    labels = mnist_like / "train-labels-idx1-ubyte"
    with open(labels, "rb") as src, gzip.open(mnist_like / "train-labels-idx1-ubyte.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    labels.unlink()
    assert [i.label for i in list_idx(mnist_like).items] == [0, 1, 2, 1]


def test_two_prefixes_for_one_split_are_a_clear_error(mnist_like):
    for prefix in ("t10k", "test"):
        write_raw_idx(mnist_like / f"{prefix}-images-idx3-ubyte", np.zeros((1, 5, 5)))
        write_raw_idx(mnist_like / f"{prefix}-labels-idx1-ubyte", np.zeros(1))
    with pytest.raises(MemcleanError, match="both split 'test'"):
        list_idx(mnist_like)
