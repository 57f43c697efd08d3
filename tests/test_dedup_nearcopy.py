"""Near copies: verification tolerates edits, look-alikes stay apart, groups cannot chain,
small images skip hashes, the digits default groups no different digits, the stage writes
the pairs table, and the output is deterministic."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageEnhance
from sklearn.datasets import load_digits, load_sample_images

from memclean import nearcopy
from memclean.dedup import find_duplicates, star_groups
from memclean.errors import MemcleanError
from memclean.imaging import pixel_digest
from memclean.io import read_parquet
from memclean.schema import DUPLICATE_PAIRS_SCHEMA, DUPLICATES_SCHEMA

SIDE = 32


def samples_for(pixels: np.ndarray, labels: np.ndarray | None = None, splits: list[str] | None = None) -> pd.DataFrame:
    n = len(pixels)
    return pd.DataFrame(
        {
            "sample_id": [f"s{i:05d}" for i in range(n)],
            "label": labels if labels is not None else np.zeros(n, np.int32),
            "split": splits or ["train"] * n,
            "pixel_sha256": [pixel_digest(p) for p in pixels],
            "status": "ok",
            "row": np.arange(n),
        }
    )


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """80 distinct 32×32 RGB photo patches (scikit-learn's sample photos, 48-px tiles downsized)."""
    out = []
    for img in load_sample_images().images:
        h, w, _ = img.shape
        for y in range(0, h - 48, 48):
            for x in range(0, w - 48, 48):
                tile = Image.fromarray(img[y : y + 48, x : x + 48]).resize((SIDE, SIDE), Image.Resampling.LANCZOS)
                arr = np.asarray(tile)
                if arr.std() > 25:
                    out.append(arr)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(out), 80, replace=False)
    return np.stack([out[i] for i in sorted(pick)])


