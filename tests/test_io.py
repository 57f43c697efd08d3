"""Atomic writes: a failure leaves the previous file intact and no temp files behind."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from memclean.errors import MemcleanError
from memclean.io import (
    AtomicNpyWriter,
    load_pixels,
    params_digest,
    read_metadata,
    read_parquet,
    save_npy,
    write_json,
    write_parquet,
)
from memclean.schema import SAMPLES_SCHEMA


def test_failed_write_keeps_previous_output(tmp_path):
    target = tmp_path / "pixels.npy"
    save_npy(np.ones((2, 1, 4, 4), np.uint8), target)
    with pytest.raises(RuntimeError):
        with AtomicNpyWriter(target, (3, 1, 4, 4)) as w:
            w.array[0] = 7
            raise RuntimeError("killed")
    np.testing.assert_array_equal(np.load(target), np.ones((2, 1, 4, 4), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pixels.npy"]


def test_json_rejects_nan_and_keeps_old(tmp_path):
    path = tmp_path / "m.json"
    write_json({"a": 1}, path)
    with pytest.raises(ValueError):
        write_json({"a": float("nan")}, path)
    assert path.read_text().strip() == '{\n  "a": 1\n}'


def test_parquet_roundtrip_with_metadata_and_schema_check(tmp_path):
    frame = pd.DataFrame(
        {
            "sample_id": ["a"], "source": ["a.png"], "split": ["train"], "label": [1], "label_name": ["x"],
            "width": [4], "height": [4], "channels": [3], "orig_mode": ["RGB"], "pixel_sha256": ["00"],
            "status": ["ok"], "reason": [None], "detail": [None], "row": [0],
        }
    )
    path = tmp_path / "s.parquet"
    write_parquet(frame, path, SAMPLES_SCHEMA, metadata={"classes": ["x", "y"]})
    back = read_parquet(path, SAMPLES_SCHEMA)
    assert back["sample_id"].tolist() == ["a"] and back["label"].tolist() == [1]
    assert read_metadata(path)["classes"] == ["x", "y"]
    with pytest.raises(ValueError, match="not in the schema"):
        write_parquet(frame.assign(extra=1), path, SAMPLES_SCHEMA)
    write_parquet(frame, tmp_path / "short.parquet", SAMPLES_SCHEMA)
    pd.DataFrame({"sample_id": ["a"]}).to_parquet(tmp_path / "short.parquet")
    with pytest.raises(MemcleanError, match="lacks columns"):
        read_parquet(tmp_path / "short.parquet", SAMPLES_SCHEMA)
    with pytest.raises(MemcleanError, match="does not exist"):
        read_parquet(tmp_path / "none.parquet")


def test_load_pixels_validates(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(MemcleanError, match="not a uint8"):
        load_pixels(tmp_path / "bad.npy")
    with pytest.raises(MemcleanError, match="run the ingest stage"):
        load_pixels(tmp_path / "missing.npy")


def test_params_digest_is_order_independent():
    assert params_digest({"a": 1, "b": [1, 2]}) == params_digest({"b": [1, 2], "a": 1})
    assert params_digest({"a": 1}) != params_digest({"a": 2})


def test_published_files_get_the_umask_mode(tmp_path):
    import os

    write_json({"a": 1}, tmp_path / "m.json")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o666 & ~mask
