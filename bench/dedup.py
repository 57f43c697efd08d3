"""Benchmark of the duplicate-detection library :mod:`memclean.dedup`.

Prints one JSON object on stdout (progress goes to stderr). What it measures:

1. **Dataset.** MNIST train+test (70,000 images, the first 60,000 are train) from
   ``<data-dir>/mnist``, read with :func:`memclean.sources.list_idx` and
   :func:`memclean.ingest.ingest` into a temporary folder (ingest rows/s is
   reported). Without that folder, 60,000 synthetic 28×28 images (scikit-learn
   digits upsampled, shifted and noised) go through the same ingest path and the
   JSON says ``"dataset": "synthetic"``.
2. **Hashing.** Throughput (images/s) of the batched ``phash`` in
   :func:`memclean.hashing.compute_hashes` over the train images, against
   ``imagehash.phash`` called per image on a random sample of 2,000; the number
   of sample images whose two hashes differ (should be 0: the batched version is
   meant to be bit-exact).
3. **Radius search** over the train hashes at radius 4 and 8:
   :func:`memclean.dedup.radius_pairs` (median of 3 runs) against the quadratic
   :func:`memclean.dedup.brute_force_pairs` (one run), the pair count and whether
   both give the same array. Diagnostics: distinct hashes, the largest set of
   identical hashes, and the multi-index plan with its candidate count.
4. **Reference.** imagehash's own way of comparing hashes, ``h1 - h2`` on
   ``ImageHash`` objects in a Python double loop, timed over all pairs of a random
   sample of 1,000 hashes and extrapolated to all N·(N−1)/2 train pairs; the
   speed-up ``extrapolated seconds / radius_pairs seconds`` per radius. Targets:
   speed-up ≥ 100 and radius 8 under 5 s.
5. **CIFAR-10** (unless ``--skip-cifar`` or absent): ``<data-dir>/cifar10``
   (Hugging Face-style train/test Parquet, 60,000 rows; JPEG-recompressed, so
   pixel-exact duplicates are rare and near duplicates matter) through
   :func:`memclean.sources.list_hf_parquet` + ingest, then
   :func:`memclean.dedup.find_duplicates` with phash at radius 4 (exact groups
   come from the pixel digests in the same run): its stats, train/test leakage
   (cross-split groups, test images with a duplicate in train), label-conflict
   groups, timings and five example groups of each kind; and what ``clean``'s default
   duplicate rules would drop from it, per reason and split (``clean_defaults``).

6. **Planted copies** (``--planted N``): CIFAR-10 train+test read straight from the Parquet
   files, plus ``N`` edited copies of random images (random 1–4 px shifts, 80–95 % crops
   rescaled back, ±20 % brightness/contrast, JPEG quality 30–90, horizontal flips, one edit
   each, and a ``combo`` kind with a geometric edit, colour, JPEG and a flip together), put
   in a random split. :func:`memclean.dedup.find_duplicates` with its defaults runs end to
   end on the pixels (wall and CPU time); recall of planted pairs per edit and tier,
   precision on planted images (found near pairs of a planted copy that are not its
   original), other pairs per tier, the largest group, train/test leak pairs per tier, and
   ``bench/results/dedup_pairs_sample.png``: 50 random found non-planted near pairs side by
   side, to judge by eye.
7. **Synthetic scale** (``--synthetic N``): ``N`` procedurally generated 32×32 images (random
   blobs and bars) with 1 % planted copies; time and peak RSS (``resource.getrusage``).

Usage (from the repository root)::

    .venv/bin/python bench/dedup.py [--data-dir DIR] [--skip-cifar] [--quick] [--out FILE]
    .venv/bin/python bench/dedup.py --planted 1200 [--knn-no-shifts] [--embedding auto|true|false] [--out FILE]
    .venv/bin/python bench/dedup.py --synthetic 100000 [--out FILE]
    .venv/bin/python bench/dedup.py --cifar-only [--out FILE]

``--planted``, ``--synthetic`` and ``--cifar-only`` run only their own part. JSON goes to stdout and, with
``--out``, to that file (``bench/results/`` is git-ignored).

``--quick`` uses 10,000 images instead of 60,000 for a smoke run.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import imagehash
import numpy as np
import pandas as pd
import PIL
import scipy
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/scoring.py, also when imported from elsewhere
from scoring import emit

from memclean import dedup, hashing, nearcopy, policy
from memclean.ingest import IngestOptions, IngestResult, ingest
from memclean.io import release_pages
from memclean.sources import Item, Listing, list_hf_parquet, list_idx

log = logging.getLogger("bench.dedup")

T = TypeVar("T")

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FULL_N = 60_000
QUICK_N = 10_000
RADII = (4, 8)
SEARCH_REPEATS = 3
IMAGEHASH_SAMPLE = 2_000
REFERENCE_SAMPLE = 1_000
CIFAR_RADIUS = 4
EXAMPLES = 5
SEED = 0


# --------------------------------------------------------------------------- helpers


def timed(fn: Callable[[], T], repeats: int = 1) -> tuple[float, T, list[float]]:
    """Run ``fn`` ``repeats`` times; return (median seconds, last result, all seconds)."""
    times: list[float] = []
    result: T
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result, times


def rnd(x: float, digits: int = 4) -> float:
    return float(round(x, digits))


def to_pil(image: np.ndarray) -> Image.Image:
    """C×H×W uint8 → PIL image (L or RGB), as a user of imagehash would pass it."""
    if image.shape[0] == 1:
        return Image.fromarray(np.ascontiguousarray(image[0]), "L")
    return Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)), "RGB")


def to_imagehash(value: int) -> imagehash.ImageHash:
    return imagehash.hex_to_hash(f"{value:016x}")


def machine_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": pd.__version__,
        "pillow": PIL.__version__,
        "imagehash": getattr(imagehash, "__version__", "unknown"),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
    }


def run_ingest(listing: Listing, pixels_path: Path) -> tuple[IngestResult, np.ndarray, dict[str, Any]]:
    """Ingest ``listing`` into ``pixels_path``; return the result, the mmapped pixels and timings."""
    seconds, result, _ = timed(lambda: ingest(listing, pixels_path, IngestOptions()))
    pixels = result.pixels
    rows = len(result.samples)
    info = {
        "rows": rows,
        "ok": int(rows - result.quarantined),
        "quarantined": result.quarantined,
        "shape": list(pixels.shape),
        "seconds": rnd(seconds),
        "rows_per_s": rnd(rows / seconds, 1),
    }
    return result, pixels, info


# --------------------------------------------------------------------------- dataset


def synthetic_listing(n: int, seed: int = SEED) -> Listing:
    """``n`` 28×28 grey images: scikit-learn digits upsampled ×3, randomly shifted, plus noise."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    rng = np.random.default_rng(seed)
    base = bunch.images * (255.0 / 16.0)  # 8×8, 0..255
    up = np.kron(base, np.ones((3, 3)))  # 24×24
    pick = rng.integers(0, len(base), n)
    items: list[Item] = []
    for i, k in enumerate(pick):
        canvas = np.zeros((28, 28))
        dy, dx = rng.integers(0, 5, 2)
        canvas[dy : dy + 24, dx : dx + 24] = up[k]
        image = np.clip(canvas + rng.normal(0.0, 12.0, canvas.shape), 0, 255).astype(np.uint8)
        items.append(Item(f"train/{i}", f"synthetic#{i}", "train", int(bunch.target[k]), array=image))
    return Listing(items, [str(c) for c in bunch.target_names])


