"""Copy detection in pixel space: thumbnails, kNN candidates and a shift/crop-tolerant similarity.

A near copy (a shifted, cropped-and-rescaled, re-coloured, re-compressed or mirrored version
of one photo) is found in two steps:

1. **Candidates.** Every image gets a small blurred colour thumbnail (``knn_side``² pixels per
   channel, zero-mean, unit-norm, so brightness and contrast do not matter), projected on its
   principal axes. Its ``k`` nearest neighbours by cosine similarity, taking the best of the
   image, its mirror image and (optionally) shifted versions as the query, come from a faiss
   index (:func:`knn_index`: exact up to :data:`EXACT_KNN_LIMIT` images, an inverted file
   above it, so the search grows about as ``n·√n``, not ``n²``).
2. **Verification.** :func:`verify_pairs` scores a candidate pair by the maximum normalised
   cross-correlation between a centred window of one image and windows of the other that are
   shifted by up to ``max_shift`` thumbnail pixels, zoomed (central crops rescaled back, see
   :data:`ZOOMS`) and mirrored, in both directions. Every window is zero-mean and unit-norm,
   so ±20 % brightness/contrast changes leave the score unchanged; the thumbnail is small
   enough (16×16 by default) that JPEG artefacts average out. The score is 1 for an identical
   image and lies in ``[-1, 1]``.

Everything runs on torch tensors in batches: pairs are grouped by their first image so each
image's transformed windows are built once per block and multiplied against up to
``_PARTNERS`` partners at a time with one batched matrix product.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from memclean.errors import MemcleanError
from memclean.io import release_pages
from memclean.progress import Progress, no_progress

log = logging.getLogger(__name__)

#: Zoom factors tried in verification: a central crop of ``1/z`` of each side, rescaled back.
#: 1.25 covers an 80 % crop; 1.12 sits between so that no crop is more than ~6 % off a zoom.
ZOOMS: tuple[float, ...] = (1.0, 1.12, 1.25)
#: Side of the verification thumbnail (images smaller than this are used at their own size).
VERIFY_SIDE = 16
#: Side of the fine verification thumbnail (pairs that pass the coarse one).
FINE_SIDE = 32
#: Side of the kNN thumbnail.
KNN_SIDE = 8
#: Partners multiplied against one image's windows in one batched product.
_PARTNERS = 16
_LUMA = (0.299, 0.587, 0.114)
_EPS = 1e-6


@dataclass(frozen=True)
class Geometry:
    """Sizes derived from the image size: thumbnail side, window side and shift range."""

    side: int
    window: int
    max_shift: int
    knn_side: int
    zooms: tuple[float, ...]

    @classmethod
    def for_images(cls, height: int, width: int, side: int = VERIFY_SIDE) -> Geometry:
        """Geometry for images of ``height × width`` (the ingest's common size).

        The thumbnail is ``min(side, height, width)`` square; the compared window is the central
        three quarters of it, so shifts of up to an eighth of the side (2 px of 16, 4 px of a
        32-px image) stay inside. Images under 8 px on a side get no zooms (a crop of a
        handful of pixels is not a copy one can tell apart).
        """
        side = max(1, min(side, height, width))
        window = max(1, round(0.75 * side))
        max_shift = (side - window) // 2
        window = side - 2 * max_shift
        zooms = ZOOMS if side >= 8 else (1.0,)
        return cls(side, window, max_shift, max(1, min(KNN_SIDE, side)), zooms)

    @property
    def transforms(self) -> int:
        """Windows compared per direction: zooms × mirror × shifts."""
        return len(self.zooms) * 2 * (2 * self.max_shift + 1) ** 2


def _grey(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """``B×C×H×W`` uint8 → ``B×1×H×W`` float32 luminance."""
    x = torch.from_numpy(np.array(batch, dtype=np.float32)).to(device)  # a writable copy (pixels are a memmap)
    if x.shape[1] == 3:
        w = torch.tensor(_LUMA, device=device, dtype=torch.float32).view(1, 3, 1, 1)
        x = (x * w).sum(dim=1, keepdim=True)
    elif x.shape[1] != 1:
        raise MemcleanError(f"pixels must have 1 or 3 channels, got {x.shape[1]}")
    return x


def _resize(x: torch.Tensor, side: int) -> torch.Tensor:
    if x.shape[-2:] == (side, side):
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)


def _zoomed(grey: torch.Tensor, zoom: float, side: int) -> torch.Tensor:
    """Central crop of ``1/zoom`` of each side, resized to ``side``²."""
    h, w = grey.shape[-2:]
    ch, cw = max(1, round(h / zoom)), max(1, round(w / zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    return _resize(grey[..., top : top + ch, left : left + cw], side)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """Zero-mean, unit-norm along the last axis (flat rows become zero)."""
    x = x - x.mean(dim=-1, keepdim=True)
    return x / x.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def thumbnails(batch: np.ndarray, geo: Geometry, device: torch.device) -> torch.Tensor:
    """Zoomed and mirrored grey thumbnails: ``B × (2·Z) × side × side`` float32.

    Channel ``2z`` is zoom ``geo.zooms[z]``, channel ``2z + 1`` its mirror image.
    """
    grey = _grey(batch, device)
    out = []
    for z in geo.zooms:
        t = _zoomed(grey, z, geo.side)
        out += [t, torch.flip(t, dims=[-1])]
    return torch.cat(out, dim=1)


def variant_thumbnails(batch: np.ndarray, variant: np.ndarray, geo: Geometry, device: torch.device) -> torch.Tensor:
    """Channel ``variant[i]`` of :func:`thumbnails` for each image ``i``: ``B × side × side``.

    Only the asked zoom of each image is resized (a third of the work of every variant).
    """
    grey = _grey(batch, device)
    out = torch.empty(len(batch), geo.side, geo.side, device=device)
    for z, zoom in enumerate(geo.zooms):
        sel = np.nonzero(variant // 2 == z)[0]
        if len(sel) == 0:
            continue
        t = _zoomed(grey[torch.from_numpy(sel).to(device)], zoom, geo.side)[:, 0]
        mirror = torch.from_numpy(variant[sel] % 2 == 1).to(device).view(-1, 1, 1)
        out[torch.from_numpy(sel).to(device)] = torch.where(mirror, torch.flip(t, dims=[-1]), t)
    return out


def centre_windows(thumbs: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """Normalised central window of the unzoomed, unmirrored thumbnail: ``B × window²``."""
    s, w = geo.max_shift, geo.window
    return _normalise(thumbs[:, 0, s : s + w, s : s + w].reshape(len(thumbs), -1))


def _blur_matrix(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``size × size`` matrix of a 1-D Gaussian blur with replicate padding (rows sum to 1)."""
    radius = max(1, int(np.ceil(2 * sigma)))
    k = np.arange(-radius, radius + 1)
    g = np.exp(-(k**2) / (2 * sigma**2))
    g = g / g.sum()
    m = np.zeros((size, size))
    for i in range(size):
        np.add.at(m[i], np.clip(i + k, 0, size - 1), g)
    return torch.from_numpy(m).to(device=device, dtype=dtype)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (replicate padding) of ``B×C×H×W``, as two matrix products.

    Same result as padding and two depthwise convolutions, but a grouped convolution on
    these small planes is an order of magnitude slower on CPU than ``G_h · x · G_wᵀ``.
    """
    h, w = x.shape[-2:]
    gh = _blur_matrix(h, sigma, x.device, x.dtype)
    gw = gh if w == h else _blur_matrix(w, sigma, x.device, x.dtype)
    return torch.matmul(torch.matmul(gh, x), gw.T)


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate by whole pixels, repeating the border."""
    if dy == 0 and dx == 0:
        return x
    p = max(abs(dy), abs(dx))
    h, w = x.shape[-2:]
    xp = F.pad(x, (p, p, p, p), mode="replicate")
    return xp[..., p - dy : p - dy + h, p - dx : p - dx + w]


def knn_variants(batch: np.ndarray, geo: Geometry, device: torch.device, shifted: bool) -> torch.Tensor:
    """Colour kNN features of an image batch: ``B × V × C·knn_side²``, each zero-mean per channel, unit-norm.

    Variant 0 is the image, variant 1 its mirror image; with ``shifted`` the image and its
    mirror are also moved by ±3/32 of the side along each axis (variants 2…9): queries made
    this way find copies shifted or cropped by a few pixels (see the module docstring).
    """
    x = torch.from_numpy(np.array(batch, dtype=np.float32)).to(device)  # a writable copy (pixels are a memmap)
    h, w = x.shape[-2:]
    moves = [(0, 0)]
    if shifted:
        sy, sx = max(1, round(3 * h / 32)), max(1, round(3 * w / 32))
        moves += [(sy, 0), (-sy, 0), (0, sx), (0, -sx)]
    out = []
    for dy, dx in moves:
        t = _resize(_shift(x, dy, dx), geo.side)
        t = _resize(_blur(t, geo.side / 16.0), geo.knn_side)
        for v in (t, torch.flip(t, dims=[-1])):
            f = v.reshape(len(v), v.shape[1], -1)
            out.append(_normalise((f - f.mean(dim=-1, keepdim=True)).reshape(len(v), -1)))
    return torch.stack(out, dim=1)


#: Colour gap (:func:`colour_gap`) above which a pair is near only from
#: :data:`RECOLOURED_NEAR_THRESHOLD`: the 99th percentile of planted copies (±20 % brightness and
#: contrast, JPEG, shifts, crops, flips) is 0.11 on CIFAR-10.
COLOUR_TOLERANCE = 0.12
#: Verified similarity a pair needs to be near when its colours differ beyond the tolerance.
RECOLOURED_NEAR_THRESHOLD = 0.85
#: Added to the grey-level standard deviation that normalises the colour (0–255 scale), so
#: that nearly flat images do not blow their colour up.
_COLOUR_FLOOR = 8.0


def colour_signature(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """Mean colour of ``B×C×H×W`` uint8 images that brightness and contrast changes leave alone: ``B×2``.

    The mean opponent colours ``R − G`` and ``(R + G)/2 − B``, divided by the grey-level
    standard deviation (+ :data:`_COLOUR_FLOOR`). Scaling the image (brightness) or blending
    it with its mean grey (contrast) scales both alike; shifts, crops and mirroring barely
    move a mean. Grey images (one channel) have signature 0.
    """
    x = torch.from_numpy(np.array(batch, dtype=np.float32)).to(device)
    if x.shape[1] != 3:
        return torch.zeros(len(x), 2, device=device)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    luma = _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b
    scale = luma.flatten(1).std(dim=1, unbiased=False) + _COLOUR_FLOOR
    opp = torch.stack([(r - g).flatten(1).mean(dim=1), (0.5 * (r + g) - b).flatten(1).mean(dim=1)], dim=1)
    return opp / scale.unsqueeze(1)


def colour_gap(colour: torch.Tensor, pairs: np.ndarray) -> np.ndarray:
    """How far apart the two images' :func:`colour_signature` are, per pair (positions into ``colour``).

    The root-mean-square difference over the two opponent channels, relative to
    ``1 +`` the larger of the two signatures' root-mean-square sizes: for strongly coloured
    images (small grey-level spread) the clipping of a brightness or contrast change moves the
    signature in proportion to its size.
    """
    if len(pairs) == 0:
        return np.empty(0, np.float32)
    idx = torch.from_numpy(np.asarray(pairs, np.int64)).to(colour.device)
    ca, cb = colour[idx[:, 0]], colour[idx[:, 1]]
    size = torch.maximum(ca.pow(2).mean(dim=1), cb.pow(2).mean(dim=1)).sqrt()
    gap = (ca - cb).pow(2).mean(dim=1).sqrt() / (1.0 + size)
    return gap.cpu().numpy().astype(np.float32)


@dataclass
class PixelFeatures:
    """Per-image features of the images taking part in the near search."""

    centre: torch.Tensor  # (n, window²) float16: the verification reference window
    knn: torch.Tensor  # (n, dims) float32: projected, unit-norm kNN feature of each image
    mean: torch.Tensor  # (C·knn_side²,) the projection's centre
    basis: torch.Tensor  # (C·knn_side², dims) principal axes
    colour: torch.Tensor  # (n, 2) float32: :func:`colour_signature`


def _take(pixels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A copy of ``pixels[rows]`` (any order); a contiguous ascending run is one slice of the memory map.

    The memory map's pages are released after the read (:func:`memclean.io.release_pages`),
    so a pass over every image keeps only one block resident.
    """
    if len(rows) and bool(np.all(np.diff(rows) == 1)):
        out = np.array(pixels[int(rows[0]) : int(rows[-1]) + 1])
    else:
        out = np.array(pixels[rows])
    release_pages(pixels)
    return out


def _project(f: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    g = (f - mean) @ basis
    return g / g.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def pixel_features(
    pixels: np.ndarray,
    index: np.ndarray,
    geo: Geometry,
    device: torch.device,
    dims: int = 32,
    batch_size: int = 4096,
    sample: int = 20_000,
    progress: Progress | None = None,
) -> PixelFeatures:
    """Centre windows and projected kNN features of ``pixels[index]`` (read in batches).

    The kNN features are projected on their ``dims`` principal axes, fitted on an evenly
    spaced sample of at most ``sample`` images and their mirror images (deterministic).
    """
    n = len(index)
    pick = index[np.unique(np.linspace(0, n - 1, min(n, sample)).astype(np.int64))] if n else index
    fit = (
        torch.cat(
            [
                knn_variants(_take(pixels, pick[s : s + batch_size]), geo, device, False).flatten(0, 1)
                for s in range(0, len(pick), batch_size)
            ]
        )
        if n
        else torch.empty(0, 1)
    )
    width = fit.shape[1]
    dims = max(1, min(dims, width, max(1, len(fit) - 1)))
    if len(fit) > 1:
        mean = fit.mean(dim=0)
        _, vecs = torch.linalg.eigh(torch.cov((fit - mean).T.double()))
        basis = vecs[:, -dims:].flip(1).to(torch.float32)
    else:
        mean, basis = torch.zeros(width, device=device), torch.eye(width, dims, device=device)
    centre, knn, colour = [], [], []
    starts = range(0, n, batch_size)
    for start in (progress or no_progress)(starts, "pixel features", len(starts)):
        batch = _take(pixels, index[start : start + batch_size])
        centre.append(centre_windows(thumbnails(batch, geo, device), geo).to(torch.float16))
        knn.append(_project(knn_variants(batch, geo, device, False)[:, 0], mean, basis))
        colour.append(colour_signature(batch, device))
    return PixelFeatures(
        torch.cat(centre) if centre else torch.empty(0, geo.window**2, dtype=torch.float16, device=device),
        torch.cat(knn) if knn else torch.empty(0, dims, device=device),
        mean,
        basis,
        torch.cat(colour) if colour else torch.empty(0, 2, device=device),
    )


# --------------------------------------------------------------------------- candidates


#: Up to this many images the kNN is exact (a flat index); above it, an inverted-file index.
EXACT_KNN_LIMIT = 20_000
#: Lists probed per query in the inverted-file index (of about ``4·√n`` lists)...
IVF_NPROBE = 16
#: ...and above this many images, where each list is longer, half as many.
IVF_LARGE = 250_000


def knn_index(x: np.ndarray, exact_limit: int = EXACT_KNN_LIMIT, nprobe: int | None = None) -> faiss.Index:
    """A faiss inner-product index of the rows of ``x`` (``n × d`` float32, unit-norm).

    Exact (``IndexFlatIP``) up to ``exact_limit`` rows. Above it, an inverted file
    (``IndexIVFFlat``) with about ``4·√n`` lists, trained with faiss's k-means on an evenly
    spaced sample of at most 64 rows per list (fixed seed, so reruns build the same index) and
    searched in ``nprobe`` lists (default :data:`IVF_NPROBE`, half that above :data:`IVF_LARGE`
    images): near copies sit far closer to each other than to the lists' boundaries, so they
    are found while each query reads a few hundredths of the data. On CIFAR-10 (50,000 images)
    16 lists find 99.9 % of the exact index's neighbours at cosine ≥ 0.95 and 99.0 % at ≥ 0.9
    (8 lists: 98.5 % and 93.8 %), per query variant.
    """
    n, d = x.shape
    if n <= exact_limit:
        index: faiss.Index = faiss.IndexFlatIP(d)
    else:
        nlist = int(2 ** round(np.log2(4 * np.sqrt(n))))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = x[np.unique(np.linspace(0, n - 1, min(n, 64 * nlist)).astype(np.int64))]
        index.cp.seed = 1234
        index.cp.max_points_per_centroid = 64
        index.train(np.ascontiguousarray(sample))
        probes = nprobe or (IVF_NPROBE if n <= IVF_LARGE else IVF_NPROBE // 2)
        index.nprobe = min(probes, nlist)
    index.add(np.ascontiguousarray(x))
    return index


def _best_k(rows: np.ndarray, nbrs: np.ndarray, sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per query row, the ``k`` neighbours of highest similarity, each neighbour counted once.

    ``rows``/``nbrs``/``sims`` are flat triples (one per variant hit); ties break by neighbour.
    """
    order = np.lexsort((-sims, nbrs, rows))  # by row, neighbour, best similarity first
    rows, nbrs, sims = rows[order], nbrs[order], sims[order]
    first = np.r_[True, (rows[1:] != rows[:-1]) | (nbrs[1:] != nbrs[:-1])]
    rows, nbrs, sims = rows[first], nbrs[first], sims[first]
    order = np.lexsort((nbrs, -sims, rows))
    rows, nbrs, sims = rows[order], nbrs[order], sims[order]
    start = np.r_[0, np.nonzero(rows[1:] != rows[:-1])[0] + 1]
    rank = np.arange(len(rows)) - np.repeat(start, np.diff(np.r_[start, len(rows)]))
    keep = rank < k
    return rows[keep], nbrs[keep], sims[keep]


#: ``knn_per_variant`` null means 1 below this many images and 0 from it: on CIFAR-10 (60,000
#: images) each variant's best neighbour lifts recall of planted copies from 0.956 to 0.964 for
#: about 50 % more candidate pairs to verify, which a million images on a small CPU cannot afford.
PER_VARIANT_UP_TO = 200_000


def per_variant_default(n: int, per_variant: int | None = None) -> int:
    """``per_variant`` when given, else 1 below :data:`PER_VARIANT_UP_TO` images and 0 from there."""
    if per_variant is not None:
        return per_variant
    return 1 if n < PER_VARIANT_UP_TO else 0


def knn_pairs(
    pixels: np.ndarray,
    index: np.ndarray,
    features: PixelFeatures,
    geo: Geometry,
    k: int,
    device: torch.device,
    shifted: bool = True,
    per_variant: int = 0,
    block: int = 8192,
    exact_limit: int = EXACT_KNN_LIMIT,
    progress: Progress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each image's ``k`` nearest neighbours, the query being the best of its variants.

    The database is every image's projected kNN feature in a faiss index (:func:`knn_index`:
    exact up to ``exact_limit`` images, an inverted file above). Each image queries it with
    every variant of :func:`knn_variants` (its mirror image and, with ``shifted``, shifted
    versions); a neighbour's similarity is that of its best variant, and the ``k`` best
    neighbours other than the image itself are kept. With ``per_variant`` = ``q`` > 0, each
    variant's own ``q`` best neighbours (``q`` ≤ ``k``) are kept as well: the best over all variants
    favours look-alikes that match every variant fairly well, while a shifted or cropped copy
    is often the best hit of the one variant that matches its shift, and only there (on
    CIFAR-10, 42 of 53 missed planted copies were such candidate misses, not verification
    misses). Queries go ``block`` images at a time, so
    memory is bounded by ``block × variants × (k + 1)`` hits. Pairs found from either side count
    once.

    Returns
    -------
    tuple of numpy.ndarray
        ``(P, 2)`` int64 unordered pairs ``i < j`` (positions into ``index``; unique,
        sorted) and their ``(P,)`` kNN cosine similarity as float32.
    """
    n = len(features.knn)
    k = min(k, n - 1)
    if k <= 0:
        return np.empty((0, 2), np.int64), np.empty(0, np.float32)
    db = knn_index(features.knn.cpu().numpy().astype(np.float32), exact_limit)
    found_i, found_j, found_s = [], [], []
    starts = range(0, n, block)
    for start in (progress or no_progress)(starts, "pixel kNN", len(starts)):
        q = _project(
            knn_variants(_take(pixels, index[start : start + block]), geo, device, shifted),
            features.mean,
            features.basis,
        )
        b, v = q.shape[:2]
        sims, nbrs = db.search(np.ascontiguousarray(q.flatten(0, 1).cpu().numpy(), np.float32), k + 1)
        rows = np.repeat(np.arange(start, start + b), v * (k + 1))
        valid = (nbrs >= 0) & (nbrs != rows.reshape(nbrs.shape))  # -1: fewer hits than asked; itself: not one
        # Each variant's own best hits (rank in its list, itself left out) are kept whatever the others found.
        own = valid & (np.cumsum(valid, axis=1) <= per_variant)
        nbrs, sims, valid, own = nbrs.reshape(-1), sims.reshape(-1), valid.reshape(-1), own.reshape(-1)
        r, j, s = _best_k(rows[valid], nbrs[valid], sims[valid], k)
        r, j, s = np.r_[r, rows[own]], np.r_[j, nbrs[own]], np.r_[s, sims[own]]
        found_i.append(r)
        found_j.append(j)
        found_s.append(s.astype(np.float32))
    return unordered_pairs(np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_s), n)


def unordered_pairs(i: np.ndarray, j: np.ndarray, s: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Directed neighbour hits ``(i, j, s)`` among ``n`` items → unique pairs ``i < j`` at their best ``s``.

    Returns ``(P, 2)`` int64 pairs sorted by ``(i, j)`` and their ``(P,)`` similarity (a pair found
    from both sides counts once).
    """
    key = np.minimum(i, j) * n + np.maximum(i, j)
    order = np.lexsort((-s, key))  # each pair's best similarity first
    keys, first = np.unique(key[order], return_index=True)
    return np.stack([keys // n, keys % n], axis=1), s[order][first]


# --------------------------------------------------------------------------- verification


def _correlate(thumbs: torch.Tensor, ref: torch.Tensor, window: int, full: int) -> torch.Tensor:
    """Dot products of each row's references with every shifted window of its thumbnails.

    ``thumbs`` is ``R × V × S × S`` (a source image's transformed thumbnails per row), ``ref``
    ``R × D × window²`` (the row's partners' reference windows). Returns ``R × D × V·L`` in
    the order (variant, shift row, shift column). One grouped convolution (each row's
    references are the kernels of its group): on CPU faster than copying every window out
    (im2col, an ``R × V·L × window²`` temporary) for a batched product. ``full``: the row count
    of a full batch (smaller batches are padded to a power of two).
    """
    rows, d = ref.shape[:2]
    v = thumbs.shape[1]
    # Rows padded to a few fixed counts: oneDNN keeps a primitive per convolution shape, and
    # one per row count grew the process by gigabytes over a million images.
    size = full if rows > full // 2 else 1 << max(0, rows - 1).bit_length()
    if size > rows:
        thumbs = F.pad(thumbs, (0, 0, 0, 0, 0, 0, 0, size - rows))
        ref = F.pad(ref, (0, 0, 0, 0, 0, size - rows))
    kernels = ref.reshape(size * d, 1, window, window)
    out = F.conv2d(thumbs.transpose(0, 1), kernels, groups=size)  # (V, R·D, lh, lw)
    return out.reshape(v, size, d, -1)[:, :rows].permute(1, 2, 0, 3).reshape(rows, d, -1)


def _window_norms(thumbs: torch.Tensor, geo: Geometry) -> torch.Tensor:
    """Norm of every zero-meaned shifted window, from box sums: ``B × V × L``.

    Windows flatter than half a grey level of standard deviation get a floor, so they
    score near 0 against anything.
    """
    b, v, side, _ = thumbs.shape
    area = geo.window * geo.window
    # Box sums as matrix products with a band of ones (L × S): 2·S products per output, not window².
    starts = torch.arange(side - geo.window + 1, device=thumbs.device).view(-1, 1)
    cols = torch.arange(side, device=thumbs.device).view(1, -1)
    band = ((cols >= starts) & (cols < starts + geo.window)).to(thumbs.dtype)
    s1 = torch.matmul(torch.matmul(band, thumbs), band.T)
    s2 = torch.matmul(torch.matmul(band, thumbs * thumbs), band.T)
    var = (s2 - s1 * s1 / area).clamp_min(0.0)
    return var.sqrt().clamp_min(0.5 * geo.window).reshape(b, v, -1)


def _directed(
    pixels: np.ndarray,
    index: np.ndarray,
    centre: torch.Tensor,
    src: np.ndarray,
    dst: np.ndarray,
    geo: Geometry,
    device: torch.device,
    block: int,
    rows_per_product: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Score and best transform of each directed edge: ``src``'s windows against ``dst``'s centre.

    ``src``/``dst`` index ``index`` (the images in the search); edges are sorted by ``src``.
    The correlation needs no centring of ``src``'s windows because the reference window is
    zero-mean; their norms come from box sums (:func:`_window_norms`).
    """
    score = np.empty(len(src), np.float32)
    best = np.empty(len(src), np.int64)
    if len(src) == 0:
        return score, best
    bounds = np.searchsorted(src, np.arange(0, len(index) + block, block))
    for b0 in range(0, len(index), block):
        lo, hi = int(bounds[b0 // block]), int(bounds[b0 // block + 1])
        if lo == hi:
            continue
        s_edges, d_edges = src[lo:hi], dst[lo:hi]
        used = np.unique(s_edges)
        local = np.searchsorted(used, s_edges)
        thumbs = thumbnails(_take(pixels, index[used]), geo, device)
        norms = _window_norms(thumbs, geo)
        # Rows of up to _PARTNERS edges sharing a source: rank within the source's run.
        run_start = np.r_[0, np.nonzero(np.diff(local))[0] + 1]
        run_len = np.diff(np.r_[run_start, len(local)])
        rank = np.arange(len(local)) - np.repeat(run_start, run_len)
        chunks_per_run = (run_len + _PARTNERS - 1) // _PARTNERS
        row_base = np.cumsum(chunks_per_run) - chunks_per_run
        row = np.repeat(row_base, run_len) + rank // _PARTNERS
        col = rank % _PARTNERS
        n_rows = int(chunks_per_run.sum())
        row_src = np.repeat(local[run_start], chunks_per_run)
        partner = np.full((n_rows, _PARTNERS), -1, np.int64)
        partner[row, col] = d_edges
        scores = np.empty((n_rows, _PARTNERS), np.float32)
        args = np.empty((n_rows, _PARTNERS), np.int64)
        for r0 in range(0, n_rows, rows_per_product):
            r1 = min(n_rows, r0 + rows_per_product)
            sel = torch.from_numpy(row_src[r0:r1]).to(device)
            t = thumbs[sel]
            p = torch.from_numpy(partner[r0:r1]).to(device)
            ref = centre[p.clamp_min(0)].to(torch.float32) * (p >= 0).unsqueeze(-1)  # (rows, D, w²)
            ncc = _correlate(t, ref, geo.window, rows_per_product) / norms[sel].reshape(len(t), 1, -1)  # (rows, D, V·L)
            val, arg = ncc.max(dim=2)
            scores[r0:r1] = val.cpu().numpy()
            args[r0:r1] = arg.cpu().numpy()
        score[lo:hi] = scores[row, col]
        best[lo:hi] = args[row, col]
    return score, best


@dataclass
class Verified:
    """Coarse verification of pairs: the score, and the direction and transform that gave it."""

    score: np.ndarray  # (P,) float32
    flipped: np.ndarray  # (P,) bool: the best direction was b's windows against a's centre
    transform: np.ndarray  # (P,) int64: index into variants × shifts of the best direction


def verify_pairs(
    pixels: np.ndarray,
    index: np.ndarray,
    centre: torch.Tensor,
    pairs: np.ndarray,
    geo: Geometry,
    device: torch.device,
    block: int = 4096,
    rows_per_product: int | None = None,
    progress: Progress | None = None,
) -> Verified:
    """Verified similarity of each candidate pair: the better of its two directed scores.

    Parameters
    ----------
    pixels
        ``N×C×H×W`` uint8 (memory-mapped is fine: images are read ``block`` at a time).
    index
        Sorted pixel rows of the images in the search; ``pairs`` and ``centre`` refer to it.
    centre
        :attr:`PixelFeatures.centre` of those images.
    pairs
        ``(P, 2)`` int64 positions into ``index``.
    geo
        Sizes (see :class:`Geometry`).
    block
        Source images whose transformed thumbnails are held at once.
    rows_per_product
        Rows of ``_PARTNERS`` partners per batched product (bounds temporary memory:
        ``rows × transforms × window² × 4`` bytes); default: about 64 MiB.

    Returns
    -------
    Verified
        Scores in ``[-1, 1]`` with the transform that reached them.
    """
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    out = Verified(np.full(len(pairs), -1.0, np.float32), np.zeros(len(pairs), bool), np.zeros(len(pairs), np.int64))
    if len(pairs) == 0:
        return out
    rows_per_product = rows_per_product or max(1, (1 << 24) // (geo.transforms * geo.window**2))
    # Jobs: one block of source images in one direction (the unit of progress).
    jobs = []
    for src, dst, flipped in ((pairs[:, 0], pairs[:, 1], False), (pairs[:, 1], pairs[:, 0], True)):
        order = np.lexsort((dst, src))
        s, d = src[order], dst[order]
        bounds = np.searchsorted(s, np.arange(0, len(index) + block, block))
        jobs += [(order[lo:hi], s[lo:hi], d[lo:hi], flipped) for lo, hi in itertools.pairwise(bounds) if hi > lo]
    for sub, s, d, flipped in (progress or no_progress)(jobs, "verify pairs", len(jobs)):
        score, arg = _directed(pixels, index, centre, s, d, geo, device, block, rows_per_product)
        better = score > out.score[sub]
        upd = sub[better]
        out.score[upd] = score[better]
        out.transform[upd] = arg[better]
        out.flipped[upd] = flipped
    return out


#: Band-pass of the fine check: a difference of Gaussians (in fine-thumbnail pixels). Smooth
#: look-alikes (sky, petals, water) correlate well in plain grey levels; their detail does not.
BAND_SIGMAS = (0.7, 2.0)


def _band(thumbs: torch.Tensor) -> torch.Tensor:
    """Difference-of-Gaussians band-pass of ``B×V×H×W`` thumbnails (per channel)."""
    lo, hi = BAND_SIGMAS
    if lo <= 0:
        return thumbs
    return _blur(thumbs, lo) - _blur(thumbs, hi)


#: Local check: a pair is near only when every cell of its fine check that holds detail
#: correlates at least this well (:func:`memclean.dedup.find_duplicates`' ``local_threshold``).
LOCAL_THRESHOLD = 0.75
#: Grid of the local check: the fine window cut into ``LOCAL_GRID × LOCAL_GRID`` cells.
LOCAL_GRID = 2
#: Cells of the reference holding less than this share of its detail (band-passed energy) are
#: left out of the local check: a flat cell (sky, wall) correlates with noise only.
LOCAL_MIN_ENERGY = 0.1


def _refine(
    pixels: np.ndarray,
    src_rows: np.ndarray,
    dst_rows: np.ndarray,
    transform: np.ndarray,
    coarse: Geometry,
    fine: Geometry,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Fine score of directed pairs at the coarse best transform, ±1 fine pixel around its shift.

    Returns the fine score and the local score: the lowest, over the cells of a
    :data:`LOCAL_GRID` grid that hold detail, of the cell's own correlation (best of the same
    ±1-pixel offsets). A copy matches everywhere; another shot of one scene matches as a whole
    but not where the subject moved.
    """
    span = 2 * coarse.max_shift + 1
    per_variant = span * span
    variant = transform // per_variant
    pos = transform % per_variant
    scale = fine.side / coarse.side
    dy = np.rint((pos // span - coarse.max_shift) * scale).astype(np.int64)
    dx = np.rint((pos % span - coarse.max_shift) * scale).astype(np.int64)
    lim = max(0, fine.max_shift - 1)
    dy, dx = np.clip(dy, -lim, lim), np.clip(dx, -lim, lim)
    # With the thumbnails padded by one pixel, the window for shift (dy, dx) starts at
    # (max_shift + dy + 1, max_shift + dx + 1); the 3×3 neighbourhood starts one pixel before.
    top = torch.from_numpy(fine.max_shift + dy).to(device)
    left = torch.from_numpy(fine.max_shift + dx).to(device)
    src_t = _band(variant_thumbnails(_take(pixels, src_rows), variant, fine, device))
    src_t = F.pad(src_t.unsqueeze(1), (1, 1, 1, 1), mode="replicate").squeeze(1)
    size = fine.window + 2
    ar = torch.arange(size, device=device)
    ys = (top.unsqueeze(1) + ar).unsqueeze(2)
    xs = (left.unsqueeze(1) + ar).unsqueeze(1)
    region = src_t[torch.arange(len(src_t), device=device).view(-1, 1, 1), ys, xs]  # (P, w+2, w+2)
    region = region - region.mean(dim=(1, 2), keepdim=True)  # exact box-sum variances below
    w = fine.window
    ref = centre_windows(_band(_resize(_grey(_take(pixels, dst_rows), device), fine.side)), fine).view(-1, w, w)
    # Local cells: the window's top-left (g·c)² pixels cut into g×g cells of c² pixels.
    g = LOCAL_GRID
    c = w // g
    cells = c * c

    def split(x: torch.Tensor) -> torch.Tensor:  # (P, w, w) → (P, g², c²)
        return x[:, : g * c, : g * c].reshape(-1, g, c, g, c).transpose(2, 3).reshape(-1, g * g, cells)

    ref_cells = split(ref)
    ref_cells = ref_cells - ref_cells.mean(dim=2, keepdim=True)
    ref_energy = (ref_cells * ref_cells).sum(dim=2)
    ref_cells = ref_cells / ref_energy.sqrt().clamp_min(_EPS).unsqueeze(2)
    detailed = ref_energy >= LOCAL_MIN_ENERGY * ref_energy.sum(dim=1, keepdim=True)
    # NCC of each of the 9 windows (and of its cells) with the zero-mean, unit-norm reference:
    # the dot product needs no centring of the window, and its norm comes from its sum and
    # sum of squares.
    best = torch.full((len(region),), -1.0, device=device)
    best_cell = torch.full((len(region), g * g), -1.0, device=device)
    for oy in range(3):
        for ox in range(3):
            win = region[:, oy : oy + w, ox : ox + w]
            s1, s2 = win.sum(dim=(1, 2)), (win * win).sum(dim=(1, 2))
            norm = (s2 - s1 * s1 / (w * w)).clamp_min(0.0).sqrt().clamp_min(_EPS)
            best = torch.maximum(best, (win * ref).sum(dim=(1, 2)) / norm)
            wc = split(win)
            c1, c2 = wc.sum(dim=2), (wc * wc).sum(dim=2)
            cnorm = (c2 - c1 * c1 / cells).clamp_min(0.0).sqrt().clamp_min(_EPS)
            best_cell = torch.maximum(best_cell, (wc * ref_cells).sum(dim=2) / cnorm)
    local = torch.where(detailed, best_cell, torch.ones_like(best_cell)).amin(dim=1)
    return best.cpu().numpy().astype(np.float32), local.cpu().numpy().astype(np.float32)


@dataclass
class Similarity:
    """Verified similarity of candidate pairs."""

    score: np.ndarray  # (P,) float32 in [-1, 1]: 1 = identical
    #: (P,) float32: the lowest cell correlation of the fine check (:func:`_refine`); equal to
    #: ``score`` where no fine check ran (pairs under the gate, images under the fine side).
    local: np.ndarray


def similarity(
    pixels: np.ndarray,
    index: np.ndarray,
    features: PixelFeatures,
    pairs: np.ndarray,
    coarse: Geometry,
    fine: Geometry,
    gate: float,
    device: torch.device,
    batch: int = 2048,
    progress: Progress | None = None,
) -> Similarity:
    """Coarse-to-fine verified similarity of candidate pairs (positions into ``index``).

    Every pair is scored on the coarse thumbnails (:func:`verify_pairs` with ``coarse``);
    pairs at or above ``gate`` are scored again on the fine thumbnails (``fine``, e.g. 32×32:
    more detail, so different shots of one scene score lower while copies stay high) at the
    coarse best transform, refined by ±1 fine pixel, and that score is their similarity; the
    same pass gives their local score (see :class:`Similarity`). When both geometries have
    the same side the coarse score is final.
    """
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    found = verify_pairs(pixels, index, features.centre, pairs, coarse, device, progress=progress)
    score = found.score
    local = score.copy()
    if fine.side == coarse.side or len(pairs) == 0:
        return Similarity(score, local)
    again = np.nonzero(score >= gate)[0]
    src = np.where(found.flipped[again], pairs[again, 1], pairs[again, 0])
    dst = np.where(found.flipped[again], pairs[again, 0], pairs[again, 1])
    order = np.argsort(src, kind="stable")  # nearby reads from the memory map
    starts = range(0, len(again), batch)
    for start in (progress or no_progress)(starts, "refine pairs", len(starts)):
        o = order[start : start + batch]
        rows = again[o]
        score[rows], local[rows] = _refine(
            pixels, index[src[o]], index[dst[o]], found.transform[rows], coarse, fine, device
        )
    return Similarity(score, local)
