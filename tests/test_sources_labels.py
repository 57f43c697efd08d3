"""Labels round-trip in every source: missing spellings, integer columns, floats and strings."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import encode, pattern
from memclean.errors import MemcleanError
from memclean.ingest import ingest
from memclean.sources import list_hf_parquet, list_imagefolder, list_manifest, parse_labels


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "root"
    (root / "imgs").mkdir(parents=True)
    for i in range(8):
        (root / "imgs" / f"{i}.png").write_bytes(encode(pattern(8, 8, seed=i)))
    return root


def manifest(root, labels, name="m.csv"):
    frame = pd.DataFrame({"path": [f"imgs/{i}.png" for i in range(len(labels))], "label": labels})
    path = root / name
    if name.endswith(".parquet"):
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- parse_labels


def test_parse_labels_reads_missing_spellings_floats_and_strings():
    labels = parse_labels(["cat", "dog", "NaN", "NA", "null", "", None, float("nan"), " cat "])
    assert labels.classes == ["cat", "dog"]
    assert labels.indices == [0, 1, None, None, None, None, None, None, 0]
    assert labels.details[2] == "missing label ('NaN')" and labels.details[6] == "missing label"
    floats = parse_labels([1.0, 2.0, 1.5, 0.0, np.float32(2.0)])
    assert floats.classes == ["0", "1", "2"] and floats.indices == [1, 2, None, 0, 2]
    assert "'1.5' is not an integer class index" in floats.details[2]
    assert parse_labels(["1.0", "2", "1.5", "+0"]).indices == [1, 2, None, 0]


def test_parse_labels_keeps_integer_columns_integer():
    labels = parse_labels([0, 1, 2, "cat", 1, -1, "7"])
    assert labels.classes == [str(i) for i in range(8)]
    assert labels.indices == [0, 1, 2, None, 1, None, 7]
    assert "'cat' is not an integer class index" in labels.details[3]
    assert labels.details[5] == "label -1 is not one of the 8 class indices"
    with pytest.raises(MemcleanError, match="implausibly large"):
        parse_labels([1, 2, 10**6])


def test_parse_labels_with_given_classes():
    assert parse_labels(["dog", "cat", "bird"], ["cat", "dog"]).indices == [1, 0, None]
    assert parse_labels([1, 0, 2], ["cat", "dog"]).indices == [1, 0, None]  # integers are indices
    assert parse_labels(["NA", "EU", "NaN"], ["NA", "EU"]).indices == [0, 1, None]  # a given class wins
    assert parse_labels([3, 5, 7], ["3", "5", "7"]).indices == [0, 1, 2]  # names spelled as integers
    names = parse_labels(["NA", "10", "9"], names_only=True)  # folder names are taken as they are
    assert names.classes == ["10", "9", "NA"] and names.indices == [2, 0, 1]


# --------------------------------------------------------------------------- manifest


def test_manifest_missing_label_spellings_are_unknown_label_not_classes(image_root, tmp_path):
    listing = list_manifest(manifest(image_root, ["cat", "NaN", "NA", "null", "", "dog", "nan", "cat"]))
    assert listing.classes == ["cat", "dog"]
    s = ingest(listing, tmp_path / "p.npy").samples
    assert list(s["reason"].fillna("ok")) == ["ok"] + ["unknown_label"] * 4 + ["ok", "unknown_label", "ok"]
    assert s["detail"].str.startswith("missing label").sum() == 5
    assert list(s["label_name"].dropna()) == ["cat", "dog", "cat"]


@pytest.mark.parametrize("name", ["m.csv", "m.parquet"])
def test_one_odd_label_does_not_renumber_an_integer_column(image_root, tmp_path, name):
    raw = ["2", "0", "1", "cat", "1", "2"] if name.endswith(".csv") else [2, 0, 1, "cat", 1, 2]
    frame = pd.DataFrame({"path": [f"imgs/{i}.png" for i in range(len(raw))], "label": raw})
    path = image_root / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.astype({"label": str}).to_parquet(path)  # a string column holding integers
    listing = list_manifest(path)
    assert listing.classes == ["0", "1", "2"]
    assert [i.label for i in listing.items] == [2, 0, 1, None, 1, 2]
    assert listing.items[3].reason == "unknown_label" and "'cat'" in listing.items[3].detail


def test_float_labels_are_integers_and_fractions_are_unknown(image_root, tmp_path):
    listing = list_manifest(manifest(image_root, [1.0, 2.0, 1.5, 0.0, np.nan], "m.parquet"))
    assert listing.classes == ["0", "1", "2"]  # no phantom "1.5" class
    assert [i.label for i in listing.items] == [1, 2, None, 0, None]
    assert [i.reason for i in listing.items][2:] == ["unknown_label", None, "unknown_label"]
    csv = list_manifest(manifest(image_root, ["1.0", "2.0", "1.5", "0"]))
    assert csv.classes == ["0", "1", "2"] and [i.label for i in csv.items] == [1, 2, None, 0]


# --------------------------------------------------------------------------- hf-parquet


def write_hf_strings(path, labels, metadata=None):
    """A Hugging Face-style Parquet file whose label column holds strings."""
    struct_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = [{"bytes": encode(pattern(8, 8, seed=i)), "path": None} for i in range(len(labels))]
    table = pa.table({"img": pa.array(images, type=struct_type), "label": pa.array(labels, type=pa.string())})
    pq.write_table(table.replace_schema_metadata(metadata) if metadata else table, path)


def test_hf_parquet_string_labels_without_classes(tmp_path):
    root = tmp_path / "hf"
    root.mkdir()
    write_hf_strings(root / "train-00000-of-00002.parquet", ["cat", "dog", "cat"])
    write_hf_strings(root / "train-00001-of-00002.parquet", ["dog", "NA"])
    write_hf_strings(root / "test.parquet", ["bird", "cat"])  # a class seen only in test
    listing = list_hf_parquet(root)
    assert listing.classes == ["bird", "cat", "dog"]
    result = ingest(listing, tmp_path / "p.npy")
    s = result.samples.set_index("sample_id")
    assert s.loc["train/4", "reason"] == "unknown_label" and s.loc["train/4", "detail"] == "missing label ('NA')"
    ok = s[s["status"] == "ok"]
    assert list(ok["label_name"]) == ["cat", "dog", "cat", "dog", "bird", "cat"]
    assert s.loc["train/3", "source"] == "train-00001-of-00002.parquet#0"  # row inside its own file


def test_hf_parquet_string_labels_with_classes(tmp_path):
    path = tmp_path / "train.parquet"
    write_hf_strings(path, ["cat", "dog", "cow"])
    listing = list_hf_parquet(path, classes=["dog", "cat"])
    assert [i.label for i in listing.items] == [1, 0, None]
    assert listing.items[2].detail == "label 'cow' is not in ingest.classes"
    meta = {"huggingface": json.dumps({"info": {"features": {"label": {"names": ["dog", "cat"]}}}})}
    write_hf_strings(path, ["cat", "dog", "cat"], metadata=meta)
    assert [i.label for i in list_hf_parquet(path).items] == [1, 0, 1]
    result = ingest(list_hf_parquet(path), tmp_path / "p.npy")
    assert (result.samples["status"] == "ok").all()


# --------------------------------------------------------------------------- imagefolder


def test_imagefolder_folder_names_are_classes_as_they_are(tmp_path):
    root = tmp_path / "folder"
    for i, cls in enumerate(["NA", "nan", "10", "9"]):
        (root / cls).mkdir(parents=True)
        (root / cls / "a.png").write_bytes(encode(pattern(8, 8, seed=i)))
    listing = list_imagefolder(root)
    assert listing.classes == ["10", "9", "NA", "nan"]
    result = ingest(listing, tmp_path / "p.npy")
    s = result.samples.set_index("sample_id")
    assert (s["status"] == "ok").all()
    assert s.loc["nan/a.png", "label_name"] == "nan" and s.loc["9/a.png", "label"] == 1