def jpeg(arr: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def shift(arr: np.ndarray, dy: int, dx: int) -> np.ndarray:
    p = 4
    padded = np.pad(arr, ((p, p), (p, p), (0, 0)), mode="edge")
    return padded[p - dy : p - dy + SIDE, p - dx : p - dx + SIDE]


def crop(arr: np.ndarray, frac: float, y0: int, x0: int) -> np.ndarray:
    c = round(frac * SIDE)
    return np.asarray(Image.fromarray(arr[y0 : y0 + c, x0 : x0 + c]).resize((SIDE, SIDE), Image.Resampling.BICUBIC))


def colour(arr: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    img = ImageEnhance.Brightness(Image.fromarray(arr)).enhance(brightness)
    return np.asarray(ImageEnhance.Contrast(img).enhance(contrast))


EDITS = {
    "shift_2_-3": lambda a: shift(a, 2, -3),
    "shift_4_1": lambda a: shift(a, 4, 1),
    "crop_80": lambda a: crop(a, 0.80, 3, 2),
    "crop_90": lambda a: crop(a, 0.90, 0, 3),
    "jpeg_30": lambda a: jpeg(a, 30),
    "jpeg_60": lambda a: jpeg(a, 60),
    "flip": lambda a: a[:, ::-1],
    "bright_+20": lambda a: colour(a, 1.2, 1.0),
    "contrast_-20": lambda a: colour(a, 1.0, 0.8),
    "combo": lambda a: jpeg(colour(shift(a, -2, 2), 0.85, 1.15), 50)[:, ::-1],
}


def chw(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2))


@pytest.fixture(scope="module")
def edited(photos):
    """The photos plus one edited copy of each of the first len(EDITS) photos."""
    copies = [np.ascontiguousarray(fn(photos[i])) for i, fn in enumerate(EDITS.values())]
    pixels = chw(np.concatenate([photos, np.stack(copies)]))
    samples = samples_for(pixels)
    result = find_duplicates(samples, pixels)
    return photos, samples, result


@pytest.mark.parametrize("k", range(len(EDITS)))
def test_edited_copies_are_near_pairs_and_grouped(edited, k):
    photos, _, result = edited
    a, b = f"s{k:05d}", f"s{len(photos) + k:05d}"
    pairs = result.pairs.set_index(["a", "b"])
    assert (a, b) in pairs.index, f"{list(EDITS)[k]}: pair not found"
    assert pairs.loc[(a, b), "kind"] == "near", pairs.loc[(a, b)].to_dict()
    d = result.duplicates
    assert b in set(d["sample_id"])  # the copy is grouped (with its original or a verified look-alike)


def test_no_other_pairs_among_distinct_photos(edited):
    """Neighbouring tiles of one sample photo (smooth petals, sky) match as a whole; the local check parts them."""
    photos, _, result = edited
    near = result.pairs[result.pairs["kind"] != "similar"]
    planted = {(f"s{k:05d}", f"s{len(photos) + k:05d}") for k in range(len(EDITS))}
    assert set(zip(near["a"], near["b"])) == planted
    assert result.stats["near_pairs"] == len(EDITS) and result.stats["largest_group"] == 2


def test_verified_similarity_is_invariant_and_symmetric(photos):
    pixels = chw(np.stack([photos[0], colour(photos[0], 0.8, 1.2), photos[1]]))
    geo = nearcopy.Geometry.for_images(SIDE, SIDE)
    fine = nearcopy.Geometry.for_images(SIDE, SIDE, nearcopy.FINE_SIDE)
    dev = torch.device("cpu")
    index = np.arange(3)
    feats = nearcopy.pixel_features(pixels, index, geo, dev)
    found = nearcopy.similarity(pixels, index, feats, np.array([[0, 1], [1, 0], [0, 2], [0, 0]]), geo, fine, 0.5, dev)
    sim = found.score
    assert found.local[0] > 0.97 and found.local[3] == pytest.approx(1.0, abs=1e-3)
    assert sim[0] > 0.97 and sim[1] == pytest.approx(sim[0], abs=1e-4)
    assert sim[2] < 0.8
    assert sim[3] == pytest.approx(1.0, abs=1e-3)


def test_look_alikes_of_one_scene_are_not_near(photos):
    """Different shots of one scene: overlapping tiles of one photo, a quarter of a side apart."""
    china = load_sample_images().images[0]
    tiles = []
    for y, x in [(100, 200), (100, 216), (116, 200), (300, 300), (300, 316)]:
        tiles.append(np.asarray(Image.fromarray(china[y : y + 64, x : x + 64]).resize((SIDE, SIDE))))
    pixels = chw(np.stack(tiles))
    result = find_duplicates(samples_for(pixels), pixels)
    assert (result.pairs["kind"] != "near").all(), result.pairs
    assert result.duplicates.empty


def test_colour_signature_ignores_brightness_contrast_and_geometry_but_not_hue(photos):
    """Brightness, contrast, JPEG and mirroring keep the colour gap under the tolerance; a hue change does not.

    Checked on a strongly coloured photo (the 90th percentile of colour size) and on the least
    coloured one. (On the most coloured photo, brightness × 0.8 with contrast × 1.2 clips and
    reaches 0.1225: just beyond; such a pair then needs the recoloured threshold.)
    """
    order = torch.argsort(nearcopy.colour_signature(chw(photos), torch.device("cpu")).norm(dim=1))
    strong = int(order[int(0.9 * len(order))])
    for k in (strong, int(order[0])):
        photo = photos[k]
        edits = [colour(photo, 1.2, 0.8), colour(photo, 0.8, 1.2), jpeg(photo, 30), photo[:, ::-1]]
        hue = photo[:, :, [1, 2, 0]]  # channels rotated: the same shapes, other colours
        pixels = chw(np.stack([photo, *edits, hue]))
        sig = nearcopy.colour_signature(pixels, torch.device("cpu"))
        gap = nearcopy.colour_gap(sig, np.array([[0, k] for k in range(1, len(pixels))]))
        assert (gap[:-1] < nearcopy.COLOUR_TOLERANCE).all(), (k, gap)
        if k == strong:
            assert gap[-1] > 2 * nearcopy.COLOUR_TOLERANCE, gap
    # A grey image has no colour: signature 0 whatever its brightness.
    grey = nearcopy.colour_signature(pixels[:2, :1], torch.device("cpu"))
    assert torch.equal(grey, torch.zeros(2, 2))


def test_recoloured_pairs_need_the_higher_threshold(photos):
    """A copy in other colours is near only from recoloured_near_threshold; the gap is in the pairs table."""
    k = int(torch.argsort(nearcopy.colour_signature(chw(photos), torch.device("cpu")).norm(dim=1))[72])
    ycc = np.asarray(Image.fromarray(photos[k]).convert("YCbCr")).copy()
    ycc[..., 1:] = 255 - ycc[..., 1:]  # the same grey levels, opposite colours
    pair = chw(np.stack([photos[k], np.asarray(Image.fromarray(ycc, "YCbCr").convert("RGB"))]))
    samples = samples_for(pair)
    found = find_duplicates(samples, pair, colour_tolerance=None)
    row = found.pairs.iloc[0]
    assert row["kind"] == "near" and row["colour_gap"] > nearcopy.COLOUR_TOLERANCE
    assert row["similarity"] > 0.85
    strict = find_duplicates(samples, pair, recoloured_near_threshold=min(1.0, float(row["similarity"]) + 0.01))
    assert strict.pairs["kind"].tolist() == ["similar"] and strict.duplicates.empty
    assert strict.stats["recoloured_similar_pairs"] == 1
    assert find_duplicates(samples, pair).pairs["kind"].tolist() == ["near"]  # default 0.85: still a copy
    # Below the near threshold it changes nothing: a recoloured pair is never easier to call near.
    assert find_duplicates(samples, pair, near_threshold=0.999, recoloured_near_threshold=0.6).duplicates.empty
    with pytest.raises(MemcleanError, match="recoloured_near_threshold"):
        find_duplicates(samples, pair, recoloured_near_threshold=1.5)


@pytest.mark.parametrize("k", [7, 28, 63])
def test_another_shot_where_the_subject_moved_is_similar_not_near(photos, k):
    """Three quarters identical, the subject in the fourth turned round: near as a whole, not locally."""
    moved = photos[k].copy()
    moved[4:16, 4:16] = photos[k][4:16, 4:16][::-1, ::-1]
    pair = chw(np.stack([photos[k], moved]))
    samples = samples_for(pair)
    loose = find_duplicates(samples, pair, local_threshold=None).pairs.iloc[0]
    assert loose["kind"] == "near" and loose["similarity"] >= 0.75, loose  # the whole still matches
    assert loose["local_similarity"] < 0.5, loose
    found = find_duplicates(samples, pair)
    assert found.pairs["kind"].tolist() == ["similar"] and found.duplicates.empty
    assert found.stats["local_similar_pairs"] == 1 and found.stats["thresholds"]["local"] == nearcopy.LOCAL_THRESHOLD
    with pytest.raises(MemcleanError, match="local_threshold"):
        find_duplicates(samples, pair, local_threshold=-2.0)


def test_edited_copies_pass_the_local_check(edited):
    """Shifts, crops, JPEG, colour and mirror edits correlate in every detailed quarter too."""
    photos, _, result = edited
    planted = {(f"s{k:05d}", f"s{len(photos) + k:05d}") for k in range(len(EDITS))}
    pairs = result.pairs
    copies = pairs[[(a, b) in planted for a, b in zip(pairs["a"], pairs["b"])]]
    assert len(copies) == len(EDITS)
    assert (copies["local_similarity"] >= nearcopy.LOCAL_THRESHOLD).all(), copies


def test_star_groups_cannot_chain():
    # A~B, B~C, A!~C: B becomes a representative (two partners) and takes both ... unless the
    # cap is 2; with A~B only, C stays alone. Either way no group holds A and C without B as centre.
    pairs = np.array([[0, 1], [1, 2]])
    centre, cut = star_groups(3, pairs, np.array([0.95, 0.93], np.float32), max_size=100)
    assert centre.tolist() == [1, 1, 1] and cut == 0  # B is the centre: both verified against B
    centre, cut = star_groups(3, pairs, np.array([0.95, 0.93], np.float32), max_size=2)
    assert centre.tolist() == [1, 1, -1] and cut == 1
    # A path A-B-C-D: the two middle nodes have two pairs each; no group spans A..D.
    pairs = np.array([[0, 1], [1, 2], [2, 3]])
    centre, _ = star_groups(4, pairs, np.ones(3, np.float32), max_size=100)
    assert centre.tolist() == [1, 1, 1, -1]


def test_star_groups_members_are_paired_with_their_representative():
    rng = np.random.default_rng(0)
    n = 300
    pairs = np.unique(np.sort(rng.integers(0, n, size=(900, 2)), axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    sim = rng.uniform(0.9, 1.0, len(pairs)).astype(np.float32)
    centre, cut = star_groups(n, pairs, sim, max_size=5)
    edges = set(map(tuple, pairs.tolist()))
    for node in np.nonzero(centre >= 0)[0]:
        c = centre[node]
        assert c == node or (min(c, node), max(c, node)) in edges
        assert centre[c] == c
    assert np.bincount(centre[centre >= 0]).max() <= 5 and cut > 0


def test_chain_in_data_is_not_one_group(photos):
    """A, a half-way blend B and C: A~B and B~C may be near, but A and C never share a group."""
    a, c = photos[2].astype(np.float64), photos[3].astype(np.float64)
    steps = [a, 0.8 * a + 0.2 * c, 0.6 * a + 0.4 * c, 0.4 * a + 0.6 * c, 0.2 * a + 0.8 * c, c]
    pixels = chw(np.stack([s.round().astype(np.uint8) for s in steps]))
    result = find_duplicates(samples_for(pixels), pixels, near_threshold=0.9, similar_threshold=0.5)
    pairs = result.pairs
    near = set(zip(pairs.loc[pairs["kind"] == "near", "a"], pairs.loc[pairs["kind"] == "near", "b"]))
    d = result.duplicates
    for _, g in d.groupby("group_id"):
        rep = g.loc[g["is_representative"], "sample_id"].item()
        for member in g["sample_id"]:
            assert member == rep or (min(rep, member), max(rep, member)) in near
    assert ("s00000", "s00005") not in near


def test_digits_default_groups_no_different_digits():
    bunch = load_digits()
    images = np.clip(bunch.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)[:, None]
    samples = samples_for(images, bunch.target.astype(np.int32))
    result = find_duplicates(samples, images)
    assert result.stats["hash_candidates"] is False  # 8×8 is under min_hash_side
    assert not result.duplicates["label_conflict"].any(), result.duplicates
    near = result.pairs[result.pairs["kind"] == "near"]
    labels = samples.set_index("sample_id")["label"]
    assert (labels[near["a"]].to_numpy() == labels[near["b"]].to_numpy()).all()


def test_small_images_get_no_hash_candidates(photos):
    small = chw(np.stack([np.asarray(Image.fromarray(p).resize((16, 16))) for p in photos[:20]]))
    small = np.concatenate([small, small[:1, :, :, ::-1]])
    result = find_duplicates(samples_for(small), small)
    assert result.stats["hash_candidates"] is False and result.stats["candidate_pairs"]["hash"] == 0
    assert set(result.pairs["method"]) <= {"pixel_knn"}
    assert ("s00000", "s00020") in set(zip(result.pairs["a"], result.pairs["b"]))


def test_deterministic_and_schemas(edited):
    photos, samples, result = edited
    pixels = chw(
        np.concatenate([photos, np.stack([np.ascontiguousarray(fn(photos[i])) for i, fn in enumerate(EDITS.values())])])
    )
    again = find_duplicates(samples, pixels)
    pd.testing.assert_frame_equal(result.duplicates, again.duplicates)
    pd.testing.assert_frame_equal(result.pairs, again.pairs)
    assert list(result.pairs.columns) == DUPLICATE_PAIRS_SCHEMA.names
    assert list(result.duplicates.columns) == DUPLICATES_SCHEMA.names
    assert set(result.pairs["kind"]) <= {"exact", "near", "similar"}


def test_bad_thresholds():
    pixels = np.zeros((2, 1, 8, 8), np.uint8)
    with pytest.raises(MemcleanError, match="similar_threshold"):
        find_duplicates(samples_for(pixels), pixels, near_threshold=0.8, similar_threshold=0.9)


def test_stage_writes_pairs_with_schema(tmp_path, photos):
    from test_stages import run_stage

    root = tmp_path / "folder"
    for i, p in enumerate(photos[:12]):
        (root / "train" / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(p).save(root / "train" / "a" / f"{i}.png")
    Image.fromarray(jpeg(photos[0], 40)).save(root / "train" / "a" / "copy.png")
    Image.fromarray(photos[1]).save(root / "train" / "a" / "exact.png")
    work = tmp_path / "work"
    work.mkdir()
    params = {"ingest": {"source": "imagefolder", "root": str(root)}}
    assert run_stage("ingest", work, params).returncode == 0
    proc = run_stage("dedup", work, params)
    assert proc.returncode == 0, proc.stderr
    pairs = read_parquet(work / "data/interim/duplicate_pairs.parquet", DUPLICATE_PAIRS_SCHEMA)
    got = {(a, b, k) for a, b, k in zip(pairs["a"], pairs["b"], pairs["kind"])}
    assert ("train/a/0.png", "train/a/copy.png", "near") in got
    assert ("train/a/1.png", "train/a/exact.png", "exact") in got
    dups = read_parquet(work / "data/interim/duplicates.parquet", DUPLICATES_SCHEMA)
    assert dups.groupby("group_id").size().eq(2).all()


def test_best_k_matches_brute_force():
    """Merging per-variant hits: each neighbour once, at its best similarity, top k per row."""
    rng = np.random.default_rng(3)
    rows = rng.integers(0, 20, 2000)
    nbrs = rng.integers(0, 50, 2000)
    sims = rng.uniform(-1, 1, 2000).astype(np.float32)
    r, j, s = nearcopy._best_k(rows, nbrs, sims, 4)
    got = {(int(a), int(b)): float(c) for a, b, c in zip(r, j, s)}
    for row in range(20):
        best: dict[int, float] = {}
        for b, c in zip(nbrs[rows == row], sims[rows == row]):
            best[int(b)] = max(best.get(int(b), -9.0), float(c))
        top = sorted(best.items(), key=lambda t: (-t[1], t[0]))[:4]
        assert [(row, b) for b, _ in top] == [k for k in got if k[0] == row]
        assert all(got[(row, b)] == pytest.approx(c) for b, c in top)


def photos_and_copies(
    photos: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, nearcopy.Geometry, torch.device, nearcopy.PixelFeatures]:
    """The photos plus one edited copy per edit (copy ``k`` of photo ``k``), and their kNN features."""
    copies = [np.ascontiguousarray(fn(photos[i])) for i, fn in enumerate(EDITS.values())]
    pixels = chw(np.concatenate([photos, np.stack(copies)]))
    index = np.arange(len(pixels))
    geo = nearcopy.Geometry.for_images(SIDE, SIDE)
    dev = torch.device("cpu")
    return pixels, index, geo, dev, nearcopy.pixel_features(pixels, index, geo, dev)


def test_inverted_file_knn_finds_the_exact_copies(photos):
    """Above EXACT_KNN_LIMIT the kNN is approximate (faiss IVF): it still finds every edited copy,
    agrees with the exact index on the closest pairs, and is deterministic."""
    pixels, index, geo, dev, feats = photos_and_copies(photos)
    exact, s_exact = nearcopy.knn_pairs(pixels, index, feats, geo, 4, dev, exact_limit=10**9)
    ivf, s_ivf = nearcopy.knn_pairs(pixels, index, feats, geo, 4, dev, exact_limit=0)
    again, s_again = nearcopy.knn_pairs(pixels, index, feats, geo, 4, dev, exact_limit=0)
    assert isinstance(nearcopy.knn_index(feats.knn.numpy(), exact_limit=0), faiss_ivf())
    planted = {(k, len(photos) + k) for k in range(len(EDITS))}
    assert planted <= set(map(tuple, exact.tolist()))
    assert planted <= set(map(tuple, ivf.tolist()))
    close = {tuple(p) for p, s in zip(exact.tolist(), s_exact) if s >= 0.9}
    assert close <= set(map(tuple, ivf.tolist()))
    np.testing.assert_array_equal(ivf, again)
    np.testing.assert_array_equal(s_ivf, s_again)
    assert (ivf[:, 0] < ivf[:, 1]).all() and len(np.unique(ivf, axis=0)) == len(ivf)


def test_each_query_variant_keeps_its_own_best_neighbour(photos):
    """per_variant=1: besides the k best over all variants, every variant's (image, mirror, shifts)
    own best neighbour is a candidate; nothing the plain rule found is lost."""
    import faiss

    pixels, index, geo, dev, feats = photos_and_copies(photos)
    base, _ = nearcopy.knn_pairs(pixels, index, feats, geo, 2, dev, per_variant=0, exact_limit=10**9)
    quota, _ = nearcopy.knn_pairs(pixels, index, feats, geo, 2, dev, per_variant=1, exact_limit=10**9)
    got = set(map(tuple, quota.tolist()))
    assert set(map(tuple, base.tolist())) < got
    flat = faiss.IndexFlatIP(feats.knn.shape[1])
    flat.add(feats.knn.numpy())
    queries = nearcopy._project(nearcopy.knn_variants(pixels, geo, dev, True), feats.mean, feats.basis)
    n, v = queries.shape[:2]
    _, hits = flat.search(queries.flatten(0, 1).numpy(), 3)
    for row, hit in zip(np.repeat(np.arange(n), v), hits):
        best = next(int(j) for j in hit if j != row)
        assert (min(row, best), max(row, best)) in got
    assert len(quota) <= n * (2 + v)  # each image adds at most its k best and one per variant


def test_per_variant_default_follows_the_dataset_size():
    assert nearcopy.per_variant_default(60_000) == 1
    assert nearcopy.per_variant_default(nearcopy.PER_VARIANT_UP_TO) == 0
    assert nearcopy.per_variant_default(10**6, 3) == 3 and nearcopy.per_variant_default(10, 0) == 0


def faiss_ivf() -> type:
    import faiss

    return faiss.IndexIVFFlat


@pytest.mark.parametrize("rows", [1, 5, 12, 16])
def test_grouped_convolution_gives_every_window_dot_product(rows):
    from memclean.nearcopy import _correlate

    gen = torch.Generator().manual_seed(rows)
    v, side, window, d = 3, 9, 6, 4
    thumbs = torch.randn(rows, v, side, side, generator=gen)
    ref = torch.randn(rows, d, window * window, generator=gen)
    got = _correlate(thumbs, ref, window, full=16)  # 5 and 12 rows are padded (to 8 and 16)
    span = side - window + 1
    want = torch.empty(rows, d, v * span * span)
    for r in range(rows):
        for k in range(v):
            for dy in range(span):
                for dx in range(span):
                    win = thumbs[r, k, dy : dy + window, dx : dx + window].reshape(-1)
                    want[r, :, (k * span + dy) * span + dx] = ref[r] @ win
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- copy-detection embedding


def test_copy_embedding_puts_each_edited_copy_among_its_originals_nearest(photos):
    """Trained on the photos and their copies without labels, the embedding's 2 nearest neighbours
    include every planted copy, the loss falls well under chance, and a rerun is identical."""
    from memclean import copyembed

    pixels, index, *_ = photos_and_copies(photos)
    cpu = torch.device("cpu")
    got = copyembed.embedding_pairs(pixels, index, 2, 30, cpu)
    planted = {(k, len(photos) + k) for k in range(len(EDITS))}
    assert planted <= set(map(tuple, got.pairs.tolist()))
    assert got.final_loss < 0.6 * np.log(2 * len(pixels) - 1)  # InfoNCE at chance: log(2B - 1)
    again = copyembed.embedding_pairs(pixels, index, 2, 30, cpu)
    np.testing.assert_array_equal(got.pairs, again.pairs)
    np.testing.assert_array_equal(got.similarity, again.similarity)


def test_find_duplicates_takes_embedding_candidates_when_asked(photos):
    pixels, *_ = photos_and_copies(photos)
    result = find_duplicates(samples_for(pixels), pixels, knn_k=2, embedding=True, embedding_epochs=30)
    assert result.stats["embedding"] == "dedup.embedding: true"
    assert result.stats["candidate_pairs"]["embedding"] > 0
    assert result.pairs["method"].str.contains("embedding").any()
    assert "embedding_seconds" in result.timings
    off = find_duplicates(samples_for(pixels), pixels, knn_k=2, embedding=False)
    assert off.stats["candidate_pairs"]["embedding"] == 0 and not off.pairs["method"].str.contains("embedding").any()


def test_embedding_auto_runs_only_with_cuda():
    from memclean.copyembed import use_embedding

    assert use_embedding("auto", torch.device("cuda"))[0]
    on, why = use_embedding("auto", torch.device("cpu"))
    assert not on and why.startswith("auto: off")
    assert use_embedding(True, torch.device("cpu"))[0] and not use_embedding(False, torch.device("cuda"))[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_copy_embedding_on_cuda_finds_the_copies_and_is_deterministic(photos):
    from memclean import copyembed

    pixels, index, *_ = photos_and_copies(photos)
    cuda = torch.device("cuda")
    x = torch.rand(16, 3, SIDE, SIDE)
    on_cpu = copyembed.random_view(x, torch.Generator().manual_seed(1))
    on_cuda = copyembed.random_view(x.to(cuda), torch.Generator().manual_seed(1))
    assert torch.allclose(on_cuda.cpu(), on_cpu, atol=1e-5)  # the same draws on every device
    got = copyembed.embedding_pairs(pixels, index, 2, 30, cuda)
    assert {(k, len(photos) + k) for k in range(len(EDITS))} <= set(map(tuple, got.pairs.tolist()))
    np.testing.assert_array_equal(got.pairs, copyembed.embedding_pairs(pixels, index, 2, 30, cuda).pairs)
