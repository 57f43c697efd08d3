"""Exact and near-duplicate detection over the ingested pixel array.

* Exact duplicates share the SHA-256 of their decoded pixels (``pixel_sha256``).
* Near duplicates are pairs whose 64-bit perceptual hashes (imagehash's
  ``phash`` by default) differ in at most ``max_distance`` bits. All such pairs
  are found by multi-index hashing: the 64 bits are cut into ``m`` chunks; by the
  pigeonhole principle two hashes within distance ``r`` agree to within
  ``r // m`` bits on at least one chunk, so candidates come from table look-ups
  of each chunk and its few bit-flip neighbours, and are verified with an XOR and
  a popcount. No Python loop runs over pairs.
* Near-constant images (blank, flat) all hash alike; they are excluded from the
  near search (they still form exact groups when their pixels are identical).
* Groups are the connected components of the exact and near pairs. A group is
  flagged ``label_conflict`` when its members carry different labels and
  ``cross_split`` when it spans several splits (train/test leakage).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from math import comb
from typing import Any

import imagehash
import numpy as np
import pandas as pd
import scipy.fft
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from memclean.errors import MemcleanError
from memclean.progress import Progress, no_progress
from memclean.schema import DUPLICATES_SCHEMA

log = logging.getLogger(__name__)

HASH_METHODS = ("phash", "dhash", "whash", "average_hash")
HASH_BITS = 64
_ANTIALIAS = Image.Resampling.LANCZOS


# --------------------------------------------------------------------------- hashing


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
        batch = np.asarray(pixels[start : start + batch_size])
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
        out[start : start + len(batch)] = batch.reshape(len(batch), -1).std(axis=1) < min_std
    return out


# --------------------------------------------------------------------------- radius search


def popcount(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint64."""
    return np.bitwise_count(x)


def brute_force_pairs(hashes: np.ndarray, radius: int, block: int = 1024) -> np.ndarray:
    """All ``(i, j)``, ``i < j`` with Hamming distance ≤ ``radius``: blocked XOR + popcount.

    Quadratic; the reference that :func:`radius_pairs` is tested against.
    """
    h = np.asarray(hashes, dtype=np.uint64)
    found = []
    for start in range(0, len(h), block):
        d = popcount(h[start : start + block, None] ^ h[None, :])
        i, j = np.nonzero(d <= radius)
        i = i + start
        keep = i < j
        found.append(np.stack([i[keep], j[keep]], axis=1))
    return _sorted_pairs(np.concatenate(found) if found else np.empty((0, 2), np.int64))


def _sorted_pairs(pairs: np.ndarray) -> np.ndarray:
    pairs = pairs.astype(np.int64).reshape(-1, 2)
    if len(pairs) == 0:
        return pairs
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return pairs[order]


@dataclass(frozen=True)
class _Plan:
    chunks: tuple[tuple[int, int], ...]  # (shift, width) per chunk
    per_chunk_radius: int


