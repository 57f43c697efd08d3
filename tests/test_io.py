"""Atomic writes: a failure leaves the previous file intact and no temp files behind."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from memclean import io as mio
from memclean.errors import MemcleanError
from memclean.io import (
    StagedArray,
    array_digest,
    atomic_dir,
    atomic_path,
    clean_stale_temps,
    load_pair,
    load_pixels,
    params_digest,
    publish_pair,
    read_metadata,
    read_parquet,
    save_npy,
    write_json,
    write_parquet,
)
from memclean.schema import SAMPLES_SCHEMA


def umask_mode(base: int) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(proc.stdout)


def samples_frame(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(n)],
            "source": [f"s{i}.png" for i in range(n)],
            "split": ["train"] * n,
            "label": [0] * n,
            "label_name": ["x"] * n,
            "width": [4] * n,
            "height": [4] * n,
            "channels": [1] * n,
            "orig_mode": ["L"] * n,
            "pixel_sha256": ["00"] * n,
            "status": ["ok"] * n,
            "reason": [None] * n,
            "detail": [None] * n,
            "row": list(range(n)),
        }
    )


def publish(tmp_path, pixels: np.ndarray) -> str:
    with StagedArray(tmp_path / "pixels.npy", pixels.shape) as staged:
        staged.array[...] = pixels
        return publish_pair(samples_frame(len(pixels)), tmp_path / "samples.parquet", staged, {"classes": ["x"]})


def test_failed_write_keeps_previous_output(tmp_path):
    target = tmp_path / "pixels.npy"
    save_npy(np.ones((2, 1, 4, 4), np.uint8), target)
    with pytest.raises(RuntimeError), StagedArray(target, (3, 1, 4, 4)) as staged:
        staged.array[0] = 7
        raise RuntimeError("killed")
    with StagedArray(target, (3, 1, 4, 4)) as staged:
        staged.array[0] = 7  # not committed: leaving the block discards it
    np.testing.assert_array_equal(np.load(target), np.ones((2, 1, 4, 4), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pixels.npy"]


def test_staged_array_is_preallocated_named_uniquely_and_truncated_in_place(tmp_path):
    target = tmp_path / "pixels.npy"
    with StagedArray(target, (300, 3, 32, 32)) as a, StagedArray(target, (300, 3, 32, 32)) as b:
        assert a.array.filename != b.array.filename  # two writers never share a staging file
        staged = os.stat(a.array.filename)
        assert staged.st_blocks * 512 >= staged.st_size >= 300 * 3 * 32 * 32  # no holes: no SIGBUS on a full disk
        assert os.path.basename(a.array.filename).startswith(".pixels.npy.memclean-new-")
        a.array[...] = np.arange(300, dtype=np.uint8)[:, None, None, None]
        a.truncate(7)
        a.commit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = np.load(target)
    np.testing.assert_array_equal(
        back, np.broadcast_to(np.arange(7, dtype=np.uint8)[:, None, None, None], (7, 3, 32, 32))
    )
    assert os.path.getsize(target) == 128 + back.nbytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pixels.npy"]


def test_absurd_size_is_refused_before_allocating(tmp_path, monkeypatch):
    monkeypatch.setattr(mio.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**12, 10**12 - 10**9, 10**9))
    with pytest.raises(MemcleanError) as info:
        StagedArray(tmp_path / "pixels.npy", (100, 3, 100_000, 100_000))
    msg = str(info.value)
    assert (
        "\n" not in msg
        and "~3,000,000 MB" in msg
        and "100×3×100000×100000 uint8" in msg
        and "~1,000 MB are free" in msg
    )
    assert list(tmp_path.iterdir()) == []


def test_full_disk_is_a_one_line_error_and_leaves_nothing(tmp_path, monkeypatch):
    def full(*_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mio.os, "posix_fallocate", full)
    with pytest.raises(
        MemcleanError,
        match=r"^no space left on device while writing .*pixels.npy \(needs ~2 MB\): free space and rerun$",
    ):
        StagedArray(tmp_path / "pixels.npy", (2, 1, 1000, 1000))
    monkeypatch.setattr(mio.pq, "write_table", full)
    with pytest.raises(MemcleanError, match="no space left on device while writing .*s.parquet"):
        write_parquet(samples_frame(1), tmp_path / "s.parquet", SAMPLES_SCHEMA)
    with (
        pytest.raises(MemcleanError, match=r"I/O error .* while writing .*out \(needs ~1 MB\)"),
        atomic_dir(tmp_path / "out") as d,
    ):
        (d / "a").write_bytes(b"x" * 10**6)
        raise OSError(errno.EIO, "Input/output error")
    with pytest.raises(OSError, match="other"), atomic_path(tmp_path / "x"):  # any other OSError is not a disk problem
        raise OSError(errno.EACCES, "other")
    assert list(tmp_path.iterdir()) == []


def test_json_rejects_nan_and_keeps_old(tmp_path):
    path = tmp_path / "m.json"
    write_json({"a": 1}, path)
    with pytest.raises(ValueError):
        write_json({"a": float("nan")}, path)
    assert path.read_text().strip() == '{\n  "a": 1\n}'


def test_parquet_roundtrip_with_metadata_and_schema_check(tmp_path):
    frame = pd.DataFrame(
        {
            "sample_id": ["a"],
            "source": ["a.png"],
            "split": ["train"],
            "label": [1],
            "label_name": ["x"],
            "width": [4],
            "height": [4],
            "channels": [3],
            "orig_mode": ["RGB"],
            "pixel_sha256": ["00"],
            "status": ["ok"],
            "reason": [None],
            "detail": [None],
            "row": [0],
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
    write_json({"a": 1}, tmp_path / "m.json")
    save_npy(np.zeros((1, 1, 2, 2), np.uint8), tmp_path / "p.npy")
    with atomic_dir(tmp_path / "d") as d:
        (d / "sub").mkdir()
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == umask_mode(0o666)
    assert (tmp_path / "p.npy").stat().st_mode & 0o777 == umask_mode(0o666)
    assert (tmp_path / "d").stat().st_mode & 0o777 == umask_mode(0o777)


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_atomic_dir_replaces_the_folder_as_a_whole(tmp_path, monkeypatch, exchange):
    swaps = []
    real = mio._exchange
    monkeypatch.setattr(mio, "_exchange", lambda a, b: swaps.append(exchange and real(a, b)) or swaps[-1])
    target = tmp_path / "roc"
    with atomic_dir(target) as d:
        (d / "a.csv").write_text("1")
        (d / "b.csv").write_text("1")
    with atomic_dir(target) as d:
        (d / "c.csv").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["c.csv"]
    assert swaps == [False, exchange]  # the first publish had no target to swap with
    with pytest.raises(RuntimeError), atomic_dir(target) as d:
        (d / "half.csv").write_text("3")
        raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["c.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roc"]


def test_clean_stale_temps_removes_only_ours_from_dead_writers(tmp_path):
    dead, alive = dead_pid(), os.getpid()
    (tmp_path / "export").mkdir()
    files = {
        f".pixels.npy.memclean-new-{dead}-abc12345.tmp": True,  # killed ingest's staging file
        f".export.memclean-new-{dead}-x_y.tmp/": True,  # killed export's staging folder
        f".m.json.memclean-new-{alive}-abc12345.tmp": False,  # a writer that still runs
        ".pixels.npy.staging.k2j4h5g6.tmp": True,  # names memclean 0.1 left
        "pixels.npy.staging": True,
        ".export.q1w2e3r4/": True,
        "pixels.npy": False,  # outputs and user files
        ".pixels.npy.backup": False,
        "notes.memclean-new-1-a.tmp": False,
        f".export.memclean-new-{dead}-abc.tmp.keep": False,
    }
    for name in files:
        path = tmp_path / name.rstrip("/")
        path.mkdir() if name.endswith("/") else path.write_bytes(b"x")
    removed = clean_stale_temps(tmp_path / "pixels.npy", tmp_path / "export", tmp_path)
    assert sorted(p.name for p in removed) == sorted(n.rstrip("/") for n, stale in files.items() if stale)
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"export"} | {n.rstrip("/") for n, stale in files.items() if not stale}


def test_clean_stale_temps_restores_a_folder_an_interrupted_swap_moved_away(tmp_path):
    old = tmp_path / f".roc.memclean-old-{dead_pid()}-abc.tmp"
    old.mkdir()
    (old / "a.csv").write_text("previous")
    (tmp_path / ".roc.q1w2e3r4").mkdir()
    clean_stale_temps(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roc"]
    assert (tmp_path / "roc" / "a.csv").read_text() == "previous"


def test_pair_identity(tmp_path):
    pixels = np.arange(2 * 16, dtype=np.uint8).reshape(2, 1, 4, 4)
    digest = publish(tmp_path, pixels)
    samples, back, meta = load_pair(tmp_path / "samples.parquet", tmp_path / "pixels.npy")
    assert meta["pixels_digest"] == digest == array_digest(pixels) and meta["classes"] == ["x"]
    np.testing.assert_array_equal(back, pixels)
    assert samples["row"].tolist() == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pixels.npy", "samples.parquet"]
    save_npy(pixels[::-1].copy(), tmp_path / "pixels.npy")  # pixels of another run
    with pytest.raises(MemcleanError) as info:
        load_pair(tmp_path / "samples.parquet", tmp_path / "pixels.npy")
    assert str(info.value) == (
        "samples.parquet and pixels.npy are from different ingest runs: rerun ingest or `dvc checkout`"
    )
    write_parquet(samples_frame(2), tmp_path / "samples.parquet", SAMPLES_SCHEMA)
    with pytest.raises(MemcleanError, match="has no pixels_digest"):
        load_pair(tmp_path / "samples.parquet", tmp_path / "pixels.npy")
    # A downstream table (the clean manifest) that carries the digest pairs the same way.
    write_parquet(
        pd.DataFrame({"keep": [True]}),
        tmp_path / "m.parquet",
        pa.schema([("keep", pa.bool_())]),
        {"pixels_digest": digest},
    )
    with pytest.raises(MemcleanError, match="m.parquet and pixels.npy are from different ingest runs"):
        load_pair(tmp_path / "m.parquet", tmp_path / "pixels.npy", schema=None)
    save_npy(pixels, tmp_path / "pixels.npy")
    assert load_pair(tmp_path / "m.parquet", tmp_path / "pixels.npy", schema=None)[0]["keep"].tolist() == [True]


def _rss_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc only")
def test_release_pages_drops_a_memory_map_from_the_resident_set(tmp_path):
    """Reading a memory map leaves its pages resident; release_pages gives them back, data intact."""
    from memclean.io import release_pages

    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (64, 1024, 1024), dtype=np.uint8)  # 64 MiB
    np.save(tmp_path / "big.npy", data)
    arr = np.load(tmp_path / "big.npy", mmap_mode="r")
    before = _rss_file_kib()
    total = int(arr.sum(dtype=np.int64))  # reads every page
    read = _rss_file_kib()
    assert read - before > 48 * 1024, (before, read)
    release_pages(arr)
    assert _rss_file_kib() - before < 8 * 1024
    assert int(arr.sum(dtype=np.int64)) == int(data.sum(dtype=np.int64))  # read again from the page cache
    release_pages(data)  # not a memory map: nothing happens
    assert total == int(data.sum(dtype=np.int64))