def load_dataset(data_dir: Path, n_train: int, workdir: Path) -> tuple[str, np.ndarray, dict[str, Any]]:
    """Ingest MNIST (or synthetic images); return (name, train pixels, ingest info)."""
    mnist = data_dir / "mnist"
    if mnist.is_dir():
        name = "mnist"
        listing = list_idx(mnist)
        if n_train < FULL_N:  # quick run: ingest the first n_train train rows only
            listing = Listing(listing.items[:n_train], listing.classes, listing.notes)
    else:
        log.warning("%s not found: using %d synthetic images", mnist, n_train)
        name = "synthetic"
        listing = synthetic_listing(n_train)
    log.info("ingesting %s (%d rows)", name, len(listing.items))
    result, pixels, info = run_ingest(listing, workdir / f"{name}_pixels.npy")
    ok = result.samples[result.samples["status"] == "ok"].sort_values("row")
    train_rows = ok.loc[ok["split"] == "train", "row"].to_numpy(dtype=np.int64)[:n_train]
    if not np.array_equal(train_rows, np.arange(len(train_rows))):
        raise RuntimeError("train rows are expected to come first in the pixel array")
    info["splits"] = {str(k): int(v) for k, v in ok["split"].value_counts().sort_index().items()}
    info["train_images_used"] = len(train_rows)
    return name, pixels[: len(train_rows)], info


# --------------------------------------------------------------------------- hashing