def _chunks(m: int) -> tuple[tuple[int, int], ...]:
    widths = [HASH_BITS // m + (1 if k < HASH_BITS % m else 0) for k in range(m)]
    out, shift = [], HASH_BITS
    for w in widths:
        shift -= w
        out.append((shift, w))
    return tuple(out)


def _plan(n: int, radius: int) -> _Plan:
    """Choose the chunk count minimising the expected look-ups plus candidates."""
    best: tuple[float, _Plan] | None = None
    for m in range(1, min(radius + 1, 16) + 1):
        chunks = _chunks(m)
        s = radius // m
        wmax = max(w for _, w in chunks)
        wmin = min(w for _, w in chunks)
        probes = sum(comb(wmax, k) for k in range(s + 1))
        cost = m * probes * (n + 2.0 * n * n / 2.0**wmin)
        if wmax > 24:
            cost *= 4.0  # sorted search instead of a direct table
        if best is None or cost < best[0]:
            best = (cost, _Plan(chunks, s))
    assert best is not None
    return best[1]


def _flip_masks(width: int, s: int) -> np.ndarray:
    masks = [0]
    for k in range(1, s + 1):
        for bits in itertools.combinations(range(width), k):
            masks.append(sum(1 << b for b in bits))
    return np.asarray(masks, dtype=np.int64)


def _blocks(cnt: np.ndarray, max_candidates: int) -> list[tuple[int, int]]:
    """Split query rows into runs of at most ``max_candidates`` candidates each."""
    cum = np.cumsum(cnt)
    if len(cum) == 0 or cum[-1] == 0:
        return []
    cuts = np.searchsorted(cum, np.arange(max_candidates, int(cum[-1]), max_candidates), side="right")
    bounds = np.unique(np.concatenate([[0], cuts, [len(cnt)]]))
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def radius_pairs(hashes: np.ndarray, radius: int, max_candidates: int = 8_000_000) -> np.ndarray:
    """All pairs ``(i, j)``, ``i < j``, whose hashes differ in at most ``radius`` bits.

    Multi-index hashing (see the module docstring); exact, same result as
    :func:`brute_force_pairs`. Each unordered candidate pair is generated once per
    chunk: within a bucket only later members are taken, and between two buckets
    only from the lower bucket. Memory is bounded by ``max_candidates`` per step.

    Parameters
    ----------
    hashes
        ``(N,)`` uint64.
    radius
        Hamming radius, 0–63.
    max_candidates
        Candidate pairs materialised at once.

    Returns
    -------
    numpy.ndarray
        ``(P, 2)`` int64, sorted by ``i`` then ``j``.
    """
    h = np.asarray(hashes, dtype=np.uint64)
    n = len(h)
    if not 0 <= radius < HASH_BITS:
        raise ValueError(f"radius must be in [0, 63], got {radius}")
    if n < 2:
        return np.empty((0, 2), np.int64)
    plan = _plan(n, radius)
    s = plan.per_chunk_radius
    ids = np.arange(n, dtype=np.int64)
    found: list[np.ndarray] = []  # keys i * n + j
    for c, (shift, width) in enumerate(plan.chunks):
        v = ((h >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
        order = np.argsort(v, kind="stable")  # members of a bucket in increasing index
        pos = np.empty(n, np.int64)
        pos[order] = ids
        if width <= 24:
            counts = np.bincount(v, minlength=1 << width)
            starts = np.cumsum(counts) - counts

            def bucket(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                return starts[q], counts[q]  # noqa: B023 (called within this iteration)
        else:
            sv = v[order]

            def bucket(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                lo = np.searchsorted(sv, q, "left")  # noqa: B023 (called within this iteration)
                return lo, np.searchsorted(sv, q, "right") - lo  # noqa: B023

        for mask in _flip_masks(width, s):
            if mask == 0:
                queries = ids
                lo, cnt = bucket(v)
                end = lo + cnt
                lo = pos + 1  # later members of the same bucket only: j > i
                cnt = end - lo
            else:
                q = v ^ mask
                queries = np.nonzero(v < q)[0]  # each pair of buckets once
                lo, cnt = bucket(q[queries])
            for a, b in _blocks(cnt, max_candidates):
                c_cnt = cnt[a:b]
                total = int(c_cnt.sum())
                if total == 0:
                    continue
                qi = np.repeat(queries[a:b], c_cnt)
                shift_idx = np.repeat(lo[a:b] - (np.cumsum(c_cnt) - c_cnt), c_cnt)
                cj = order[np.arange(total, dtype=np.int64) + shift_idx]
                x = h[qi] ^ h[cj]
                ok = popcount(x) <= radius
                if not ok.any():
                    continue
                qi, cj, x = qi[ok], cj[ok], x[ok]
                # A pair within s bits on an earlier chunk was already found there.
                keep = np.ones(len(x), bool)
                for shift0, width0 in plan.chunks[:c]:
                    keep &= popcount((x >> np.uint64(shift0)) & np.uint64((1 << width0) - 1)) > s
                lo_id, hi_id = np.minimum(qi[keep], cj[keep]), np.maximum(qi[keep], cj[keep])
                found.append(lo_id * n + hi_id)
    keys = np.sort(np.concatenate(found)) if found else np.empty(0, np.int64)
    return np.stack([keys // n, keys % n], axis=1)


# --------------------------------------------------------------------------- groups


@dataclass
class DedupResult:
    """The duplicates table (one row per grouped sample) and summary counts."""

    duplicates: pd.DataFrame
    stats: dict[str, Any]


def find_duplicates(
    samples: pd.DataFrame,
    pixels: np.ndarray,
    method: str = "phash",
    max_distance: int = 4,
    min_pixel_std: float = 2.0,
    progress: Progress | None = None,
) -> DedupResult:
    """Group exact and near duplicates among the ``ok`` rows of the samples table.

    Parameters
    ----------
    samples
        The ingest samples table (quarantined rows are ignored).
    pixels
        The ingest pixel array; ``samples.row`` indexes it.
    method
        Perceptual hash, one of :data:`HASH_METHODS`.
    max_distance
        Hamming radius for near duplicates (0 = identical hashes only).
    min_pixel_std
        Images with a pixel standard deviation below this are flat and are not
        put into near groups.

    Returns
    -------
    DedupResult
        Rows follow :data:`memclean.schema.DUPLICATES_SCHEMA`.
    """
    ok = samples[samples["status"] == "ok"].sort_values("row")
    rows = ok["row"].to_numpy(dtype=np.int64)
    if len(pixels) != len(rows) or not np.array_equal(rows, np.arange(len(rows))):
        raise MemcleanError("samples.row does not match pixels.npy: rerun the ingest stage")
    n = len(ok)
    hashes = compute_hashes(pixels, method, progress=progress) if n else np.empty(0, np.uint64)
    flat = flat_mask(pixels, min_pixel_std) if n else np.empty(0, bool)

    # Exact pairs: chain each set of identical digests.
    digest = ok["pixel_sha256"].to_numpy()
    codes, _ = pd.factorize(digest)
    order = np.argsort(codes, kind="stable")
    same = codes[order][1:] == codes[order][:-1]
    exact_pairs = np.stack([order[:-1][same], order[1:][same]], axis=1) if n > 1 else np.empty((0, 2), np.int64)

    # Near pairs among non-flat images.
    candidates = np.nonzero(~flat)[0]
    near_local = radius_pairs(hashes[candidates], max_distance)
    near_pairs = candidates[near_local] if len(near_local) else np.empty((0, 2), np.int64)

    edges = np.concatenate([exact_pairs, near_pairs]).astype(np.int64)
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp, minlength=comp.max() + 1 if n else 0)
    in_group = sizes[comp] > 1 if n else np.zeros(0, bool)

    members = np.nonzero(in_group)[0]  # positions, already in row order
    frame = ok.iloc[members][["sample_id", "label", "split", "pixel_sha256"]].reset_index(drop=True)
    comp_m = comp[members]
    # Representative: first member in dataset order; group ids follow representatives.
    first_pos: dict[int, int] = {}
    for pos, cid in zip(members, comp_m):
        first_pos.setdefault(int(cid), int(pos))
    gid_of = {cid: g for g, cid in enumerate(sorted(first_pos, key=first_pos.__getitem__))}
    rep = np.array([first_pos[int(c)] for c in comp_m], dtype=np.int64)
    frame["group_id"] = np.array([gid_of[int(c)] for c in comp_m], dtype=np.int64)
    frame["is_representative"] = rep == members
    frame["distance"] = popcount(hashes[members] ^ hashes[rep]).astype(np.int16)
    digest_count = frame.groupby(["group_id", "pixel_sha256"])["sample_id"].transform("size")
    frame["kind"] = np.where(digest_count > 1, "exact", "near")
    labels = frame["label"].astype("Int64")
    frame["label_conflict"] = (
        labels.groupby(frame["group_id"]).transform(lambda s: s.nunique(dropna=False) > 1).astype(bool)
    )
    frame["cross_split"] = frame.groupby("group_id")["split"].transform("nunique").gt(1)
    frame = frame[DUPLICATES_SCHEMA.names].sort_values(["group_id", "distance", "sample_id"], kind="stable")
    frame = frame.reset_index(drop=True)

    groups = frame.groupby("group_id")
    all_exact = groups["pixel_sha256"].nunique() == 1
    stats = {
        "method": method,
        "max_distance": int(max_distance),
        "images": int(n),
        "flat_excluded": int(flat.sum()),
        "exact_pairs": len(exact_pairs),
        "near_pairs": len(near_pairs),
        "groups": int(frame["group_id"].nunique()),
        "exact_groups": int(all_exact.sum()),
        "near_groups": int((~all_exact).sum()),
        "samples_in_groups": len(frame),
        "label_conflict_groups": int(groups["label_conflict"].first().sum()),
        "cross_split_groups": int(groups["cross_split"].first().sum()),
    }
    log.info("duplicates: %s", stats)
    return DedupResult(frame, stats)
