"""Candidate recall of the copy-detection embedding (:mod:`memclean.copyembed`) beside pixel kNN.

Prints one JSON object on stdout (progress goes to stderr).

On the planted set of ``bench/dedup.py --planted`` (CIFAR-10 train+test, ``N`` edited copies:
shifts, crops, colour, JPEG, flips, combinations; same seed, so the same copies) it

1. trains the embedding (:func:`memclean.copyembed.train_encoder`: a width-16 encoder,
   SimCLR-style on two random edits of every image) for ``--epochs`` epochs on the CPU;
2. embeds every image (and its mirror image; the better of the two counts) and ranks, for
   each planted pair, the copy among the original's nearest neighbours and the other way
   round (an exact inner-product index);
3. ranks the same pairs in today's pixel kNN (:func:`memclean.nearcopy.knn_variants`: the best
   over all variants, and each variant's own list, as ``knn_per_variant`` does);

and reports, per edit kind, the fraction of planted pairs each candidate rule would reach:
pixels as today (merged top ``k`` and each variant's top 1), the embedding's top ``k``, and
both together; plus the training cost. Candidate recall is an upper bound on what
verification can then confirm.

Usage (from the repository root)::

    .venv/bin/python bench/copy_embedding.py [--planted 1200] [--epochs 4] [--out FILE]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dedup import DEFAULT_DATA_DIR, EDIT_KINDS, SEED, _edit, _load_cifar, machine_info, rnd
from scoring import emit

from memclean import copyembed, nearcopy

log = logging.getLogger("bench.copy_embedding")

#: Neighbour counts at which candidate recall is reported.
KS = (1, 4, 8, 16)


def planted_set(data_dir: Path, n_planted: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """CIFAR-10 train+test plus the planted copies, exactly as ``bench/dedup.py --planted`` builds them.

    Returns ``N×C×H×W`` uint8 pixels, the originals' positions, the edit kinds and the number of
    CIFAR-10 images (copy ``i`` sits at ``n + i``).
    """
    rng = np.random.default_rng(SEED)
    images, _, _ = _load_cifar(data_dir / "cifar10")
    n = len(images)
    src = rng.choice(n, n_planted, replace=False)
    kinds = np.array([EDIT_KINDS[i % len(EDIT_KINDS)] for i in range(n_planted)])
    copies = np.stack([_edit(images[s], k, rng) for s, k in zip(src, kinds)])
    pixels = np.ascontiguousarray(np.concatenate([images, copies]).transpose(0, 3, 1, 2))
    return pixels, src, kinds, n


def ranks_in(db: faiss.Index, queries: np.ndarray, rows: np.ndarray, targets: np.ndarray, depth: int) -> np.ndarray:
    """Per query row (``B×V×d`` variants): the target's rank among the best-over-variants neighbours (999: absent)."""
    b, v = queries.shape[:2]
    sims, nbrs = db.search(np.ascontiguousarray(queries.reshape(b * v, -1), np.float32), depth)
    sims, nbrs = sims.reshape(b, v * depth), nbrs.reshape(b, v * depth)
    out = np.full(b, 999)
    for i in range(b):
        best: dict[int, float] = {}
        for j, s in zip(nbrs[i], sims[i]):
            if j != rows[i] and j >= 0 and s > best.get(int(j), -9.0):
                best[int(j)] = float(s)
        order = sorted(best, key=lambda j: (-best[j], j))
        if int(targets[i]) in order:
            out[i] = order.index(int(targets[i]))
    return out


def variant_ranks(db: faiss.Index, queries: np.ndarray, rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per query row: the target's best rank in any single variant's own list (999: absent)."""
    b, v = queries.shape[:2]
    _, nbrs = db.search(np.ascontiguousarray(queries.reshape(b * v, -1), np.float32), 8)
    nbrs = nbrs.reshape(b, v, 8)
    out = np.full(b, 999)
    for i in range(b):
        for k in range(v):
            own = [int(j) for j in nbrs[i, k] if j != rows[i]]
            if int(targets[i]) in own:
                out[i] = min(out[i], own.index(int(targets[i])))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--planted", type=int, default=1200)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if not (args.data_dir / "cifar10").is_dir():
        print(f"bench/copy_embedding.py: {args.data_dir / 'cifar10'} not found", file=sys.stderr)
        return 1
    pixels, src, kinds, n = planted_set(args.data_dir, args.planted)
    copies = n + np.arange(args.planted)
    log.info("%d images, %d planted copies; training the encoder", len(pixels), args.planted)
    cpu = torch.device("cpu")
    index = np.arange(len(pixels))
    t0 = time.perf_counter()
    model, loss = copyembed.train_encoder(pixels, index, args.epochs, cpu, SEED)
    training = {
        "epochs": args.epochs,
        "seconds": rnd(time.perf_counter() - t0, 1),
        "final_loss": rnd(loss, 3),
        "recipe": {"batch": copyembed.BATCH, "temperature": copyembed.TEMPERATURE, "lr": copyembed.LR},
    }
    t0 = time.perf_counter()
    emb = copyembed.embed(model, pixels, index, cpu)
    flat = faiss.IndexFlatIP(emb.shape[2])
    flat.add(np.ascontiguousarray(emb[:, 0]))
    r_emb = np.minimum(ranks_in(flat, emb[src], src, copies, 32), ranks_in(flat, emb[copies], copies, src, 32))
    embed_seconds = time.perf_counter() - t0

    geo = nearcopy.Geometry.for_images(int(pixels.shape[2]), int(pixels.shape[3]))
    dev = cpu
    feats = nearcopy.pixel_features(pixels, index, geo, dev)
    pix_db = faiss.IndexFlatIP(feats.knn.shape[1])
    pix_db.add(feats.knn.numpy())

    def pixel_queries(rows: np.ndarray) -> np.ndarray:
        q = nearcopy._project(nearcopy.knn_variants(pixels[rows], geo, dev, True), feats.mean, feats.basis)
        return q.numpy()

    q_src, q_copy = pixel_queries(src), pixel_queries(copies)
    r_pix = np.minimum(ranks_in(pix_db, q_src, src, copies, 32), ranks_in(pix_db, q_copy, copies, src, 32))
    r_own = np.minimum(variant_ranks(pix_db, q_src, src, copies), variant_ranks(pix_db, q_copy, copies, src))
    today = (r_pix < 8) | (r_own < 1)

    def by_kind(hit: np.ndarray) -> dict[str, Any]:
        return {"all": rnd(float(hit.mean())), **{k: rnd(float(hit[kinds == k].mean())) for k in EDIT_KINDS}}

    report = {
        "benchmark": "copy-detection embedding (experiment)",
        "machine": machine_info(),
        "images": len(pixels),
        "planted": args.planted,
        "training": training,
        "embed_and_rank_seconds": rnd(embed_seconds, 1),
        "candidate_recall": {
            "pixels_today (merged top 8 + each variant's top 1)": by_kind(today),
            **{f"embedding_top_{k}": by_kind(r_emb < k) for k in KS},
            **{f"pixels_today_or_embedding_top_{k}": by_kind(today | (r_emb < k)) for k in KS},
        },
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
