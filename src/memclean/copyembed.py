"""A copy-detection embedding trained on the dataset itself: candidates that pixel kNN misses.

Pixel thumbnails rank an edited copy (shifted, cropped and rescaled, recoloured, re-compressed,
mirrored) below look-alikes of the same class often enough to cost recall. A small network
trained to map two random edits of one image close together and different images apart
(SimCLR's InfoNCE loss, as in SSCD, without labels) ranks the copy first far more often: on
CIFAR-10 with planted copies, the copy is the nearest neighbour for 0.98 of pairs and in the
top 8 for 0.998, against 0.973 for every pixel-kNN candidate together
(``bench/copy_embedding.py``, measured with this recipe before it moved into the library).

The encoder is :class:`memclean.train.ProxyCNN` at width 16 whose output layer gives a
64-value embedding; the edits are the ones a copy goes through: a random crop of 64–100 % of
the area rescaled back (one ``roi_align`` for the whole batch), a horizontal flip, ±25 %
brightness and contrast, and sometimes a slight blur. Candidates are each image's ``k``
nearest neighbours by cosine similarity, the query being the better of the image and its
mirror image, from the same faiss index as the pixel kNN
(:func:`memclean.nearcopy.knn_index`); verification decides, as for every candidate.

Training costs about 3 s per epoch per 1,000 images on a 2-core CPU (``dedup.embedding: auto``
turns it on only where CUDA is present). It is off by default: the candidates it adds lift
recall of planted CIFAR-10 copies from 0.964 to 0.988, but verification then also calls more
different shots of one scene near (about 0.85 of a sample of other near pairs were one photo
edited, against about 0.95 without it).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from memclean import nearcopy
from memclean.progress import Progress, no_progress
from memclean.train import ProxyCNN, set_determinism

log = logging.getLogger(__name__)

#: Size of the embedding (the encoder's output layer).
DIMS = 64
#: Channels of the encoder's first block (doubled per block), as the CPU proxy CNN.
WIDTH = 16
#: Images per batch (each gives two views: ``2·BATCH − 2`` negatives per view).
BATCH = 256
#: InfoNCE temperature.
TEMPERATURE = 0.1
#: Peak learning rate of the one-cycle schedule (SGD, Nesterov momentum 0.9).
LR = 0.2


@dataclass(frozen=True)
class EmbeddingResult:
    """Candidate pairs from the embedding and what training them cost."""

    pairs: np.ndarray  # (P, 2) int64 positions into ``index``, i < j, unique and sorted
    similarity: np.ndarray  # (P,) float32 cosine similarity in the embedding
    final_loss: float
    seconds: float


def use_embedding(setting: bool | str, device: torch.device) -> tuple[bool, str]:
    """Whether the embedding runs (``dedup.embedding``), and why, in one line."""
    if setting != "auto":
        return bool(setting), f"dedup.embedding: {str(bool(setting)).lower()}"
    if device.type == "cuda":
        return True, "auto: on (CUDA)"
    return False, "auto: off (no CUDA: training takes about 3 s per epoch per 1,000 images on a CPU)"


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.5) / 0.25


def random_view(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One random edit of each image of a float ``B×C×H×W`` batch in ``[0, 1]`` (same device).

    The draws come from ``gen`` (a CPU generator), so a seed gives the same views on every device.
    """
    from torchvision.ops import roi_align  # here: importing torchvision costs seconds in every dedup run

    b, _, h, w = x.shape
    dev = x.device
    side = torch.sqrt(torch.empty(b).uniform_(0.64, 1.0, generator=gen))
    ch, cw = side * h, side * w
    top = torch.rand(b, generator=gen) * (h - ch)
    left = torch.rand(b, generator=gen) * (w - cw)
    boxes = torch.stack([torch.arange(b, dtype=torch.float32), left, top, left + cw, top + ch], dim=1).to(dev)
    v = roi_align(x, boxes, output_size=(h, w), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    flip = (torch.rand(b, generator=gen) < 0.5).to(dev).view(-1, 1, 1, 1)
    v = torch.where(flip, v.flip(-1), v)
    contrast = torch.empty(b, 1, 1, 1).uniform_(0.75, 1.25, generator=gen).to(dev)
    bright = torch.empty(b, 1, 1, 1).uniform_(-0.25, 0.25, generator=gen).to(dev)
    mean = v.mean(dim=(1, 2, 3), keepdim=True)
    v = (v - mean) * contrast + mean * (1 + bright)
    blur = (torch.rand(b, generator=gen) < 0.3).to(dev).view(-1, 1, 1, 1)
    soft = F.avg_pool2d(F.pad(v, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return torch.where(blur, soft, v).clamp(0, 1)


def train_encoder(
    pixels: np.ndarray,
    index: np.ndarray,
    epochs: int,
    device: torch.device,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[ProxyCNN, float]:
    """Train the encoder on ``pixels[index]`` without labels; returns it and the last epoch's mean loss.

    Each epoch reads a fresh permutation in whole batches (the remainder waits for the next
    epoch), each batch in sorted index order from the memory map. ``index`` needs at least two
    images (:func:`embedding_pairs` returns no pairs before training for fewer).
    """
    set_determinism(seed, device)
    n = len(index)
    model = ProxyCNN(int(pixels.shape[1]), DIMS, (int(pixels.shape[2]), int(pixels.shape[3])), WIDTH).to(device)
    batch = max(2, min(BATCH, n))
    steps_per_epoch = max(1, n // batch)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR, total_steps=max(2, epochs * steps_per_epoch), pct_start=0.15
    )
    gen = torch.Generator().manual_seed(seed)
    target = torch.cat([torch.arange(batch) + batch, torch.arange(batch)]).to(device)
    last = float("nan")
    for _ in (progress or no_progress)(range(epochs), "copy embedding epochs", epochs):
        perm = torch.randperm(n, generator=gen).numpy()
        total = torch.zeros((), device=device)
        for s in range(steps_per_epoch):
            rows = np.sort(index[perm[s * batch : (s + 1) * batch]])
            x = torch.from_numpy(np.array(pixels[rows])).to(device).float().div_(255.0)
            z = F.normalize(model(_normalise(torch.cat([random_view(x, gen), random_view(x, gen)]))), dim=1)
            logits = z @ z.T / TEMPERATURE
            logits.fill_diagonal_(-math.inf)
            loss = F.cross_entropy(logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach()
        last = float(total) / steps_per_epoch
    return model, last


@torch.no_grad()
def embed(
    model: ProxyCNN, pixels: np.ndarray, index: np.ndarray, device: torch.device, batch: int = 4096
) -> np.ndarray:
    """Unit-norm embeddings of ``pixels[index]`` and of their mirror images: ``n × 2 × DIMS`` float32."""
    model.eval()
    out = []
    for s in range(0, len(index), batch):
        x = _normalise(torch.from_numpy(nearcopy._take(pixels, index[s : s + batch])).to(device).float() / 255.0)
        out.append(torch.stack([F.normalize(model(x), dim=1), F.normalize(model(x.flip(-1)), dim=1)], dim=1).cpu())
    return torch.cat(out).numpy() if out else np.empty((0, 2, DIMS), np.float32)


def embedding_pairs(
    pixels: np.ndarray,
    index: np.ndarray,
    k: int,
    epochs: int,
    device: torch.device,
    seed: int = 0,
    exact_limit: int = nearcopy.EXACT_KNN_LIMIT,
    block: int = 65_536,
    progress: Progress | None = None,
) -> EmbeddingResult:
    """Each image's ``k`` nearest neighbours in a copy-detection embedding trained on ``pixels[index]``.

    Returns
    -------
    EmbeddingResult
        Unordered pairs ``i < j`` (positions into ``index``), their best cosine similarity over
        the image and its mirror image as the query, the last epoch's loss and the seconds spent.
        Queries go ``block`` images at a time, so memory is bounded by ``block × 2 × (k + 1)`` hits.
    """
    start = time.perf_counter()
    n = len(index)
    k = min(k, n - 1)
    if k <= 0 or epochs <= 0:
        return EmbeddingResult(np.empty((0, 2), np.int64), np.empty(0, np.float32), float("nan"), 0.0)
    model, loss = train_encoder(pixels, index, epochs, device, seed, progress)
    emb = embed(model, pixels, index, device)
    db = nearcopy.knn_index(np.ascontiguousarray(emb[:, 0]), exact_limit)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for lo in range(0, n, block):
        q = np.ascontiguousarray(emb[lo : lo + block].reshape(-1, DIMS))
        sims, nbrs = db.search(q, k + 1)
        rows = np.repeat(np.arange(lo, lo + len(q) // 2), 2 * (k + 1))
        nbrs, sims = nbrs.reshape(-1), sims.reshape(-1)
        valid = (nbrs >= 0) & (nbrs != rows)
        found.append(nearcopy._best_k(rows[valid], nbrs[valid], sims[valid], k))
    i, j, s = (np.concatenate([f[c] for f in found]) for c in range(3))
    pairs, sims = nearcopy.unordered_pairs(i, j, s, n)
    seconds = time.perf_counter() - start
    log.info("copy embedding: %d epochs on %d images (%s), loss %.3f, %.0f s", epochs, n, device, loss, seconds)
    return EmbeddingResult(pairs, sims.astype(np.float32), loss, seconds)
