"""Exact, near and similar duplicates over the ingested pixel array: pairs first, then groups.

* **Exact** duplicates share the SHA-256 of their decoded pixels (``pixel_sha256``).
  Identical images are collapsed to the first of each set before the near search.
* **Candidates** for near copies come from two cheap sources:

  - perceptual hashes (imagehash's ``phash`` by default) within ``max_distance`` bits,
    found by multi-index hashing: the 64 bits are cut into ``m`` chunks; by the
    pigeonhole principle two hashes within distance ``r`` agree to within ``r // m``
    bits on at least one chunk, so candidates come from table look-ups of each chunk
    and its few bit-flip neighbours, checked with an XOR and a popcount. Hashes are
    skipped for images whose shorter side is under ``min_hash_side`` (phash works on a
    32×32 resize: below that its bits carry no information about the image);
  - the ``knn_k`` nearest neighbours of each image in low-resolution pixel space
    (:mod:`memclean.nearcopy`: blurred colour thumbnails, queried as the image, its
    mirror image and a few shifted versions).

* **Verification.** Every candidate pair gets a similarity in ``[-1, 1]`` (the best
  normalised cross-correlation over small shifts, zooms and a mirror, coarse-to-fine; see
  :mod:`memclean.nearcopy`). Pairs at or above ``near_threshold`` are ``near`` (one photo,
  edited); pairs between ``similar_threshold`` and ``near_threshold`` are ``similar`` (same
  scene, another shot): written to the pairs table, never grouped. Grey structure alone
  confuses look-alike scenes of other colours, so a pair whose mean colours differ beyond
  ``colour_tolerance`` (brightness and contrast do not count) is near only from
  ``recoloured_near_threshold``; and another shot of one scene matches as a whole but not
  where its subject moved, so a pair is near only when every detailed cell of the fine
  check also correlates at ``local_threshold`` or more.
* **Groups** are built from exact and verified near pairs only and cannot chain: a greedy
  star clustering takes the image with the most near pairs as a representative, gives it
  its verified near partners that are still free (at most ``max_group_size``; the cut is
  logged), and repeats. Every member is verified near to its representative. A group is
  flagged ``label_conflict`` when its members carry different labels and ``cross_split``
  when it spans several splits (train/test leakage).
* Near-constant images (blank, flat) all look alike; they are excluded from the near
  search (they still form exact groups when their pixels are identical).
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from math import comb
from typing import Any

import numpy as np
import pandas as pd
import torch

from memclean import copyembed, nearcopy
from memclean.errors import MemcleanError
from memclean.hashing import hash_pixels
from memclean.progress import Progress
from memclean.schema import DUPLICATE_PAIRS_SCHEMA, DUPLICATES_SCHEMA
from memclean.train import select_device

log = logging.getLogger(__name__)

#: Candidate sources, one bit each in the per-pair source mask.
HASH_BIT, KNN_BIT, EMBEDDING_BIT = 1, 2, 4


def _sources(hash_name: str) -> tuple[tuple[int, str], ...]:
    """``(bit, name)`` of each candidate source; the hash source is named ``hash_name``."""
    return ((HASH_BIT, hash_name), (KNN_BIT, "pixel_knn"), (EMBEDDING_BIT, "embedding"))


HASH_BITS = 64


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

#: Tiers of ``duplicate_pairs.parquet``'s ``kind``; only ``exact`` and ``near`` make groups.
PAIR_KINDS = ("exact", "near", "similar")
#: Least similar threshold for images under ``min_hash_side`` (8×8 digits of one class reach 0.9).
SMALL_SIMILAR_THRESHOLD = 0.90


def star_groups(n: int, pairs: np.ndarray, sim: np.ndarray, max_size: int) -> tuple[np.ndarray, int]:
    """Greedy star clustering of verified pairs: no group can chain.

    Nodes are taken in order of decreasing pair count (ties: lower index first). A node not
    yet in a group becomes a representative and takes its partners that are still free, most
    similar first, up to ``max_size`` members in all; partners beyond the cap stay free (and
    are counted). Every member is paired with its representative, so ``A~B``, ``B~C`` with
    ``A≁C`` never puts ``A`` and ``C`` together.

    Parameters
    ----------
    n
        Number of nodes.
    pairs
        ``(P, 2)`` int64 node pairs (each unordered pair once).
    sim
        ``(P,)`` similarity of each pair (orders a representative's partners).
    max_size
        Largest group, representative included (≥ 2).

    Returns
    -------
    tuple
        ``(n,)`` int64 representative of each node's group (``-1``: in no group), and the
        number of partners left out by the cap.
    """
    centre = np.full(n, -1, np.int64)
    if len(pairs) == 0:
        return centre, 0
    a = np.concatenate([pairs[:, 0], pairs[:, 1]])
    b = np.concatenate([pairs[:, 1], pairs[:, 0]])
    s = np.concatenate([sim, sim])
    order = np.lexsort((b, -s, a))
    a, b = a[order], b[order]
    starts = np.searchsorted(a, np.arange(n + 1))
    degree = np.diff(starts)
    cut = 0
    for node in np.lexsort((np.arange(n), -degree))[: int((degree > 0).sum())]:
        if centre[node] >= 0:
            continue
        partners = b[starts[node] : starts[node + 1]]
        free = partners[centre[partners] < 0]
        if len(free) == 0:
            continue
        take = free[: max_size - 1]
        cut += len(free) - len(take)
        centre[take] = node
        centre[node] = node
    return centre, cut


@dataclass
class DedupResult:
    """The duplicates table (one row per grouped sample), the verified pairs, summary counts and phase times.

    ``stats`` depends only on the inputs and settings; ``timings`` (wall seconds per phase)
    is kept apart so outputs built from ``stats`` are byte-identical on a rerun.
    """

    duplicates: pd.DataFrame
    pairs: pd.DataFrame
    stats: dict[str, Any]
    timings: dict[str, float]


def _exact_sets(digest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical position (first with the same digest) of each image, and the exact star pairs."""
    codes, _ = pd.factorize(digest)
    n = len(codes)
    first = np.full(codes.max() + 1 if n else 0, n, np.int64)
    np.minimum.at(first, codes, np.arange(n))
    canon = first[codes] if n else np.empty(0, np.int64)
    copies = np.nonzero(canon != np.arange(n))[0]
    return canon, np.stack([canon[copies], copies], axis=1)


def find_duplicates(
    samples: pd.DataFrame,
    pixels: np.ndarray,
    method: str = "phash",
    max_distance: int = 4,
    min_pixel_std: float = 2.0,
    *,
    knn_k: int = 8,
    knn_shifts: bool = True,
    knn_per_variant: int | None = None,
    embedding: bool | str = False,
    embedding_epochs: int = 4,
    near_threshold: float = 0.70,
    similar_threshold: float = 0.50,
    max_group_size: int = 100,
    min_hash_side: int = 32,
    small_near_threshold: float = 0.97,
    colour_tolerance: float | None = nearcopy.COLOUR_TOLERANCE,
    recoloured_near_threshold: float = nearcopy.RECOLOURED_NEAR_THRESHOLD,
    local_threshold: float | None = nearcopy.LOCAL_THRESHOLD,
    device: str = "cpu",
    executor: str = "auto",
    dask_address: str | None = None,
    progress: Progress | None = None,
) -> DedupResult:
    """Verified duplicate pairs and chain-free groups among the ``ok`` rows of the samples table.

    Parameters
    ----------
    samples
        The ingest samples table (quarantined rows are ignored).
    pixels
        The ingest pixel array; ``samples.row`` indexes it.
    method
        Perceptual hash, one of :data:`HASH_METHODS` (candidates, and ``distance``).
    max_distance
        Hamming radius of hash candidates (each is verified, so a wide radius is safe).
    min_pixel_std
        Images with a pixel standard deviation below this are flat and are not
        put into near groups.
    knn_k
        Pixel-space nearest neighbours per image taken as candidates (0: none).
    knn_shifts
        Also query with shifted versions of each image (finds shifted/cropped copies;
        5× the kNN cost).
    knn_per_variant
        Each kNN query variant's own best neighbours also taken as candidates (at most
        ``knn_k``); ``None``: :func:`memclean.nearcopy.per_variant_default` (1 below 200,000 images,
        0 from there).
    embedding
        Also take each image's ``knn_k`` nearest neighbours in a copy-detection embedding
        trained on these images (:mod:`memclean.copyembed`): ``True``, ``False`` or ``"auto"``
        (on where CUDA is present). It trains on CUDA when present, else on the CPU.
    embedding_epochs
        Training epochs of the embedding.
    near_threshold, similar_threshold
        Verified similarity of a ``near`` (copy) and a ``similar`` (same scene) pair.
    max_group_size
        Largest near group (distinct images, representative included); partners beyond it
        stay out and are logged.
    min_hash_side
        Images whose shorter side is below this get no hash candidates (pixel kNN only), and
        their thresholds are raised: a handful of pixels cannot tell a copy from a look-alike.
    small_near_threshold
        Near threshold for such small images (their similar threshold is at least
        :data:`SMALL_SIMILAR_THRESHOLD`).
    colour_tolerance, recoloured_near_threshold
        A pair whose colour gap (:func:`memclean.nearcopy.colour_gap`: mean colour,
        brightness- and contrast-invariant) exceeds ``colour_tolerance`` is near only from
        similarity ``recoloured_near_threshold`` (or the near threshold, when that is higher;
        similar below it): grey structure alone
        confuses look-alike scenes (ships on water, planes in the sky) of other colours.
        ``None`` turns the colour check off.
    local_threshold
        A pair is near only when its local score (the lowest correlation over the cells of the
        fine check that hold detail, :func:`memclean.nearcopy.similarity`) is at least this
        (similar otherwise). ``None`` turns the local check off; images smaller than the fine
        thumbnail (:data:`memclean.nearcopy.FINE_SIDE`) have no local check.
    device
        Torch device of the pixel search (``cpu``, ``cuda``...).
    executor, dask_address
        Where the hashing runs, sharded by rows (:func:`memclean.hashing.hash_pixels`):
        ``local``, ``processes``, ``dask`` or ``auto``; the result is the same bytes.
    progress
        Optional wrapper ``progress(iterable, description, total)``.

    Returns
    -------
    DedupResult
        ``duplicates`` follows :data:`memclean.schema.DUPLICATES_SCHEMA`, ``pairs``
        :data:`memclean.schema.DUPLICATE_PAIRS_SCHEMA`.
    """
    if not -1.0 <= similar_threshold <= near_threshold <= 1.0:
        raise MemcleanError("dedup: need -1 <= similar_threshold <= near_threshold <= 1")
    if not -1.0 <= recoloured_near_threshold <= 1.0:
        raise MemcleanError("dedup: need -1 <= recoloured_near_threshold <= 1")
    if local_threshold is not None and not -1.0 <= local_threshold <= 1.0:
        raise MemcleanError("dedup: need -1 <= local_threshold <= 1")
    if max_group_size < 2:
        raise MemcleanError("dedup.max_group_size must be at least 2")
    ok = samples[samples["status"] == "ok"].sort_values("row")
    rows = ok["row"].to_numpy(dtype=np.int64)
    if len(pixels) != len(rows) or not np.array_equal(rows, np.arange(len(rows))):
        raise MemcleanError("samples.row does not match pixels.npy: rerun the ingest stage")
    n = len(ok)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    height, width = (int(pixels.shape[2]), int(pixels.shape[3])) if n else (0, 0)
    use_hash = n > 0 and min(height, width) >= min_hash_side
    if n and not use_hash:
        near_threshold = max(near_threshold, small_near_threshold)
        similar_threshold = min(near_threshold, max(similar_threshold, SMALL_SIMILAR_THRESHOLD))
    hashes, flat = hash_pixels(pixels, method, min_pixel_std, executor, dask_address, progress=progress)
    lap("hash_seconds")

    canon, exact_pairs = _exact_sets(ok["pixel_sha256"].to_numpy())
    search = np.nonzero((canon == np.arange(n)) & ~flat)[0]  # positions in the near search

    # Candidates (positions into `search`) with a bit per source (HASH_BIT, KNN_BIT, EMBEDDING_BIT).
    found: list[np.ndarray] = []
    flags: list[np.ndarray] = []
    m = len(search)
    if use_hash and m > 1:
        hp = radius_pairs(hashes[search], max_distance)
        found.append(hp)
        flags.append(np.full(len(hp), HASH_BIT, np.int8))
    lap("hash_search_seconds")
    dev = torch.device(device)
    geo = nearcopy.Geometry.for_images(height, width) if n else nearcopy.Geometry.for_images(1, 1)
    fine = nearcopy.Geometry.for_images(height, width, nearcopy.FINE_SIDE) if n else geo
    features = nearcopy.pixel_features(pixels, search, geo, dev, progress=progress)
    lap("feature_seconds")
    per_variant = min(nearcopy.per_variant_default(m, knn_per_variant), knn_k)
    if knn_k > 0 and m > 1:
        kp, _ = nearcopy.knn_pairs(
            pixels, search, features, geo, knn_k, dev, knn_shifts, per_variant, progress=progress
        )
        found.append(kp)
        flags.append(np.full(len(kp), KNN_BIT, np.int8))
    lap("knn_seconds")
    emb_dev = select_device("auto")
    use_emb, emb_rule = copyembed.use_embedding(embedding, emb_dev)
    if use_emb and knn_k > 0 and m > 1:
        emb = copyembed.embedding_pairs(pixels, search, knn_k, embedding_epochs, emb_dev, progress=progress)
        found.append(emb.pairs)
        flags.append(np.full(len(emb.pairs), EMBEDDING_BIT, np.int8))
    lap("embedding_seconds")
    if found:
        allp = np.concatenate(found)
        keys, inv = np.unique(allp[:, 0] * m + allp[:, 1], return_inverse=True)
        src_bits = np.zeros(len(keys), np.int8)
        np.bitwise_or.at(src_bits, inv.reshape(-1), np.concatenate(flags))
        cand = np.stack([keys // m, keys % m], axis=1)
    else:
        cand, src_bits = np.empty((0, 2), np.int64), np.empty(0, np.int8)
    verified = nearcopy.similarity(pixels, search, features, cand, geo, fine, similar_threshold, dev, progress=progress)
    lap("verify_seconds")

    keep = verified.score >= similar_threshold
    cand, sim, local, src_bits = cand[keep], verified.score[keep], verified.local[keep], src_bits[keep]
    gap = nearcopy.colour_gap(features.colour, cand)
    recoloured = gap > colour_tolerance if colour_tolerance is not None else np.zeros(len(cand), bool)
    local_miss = local < local_threshold if local_threshold is not None else np.zeros(len(cand), bool)
    colour_ok = ~recoloured | (sim >= max(near_threshold, recoloured_near_threshold))
    is_near = (sim >= near_threshold) & colour_ok & ~local_miss
    near_pos = search[cand[is_near]] if len(cand) else np.empty((0, 2), np.int64)
    centre_node, cut = star_groups(n, near_pos, sim[is_near], max_group_size)
    if cut:
        log.warning(
            "dedup: %d verified near partners left out of groups by max_group_size=%d (their pairs stay in "
            "duplicate_pairs.parquet)",
            cut,
            max_group_size,
        )
    # Every image joins the group of its exact set's first image; exact-only sets form groups.
    rep = centre_node[canon]
    set_size = np.bincount(canon, minlength=n)
    lone_exact = (rep < 0) & (set_size[canon] > 1)
    rep[lone_exact] = canon[lone_exact]
    members = np.nonzero(rep >= 0)[0]
    rep_m = rep[members]
    _, gid = np.unique(rep_m, return_inverse=True)  # group ids follow the representative's row
    frame = ok.iloc[members][["sample_id", "label", "split", "pixel_sha256"]].reset_index(drop=True)
    frame["group_id"] = gid.astype(np.int64)
    frame["is_representative"] = rep_m == members
    frame["distance"] = popcount(hashes[members] ^ hashes[rep_m]).astype(np.int16)
    digest_count = frame.groupby(["group_id", "pixel_sha256"])["sample_id"].transform("size")
    frame["kind"] = np.where(digest_count > 1, "exact", "near")
    labels = frame["label"].astype("Int64")
    frame["label_conflict"] = (
        labels.groupby(frame["group_id"]).transform(lambda s: s.nunique(dropna=False) > 1).astype(bool)
    )
    frame["cross_split"] = frame.groupby("group_id")["split"].transform("nunique").gt(1)
    frame = frame[DUPLICATES_SCHEMA.names].sort_values(["group_id", "distance", "sample_id"], kind="stable")
    frame = frame.reset_index(drop=True)

    pairs = _pairs_frame(
        ok, hashes, exact_pairs, search[cand] if len(cand) else cand, sim, local, gap, src_bits, is_near, method
    )
    lap("group_seconds")

    groups = frame.groupby("group_id")
    all_exact = groups["pixel_sha256"].nunique() == 1
    sizes = groups.size()
    by_kind = pairs.groupby("kind")
    stats = {
        "method": method,
        "max_distance": int(max_distance),
        "images": int(n),
        "flat_excluded": int(flat.sum()),
        "exact_pairs": len(exact_pairs),
        "near_pairs": int(is_near.sum()),
        "similar_pairs": int((~is_near).sum()),
        "recoloured_similar_pairs": int((~colour_ok & (sim >= near_threshold)).sum()),
        "local_similar_pairs": int((colour_ok & local_miss & (sim >= near_threshold)).sum()),
        "groups": int(frame["group_id"].nunique()),
        "exact_groups": int(all_exact.sum()),
        "near_groups": int((~all_exact).sum()),
        "samples_in_groups": len(frame),
        "largest_group": int(sizes.max()) if len(sizes) else 0,
        "label_conflict_groups": int(groups["label_conflict"].first().sum()),
        "cross_split_groups": int(groups["cross_split"].first().sum()),
        "cross_split_pairs": {k: int(by_kind["cross_split"].sum().get(k, 0)) for k in PAIR_KINDS},
        "cut_by_max_group_size": int(cut),
        "hash_candidates": use_hash,
        "knn_per_variant": per_variant,
        "embedding": emb_rule,
        "candidate_pairs": {
            **{
                name: int(sum(len(f) for f, g in zip(found, flags) if g[:1].tolist() == [bit]))
                for bit, name in _sources("hash")
            },
            "verified_ge_similar": len(cand),
        },
        "thresholds": {
            "near": float(near_threshold),
            "similar": float(similar_threshold),
            "colour_tolerance": None if colour_tolerance is None else float(colour_tolerance),
            "recoloured_near": float(recoloured_near_threshold),
            "local": None if local_threshold is None else float(local_threshold),
        },
    }
    log.info("duplicates: %s; seconds: %s", stats, timings)
    return DedupResult(frame, pairs, stats, timings)


def _pairs_frame(
    ok: pd.DataFrame,
    hashes: np.ndarray,
    exact_pairs: np.ndarray,
    cand: np.ndarray,
    sim: np.ndarray,
    local: np.ndarray,
    gap: np.ndarray,
    src_bits: np.ndarray,
    is_near: np.ndarray,
    method: str,
) -> pd.DataFrame:
    """Rows of ``duplicate_pairs.parquet`` (positions → sample ids), sorted by ``a``, ``b``."""
    ids = ok["sample_id"].to_numpy()
    split = ok["split"].to_numpy()
    sources = _sources(method)
    names = np.array(["+".join(name for bit, name in sources if v & bit) for v in range(8)], dtype=object)
    both = np.concatenate([exact_pairs, cand]).astype(np.int64).reshape(-1, 2)
    a, b = both[:, 0], both[:, 1]
    frame = pd.DataFrame(
        {
            "a": ids[a] if len(a) else np.empty(0, object),
            "b": ids[b] if len(b) else np.empty(0, object),
            "kind": np.concatenate(
                [np.full(len(exact_pairs), "exact", object), np.where(is_near, "near", "similar").astype(object)]
            ),
            "hash_distance": popcount(hashes[a] ^ hashes[b]).astype(np.int16),
            "similarity": np.concatenate([np.ones(len(exact_pairs), np.float32), sim.astype(np.float32)]),
            "local_similarity": np.concatenate([np.ones(len(exact_pairs), np.float32), local.astype(np.float32)]),
            "colour_gap": np.concatenate([np.zeros(len(exact_pairs), np.float32), gap.astype(np.float32)]),
            "method": np.concatenate([np.full(len(exact_pairs), "sha256", object), names[src_bits]]),
            "cross_split": split[a] != split[b] if len(a) else np.empty(0, bool),
        }
    )
    order = np.lexsort((b, a))
    return frame.iloc[order][DUPLICATE_PAIRS_SCHEMA.names].reset_index(drop=True)
