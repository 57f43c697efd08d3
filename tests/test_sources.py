"""Readers for each dataset kind, and the manifest's path and label policies."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import encode, pattern
from memclean.errors import MemcleanError
from memclean.ingest import ingest
from memclean.sources import list_digits, list_hf_parquet, list_idx, list_manifest, list_source


def test_digits_is_the_whole_bundled_set():
    listing = list_digits()
    assert len(listing.items) == 1797
    assert listing.classes == [str(i) for i in range(10)]
    first = listing.items[0]
    assert first.sample_id == "train/0" and first.array.shape == (8, 8)
    assert first.array.dtype == np.uint8
    assert max(int(i.array.max()) for i in listing.items) == 255  # 0-16 scaled to 0-255
    assert len({i.sample_id for i in listing.items}) == 1797


# --------------------------------------------------------------------------- manifest


@pytest.fixture
def manifest_root(tmp_path):
    root = tmp_path / "root"
    (root / "imgs").mkdir(parents=True)
    for i in range(6):
        (root / "imgs" / f"{i}.png").write_bytes(encode(pattern(8, 8, seed=i)))
    (root / "imgs" / "mixed size.png").write_bytes(encode(pattern(12, 10, seed=9)))
    outside = tmp_path / "secret.png"
    outside.write_bytes(encode(pattern(8, 8, seed=7)))
    return root, outside


def write_manifest(root, rows, name="manifest.csv"):
    path = root / name
    frame = pd.DataFrame(rows)
    if name.endswith(".parquet"):
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


def test_manifest_policies(manifest_root, tmp_path):
    root, outside = manifest_root
    rows = [
        {"path": "imgs/0.png", "label": "cat", "split": "train"},
        {"path": "imgs/1.png", "label": "dog", "split": "train"},
        {"path": "imgs/2.png", "label": "dog", "split": "test"},
        {"path": "../../etc/passwd", "label": "cat", "split": "train"},
        {"path": str(outside), "label": "cat", "split": "train"},
        {"path": str(root / "imgs" / "3.png"), "label": "cat", "split": "train"},  # absolute, inside
        {"path": "imgs/0.png", "label": "cat", "split": "train"},  # same path twice
        {"path": "imgs/./1.png", "label": "dog", "split": "train"},  # same file, other spelling
        {"path": "imgs/missing.png", "label": "cat", "split": "train"},
        {"path": "imgs/mixed size.png", "label": "horse", "split": "train"},  # label not in classes
        {"path": "imgs/5.png", "label": "", "split": "train"},  # no label
    ]
    listing = list_manifest(write_manifest(root, rows), classes=["cat", "dog"])
    result = ingest(listing, tmp_path / "p.npy")
    s = result.samples
    assert len(s) == len(rows)
    assert list(s["reason"].fillna("ok")) == [
        "ok",
        "ok",
        "ok",
        "path_escape",
        "path_escape",
        "ok",
        "duplicate_path",
        "duplicate_path",
        "missing",
        "unknown_label",
        "unknown_label",
    ]
    assert s["sample_id"].is_unique
    assert s.loc[5, "sample_id"] == "imgs/3.png"  # absolute inside the root becomes relative
    assert s.loc[2, "split"] == "test"
    assert list(s.loc[:2, "label_name"]) == ["cat", "dog", "dog"]


def test_manifest_parquet_with_integer_labels_and_no_split(manifest_root, tmp_path):
    root, _ = manifest_root
    path = write_manifest(root, [{"path": f"imgs/{i}.png", "label": i % 3} for i in range(4)], "m.parquet")
    listing = list_manifest(path)
    assert listing.classes == ["0", "1", "2"]
    assert [i.label for i in listing.items] == [0, 1, 2, 0]
    assert {i.split for i in listing.items} == {"train"}


def test_manifest_mixed_sizes_are_resized(manifest_root, tmp_path):
    root, _ = manifest_root
    rows = [{"path": f"imgs/{i}.png", "label": "a"} for i in range(4)] + [{"path": "imgs/mixed size.png", "label": "b"}]
    result = ingest(list_manifest(write_manifest(root, rows)), tmp_path / "p.npy")
    assert result.image_size == (8, 8) and result.resized == 1
    assert result.pixels.shape == (5, 3, 8, 8)


def test_manifest_errors_are_clear(manifest_root, tmp_path):
    root, _ = manifest_root
    with pytest.raises(MemcleanError, match="no 'label' column"):
        list_manifest(write_manifest(root, [{"path": "imgs/0.png"}]))
    with pytest.raises(MemcleanError, match="not found"):
        list_manifest(root / "nope.csv")
    with pytest.raises(MemcleanError, match="must name"):
        list_source("manifest", root=root)
    with pytest.raises(MemcleanError, match="unknown ingest.source"):
        list_source("tfrecord")


# --------------------------------------------------------------------------- idx


def write_idx(path, array, compress=True):
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with (gzip.open if compress else open)(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_root(tmp_path):
    root = tmp_path / "idx"
    root.mkdir()
    rng = np.random.default_rng(0)
    write_idx(root / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (6, 5, 5)))
    write_idx(root / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 1, 0, 2]))
    write_idx(root / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (3, 5, 5)))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.array([2, 1, 0]))
    return root


def test_idx_reads_both_splits(idx_root, tmp_path):
    listing = list_idx(idx_root)
    assert [i.sample_id for i in listing.items][:2] == ["train/0", "train/1"]
    assert [i.sample_id for i in listing.items][-1] == "test/2"
    result = ingest(listing, tmp_path / "p.npy")
    assert (result.samples["status"] == "ok").all()
    assert result.pixels.shape == (9, 1, 5, 5)


def test_idx_label_outside_classes_and_truncation(idx_root):
    listing = list_idx(idx_root, classes=["a", "b"])
    reasons = [i.reason for i in listing.items]
    assert reasons.count("unknown_label") == 3  # the three labels equal to 2
    with gzip.open(idx_root / "t10k-images-idx3-ubyte.gz") as fh:
        data = fh.read()
    with gzip.open(idx_root / "t10k-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(data[:-10])
    with pytest.raises(MemcleanError, match="truncated"):
        list_idx(idx_root)


def test_idx_missing_files(tmp_path):
    with pytest.raises(MemcleanError, match="no \\*-images-idx3-ubyte"):
        list_idx(tmp_path)


# --------------------------------------------------------------------------- hf-parquet


def write_hf(path, images, labels, column="img", metadata=None):
    struct_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            column: pa.array([{"bytes": b, "path": None} for b in images], type=struct_type),
            "label": pa.array(labels, type=pa.int64()),
        }
    )
    if metadata:
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, path)


def test_hf_parquet_with_class_metadata_and_bad_rows(tmp_path):
    root = tmp_path / "hf"
    root.mkdir()
    good = [encode(pattern(8, 8, seed=i), "JPEG") for i in range(3)]
    write_hf(root / "train.parquet", [*good, b"garbage", None], [0, 1, 2, 0, 1], metadata={"classes": "x,y,z"})
    write_hf(root / "test-00000-of-00001.parquet", good[:2], [1, 7], metadata={"classes": "x,y,z"})
    listing = list_hf_parquet(root)
    assert listing.classes == ["x", "y", "z"]
    result = ingest(listing, tmp_path / "p.npy")
    s = result.samples.set_index("sample_id")
    assert list(s.index) == ["train/0", "train/1", "train/2", "train/3", "train/4", "test/0", "test/1"]
    assert s.loc["train/3", "reason"] == "not_an_image"
    assert s.loc["train/4", "reason"] == "not_an_image"
    assert s.loc["test/1", "reason"] == "unknown_label"
    assert s.loc["train/2", "label_name"] == "z"


def test_hf_parquet_image_column_and_huggingface_features(tmp_path):
    path = tmp_path / "data.parquet"
    hf_meta = {"info": {"features": {"label": {"names": ["cat", "dog"], "_type": "ClassLabel"}}}}
    write_hf(
        path, [encode(pattern(8, 8, seed=1))] * 2, [1, 0], column="image", metadata={"huggingface": json.dumps(hf_meta)}
    )
    listing = list_hf_parquet(path)
    assert listing.classes == ["cat", "dog"]
    assert [i.split for i in listing.items] == ["data", "data"]
    with pytest.raises(MemcleanError, match="no image column"):
        list_hf_parquet(path, image_column="pixels")
