"""Duplicate detection: hashes match imagehash, the radius search matches brute force,
planted copies are found, conflicts and leaks are flagged, flat images stay apart.

The near-copy tests (verification, tiers, chain-free groups, small images) are in
``tests/test_dedup_nearcopy.py``."""

from __future__ import annotations

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageEnhance

from conftest import encode, pattern
from memclean.dedup import brute_force_pairs, find_duplicates, radius_pairs
from memclean.errors import MemcleanError
from memclean.hashing import HASH_METHODS, compute_hashes
from memclean.ingest import ingest
from memclean.sources import list_imagefolder


def clustered_hashes(n: int, seed: int) -> np.ndarray:
    """Random 64-bit hashes with planted neighbours at 1-10 flipped bits."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64, size=n // 2, dtype=np.uint64)
    flips = np.zeros(n - len(base), dtype=np.uint64)
    for k in range(len(flips)):
        for b in rng.choice(64, size=rng.integers(1, 11), replace=False):
            flips[k] |= np.uint64(1) << np.uint64(b)
    near = base[rng.integers(0, len(base), size=len(flips))] ^ flips
    return np.concatenate([base, near])


@pytest.mark.parametrize("radius", [0, 1, 2, 4, 6, 8, 12, 20])
@pytest.mark.parametrize("n", [2, 300, 2500])
def test_radius_search_equals_brute_force(n, radius):
    h = clustered_hashes(n, seed=n + radius)
    got = radius_pairs(h, radius)
    want = brute_force_pairs(h, radius)
    np.testing.assert_array_equal(got, want)
    assert (got[:, 0] < got[:, 1]).all()


def test_radius_search_small_blocks_and_edge_cases():
    h = clustered_hashes(400, seed=1)
    h[:50] = h[0]  # a large bucket of identical hashes
    np.testing.assert_array_equal(radius_pairs(h, 5, max_candidates=97), brute_force_pairs(h, 5))
    assert radius_pairs(h[:1], 4).shape == (0, 2)
    assert radius_pairs(np.empty(0, np.uint64), 4).shape == (0, 2)
    with pytest.raises(ValueError):
        radius_pairs(h, 64)


@pytest.mark.parametrize("method", HASH_METHODS)
@pytest.mark.parametrize("channels", [1, 3])
def test_hashes_are_imagehash_bit_for_bit(method, channels):
    rng = np.random.default_rng(3)
    imgs = np.concatenate(
        [
            rng.integers(0, 256, size=(20, channels, 28, 28), dtype=np.uint8),
            np.stack(
                [
                    pattern(28, 28, seed=s, channels=channels).reshape(28, 28, channels).transpose(2, 0, 1)
                    for s in range(20)
                ]
            ),
        ]
    )
    got = compute_hashes(imgs, method, batch_size=7)
    fn = getattr(imagehash, method)
    for img, value in zip(imgs, got):
        pil = Image.fromarray(img[0]) if channels == 1 else Image.fromarray(img.transpose(1, 2, 0))
        assert int(value) == int(str(fn(pil)), 16)


def test_unknown_hash_method():
    with pytest.raises(MemcleanError, match="unknown dedup.hash"):
        compute_hashes(np.zeros((1, 1, 8, 8), np.uint8), "md5")


#: The `pattern` images are smooth sinusoids: different ones score up to 0.88 as look-alikes
#: (a real photo's copies score near 1), so these tests ask for a stricter near threshold.
NEAR = 0.9


@pytest.fixture
def planted(tmp_path):
    """32x32 originals and their altered copies, in class and split folders."""
    root = tmp_path / "planted"
    originals = {s: pattern(32, 32, seed=100 + s) for s in range(12)}

    def put(rel: str, data: bytes) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    for s, img in originals.items():
        put(f"train/{'a' if s % 2 else 'b'}/orig_{s}.png", encode(img))
    big = np.asarray(Image.fromarray(originals[0]).resize((48, 48), Image.Resampling.BICUBIC))
    put("train/b/resized_0.png", encode(big))
    put("train/a/jpeg_1.jpg", encode(originals[1], "JPEG", quality=70))
    bright = np.asarray(ImageEnhance.Brightness(Image.fromarray(originals[3])).enhance(1.15))
    put("train/a/bright_3.png", encode(bright))
    put("train/b/exact_5.png", encode(originals[5]))  # orig_5 is in class a: conflicting labels
    put("test/b/leak_6.png", encode(originals[6]))  # the same image in the test split
    put("train/a/blank_0.png", encode(np.zeros((32, 32, 3), np.uint8)))
    put("train/b/blank_1.png", encode(np.ones((32, 32, 3), np.uint8)))
    put("train/a/blank_2.png", encode(np.zeros((32, 32, 3), np.uint8)))
    listing = list_imagefolder(root)
    result = ingest(listing, tmp_path / "p.npy")
    return result.samples, np.array(result.pixels)


def group_of(dups, sample_id):
    rows = dups[dups["sample_id"] == sample_id]
    assert len(rows) == 1, f"{sample_id} is not in exactly one group"
    gid = rows["group_id"].item()
    return set(dups.loc[dups["group_id"] == gid, "sample_id"])


def test_planted_copies_are_grouped(planted):
    samples, pixels = planted
    result = find_duplicates(samples, pixels, "phash", max_distance=8, near_threshold=NEAR)
    d = result.duplicates
    assert group_of(d, "train/b/resized_0.png") == {"train/b/orig_0.png", "train/b/resized_0.png"}
    assert group_of(d, "train/a/jpeg_1.jpg") == {"train/a/orig_1.png", "train/a/jpeg_1.jpg"}
    assert group_of(d, "train/a/bright_3.png") == {"train/a/orig_3.png", "train/a/bright_3.png"}
    assert group_of(d, "train/b/exact_5.png") == {"train/a/orig_5.png", "train/b/exact_5.png"}
    # Untouched originals are in no group.
    for s in (2, 4, 7, 8, 9, 10, 11):
        assert not (d["sample_id"].str.endswith(f"orig_{s}.png")).any()
    assert len(d) == d["sample_id"].nunique()


def test_kinds_conflicts_leaks_and_representatives(planted):
    samples, pixels = planted
    d = find_duplicates(samples, pixels, "phash", max_distance=8, near_threshold=NEAR).duplicates.set_index("sample_id")
    assert d.loc["train/b/exact_5.png", "kind"] == "exact" and d.loc["train/b/exact_5.png", "distance"] == 0
    assert d.loc["train/a/jpeg_1.jpg", "kind"] == "near"
    assert d.loc["train/b/exact_5.png", "label_conflict"] and d.loc["train/a/orig_5.png", "label_conflict"]
    assert not d.loc["train/a/jpeg_1.jpg", "label_conflict"]
    assert d.loc["test/b/leak_6.png", "cross_split"] and d.loc["train/b/orig_6.png", "cross_split"]
    assert not d.loc["train/a/jpeg_1.jpg", "cross_split"]
    assert d.groupby("group_id")["is_representative"].sum().eq(1).all()
    # Pairs of two (every group here): the representative is the member that comes first.
    rows = samples.set_index("sample_id")["row"]
    first = (
        d.assign(row=rows.reindex(d.index)).reset_index().sort_values("row").groupby("group_id")["sample_id"].first()
    )
    assert set(first) == set(d.index[d["is_representative"]])


def test_flat_images_form_exact_groups_only(planted):
    samples, pixels = planted
    result = find_duplicates(samples, pixels, "phash", max_distance=8, near_threshold=NEAR)
    d = result.duplicates
    assert group_of(d, "train/a/blank_0.png") == {"train/a/blank_0.png", "train/a/blank_2.png"}
    assert not (d["sample_id"] == "train/b/blank_1.png").any()
    assert result.stats["flat_excluded"] == 3


def test_radius_zero_and_bad_rows(planted):
    samples, pixels = planted
    # Hash candidates only (no pixel kNN): a wider radius finds more verified pairs (groups
    # may differ: a node belongs to at most one star).
    r0 = find_duplicates(samples, pixels, "phash", max_distance=0, knn_k=0, near_threshold=NEAR)
    r8 = find_duplicates(samples, pixels, "phash", max_distance=8, knn_k=0, near_threshold=NEAR)
    p0, p8 = (set(zip(r.pairs["a"], r.pairs["b"], r.pairs["kind"])) for r in (r0, r8))
    assert p0 < p8
    assert (r0.pairs.loc[r0.pairs["kind"] != "exact", "hash_distance"] == 0).all()
    broken = samples.copy()
    broken.loc[broken["status"] == "ok", "row"] = broken.loc[broken["status"] == "ok", "row"] + 1
    with pytest.raises(MemcleanError, match="does not match pixels.npy"):
        find_duplicates(broken, pixels)