def bench_hashing(pixels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    n = len(pixels)
    log.info("hashing %d images (batched phash)", n)
    array = np.ascontiguousarray(pixels)  # time the hashing, not the page-in of the mmap
    seconds, hashes, _ = timed(lambda: hashing.compute_hashes(array, "phash"))

    sample = np.sort(rng.choice(n, size=min(IMAGEHASH_SAMPLE, n), replace=False))
    log.info("imagehash.phash per image on %d images", len(sample))
    # Includes the array → PIL conversion, as compute_hashes does.
    ref_seconds, ref, _ = timed(lambda: [imagehash.phash(to_pil(array[i])) for i in sample])
    ref_u64 = np.array([int(str(h), 16) for h in ref], dtype=np.uint64)
    diff = dedup.popcount(ref_u64 ^ hashes[sample])
    mismatch = np.nonzero(diff)[0]
    info: dict[str, Any] = {
        "method": "phash",
        "images": n,
        "batched_seconds": rnd(seconds),
        "batched_images_per_s": rnd(n / seconds, 1),
        "imagehash_sample": len(sample),
        "imagehash_seconds": rnd(ref_seconds),
        "imagehash_images_per_s": rnd(len(sample) / ref_seconds, 1),
        "speedup": rnd((n / seconds) / (len(sample) / ref_seconds), 2),
        "mismatches_vs_imagehash": len(mismatch),
        "max_mismatch_bits": int(diff.max()) if len(diff) else 0,
        "mismatch_examples": [
            {"index": int(sample[k]), "batched": f"{int(hashes[sample[k]]):016x}", "imagehash": str(ref[k])}
            for k in mismatch[:EXAMPLES]
        ],
    }
    return hashes, info


# --------------------------------------------------------------------------- search


def mih_diagnostics(hashes: np.ndarray, radius: int) -> dict[str, Any] | None:
    """The multi-index plan radius_pairs picks and its candidate count (uses private helpers)."""
    try:
        plan = dedup._plan(len(hashes), radius)
        candidates = 0
        for shift, width in plan.chunks:
            if width > 24:
                return {"chunk_widths": [w for _, w in plan.chunks], "per_chunk_radius": plan.per_chunk_radius}
            v = ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
            counts = np.bincount(v, minlength=1 << width)
            for mask in dedup._flip_masks(width, plan.per_chunk_radius):
                candidates += int(counts[v ^ mask].sum())
        return {
            "chunk_widths": [w for _, w in plan.chunks],
            "per_chunk_radius": plan.per_chunk_radius,
            # ordered (i, j) look-up hits over all chunks and probes, i == j included;
            # about half survive the i < j filter before the XOR/popcount check.
            "candidates_ordered": candidates,
        }
    except Exception as exc:
        log.warning("multi-index diagnostics unavailable: %s", exc)
        return None


def bench_search(hashes: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for radius in RADII:
        log.info("radius %d: radius_pairs ×%d", radius, SEARCH_REPEATS)
        rp_seconds, pairs, rp_all = timed(lambda: dedup.radius_pairs(hashes, radius), SEARCH_REPEATS)  # noqa: B023
        log.info("radius %d: radius_pairs %.3f s, %d pairs; brute force", radius, rp_seconds, len(pairs))
        bf_seconds, brute, _ = timed(lambda: dedup.brute_force_pairs(hashes, radius))  # noqa: B023
        diag = mih_diagnostics(hashes, radius)
        out[f"radius_{radius}"] = {
            "pairs": len(pairs),
            "radius_pairs_seconds": rnd(rp_seconds),
            "radius_pairs_runs": [rnd(t) for t in rp_all],
            "brute_force_seconds": rnd(bf_seconds),
            "speedup_vs_brute_force": rnd(bf_seconds / rp_seconds, 2),
            "equal_to_brute_force": bool(np.array_equal(pairs, brute)),
            "brute_force_pairs": len(brute),
            "plan": diag,
        }
    return out


def bench_reference(hashes: np.ndarray, search: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
    """imagehash's ``h1 - h2`` over all pairs of a sample, extrapolated to every pair."""
    n = len(hashes)
    sample = rng.choice(n, size=min(REFERENCE_SAMPLE, n), replace=False)
    objs = [to_imagehash(int(hashes[i])) for i in sample]
    max_radius = max(RADII)
    log.info("imagehash pairwise loop over %d hashes", len(objs))

    def loop() -> int:
        hits = 0
        for h1, h2 in itertools.combinations(objs, 2):
            if h1 - h2 <= max_radius:
                hits += 1
        return hits

    seconds, hits, _ = timed(loop)
    sample_pairs = len(objs) * (len(objs) - 1) // 2
    per_pair = seconds / sample_pairs
    total_pairs = n * (n - 1) // 2
    extrapolated = per_pair * total_pairs
    out: dict[str, Any] = {
        "sample": len(objs),
        "sample_pairs": sample_pairs,
        "sample_pairs_within_radius_8": hits,
        "seconds": rnd(seconds),
        "seconds_per_pair": float(f"{per_pair:.4g}"),
        "all_pairs": total_pairs,
        "extrapolated_seconds": rnd(extrapolated, 1),
    }
    for radius in RADII:
        rp = search[f"radius_{radius}"]["radius_pairs_seconds"]
        out[f"ratio_radius_{radius}"] = rnd(extrapolated / rp, 1)
    return out


# --------------------------------------------------------------------------- CIFAR-10


def _group_example(members: pd.DataFrame, classes: list[str]) -> dict[str, Any]:
    labels = [None if pd.isna(v) else int(v) for v in members["label"]]
    return {
        "group_id": int(members["group_id"].iloc[0]),
        "sample_ids": members["sample_id"].tolist(),
        "labels": labels,
        "label_names": [None if v is None or v >= len(classes) else classes[v] for v in labels],
        "splits": members["split"].tolist(),
        "distances": [int(d) for d in members["distance"]],
        "kinds": members["kind"].tolist(),
    }


def bench_cifar(data_dir: Path, workdir: Path) -> dict[str, Any]:
    root = data_dir / "cifar10"
    log.info("CIFAR-10: listing and ingesting %s", root)
    start = time.perf_counter()
    list_seconds, listing, _ = timed(lambda: list_hf_parquet(root))
    result, pixels, ingest_info = run_ingest(listing, workdir / "cifar10_pixels.npy")
    ingest_info["list_seconds"] = rnd(list_seconds)
    samples = result.samples

    log.info("CIFAR-10: find_duplicates (phash, radius %d)", CIFAR_RADIUS)
    fd_seconds, found, _ = timed(
        lambda: dedup.find_duplicates(samples, pixels, method="phash", max_distance=CIFAR_RADIUS)
    )
    total = time.perf_counter() - start
    dup = found.duplicates
    groups = dup.groupby("group_id", sort=True)
    has_train = groups["split"].transform(lambda s: (s == "train").any())
    leaked_test = dup[(dup["split"] == "test") & has_train]
    ok = samples[samples["status"] == "ok"]

    cross_ids = groups["cross_split"].first()
    conflict_ids = groups["label_conflict"].first()
    cross_examples = [
        _group_example(groups.get_group(g), result.classes) for g in cross_ids[cross_ids].index[:EXAMPLES]
    ]
    conflict_examples = [
        _group_example(groups.get_group(g), result.classes) for g in conflict_ids[conflict_ids].index[:EXAMPLES]
    ]
    sizes = groups.size()
    return {
        "clean_defaults": clean_by_duplicates(samples, found),
        "note": "CIFAR-10 copy is JPEG-recompressed: pixel-exact duplicates are rare, near duplicates matter",
        "ingest": ingest_info,
        "find_duplicates_seconds": rnd(fd_seconds),
        "total_seconds": rnd(total),
        "stats": found.stats,
        "exact_groups": int(found.stats["exact_groups"]),
        "near_groups": int(found.stats["near_groups"]),
        "label_conflict_groups": int(conflict_ids.sum()),
        "cross_split_groups": int(cross_ids.sum()),
        "test_images": int((ok["split"] == "test").sum()),
        "test_images_with_duplicate_in_train": len(leaked_test),
        "largest_group": int(sizes.max()) if len(sizes) else 0,
        "group_size_counts": {str(k): int(v) for k, v in sizes.value_counts().sort_index().items()},
        "examples_cross_split": cross_examples,
        "examples_label_conflict": conflict_examples,
    }


def clean_by_duplicates(samples: pd.DataFrame, found: dedup.DedupResult) -> dict[str, Any]:
    """What ``clean``'s default duplicate rules drop, per reason and split (no scores: duplicates only).

    The same :func:`memclean.policy.decide` the clean stage runs, with today's
    :class:`~memclean.policy.CleanPolicy` defaults and ``found.stats`` standing in for
    ``dedup.json`` (it is that file's content), so ``drop_near_duplicates: auto`` decides as in
    a real run.
    """
    scores = pd.DataFrame({"sample_id": samples["sample_id"]})
    result = policy.decide(
        samples, found.duplicates, scores, policy.CleanPolicy(), None, None, False, dedup=found.stats
    )
    m = result.manifest
    dropped = m[~m["keep"] & (m["status"] == "ok")]
    by = dropped.groupby(["drop_reason", "split"]).size()
    return {
        "near_duplicate_rule": policy.near_drop_rule(policy.CleanPolicy().drop_near_duplicates, found.stats)[1],
        "ok_rows": int((m["status"] == "ok").sum()),
        "dropped_rows": len(dropped),
        "dropped_by_reason_and_split": {f"{r}/{sp}": int(v) for (r, sp), v in by.items()},
    }


# --------------------------------------------------------------------------- planted copies

EDIT_KINDS = ("shift", "crop", "colour", "jpeg", "flip", "combo")
RESULTS = Path(__file__).resolve().parent / "results"


def _edit(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One edited copy of an ``H×W×3`` uint8 image."""
    import io

    from PIL import ImageEnhance

    side = img.shape[0]
    im = Image.fromarray(img)
    geometric = kind if kind != "combo" else str(rng.choice(["shift", "crop"]))
    if geometric == "shift":
        dy, dx = 0, 0
        while dy == 0 and dx == 0:
            dy, dx = (int(v) for v in rng.integers(-4, 5, 2))
        a = np.pad(np.asarray(im), ((4, 4), (4, 4), (0, 0)), mode="edge")
        im = Image.fromarray(a[4 - dy : 4 - dy + side, 4 - dx : 4 - dx + side])
    elif geometric == "crop":
        c = round(rng.uniform(0.8, 0.95) * side)
        y0, x0 = (int(v) for v in rng.integers(0, side - c + 1, 2))
        im = im.crop((x0, y0, x0 + c, y0 + c)).resize((side, side), Image.Resampling.BICUBIC)
    if kind in ("colour", "combo"):
        im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.8, 1.2))
        im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.8, 1.2))
    if kind == "flip" or (kind == "combo" and rng.random() < 0.5):
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if kind in ("jpeg", "combo"):
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(rng.integers(30, 91)))
        im = Image.open(buf).convert("RGB")
    return np.asarray(im)


def _load_cifar(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import io

    import pyarrow.parquet as pq

    images, labels, splits = [], [], []
    for split in ("train", "test"):
        table = pq.read_table(root / f"{split}.parquet").to_pydict()
        for cell, label in zip(table["img"], table["label"]):
            images.append(np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB")))
            labels.append(label)
            splits.append(split)
    return np.stack(images), np.asarray(labels, np.int32), np.asarray(splits, dtype=object)


def _samples(pixels: np.ndarray, labels: np.ndarray, splits: np.ndarray) -> pd.DataFrame:
    from memclean.imaging import pixel_digest

    n = len(pixels)
    return pd.DataFrame(
        {
            "sample_id": [f"{s}/{i}" for i, s in enumerate(splits)],
            "label": labels,
            "split": splits,
            "pixel_sha256": [pixel_digest(p) for p in pixels],
            "status": "ok",
            "row": np.arange(n),
        }
    )


def _run_timed(samples: pd.DataFrame, pixels: np.ndarray, **kw: Any) -> tuple[dedup.DedupResult, dict[str, Any]]:
    import resource

    def children_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    wall, cpu, child = time.perf_counter(), time.process_time(), children_cpu()
    result = dedup.find_duplicates(samples, pixels, **kw)
    info = {
        "wall_seconds": rnd(time.perf_counter() - wall, 2),
        "cpu_seconds": rnd(time.process_time() - cpu, 2),
        # Worker processes (sharded hashing): their CPU time. (Their peak RSS is not reported:
        # a child's ru_maxrss starts from the parent's resident set at fork.)
        "worker_cpu_seconds": rnd(children_cpu() - child, 2),
        "peak_rss_mib": rnd(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average_1min": rnd(os.getloadavg()[0], 2),
    }
    return result, info


def compare_hash_executors(pixels: np.ndarray, workers: int | None = None) -> dict[str, Any]:
    """Hashing in this process vs sharded over worker processes, side by side: seconds, ratio, same bytes."""
    t0 = time.perf_counter()
    local = hashing.hash_pixels(pixels, "phash", 2.0, "local")
    t1 = time.perf_counter()
    sharded = hashing.hash_pixels(pixels, "phash", 2.0, "processes", workers=workers)
    t2 = time.perf_counter()
    return {
        "local_seconds": rnd(t1 - t0, 2),
        "processes_seconds": rnd(t2 - t1, 2),
        "workers": workers or hashing.usable_cores(),
        "speedup": rnd((t1 - t0) / max(t2 - t1, 1e-9), 2),
        "identical": bool(np.array_equal(local[0], sharded[0]) and np.array_equal(local[1], sharded[1])),
    }


def render_pairs(pixels: np.ndarray, rows: list[tuple[int, int, float]], path: Path) -> None:
    """Pairs side by side (HWC uint8 images), five pairs per row, similarity not drawn."""
    side = pixels.shape[1]
    scale, per_row = 3, 5
    cell_w = 2 * side + 12
    height = ((len(rows) + per_row - 1) // per_row) * (side + 6)
    canvas = np.full((max(height, 1), per_row * cell_w, 3), 255, np.uint8)
    for t, (a, b, _) in enumerate(rows):
        r, c = divmod(t, per_row)
        y, x = r * (side + 6), c * cell_w
        canvas[y : y + side, x : x + side] = pixels[a]
        canvas[y : y + side, x + side + 2 : x + 2 * side + 2] = pixels[b]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.Resampling.NEAREST).save(
        path
    )


def explain_misses(
    pixels: np.ndarray, src: np.ndarray, copy_pos: np.ndarray, kinds: np.ndarray, missed: np.ndarray
) -> dict[str, Any]:
    """Why planted pairs were not found near: no candidate, or verification said otherwise.

    Scores every missed ``(original, copy)`` pair directly with the same verification as
    :func:`memclean.dedup.find_duplicates` (coarse-to-fine similarity, colour and local checks
    at the default thresholds). A pair the checks call near was missed by the candidate search
    (hashes and pixel kNN); the others were candidates the checks turned down, or would be.
    """
    idx = np.nonzero(missed)[0]
    if len(idx) == 0:
        return {"missed": 0}
    n = len(pixels)
    search = np.arange(n)
    dev = torch.device("cpu")
    h, w = int(pixels.shape[2]), int(pixels.shape[3])
    geo = nearcopy.Geometry.for_images(h, w)
    fine = nearcopy.Geometry.for_images(h, w, nearcopy.FINE_SIDE)
    features = nearcopy.pixel_features(pixels, search, geo, dev)
    pairs = np.stack([src[idx], copy_pos[idx]], axis=1)
    sim = nearcopy.similarity(pixels, search, features, pairs, geo, fine, 0.5, dev)
    gap = nearcopy.colour_gap(features.colour, pairs)
    score, local = sim.score, sim.local
    colour_ok = (gap <= nearcopy.COLOUR_TOLERANCE) | (score >= nearcopy.RECOLOURED_NEAR_THRESHOLD)
    reason = np.where(
        score < 0.7,
        "similarity_below_near",
        np.where(~colour_ok, "colour_check", np.where(local < nearcopy.LOCAL_THRESHOLD, "local_check", "no_candidate")),
    )
    table = pd.crosstab(pd.Series(kinds[idx], name="edit"), pd.Series(reason, name="reason"))
    return {
        "missed": len(idx),
        "by_reason": {str(k): int(v) for k, v in pd.Series(reason).value_counts().items()},
        "by_edit_and_reason": {e: {str(r): int(v) for r, v in row.items() if v} for e, row in table.iterrows()},
        "similarity_of_missed_median": rnd(float(np.median(score))),
    }


#: Near thresholds at which the planted benchmark reports recall and precision.
SWEEP_THRESHOLDS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


def bench_planted(
    data_dir: Path, n_planted: int, knn_shifts: bool, seed: int = SEED, embedding: bool | str = False
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    images, labels, splits = _load_cifar(data_dir / "cifar10")
    load_seconds = time.perf_counter() - start
    n = len(images)
    src = rng.choice(n, n_planted, replace=False)
    kinds = np.array([EDIT_KINDS[i % len(EDIT_KINDS)] for i in range(n_planted)])
    copies = np.stack([_edit(images[s], k, rng) for s, k in zip(src, kinds)])
    copy_split = np.where(rng.random(n_planted) < 1 / 6, "test", "train").astype(object)
    all_images = np.concatenate([images, copies])
    pixels = np.ascontiguousarray(all_images.transpose(0, 3, 1, 2))
    samples = _samples(pixels, np.concatenate([labels, labels[src]]), np.concatenate([splits, copy_split]))
    log.info("planted: %d images + %d copies; find_duplicates", n, n_planted)
    result, timing = _run_timed(samples, pixels, knn_shifts=knn_shifts, embedding=embedding)
    ids = samples["sample_id"].to_numpy()
    pos = pd.Series(np.arange(len(ids)), index=ids)
    p = result.pairs
    a, b = pos[p["a"]].to_numpy(), pos[p["b"]].to_numpy()
    planted_key = set(zip(src.tolist(), (n + np.arange(n_planted)).tolist()))
    is_planted = np.array([(int(x), int(y)) in planted_key for x, y in zip(a, b)], bool)
    kind = p["kind"].to_numpy()
    found = {(int(x), int(y)): k for x, y, k, hit in zip(a, b, kind, is_planted) if hit}
    tiers = [found.get((int(s), n + i)) for i, s in enumerate(src)]
    recall_near = np.array([t in ("near", "exact") for t in tiers])
    recall_any = np.array([t is not None for t in tiers])
    # Precision on planted copies: near pairs touching a copy that are not copy–original pairs,
    # and not copy–(a duplicate of the original already in CIFAR-10, judged as near by the pipeline).
    touches_copy = (b >= n) & np.isin(kind, ["near", "exact"])
    near_planted = int((touches_copy & is_planted).sum())
    other_on_copies = int((touches_copy & ~is_planted).sum())
    # A non-planted near pair (x, copy) is explained when x is itself a near pair of the copy's
    # original: x is one of CIFAR-10's own copies of that photo, not a false match of the copy.
    near_set = {(int(x), int(y)) for x, y, k in zip(a, b, kind) if k in ("near", "exact")}
    copy_src = dict(zip((n + np.arange(n_planted)).tolist(), src.tolist()))
    explained = np.array(
        [
            bool(t and not hit and x < n and (min(x, copy_src[y]), max(x, copy_src[y])) in near_set)
            for x, y, t, hit in zip(a.tolist(), b.tolist(), touches_copy, is_planted)
        ],
        bool,
    )
    sim = p["similarity"].to_numpy()
    by_pair = {(int(x), int(y)): float(v) for x, y, v, hit in zip(a, b, sim, is_planted) if hit}
    planted_sim = np.array([by_pair.get((int(s), n + i), -1.0) for i, s in enumerate(src)])
    sweep = {}
    for t in SWEEP_THRESHOLDS:
        on_copy = (b >= n) & (sim >= t)
        hit, other = int((on_copy & is_planted).sum()), int((on_copy & ~is_planted).sum())
        expl = int((explained & (sim >= t)).sum())
        sweep[f"{t:.2f}"] = {
            "recall": rnd(float((planted_sim >= t).mean())),
            "precision_on_planted": rnd(hit / max(1, hit + other)),
            "precision_on_planted_excluding_explained": rnd(hit / max(1, hit + other - expl)),
            "other_pairs": int(((b < n) & (sim >= t)).sum()),
        }
    d = result.duplicates
    sizes = d.groupby("group_id").size()
    others = ~is_planted & (b < n)
    sample_rows = np.nonzero(others & (kind == "near"))[0]
    pick: np.ndarray = np.sort(rng.choice(sample_rows, min(50, len(sample_rows)), replace=False))
    render_pairs(
        all_images,
        [(int(a[i]), int(b[i]), float(p["similarity"].iloc[i])) for i in pick],
        RESULTS / "dedup_pairs_sample.png",
    )
    return {
        "images": n,
        "planted": n_planted,
        "knn_shifts": knn_shifts,
        "load_seconds": rnd(load_seconds, 2),
        "find_duplicates": timing,
        "stage_timings": result.timings,
        "recall_near": rnd(float(recall_near.mean())),
        "recall_any_tier": rnd(float(recall_any.mean())),
        "recall_near_by_edit": {k: rnd(float(recall_near[kinds == k].mean())) for k in EDIT_KINDS},
        "misses": explain_misses(pixels, src, n + np.arange(n_planted), kinds, ~recall_near),
        "precision_on_planted": rnd(near_planted / max(1, near_planted + other_on_copies)),
        "near_pairs_planted": near_planted,
        "near_pairs_of_copies_not_planted": other_on_copies,
        "of_which_explained_by_a_near_pair_of_the_original": int(explained.sum()),
        "precision_on_planted_excluding_explained": rnd(
            near_planted / max(1, near_planted + other_on_copies - int(explained.sum()))
        ),
        "threshold_sweep": sweep,
        "other_pairs_per_tier": {t: int((others & (kind == t)).sum()) for t in dedup.PAIR_KINDS},
        "largest_group": int(sizes.max()) if len(sizes) else 0,
        "groups": int(result.stats["groups"]),
        "cifar_train_test_leak_pairs_per_tier": {
            t: int((others & (kind == t) & p["cross_split"].to_numpy()).sum()) for t in dedup.PAIR_KINDS
        },
        "stats": result.stats,
        "pairs_sample_png": str(RESULTS / "dedup_pairs_sample.png"),
    }


def synthetic_images(n: int, rng: np.random.Generator, side: int = 32) -> np.ndarray:
    """``n`` random ``3×side×side`` images: a colour gradient, a few blobs and a bar each."""
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = np.empty((n, 3, side, side), np.uint8)
    for start in range(0, n, 4096):
        m = min(4096, n - start)
        base = rng.uniform(0, 255, (m, 3, 1, 1)) + rng.uniform(-80, 80, (m, 3, 1, 1)) * xx
        for _ in range(3):
            cy, cx = rng.uniform(0, 1, (2, m, 1, 1, 1))
            r = rng.uniform(0.05, 0.25, (m, 1, 1, 1))
            blob = np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2)))
            base = base + rng.uniform(-150, 150, (m, 3, 1, 1)) * blob
        out[start : start + m] = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
    return out


class RssSampler:
    """Peak resident memory of this process, split as Linux reports it (``/proc/self/status``).

    ``RssAnon`` is memory the process allocated; ``RssFile`` is pages of memory-mapped files
    (``pixels.npy``) that the kernel can drop and read again; ``VmHWM`` is their peak sum.
    """

    def __init__(self, interval: float = 0.5) -> None:
        import threading

        self.peak = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _read(self) -> dict[str, int]:
        out = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) // 1024
        return out

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            now = self._read()
            for k in self.peak:
                self.peak[k] = max(self.peak[k], now.get(k, 0))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> dict[str, float]:
        return {
            "peak_rss_mib_sampled": self.peak["VmRSS"],
            "peak_anon_mib_sampled": self.peak["RssAnon"],
            "peak_file_mapped_mib_sampled": self.peak["RssFile"],
            "vm_hwm_mib_whole_process": self._read().get("VmHWM", 0),
        }


def bench_synthetic(n: int, knn_shifts: bool, seed: int = SEED) -> dict[str, Any]:
    """``n`` synthetic 32×32 images with 1 % planted edited copies, through :func:`find_duplicates`.

    The pixels are written in chunks to a memory-mapped ``.npy`` file (as the ingest stage
    writes ``pixels.npy``) and read back memory-mapped, so the process never holds them all.
    """
    from numpy.lib.format import open_memmap

    from memclean.imaging import pixel_digest

    rng = np.random.default_rng(seed)
    n_copies = max(1, n // 100)
    n_base = n - n_copies
    src = np.sort(rng.choice(n_base, n_copies, replace=False))
    with tempfile.TemporaryDirectory(prefix="bench_dedup_synthetic_") as tmp:
        path = Path(tmp) / "pixels.npy"
        t0 = time.perf_counter()
        out = open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, 3, 32, 32))
        for start in range(0, n_base, 65_536):
            stop = min(n_base, start + 65_536)
            out[start:stop] = synthetic_images(stop - start, rng)
        for i, s in enumerate(src):
            out[n_base + i] = _edit(np.asarray(out[s]).transpose(1, 2, 0), EDIT_KINDS[i % 5], rng).transpose(2, 0, 1)
        out.flush()
        del out
        pixels = np.load(path, mmap_mode="r")
        digests = [pixel_digest(pixels[i]) for i in range(n)]
        samples = pd.DataFrame(
            {
                "sample_id": np.char.add("s", np.arange(n).astype(str)).astype(object),
                "label": np.zeros(n, np.int32),
                "split": "train",
                "pixel_sha256": digests,
                "status": "ok",
                "row": np.arange(n),
            }
        )
        del digests
        make_seconds = time.perf_counter() - t0
        log.info(
            "synthetic: %d images (%d planted copies) written in %.0f s; find_duplicates", n, n_copies, make_seconds
        )
        release_pages(pixels)
        hash_executors = compare_hash_executors(pixels)
        log.info("hashing: %s", hash_executors)
        release_pages(pixels)
        with RssSampler() as rss:  # around the search only (writing the file maps every page)
            result, timing = _run_timed(samples, pixels, knn_shifts=knn_shifts)
        timing.update(rss.report())
    a = result.pairs["a"].str.slice(1).astype(np.int64).to_numpy()
    b = result.pairs["b"].str.slice(1).astype(np.int64).to_numpy()
    near = result.pairs["kind"].isin(["near", "exact"]).to_numpy()
    key = set(zip(a[near].tolist(), b[near].tolist()))
    hits = np.array([(int(s), n_base + i) in key for i, s in enumerate(src)])
    kinds = np.array([EDIT_KINDS[i % 5] for i in range(n_copies)])
    return {
        "images": n,
        "planted": n_copies,
        "knn_shifts": knn_shifts,
        "make_seconds": rnd(make_seconds, 1),
        "hash_executors": hash_executors,
        "find_duplicates": timing,
        "stage_timings": result.timings,
        "recall_near": rnd(float(hits.mean())),
        "recall_near_by_edit": {k: rnd(float(hits[kinds == k].mean())) for k in EDIT_KINDS[:5]},
        "near_pairs": int(result.stats["near_pairs"]),
        "similar_pairs": int(result.stats["similar_pairs"]),
        "candidate_pairs": result.stats["candidate_pairs"],
        "largest_group": int(result.stats["largest_group"]),
    }


# --------------------------------------------------------------------------- main


def hash_diagnostics(hashes: np.ndarray) -> dict[str, Any]:
    _, counts = np.unique(hashes, return_counts=True)
    return {
        "distinct_hashes": len(counts),
        "largest_identical_hash_set": int(counts.max()) if len(counts) else 0,
        "pairs_with_identical_hash": int((counts * (counts - 1) // 2).sum()),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_DATA_DIR, help=f"shared data folder (default {DEFAULT_DATA_DIR})"
    )
    parser.add_argument("--skip-cifar", action="store_true", help="skip the CIFAR-10 find_duplicates run")
    parser.add_argument(
        "--cifar-only", action="store_true", help="only the CIFAR-10 find_duplicates run (and what clean drops)"
    )
    parser.add_argument("--quick", action="store_true", help=f"use {QUICK_N:,} images instead of {FULL_N:,}")
    parser.add_argument("--out", type=Path, help="also write the JSON to this file")
    parser.add_argument("--planted", type=int, help="CIFAR-10 with this many planted edited copies (only)")
    parser.add_argument("--synthetic", type=int, help="this many synthetic images with planted copies (only)")
    parser.add_argument("--knn-no-shifts", action="store_true", help="find_duplicates(knn_shifts=False)")
    parser.add_argument(
        "--embedding", choices=("auto", "true", "false"), default="false", help="find_duplicates(embedding=...)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    n_train = QUICK_N if args.quick else FULL_N
    rng = np.random.default_rng(SEED)
    wall = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "memclean.dedup", "quick": bool(args.quick), "machine": machine_info()}
    if args.cifar_only:
        with tempfile.TemporaryDirectory(prefix="bench_dedup_") as tmp:
            report["cifar10"] = bench_cifar(args.data_dir, Path(tmp))
        report["total_seconds"] = rnd(time.perf_counter() - wall, 2)
        emit(report, args.out)
        return 0
    if args.planted or args.synthetic:
        if args.planted:
            emb = {"true": True, "false": False}.get(args.embedding, "auto")
            report["planted"] = bench_planted(args.data_dir, args.planted, not args.knn_no_shifts, embedding=emb)
        if args.synthetic:
            report["synthetic"] = bench_synthetic(args.synthetic, not args.knn_no_shifts)
        emit(report, args.out)
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_dedup_") as tmp:
        workdir = Path(tmp)
        name, pixels, ingest_info = load_dataset(args.data_dir, n_train, workdir)
        report["dataset"] = name
        report["data_dir"] = str(args.data_dir)
        report["ingest"] = ingest_info

        hashes, report["hashing"] = bench_hashing(pixels, rng)
        report["hash_diagnostics"] = hash_diagnostics(hashes)
        report["search"] = bench_search(hashes)
        report["reference_imagehash_loop"] = bench_reference(hashes, report["search"], rng)
        ref = report["reference_imagehash_loop"]
        r8 = report["search"]["radius_8"]["radius_pairs_seconds"]
        report["targets"] = {
            "ratio_at_least_100": all(ref[f"ratio_radius_{r}"] >= 100 for r in RADII),
            "radius_8_under_5s": r8 < 5.0,
            "all_equal_to_brute_force": all(report["search"][f"radius_{r}"]["equal_to_brute_force"] for r in RADII),
            "phash_bit_exact_on_sample": report["hashing"]["mismatches_vs_imagehash"] == 0,
        }
        if args.quick:
            report["targets"]["note"] = "quick run: targets are defined for 60,000 images"
        del pixels

        if args.skip_cifar:
            report["cifar10"] = {"skipped": "--skip-cifar"}
        elif not (args.data_dir / "cifar10").is_dir():
            report["cifar10"] = {"skipped": f"{args.data_dir / 'cifar10'} not found"}
        else:
            report["cifar10"] = bench_cifar(args.data_dir, workdir)

    report["total_seconds"] = rnd(time.perf_counter() - wall, 2)
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
