"""Export: labels survive (distinct, reversible folder names, JSON class lists), published as one folder."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from memclean import export as mexport
from memclean.export import export_kept
from memclean.sources import list_hf_parquet

CLASSES = ["cat?", "cat!", "Cat", "a, b", "ünï", "dog"]


def manifest() -> pd.DataFrame:
    n = 12
    return pd.DataFrame(
        {
            "sample_id": [f"{CLASSES[i % 6]}/circle_{i:03d}.png" for i in range(n)],
            "split": ["train"] * 8 + ["test"] * 4,
            "label": [i % 6 for i in range(n)],
            "row": pd.array([*range(11), None], dtype="Int64"),
            "keep": [True] * 10 + [False, True],
        }
    )


@pytest.fixture
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (12, 3, 4, 4), dtype=np.uint8)


def imagefolder_classes(split_dir) -> list[str]:
    """What torchvision's ImageFolder takes as classes: the sorted sub-folder names."""
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir())


def test_imagefolder_names_are_distinct_reversible_and_in_class_order(tmp_path, pixels):
    out = tmp_path / "export"
    info = export_kept(manifest(), pixels, CLASSES, out, "imagefolder")
    index = json.loads((out / "classes.json").read_text())
    assert [c["name"] for c in index] == CLASSES and [c["index"] for c in index] == list(range(6))
    folders = [c["folder"] for c in index]
    # "cat?", "cat!" and "Cat" all sanitise to "cat" (alike on a case-insensitive disk); unsorted, so indexed.
    assert folders == ["0_cat", "1_cat_2", "2_Cat_3", "3_a_b", "4_n", "5_dog"]
    for split in ("train", "test"):
        assert imagefolder_classes(out / split) == folders  # every class, in class index order
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert len(pngs) == info["samples"] == 10
    assert "train/0_cat/0000000_cat___circle_000.png" in pngs and not any(p.endswith(".png.png") for p in pngs)
    assert info["splits"] == {"test": "test", "train": "train"} and info["classes"] == CLASSES


def test_sorted_class_names_keep_plain_folder_names(tmp_path, pixels):
    out = tmp_path / "export"
    frame = manifest().assign(label=lambda f: f["label"] % 3)
    export_kept(frame, pixels, ["bird", "cat", "dog"], out, "imagefolder")
    assert imagefolder_classes(out / "train") == ["bird", "cat", "dog"]


def test_parquet_keeps_class_names_with_commas(tmp_path, pixels):
    out = tmp_path / "export"
    export_kept(manifest(), pixels, CLASSES, out, "parquet")
    meta = pq.read_schema(out / "train.parquet").metadata
    assert json.loads(meta[b"classes"]) == CLASSES
    features = json.loads(meta[b"huggingface"])["info"]["features"]
    assert features["label"] == {"names": CLASSES, "_type": "ClassLabel"}
    listing = list_hf_parquet(out)
    assert listing.classes == CLASSES
    assert sum(pq.read_table(p).num_rows for p in out.glob("*.parquet")) == 10


def test_export_folders_get_the_umask_mode(tmp_path, pixels):
    out = tmp_path / "export"
    export_kept(manifest(), pixels, CLASSES, out, "imagefolder")
    mask = os.umask(0)
    os.umask(mask)
    assert {oct(p.stat().st_mode & 0o777) for p in [out, *out.rglob("*")] if p.is_dir()} == {oct(0o777 & ~mask)}
    assert {oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.is_file()} == {oct(0o666 & ~mask)}


def test_failed_export_keeps_the_previous_one(tmp_path, pixels, monkeypatch):
    out = tmp_path / "export"
    export_kept(manifest(), pixels, CLASSES, out, "parquet")
    before = sorted(p.name for p in out.iterdir())
    calls = []

    def failing_png(image):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("killed midway")
        return b"png"

    monkeypatch.setattr(mexport, "_png", failing_png)
    with pytest.raises(RuntimeError):
        export_kept(manifest(), pixels, CLASSES, out, "imagefolder")
    assert sorted(p.name for p in out.iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
