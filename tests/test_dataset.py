"""ManifestDataset: ImageFolder's attributes, openable sample paths and clear split errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import encode, pattern
from memclean.dataset import ManifestDataset
from memclean.errors import MemcleanError
from memclean.io import save_npy, write_parquet
from memclean.schema import manifest_schema
from memclean.sources import list_imagefolder

CLASSES = ["cat", "dog"]


def write_clean(tmp_path, sources, labels, splits, metadata):
    """A clean manifest (every row kept) plus its pixels, laid out as the pipeline does."""
    n = len(sources)
    frame = pd.DataFrame(
        {
            "sample_id": sources,
            "source": sources,
            "split": splits,
            "label": pd.array(labels, dtype="Int32"),
            "status": ["ok"] * n,
            "row": pd.array(range(n), dtype="Int64"),
            "keep": [True] * n,
            "suspected": [False] * n,
        }
    )
    schema = manifest_schema([])
    frame = frame.reindex(columns=schema.names)  # the other columns are null
    manifest = tmp_path / "data/clean/manifest.parquet"
    write_parquet(frame, manifest, schema, metadata={"classes": CLASSES, **metadata})
    pixels = np.arange(n * 16, dtype=np.uint8).reshape(n, 1, 4, 4)
    save_npy(pixels, tmp_path / "data/interim/pixels.npy")
    return manifest, pixels


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "images"
    for split, cls, i in [("train", "cat", 0), ("train", "dog", 1), ("test", "cat", 2)]:
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        (root / split / cls / f"{i}.png").write_bytes(encode(pattern(4, 4, seed=i)))
    return root


def test_samples_are_the_original_file_paths(folder, tmp_path):
    listing = list_imagefolder(folder)
    items = listing.items
    manifest, pixels = write_clean(
        tmp_path,
        [i.source for i in items],
        [i.label for i in items],
        [i.split for i in items],
        {"root": str(listing.root)},
    )
    ds = ManifestDataset(manifest)
    assert ds.root == listing.root
    assert ds.classes == CLASSES and ds.class_to_idx == {"cat": 0, "dog": 1}
    assert ds.imgs is ds.samples and ds.targets == [t for _, t in ds.samples] == [0, 0, 1]
    for path, target in ds.samples:
        assert path.startswith(str(listing.root))
        assert Image.open(path).size == (4, 4)  # an openable file, as in ImageFolder
        assert CLASSES[target] in path
    img, target = ds[0]
    np.testing.assert_array_equal(np.asarray(img), pixels[0, 0])
    moved = ManifestDataset(manifest, root=tmp_path / "elsewhere")  # an explicit root wins
    assert moved.samples[0][0] == str(tmp_path / "elsewhere" / items[0].source)


def test_in_memory_sources_keep_their_row_names(tmp_path):
    sources = ["train-images-idx3-ubyte.gz#0", "train-images-idx3-ubyte.gz#1"]
    manifest, _ = write_clean(tmp_path, sources, [1, 0], ["train", "train"], {})
    ds = ManifestDataset(manifest)
    assert ds.root is None
    assert ds.samples == [(sources[0], 1), (sources[1], 0)]


def test_a_missing_split_is_an_error_listing_the_splits(tmp_path):
    manifest, _ = write_clean(tmp_path, ["a.png", "b.png"], [0, 1], ["train", "test"], {})
    assert len(ManifestDataset(manifest, split="test")) == 1
    with pytest.raises(MemcleanError, match=r"split 'val' is not in .*manifest.parquet; its splits are: test, train"):
        ManifestDataset(manifest, split="val")
