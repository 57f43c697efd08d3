"""Perceptual hashes and flat-image masks of the ingested pixels, sharded across workers.

:func:`compute_hashes` gives imagehash's 64-bit hashes (``phash`` bit-for-bit, with a batched
DCT); :func:`flat_mask` marks near-constant images. :func:`hash_pixels` does both over blocks
of rows, in this process or across worker processes or a Dask cluster
(:mod:`memclean.executor`); the blocks are put back in row order, so the result is the same
bytes whichever executor ran them. This module imports neither torch nor faiss, so worker
processes start quickly.
"""

from __future__ import annotations

import logging

import imagehash
import numpy as np
import scipy.fft
from PIL import Image

from memclean.errors import MemcleanError
from memclean.executor import Executor, map_jobs, usable_cores
from memclean.io import release_pages
from memclean.progress import Progress, no_progress

log = logging.getLogger(__name__)

HASH_METHODS = ("phash", "dhash", "whash", "average_hash")
_ANTIALIAS = Image.Resampling.LANCZOS

#: Rows per job when hashing is sharded (a job is ~0.6 s of phash on one core).
SHARD_ROWS = 16_384
#: ``executor: auto`` shards hashing across processes from this many images up: below it,
#: starting the workers (~1-2 s each) costs more than the hashing they save (~40 µs/image).
PROCESSES_FROM = 200_000


def _to_pil(image: np.ndarray) -> Image.Image:
    """C×H×W uint8 → PIL image (L or RGB)."""
    if image.shape[0] == 1:
        return Image.fromarray(np.ascontiguousarray(image[0]), "L")
    return Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)), "RGB")


def bits_to_uint64(bits: np.ndarray) -> np.ndarray:
    """Pack ``(N, 64)`` booleans (row-major, first bit most significant) into uint64.

    This is the integer imagehash prints as hex: ``int(str(h), 16)``.
    """
    packed = np.packbits(bits.reshape(len(bits), -1).astype(np.uint8), axis=1)
    return packed.view(">u8").reshape(-1).astype(np.uint64)


def _phash_batch(images: np.ndarray) -> np.ndarray:
    """imagehash.phash (hash_size 8) for a batch, bit-for-bit: PIL resize, batched DCT."""
    small = np.stack([np.asarray(_to_pil(im).convert("L").resize((32, 32), _ANTIALIAS)) for im in images])
    dct = scipy.fft.dct(scipy.fft.dct(small.astype(np.float64), axis=1), axis=2)
    low = dct[:, :8, :8].reshape(len(images), 64)
    med = np.median(low, axis=1, keepdims=True)
    return low > med


def compute_hashes(
    pixels: np.ndarray,
    method: str = "phash",
    batch_size: int = 2048,
    progress: Progress | None = None,
) -> np.ndarray:
    """Perceptual hash of every image as a uint64.

    Parameters
    ----------
    pixels
        ``N×C×H×W`` uint8 (``C`` 1 or 3), e.g. the memory-mapped ingest output.
    method
        One of :data:`HASH_METHODS` (imagehash functions, 64-bit).
    batch_size
        Images per batch (bounds memory).
    progress
        Optional wrapper ``progress(iterable, description, total)``.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` uint64; bit order as imagehash's hex string.
    """
    if method not in HASH_METHODS:
        raise MemcleanError(f"unknown dedup.hash {method!r}; choose one of {', '.join(HASH_METHODS)}")
    n = len(pixels)
    out = np.empty(n, dtype=np.uint64)
    starts = range(0, n, batch_size)
    wrap = progress or no_progress
    for start in wrap(starts, f"hash ({method})", len(starts)):
        batch = np.array(pixels[start : start + batch_size])
        release_pages(pixels)
        if method == "phash":
            bits = _phash_batch(batch)
        else:
            fn = getattr(imagehash, method)
            bits = np.stack([fn(_to_pil(im), hash_size=8).hash.reshape(-1) for im in batch])
        out[start : start + len(batch)] = bits_to_uint64(bits)
    return out


def flat_mask(pixels: np.ndarray, min_std: float, batch_size: int = 8192) -> np.ndarray:
    """True for near-constant images (pixel standard deviation below ``min_std``)."""
    out = np.empty(len(pixels), dtype=bool)
    for start in range(0, len(pixels), batch_size):
        batch = np.asarray(pixels[start : start + batch_size], dtype=np.float32)
        release_pages(pixels)
        out[start : start + len(batch)] = batch.reshape(len(batch), -1).std(axis=1) < min_std
    return out


def _hash_block(
    rows: tuple[int, int], pixels: np.ndarray, method: str, min_std: float
) -> tuple[np.ndarray, np.ndarray]:
    """One job: hashes and flat flags of ``pixels[rows[0]:rows[1]]`` (module level, so workers can run it)."""
    block = pixels[rows[0] : rows[1]]
    return compute_hashes(block, method), flat_mask(block, min_std)


def choose_executor(asked: str, n: int) -> Executor:
    """``auto`` → ``processes`` from :data:`PROCESSES_FROM` images on a machine with several cores, else ``local``."""
    if asked != "auto":
        return asked  # type: ignore[return-value]
    return "processes" if n >= PROCESSES_FROM and usable_cores() > 1 else "local"


def hash_pixels(
    pixels: np.ndarray,
    method: str,
    min_std: float,
    executor: str = "local",
    address: str | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
    shard_rows: int = SHARD_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """Perceptual hash and flat flag of every image, sharded by rows over an executor.

    Parameters
    ----------
    pixels
        ``N×C×H×W`` uint8 (a memory map from ``np.load(..., mmap_mode="r")`` travels to
        worker processes by file name, not by value).
    method
        One of :data:`HASH_METHODS`.
    min_std
        Images with a pixel standard deviation below this are flat (:func:`flat_mask`).
    executor
        ``local``, ``processes``, ``dask`` or ``auto`` (:func:`choose_executor`).
    address
        Dask scheduler address (``dask``; ``None`` starts a ``LocalCluster``).
    workers
        Worker processes (``None``: one per usable core).
    progress
        Optional wrapper ``progress(iterable, description, total)``.
    shard_rows
        Rows per job.

    Returns
    -------
    tuple of numpy.ndarray
        ``(N,)`` uint64 hashes (as :func:`compute_hashes`) and ``(N,)`` bool flat flags; the
        same bytes for every executor.
    """
    if method not in HASH_METHODS:
        raise MemcleanError(f"unknown dedup.hash {method!r}; choose one of {', '.join(HASH_METHODS)}")
    n = len(pixels)
    engine = choose_executor(executor, n)
    if engine == "local":
        return compute_hashes(pixels, method, progress=progress), flat_mask(pixels, min_std)
    jobs = [(start, min(n, start + shard_rows)) for start in range(0, n, shard_rows)]
    shared = {"pixels": pixels if engine == "processes" else np.asarray(pixels), "method": method, "min_std": min_std}
    parts = map_jobs(
        _hash_block,
        jobs,
        engine,
        address,
        shared=shared,
        progress=progress,
        desc=f"hash blocks ({method})",
        workers=workers,
    )
    if not parts:
        return np.empty(0, np.uint64), np.empty(0, bool)
    return np.concatenate([h for h, _ in parts]), np.concatenate([f for _, f in parts])
