"""Hashing sharded over executors (same bytes everywhere) and the ``processes`` executor itself."""

from __future__ import annotations

import os

import numpy as np
import pytest

from memclean.errors import MemcleanError
from memclean.executor import _by_reference, _Mapped, map_jobs
from memclean.hashing import choose_executor, compute_hashes, flat_mask, hash_pixels


def _pixels(tmp_path, n: int = 150) -> np.ndarray:
    """``n`` random 3×32×32 images, a few flat ones among them, memory-mapped from a ``.npy`` file."""
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    images[::17] = 128  # flat
    path = tmp_path / "pixels.npy"
    np.save(path, images)
    return np.load(path, mmap_mode="r")


def test_sharded_hashing_gives_the_local_bytes(tmp_path):
    pixels = _pixels(tmp_path)
    local = hash_pixels(pixels, "phash", 2.0, "local")
    assert np.array_equal(local[0], compute_hashes(np.asarray(pixels), "phash"))
    assert local[1].sum() == len(range(0, len(pixels), 17)) and np.array_equal(local[1], flat_mask(pixels, 2.0))
    # Blocks of 37 rows over 2 worker processes: the pieces come back in row order.
    sharded = hash_pixels(pixels, "phash", 2.0, "processes", workers=2, shard_rows=37)
    assert sharded[0].dtype == np.uint64 and sharded[0].tobytes() == local[0].tobytes()
    assert sharded[1].tobytes() == local[1].tobytes()
    other = hash_pixels(pixels, "dhash", 2.0, "processes", workers=2, shard_rows=64)
    assert other[0].tobytes() == hash_pixels(pixels, "dhash", 2.0, "local")[0].tobytes()


def test_hashing_on_a_dask_cluster_gives_the_local_bytes(tmp_path):
    pytest.importorskip("distributed")
    pixels = _pixels(tmp_path, 90)
    local = hash_pixels(pixels, "phash", 2.0, "local")
    dask = hash_pixels(pixels, "phash", 2.0, "dask", shard_rows=40)
    assert dask[0].tobytes() == local[0].tobytes() and dask[1].tobytes() == local[1].tobytes()


def test_auto_shards_only_large_sets_on_several_cores():
    assert choose_executor("auto", 1_000) == "local"
    assert choose_executor("processes", 10) == "processes"
    big = choose_executor("auto", 5_000_000)
    assert big == ("processes" if len(os.sched_getaffinity(0)) > 1 else "local")


def test_a_memory_map_travels_by_file_name_and_a_slice_by_value(tmp_path):
    pixels = _pixels(tmp_path, 20)
    ref = _by_reference(pixels)
    assert isinstance(ref, _Mapped)
    assert np.array_equal(ref.open(), pixels)
    # A slice of the map keeps its parent's offset attribute: sent as data, never mis-mapped.
    part = pixels[5:9]
    assert _by_reference(part) is part
    assert not isinstance(_by_reference(np.arange(4)), _Mapped)


def _row_sum(rows: tuple[int, int], pixels: np.ndarray) -> int:
    return int(np.asarray(pixels[rows[0] : rows[1]], dtype=np.int64).sum())


def _fail(job: int) -> int:
    if job == 2:
        raise ValueError("job 2 is bad")
    return job


def _die(job: int) -> int:
    os._exit(3)


def test_processes_return_results_in_job_order_and_reraise_errors(tmp_path):
    pixels = _pixels(tmp_path, 30)
    jobs = [(0, 10), (10, 20), (20, 30)]
    sums = map_jobs(_row_sum, jobs, "processes", shared={"pixels": pixels}, workers=2)
    assert sums == [_row_sum(j, pixels) for j in jobs]
    with pytest.raises(ValueError, match="job 2 is bad"):
        map_jobs(_fail, [0, 1, 2, 3], "processes", workers=2)


def test_a_worker_that_dies_is_a_one_line_error():
    with pytest.raises(MemcleanError, match="a worker process died"):
        map_jobs(_die, [0, 1], "processes", workers=1)


def test_an_unknown_executor_is_refused():
    with pytest.raises(MemcleanError, match="unknown executor"):
        map_jobs(_fail, [0], "threads")  # type: ignore[arg-type]
