"""Benchmark of the memorization scorers (:mod:`memclean.scores`) against injected label noise.

Prints one JSON object on stdout (progress goes to stderr). The bench trains
only through the library (:func:`memclean.scores.score_dataset` and
:func:`memclean.train.train`); it reads the final checkpoint of a run (logits,
model, data) through a :class:`LastCheckpoint` callback. What it measures:

1. **Detection quality.** For each dataset (MNIST, Fashion-MNIST, CIFAR-10; a
   fixed-seed random subset of the *train* split) and each noise setting
   (10% symmetric, 20% asymmetric ``c → c+1 mod 10``, the default pairs of
   :func:`memclean.noise.inject`), one :func:`memclean.scores.score_dataset`
   run on the noisy labels with every default scorer
   (:func:`memclean.scores.default_scorers`: ``curvature``, ``learning_speed``,
   ``aum``, ``forgetting``, ``el2n``, ``loss`` and ``combined``; default
   params). Per scorer: AUROC, AP and precision@k (k = number of flips) from
   :func:`memclean.metrics.detection_metrics` against the flip mask. Also the
   final train accuracy on the noisy labels, the fraction of flipped samples
   the network ends up predicting with their *noisy* label (memorized), the
   training images/s and the per-scorer hook seconds.
2. **Cleanlab reference.** 5-fold (stratified on the noisy labels) out-of-fold
   predicted probabilities from the same network and the same
   :class:`memclean.train.TrainConfig` (trained with
   :func:`memclean.train.train` on 4/5; the held-out 1/5 is evaluated with the
   final model, normalised with the *training* fold's mean/std), ranked by
   ``cleanlab.rank.get_label_quality_scores`` (score = 1 − quality). Also the
   precision/recall of ``cleanlab.filter.find_label_issues``. Only the
   evaluation schedule differs (``eval_every = epochs``: the folds need the last
   checkpoint only); the evaluation pass does not change training. cleanlab is
   the ``bench`` extra (``pip install -e '.[bench]'``); without it the cleanlab
   figures are null and the notes say so.
3. **Curvature cost** (MNIST subset, the model trained in the 10%-symmetric
   run): seconds of one full :func:`memclean.scores.curvature.curvature_pass`
   with 1, 2 and 10 probes ÷ seconds of one training epoch (a one-epoch
   :func:`memclean.train.train` run on the same images and settings, timed by
   the trainer's own clock); the same pass done as the official code of Garg
   et al. ("Memorization-Curvature": per probe ``v = h·(rademacher + 1e-7)``,
   forward of ``x+v`` and ``x``, mean-reduced cross-entropy, gradient of the
   difference w.r.t. the input with the weights still requiring grad, plain
   norm averaged over probes, batches of 128); the speed ratio official/ours
   and the Spearman correlation of the two score vectors (same model, same
   normalised inputs).
4. **Targets** (booleans) and notes.

A dataset whose files are absent is skipped with a message (``skipped`` in
the JSON); the curvature cost needs MNIST.

Usage (from the repository root)::

    .venv/bin/python bench/scoring.py [--datasets mnist,fashion,cifar10] [--subset N|name=N,...]
        [--epochs E|name=E,...] [--width W|name=W,...] [--folds K] [--threads T] [--quick] [--out FILE]
        [--skip-cleanlab] [--skip-curvature-cost] [--device DEVICE]

With the defaults (MNIST/Fashion-MNIST 4,000 images × 12 epochs, CIFAR-10 3,000 × 15, width 16) and
``--threads 1`` the full run took 29 minutes on a 2-core CPU shared with another training process
(≈8–9 minutes per dataset, 4 for the curvature cost); ``--quick`` takes about a minute.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from memclean.errors import MemcleanError
from memclean.metrics import detection_metrics
from memclean.noise import inject
from memclean.scores import COMBINED, default_scorers, score_dataset
from memclean.scores.curvature import curvature_pass
from memclean.train import Checkpoint, DeviceData, TrainConfig, evaluate, select_device, softmax, train

log = logging.getLogger("bench.scoring")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
NUM_CLASSES = 10
SEED = 0
FOLDS = 5
SCORERS: dict[str, dict[str, Any]] = default_scorers()
REAL_SCORERS = [s for s in SCORERS if s != COMBINED]
NOISE_SETTINGS: list[dict[str, Any]] = [
    {"name": "symmetric_10", "kind": "symmetric", "rate": 0.10, "pairs": None},
    {"name": "asymmetric_20", "kind": "asymmetric", "rate": 0.20, "pairs": None},  # c -> c+1 mod 10
]

# Sized so that one dataset (both noise settings + 5-fold cleanlab on each) takes
# about 8-10 minutes on a busy 2-core CPU (``--threads 1``); width 16 instead of the
# trainer default 32 (≈3× faster on CPU). Too few epochs to memorize the flips.
DATASETS: dict[str, dict[str, Any]] = {
    "mnist": {
        "label": "MNIST",
        "root": SHARED / "mnist",
        "format": "idx",
        "subset": 4000,
        "epochs": 12,
        "width": 16,
        "hint": "check out ../shared/data beside the repository",
    },
    "fashion": {
        "label": "Fashion-MNIST",
        "root": Path("/usr/share/datasets/fashion-mnist"),
        "format": "idx",
        "subset": 4000,
        "epochs": 12,
        "width": 16,
        "hint": "apt-get install dataset-fashion-mnist",
    },
    "cifar10": {
        "label": "CIFAR-10",
        "root": SHARED / "cifar10",
        "format": "hf-parquet",
        "subset": 3000,
        "epochs": 15,
        "width": 16,
        "hint": "check out ../shared/data beside the repository",
    },
}
QUICK = {"subset": 600, "epochs": 3, "folds": 5}

CURV_H = 1e-3
OURS_BATCH = 512
OFFICIAL_BATCH = 128


def emit(report: dict[str, Any], out: Path | None) -> None:
    """Print a benchmark's JSON object on stdout and, with ``out``, also write it there."""
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def rnd(x: float | None, digits: int = 4) -> float | None:
    """Round for the JSON; ``None`` for a missing or non-finite value.

    Parameters
    ----------
    x
        The value.
    digits
        Decimal places.

    Returns
    -------
    float or None
    """
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return None
    return float(round(float(x), digits))


def round_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """:func:`rnd` applied to the float values of a metrics mapping.

    Parameters
    ----------
    m
        Metric name → value.

    Returns
    -------
    dict
        The same keys; floats rounded to 4 places (non-finite → ``None``).
    """
    return {k: (rnd(v) if isinstance(v, float) else v) for k, v in m.items()}


# --------------------------------------------------------------------------- checkpoints of a run


class LastCheckpoint:
    """Training callback that keeps the last checkpoint of one run.

    Pass an instance in ``callbacks`` of :func:`memclean.train.train`, or to
    :func:`run_ours`, which forwards the checkpoints of a
    :func:`memclean.scores.score_dataset` run to it. The checkpoint holds the
    final model (eval mode), the device-resident data, the final evaluation
    logits and the trainer settings.
    """

    def __init__(self) -> None:
        self._checkpoint: Checkpoint | None = None

    def __call__(self, cp: Checkpoint) -> None:
        """Keep ``cp`` when it is the run's last checkpoint."""
        if cp.is_last:
            self._checkpoint = cp

    @property
    def checkpoint(self) -> Checkpoint:
        """The last checkpoint; :class:`RuntimeError` when the run has not reached it."""
        if self._checkpoint is None:
            raise RuntimeError("the training run ended without reaching its last checkpoint")
        return self._checkpoint


# --------------------------------------------------------------------------- data


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _idx_train_files(root: Path) -> tuple[Path, Path] | None:
    for suffix in (".gz", ""):
        images, labels = root / f"train-images-idx3-ubyte{suffix}", root / f"train-labels-idx1-ubyte{suffix}"
        if images.is_file() and labels.is_file():
            return images, labels
    return None


def missing_reason(name: str) -> str | None:
    """Why dataset ``name`` cannot be loaded, or ``None`` when its files are there.

    Parameters
    ----------
    name
        A key of :data:`DATASETS`.

    Returns
    -------
    str or None
        One line naming the missing files and how to get them.
    """
    spec = DATASETS[name]
    root = Path(spec["root"])
    if spec["format"] == "idx":
        if _idx_train_files(root) is None:
            return f"no train-images-idx3-ubyte[.gz] + train-labels-idx1-ubyte[.gz] in {root} ({spec['hint']})"
        return None
    if not (root / "train.parquet").is_file():
        return f"{root / 'train.parquet'} not found ({spec['hint']})"
    return None


def load_subset(name: str, n: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Fixed-seed random subset of a dataset's train split.

    Parameters
    ----------
    name
        A key of :data:`DATASETS` whose files are present (see :func:`missing_reason`).
    n
        Subset size (capped at the split size).
    seed
        Seed of the subset choice.

    Returns
    -------
    pixels : numpy.ndarray
        ``N×C×H×W`` uint8, in the split's order.
    labels : numpy.ndarray
        ``N`` int64 clean labels.
    info : dict
        Root, split size, subset size and seed, shape, class counts, load seconds.
    """
    spec = DATASETS[name]
    root = Path(spec["root"])
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    if spec["format"] == "idx":
        files = _idx_train_files(root)
        if files is None:
            raise FileNotFoundError(missing_reason(name))
        images, labels = _read_idx(files[0]), _read_idx(files[1])
        total = len(labels)
        idx = np.sort(rng.choice(total, size=min(n, total), replace=False))
        pixels = np.ascontiguousarray(images[idx][:, None])
        y = labels[idx].astype(np.int64)
    else:
        import pyarrow.parquet as pq
        from PIL import Image

        table = pq.read_table(root / "train.parquet", columns=["img", "label"])
        total = table.num_rows
        idx = np.sort(rng.choice(total, size=min(n, total), replace=False))
        sub = table.take(idx)
        imgs = sub.column("img").to_pylist()
        pixels = np.stack(
            [np.asarray(Image.open(io.BytesIO(d["bytes"])).convert("RGB")).transpose(2, 0, 1) for d in imgs]
        )
        y = np.asarray(sub.column("label").to_pylist(), dtype=np.int64)
    info = {
        "root": str(root),
        "train_split_size": int(total),
        "subset": len(y),
        "subset_seed": seed,
        "shape": list(pixels.shape),
        "class_counts": np.bincount(y, minlength=NUM_CLASSES).tolist(),
        "load_seconds": rnd(time.perf_counter() - t0, 2),
    }
    return pixels, y, info


# --------------------------------------------------------------------------- detection


@dataclass
class TrainedModel:
    """A trained proxy network for the curvature cost.

    Attributes
    ----------
    checkpoint
        The run's last checkpoint (model, data, config).
    train_images_per_s
        Training speed of that run, as :class:`memclean.train.TrainResult` reports it.
    source
        One line saying where the model comes from (goes into the JSON).
    """

    checkpoint: Checkpoint
    train_images_per_s: float
    source: str


def run_ours(
    pixels: np.ndarray, noisy: np.ndarray, flipped: np.ndarray, config: TrainConfig, device: torch.device
) -> tuple[dict[str, Any], Checkpoint, float]:
    """Score the noisy labels with every benchmarked scorer in one :func:`score_dataset` run.

    Parameters
    ----------
    pixels
        ``N×C×H×W`` uint8 images.
    noisy
        The labels trained on and scored.
    flipped
        ``N`` booleans: which labels the noise changed (the positives).
    config, device
        Trainer settings and device.

    Returns
    -------
    figures : dict
        Per-scorer detection metrics, failures, final/flipped/clean train
        accuracy, accuracy by checkpoint, speed and seconds.
    checkpoint : Checkpoint
        The run's last checkpoint.
    train_images_per_s : float
        Unrounded training speed of the run.
    """
    last = LastCheckpoint()
    t0 = time.perf_counter()
    outcome = score_dataset(pixels, noisy, NUM_CLASSES, SCORERS, config, device, combine=REAL_SCORERS, callbacks=[last])
    wall = time.perf_counter() - t0
    cp = last.checkpoint
    correct = cp.logits.argmax(axis=1) == noisy
    per_scorer = {
        name: round_metrics(detection_metrics(flipped, outcome.scores[f"{name}_score"].to_numpy()))
        for name in SCORERS
        if f"{name}_score" in outcome.scores
    }
    tr = outcome.train
    assert tr is not None
    history = [h for h in tr.history if "train_accuracy" in h]
    figures = {
        "scorers": per_scorer,
        "failures": outcome.failures,
        "nonfinite": outcome.nonfinite,
        "final_train_accuracy": rnd(tr.final_train_accuracy),
        "train_accuracy_on_flipped": rnd(float(correct[flipped].mean())),
        "train_accuracy_on_clean": rnd(float(correct[~flipped].mean())),
        "train_accuracy_by_epoch": [rnd(h["train_accuracy"], 4) for h in history],
        "train_images_per_s": rnd(tr.train_images_per_s, 1),
        "train_seconds": rnd(tr.seconds, 2),
        "scorer_seconds": {k: rnd(v, 3) for k, v in outcome.seconds.items()},
        "wall_seconds": rnd(wall, 2),
    }
    return figures, cp, tr.train_images_per_s


def oof_pred_probs(
    pixels: np.ndarray, noisy: np.ndarray, config: TrainConfig, device: torch.device, folds: int, seed: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Out-of-fold softmax probabilities of the proxy CNN (stratified K-fold).

    Each fold trains with :func:`memclean.train.train` (``config`` with
    ``eval_every = epochs``); the held-out part is evaluated with the final
    model, normalised with the training fold's mean/std.

    Parameters
    ----------
    pixels, noisy
        Images and the labels to train on.
    config, device
        Trainer settings and device.
    folds
        Number of folds.
    seed
        Seed of the fold split.

    Returns
    -------
    probs : numpy.ndarray
        ``N×K`` float64 out-of-fold probabilities.
    info : list of dict
        Per fold: sizes, train and held-out accuracy, seconds.
    """
    from sklearn.model_selection import StratifiedKFold

    probs = np.full((len(noisy), NUM_CLASSES), np.nan)
    fold_cfg = replace(config, eval_every=config.epochs)
    info = []
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (tr_idx, te_idx) in enumerate(skf.split(np.zeros(len(noisy)), noisy)):
        last = LastCheckpoint()
        res = train(pixels[tr_idx], noisy[tr_idx], NUM_CLASSES, fold_cfg, device, callbacks=[last])
        cp = last.checkpoint
        held = replace(
            cp.data,
            pixels=torch.from_numpy(np.ascontiguousarray(pixels[te_idx])).to(device),
            labels=torch.from_numpy(noisy[te_idx]).to(device),
        )
        logits = evaluate(cp.model, held, fold_cfg, device)
        probs[te_idx] = softmax(logits)
        heldout_acc = float((logits.argmax(1) == noisy[te_idx]).mean())
        info.append(
            {
                "fold": k,
                "train_n": len(tr_idx),
                "heldout_n": len(te_idx),
                "final_train_accuracy": rnd(res.final_train_accuracy),
                "heldout_accuracy_vs_noisy": rnd(heldout_acc),
                "train_seconds": rnd(res.seconds, 2),
            }
        )
        log.info(
            "  fold %d/%d: train acc %.4f, held-out acc %.4f, %.1fs",
            k + 1,
            folds,
            res.final_train_accuracy,
            heldout_acc,
            res.seconds,
        )
    return probs, info


def cleanlab_version() -> str | None:
    """Version of the installed cleanlab, or ``None`` when the ``bench`` extra is missing.

    Returns
    -------
    str or None
    """
    try:
        import cleanlab
    except ImportError:
        return None
    return str(cleanlab.__version__)


def run_cleanlab(
    pixels: np.ndarray,
    noisy: np.ndarray,
    clean: np.ndarray,
    flipped: np.ndarray,
    config: TrainConfig,
    device: torch.device,
    folds: int,
    seed: int,
    version: str,
) -> dict[str, Any]:
    """Cleanlab's ranking of the out-of-fold probabilities, as detection metrics.

    Parameters
    ----------
    pixels, noisy, clean, flipped
        Images, labels trained on, true labels, and the flip mask.
    config, device
        Trainer settings and device (as for the scorers).
    folds, seed
        Cross-validation folds and their seed.
    version
        The installed cleanlab version (from :func:`cleanlab_version`).

    Returns
    -------
    dict
        AUROC/AP/precision@k of ``1 − get_label_quality_scores``, out-of-fold
        accuracy, ``find_label_issues`` precision/recall, fold details, seconds.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    t0 = time.perf_counter()
    probs, fold_info = oof_pred_probs(pixels, noisy, config, device, folds, seed)
    quality = get_label_quality_scores(noisy, probs)
    metrics = round_metrics(detection_metrics(flipped, 1.0 - quality))
    issues = find_label_issues(noisy, probs)
    tp = int((issues & flipped).sum())
    return {
        "method": f"cleanlab {version} rank.get_label_quality_scores(self_confidence), score = 1 - quality",
        "folds": folds,
        **metrics,
        "oof_accuracy_vs_noisy": rnd(float((probs.argmax(1) == noisy).mean())),
        "oof_accuracy_vs_true": rnd(float((probs.argmax(1) == clean).mean())),
        "find_label_issues": {
            "flagged": int(issues.sum()),
            "precision": rnd(tp / max(1, int(issues.sum()))),
            "recall": rnd(tp / max(1, int(flipped.sum()))),
        },
        "fold_details": fold_info,
        "seconds": rnd(time.perf_counter() - t0, 2),
    }


def bench_dataset(
    name: str,
    n: int,
    epochs: int,
    width: int,
    device: torch.device,
    cleanlab: str | None,
    skip_cleanlab: bool,
    folds: int,
    keep_model: bool,
) -> tuple[dict[str, Any], TrainedModel | None]:
    """Every noise setting on one dataset: our scorers, then the cleanlab reference.

    Parameters
    ----------
    name
        A key of :data:`DATASETS` whose files are present.
    n, epochs, width
        Subset size, training epochs and network width.
    device
        Where to train.
    cleanlab
        The installed cleanlab version; ``None``: cleanlab figures are null.
    skip_cleanlab
        Leave the cleanlab keys out altogether.
    folds
        Cleanlab cross-validation folds.
    keep_model
        Return the model of the 10%-symmetric run (for the curvature cost).

    Returns
    -------
    figures : dict
        Data info, trainer settings, one entry per noise setting, seconds.
    model : TrainedModel or None
        The 10%-symmetric model when ``keep_model``.
    """
    t_all = time.perf_counter()
    pixels, clean, info = load_subset(name, n)
    log.info("%s: %s (%.1fs)", name, info["shape"], info["load_seconds"])
    config = TrainConfig(epochs=epochs, width=width, seed=SEED)
    out: dict[str, Any] = {"data": info, "trainer": asdict(config), "settings": {}}
    kept: TrainedModel | None = None
    for setting in NOISE_SETTINGS:
        noisy = inject(clean, NUM_CLASSES, setting["kind"], setting["rate"], seed=SEED, pairs=setting["pairs"])
        flipped = noisy != clean
        log.info("%s/%s: scoring (%d flips)", name, setting["name"], int(flipped.sum()))
        ours, cp, speed = run_ours(pixels, noisy, flipped, config, device)
        if keep_model and setting["kind"] == "symmetric":
            kept = TrainedModel(
                cp, speed, f"ProxyCNN of the {DATASETS[name]['label']} {setting['name']} scoring run (final checkpoint)"
            )
        best = max(
            (s for s in ours["scorers"] if ours["scorers"][s]["auroc"] is not None),
            key=lambda s: ours["scorers"][s]["auroc"],
            default=None,
        )
        entry: dict[str, Any] = {
            "noise": {
                "kind": setting["kind"],
                "rate": setting["rate"],
                "pairs": "c -> (c+1) % 10 (memclean.noise default)" if setting["kind"] == "asymmetric" else None,
                "seed": SEED,
                "flipped": int(flipped.sum()),
            },
            "ours": ours,
            "best_scorer": best,
            "best_auroc": ours["scorers"][best]["auroc"] if best else None,
        }
        log.info(
            "  ours: train acc %.4f (flipped memorized %.3f), %s AUROC %.4f; %.0fs",
            ours["final_train_accuracy"],
            ours["train_accuracy_on_flipped"] or float("nan"),
            best,
            entry["best_auroc"] or float("nan"),
            ours["wall_seconds"],
        )
        log.info("  " + ", ".join(f"{k}={v['auroc']}" for k, v in ours["scorers"].items()))
        if not skip_cleanlab:
            ref = None
            if cleanlab is not None:
                log.info("%s/%s: cleanlab reference (%d folds)", name, setting["name"], folds)
                ref = run_cleanlab(pixels, noisy, clean, flipped, config, device, folds, SEED, cleanlab)
                log.info("  cleanlab AUROC %.4f AP %.4f (%.0fs)", ref["auroc"], ref["ap"], ref["seconds"])
            entry.update(versus_cleanlab(ours["scorers"], best, ref))
        out["settings"][setting["name"]] = entry
    out["seconds"] = rnd(time.perf_counter() - t_all, 1)
    log.info("%s done in %.0fs", name, out["seconds"])
    return out, kept


def versus_cleanlab(scorers: dict[str, dict[str, Any]], best: str | None, ref: dict[str, Any] | None) -> dict[str, Any]:
    """The cleanlab keys of one setting's entry: the reference and how our scorers compare with it.

    Parameters
    ----------
    scorers
        Our per-scorer detection metrics (``run_ours(...)[0]["scorers"]``).
    best
        Our best scorer by AUROC (``None`` when no scorer has one).
    ref
        :func:`run_cleanlab` figures; ``None`` (cleanlab not installed) makes every value null.

    Returns
    -------
    dict
        ``cleanlab``, ``best_beats_cleanlab_auroc``, ``best_beats_cleanlab_ap``
        and ``scorers_beating_cleanlab_auroc``.
    """
    if ref is None:
        return dict.fromkeys(
            ("cleanlab", "best_beats_cleanlab_auroc", "best_beats_cleanlab_ap", "scorers_beating_cleanlab_auroc")
        )
    return {
        "cleanlab": ref,
        "best_beats_cleanlab_auroc": bool(best and ref["auroc"] is not None and scorers[best]["auroc"] > ref["auroc"]),
        "best_beats_cleanlab_ap": bool(best and ref["ap"] is not None and scorers[best]["ap"] > ref["ap"]),
        "scorers_beating_cleanlab_auroc": [
            s
            for s, m in scorers.items()
            if m["auroc"] is not None and ref["auroc"] is not None and m["auroc"] > ref["auroc"]
        ],
    }


# --------------------------------------------------------------------------- curvature cost


def official_curvature(
    net: torch.nn.Module, data: DeviceData, h: float, niter: int, batch_size: int, seed: int
) -> np.ndarray:
    """Garg et al.'s ``get_regularized_curvature_for_batch`` over the data, batch by batch.

    Parameters
    ----------
    net
        The trained network.
    data
        The device-resident data (normalised batch by batch).
    h, niter
        Finite-difference step and number of probes.
    batch_size
        Batch size (the last batch may be smaller, which inflates its scores).
    seed
        Seed of torch's global generator, as the official code uses it.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64 plain norms averaged over probes.
    """
    torch.manual_seed(seed)
    criterion = torch.nn.CrossEntropyLoss()
    was_training = net.training
    out = []
    for start in range(0, len(data), batch_size):
        sl = slice(start, start + batch_size)
        batch_data = data.batch(sl)
        batch_labels = data.labels[sl]
        num_samples = batch_data.shape[0]
        net.eval()
        net.zero_grad()
        regr = torch.zeros(num_samples)
        for _ in range(niter):
            v = torch.randint_like(batch_data, high=2)
            for v_i in v:  # Rademacher, as in the official code
                v_i[v_i == 0] = -1
            v = h * (v + 1e-7)
            batch_data.requires_grad_()
            outputs_pos = net(batch_data + v)
            outputs_orig = net(batch_data)
            loss_pos = criterion(outputs_pos, batch_labels)
            loss_orig = criterion(outputs_orig, batch_labels)
            grad_diff = torch.autograd.grad((loss_pos - loss_orig), batch_data)[0]
            regr += grad_diff.reshape(grad_diff.size(0), -1).norm(dim=1).cpu().detach()
            net.zero_grad()
            if batch_data.grad is not None:
                batch_data.grad.zero_()
        out.append(regr / niter)
    net.train(was_training)
    return torch.cat(out).double().numpy()


def epoch_seconds(pixels: np.ndarray, labels: np.ndarray, config: TrainConfig, device: torch.device) -> float:
    """Seconds of one training epoch of :func:`memclean.train.train` on these images and settings.

    A one-epoch ``train`` run (fresh weights: the cost of this dense CNN does
    not depend on their values), read from the trainer's own clock:
    ``TrainResult.train_images_per_s`` counts the optimisation steps only, not
    the set-up or the evaluation pass.

    Parameters
    ----------
    pixels, labels
        The training images (``N×C×H×W`` uint8) and labels.
    config, device
        Trainer settings (``epochs`` is replaced by 1) and device.

    Returns
    -------
    float
    """
    res = train(pixels, labels, NUM_CLASSES, replace(config, epochs=1, eval_every=1), device)
    return len(labels) / res.train_images_per_s


def train_curvature_model(n: int, epochs: int, width: int, device: torch.device) -> TrainedModel:
    """Train the curvature-cost model when no MNIST scoring run provided one.

    Parameters
    ----------
    n, epochs, width
        MNIST subset size, epochs and network width.
    device
        Where to train.

    Returns
    -------
    TrainedModel
        Trained on the MNIST subset with 10% symmetric noise, final weights.
    """
    pixels, clean, _ = load_subset("mnist", n)
    noisy = inject(clean, NUM_CLASSES, "symmetric", 0.1, seed=SEED)
    last = LastCheckpoint()
    log.info("curvature cost: training an MNIST model (%d images, %d epochs)", n, epochs)
    config = TrainConfig(epochs=epochs, width=width, seed=SEED, eval_every=epochs)
    res = train(pixels, noisy, NUM_CLASSES, config, device, callbacks=[last])
    source = "ProxyCNN trained here on the MNIST subset with 10% symmetric noise (final weights)"
    return TrainedModel(last.checkpoint, res.train_images_per_s, source)


def bench_curvature_cost(trained: TrainedModel, device: torch.device) -> dict[str, Any]:
    """Cost of the curvature pass in training epochs, and against an official-style pass.

    Parameters
    ----------
    trained
        The model and data to time on.
    device
        Where they live.

    Returns
    -------
    dict
        Epoch seconds, our and the official-style passes' seconds and epochs,
        speed ratios, Spearman agreement and the probe-noise ceiling.
    """
    from scipy.stats import spearmanr

    def rho(a: np.ndarray, b: np.ndarray) -> float | None:
        return rnd(float(spearmanr(a, b).statistic))

    cp = trained.checkpoint
    model, data = cp.model, cp.data
    n = len(data)
    pixels, labels = data.pixels.cpu().numpy(), data.labels.cpu().numpy()
    epoch_from_train = n / trained.train_images_per_s

    def make_batch(sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
        return data.batch(sl), data.labels[sl]

    load_before = os.getloadavg()
    epoch_runs: list[float] = []
    times: dict[str, list[float]] = {}
    scores: dict[str, list[np.ndarray]] = {}

    def ours(k: int, seed: int, bs: int = OURS_BATCH) -> None:
        gen = torch.Generator(device=device).manual_seed(seed)
        t0 = time.perf_counter()
        s = curvature_pass(model, None, CURV_H, k, gen, make_batch=make_batch, n=n, batch_size=bs)
        key = f"ours_n{k}" + ("" if bs == OURS_BATCH else f"_b{bs}")
        times.setdefault(key, []).append(time.perf_counter() - t0)
        scores.setdefault(key, []).append(s)
        log.info("  %s: %.2fs", key, times[key][-1])

    def official(k: int, seed: int) -> None:
        t0 = time.perf_counter()
        s = official_curvature(model, data, CURV_H, k, OFFICIAL_BATCH, seed)
        key = f"official_n{k}"
        times.setdefault(key, []).append(time.perf_counter() - t0)
        scores.setdefault(key, []).append(s)
        log.info("  %s: %.2fs", key, times[key][-1])

    def epoch() -> None:
        epoch_runs.append(epoch_seconds(pixels, labels, cp.config, device))
        log.info("  epoch: %.2fs", epoch_runs[-1])

    # Interleaved so that a change of machine load hits both sides; short ones twice.
    epoch()
    epoch()
    ours(1, 11)
    ours(2, 21)
    official(2, 31)
    ours(2, 22, OFFICIAL_BATCH)
    ours(1, 12)
    ours(2, 23)
    official(2, 32)
    epoch()
    ours(10, 101)
    official(10, 102)
    ours(10, 103, OFFICIAL_BATCH)
    epoch()
    official(10, 104)
    ours(10, 105)
    epoch()
    load_after = os.getloadavg()
    epoch_s = min(epoch_runs)
    t = {k: min(v) for k, v in times.items()}
    last = n % OFFICIAL_BATCH
    keep = n - last

    def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
        return {
            "spearman": rho(a, b),
            "spearman_excluding_official_last_batch": rho(a[:keep], b[:keep]) if last else None,
        }

    off: dict[str, Any] = {}
    for k in (2, 10):
        o, u = scores[f"official_n{k}"][0], scores[f"ours_n{k}"][0]
        off[str(k)] = {
            "seconds": rnd(t[f"official_n{k}"], 3),
            "seconds_runs": [rnd(x, 3) for x in times[f"official_n{k}"]],
            "epochs": rnd(t[f"official_n{k}"] / epoch_s, 3),
            "speed_ratio_official_over_ours": rnd(t[f"official_n{k}"] / t[f"ours_n{k}"], 3),
            "speed_ratio_official_over_ours_same_batch128": rnd(
                t[f"official_n{k}"] / t[f"ours_n{k}_b{OFFICIAL_BATCH}"], 3
            ),
            "vs_ours_same_n": agreement(o, u),
        }
    off["2"]["vs_ours_n10"] = agreement(scores["official_n2"][0], scores["ours_n10"][0])
    return {
        "model": trained.source,
        "n": n,
        "h": CURV_H,
        "ours_batch_size": OURS_BATCH,
        "official_batch_size": OFFICIAL_BATCH,
        "official_last_batch_size": last or OFFICIAL_BATCH,
        "timing": "min over runs; runs interleaved (epoch, ours, official)",
        "epoch_seconds": rnd(epoch_s, 3),
        "epoch_seconds_runs": [rnd(e, 3) for e in epoch_runs],
        "epoch_seconds_from_trainer_run": rnd(epoch_from_train, 3),
        "loadavg_1min_before_after": [rnd(load_before[0], 2), rnd(load_after[0], 2)],
        "ours": {
            str(k): {
                "seconds": rnd(t[f"ours_n{k}"], 3),
                "seconds_runs": [rnd(x, 3) for x in times[f"ours_n{k}"]],
                "epochs": rnd(t[f"ours_n{k}"] / epoch_s, 3),
            }
            for k in (1, 2, 10)
        },
        "ours_batch128": {
            str(k): {
                "seconds": rnd(t[f"ours_n{k}_b{OFFICIAL_BATCH}"], 3),
                "epochs": rnd(t[f"ours_n{k}_b{OFFICIAL_BATCH}"] / epoch_s, 3),
            }
            for k in (2, 10)
        },
        "official_style": off,
        "probe_noise_ceiling": {
            "ours_n1_two_seeds": rho(*scores["ours_n1"][:2]),
            "ours_n2_two_seeds": rho(*scores["ours_n2"][:2]),
            "official_n2_two_seeds": rho(*scores["official_n2"][:2]),
            "ours_n10_two_seeds": rho(*scores["ours_n10"][:2]),
            "official_n10_two_seeds": rho(*scores["official_n10"][:2]),
            "ours_n2_vs_ours_n10": rho(scores["ours_n2"][0], scores["ours_n10"][0]),
            "ours_n10_batch512_vs_batch128": rho(scores["ours_n10"][0], scores[f"ours_n10_b{OFFICIAL_BATCH}"][0]),
        },
    }


# --------------------------------------------------------------------------- main


def parse_override(value: str | None) -> dict[str, int]:
    """Parse a per-dataset integer option.

    Parameters
    ----------
    value
        ``"5000"`` (every dataset, also the MNIST model of the curvature cost)
        or ``"mnist=5000,cifar10=3000"``.

    Returns
    -------
    dict
        Dataset → value; empty for ``None``.

    Raises
    ------
    ValueError
        For an unknown dataset or a value that is not an integer.
    """
    if not value:
        return {}
    if "=" not in value:
        return dict.fromkeys(DATASETS, int(value))
    out = {}
    for part in value.split(","):
        k, _, v = part.partition("=")
        if k.strip() not in DATASETS:
            raise ValueError(f"unknown dataset {k.strip()!r}")
        out[k.strip()] = int(v)
    return out


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The pass/fail targets of a finished run.

    Parameters
    ----------
    result
        The benchmark's JSON object so far.

    Returns
    -------
    dict
        Target name → bool (``None`` where the cleanlab figures are null).
    """
    t: dict[str, Any] = {}
    cc = result.get("curvature_cost")
    if cc:
        n2 = cc["ours"].get("2")
        t["curvature_n2_le_2x_epoch"] = bool(n2 and n2["epochs"] <= 2.0)
        for k, v in cc["official_style"].items():
            t[f"ours_ge_3x_faster_than_official_n{k}"] = bool(v["speed_ratio_official_over_ours"] >= 3.0)
            t[f"spearman_vs_official_ge_0.95_n{k}"] = bool((v["vs_ours_same_n"]["spearman"] or 0) >= 0.95)
        t["curvature_speed_and_agreement"] = all(
            v for k, v in t.items() if k.startswith("ours_ge_3x") or k.startswith("spearman_vs_official")
        ) and bool(cc["official_style"])
    for ds in ("mnist", "fashion"):
        d = result["datasets"].get(ds)
        if not d:
            continue
        s = d["settings"]["symmetric_10"]
        t[f"{ds}_sym10_best_auroc_ge_0.99"] = bool(s["best_auroc"] is not None and s["best_auroc"] >= 0.99)
        if "cleanlab" in s:
            t[f"{ds}_sym10_best_above_cleanlab"] = s["best_beats_cleanlab_auroc"]
    return t


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its JSON object.

    Parameters
    ----------
    argv
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0, or 1 after a one-line error for bad settings.
    """
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--datasets", default="mnist,fashion,cifar10")
    p.add_argument("--subset", default=None, help="N for every dataset, or name=N,... (default: per dataset)")
    p.add_argument("--epochs", default=None, help="E for every dataset, or name=E,...")
    p.add_argument("--width", default=None, help="network width for every dataset, or name=W,...")
    p.add_argument("--folds", type=int, default=None, help=f"cleanlab cross-validation folds (default {FOLDS})")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of about a minute")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--skip-cleanlab", action="store_true")
    p.add_argument("--skip-curvature-cost", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice); 1 is "
        "faster than 2 on a 2-core machine that other processes are also using",
    )
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for d in names:
        if d not in DATASETS:
            p.error(f"unknown dataset {d!r}; choose from {', '.join(DATASETS)}")
    overrides: dict[str, dict[str, int]] = {}
    for what in ("subset", "epochs", "width"):
        try:
            overrides[what] = parse_override(getattr(args, what))
        except ValueError as exc:
            p.error(f"--{what}: {exc}")
    folds = args.folds if args.folds is not None else (QUICK["folds"] if args.quick else FOLDS)
    sizes = {}
    for d, spec in DATASETS.items():
        n = QUICK["subset"] if args.quick else spec["subset"]
        e = QUICK["epochs"] if args.quick else spec["epochs"]
        sizes[d] = (
            overrides["subset"].get(d, n),
            overrides["epochs"].get(d, e),
            overrides["width"].get(d, spec["width"]),
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = select_device(args.device)
    except MemcleanError as exc:
        log.error("bench/scoring.py: error: %s", exc)
        return 1
    cleanlab = None if args.skip_cleanlab else cleanlab_version()
    if not args.skip_cleanlab and cleanlab is None:
        log.warning("cleanlab is not installed (pip install -e '.[bench]'): the cleanlab figures will be null")
    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "memclean scoring: detection of injected label noise, cleanlab reference, curvature cost",
        "machine": {
            "device": str(device),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "quick": args.quick,
        "sizes": {d: {"subset": sizes[d][0], "epochs": sizes[d][1], "width": sizes[d][2]} for d in names},
        "scorers": {k: v or "defaults" for k, v in SCORERS.items()},
        "combined_of": REAL_SCORERS,
        "cleanlab_folds": folds if cleanlab else None,
        "datasets": {},
        "skipped": {},
    }

    def checkpoint_out() -> None:
        if args.out:
            partial = {**result, "partial": True, "elapsed_seconds": rnd(time.perf_counter() - t_start, 1)}
            Path(args.out).write_text(json.dumps(partial, indent=2) + "\n")

    def skip(what: str, reason: str) -> None:
        log.warning("skipping %s: %s", what, reason)
        result["skipped"][what] = reason

    def curvature_cost(trained: TrainedModel) -> None:
        log.info("curvature cost")
        t0 = time.perf_counter()
        result["curvature_cost"] = bench_curvature_cost(trained, device)
        result["curvature_cost"]["seconds"] = rnd(time.perf_counter() - t0, 1)
        checkpoint_out()

    for d in names:
        reason = missing_reason(d)
        if reason:
            skip(d, reason)
            continue
        n, e, w = sizes[d]
        keep = d == "mnist" and not args.skip_curvature_cost
        result["datasets"][d], trained = bench_dataset(d, n, e, w, device, cleanlab, args.skip_cleanlab, folds, keep)
        checkpoint_out()
        if trained is not None:
            curvature_cost(trained)  # right after MNIST, while its model is at hand
    if not args.skip_curvature_cost and "curvature_cost" not in result:
        reason = missing_reason("mnist")
        if reason:
            skip("curvature_cost", f"needs MNIST: {reason}")
        else:
            curvature_cost(train_curvature_model(*sizes["mnist"], device))
    result["targets"] = targets(result)
    notes = [
        "Scores: higher = more suspicious; 'best scorer' is chosen per setting after the fact (max AUROC), "
        "which is optimistic; every scorer's numbers are listed.",
        "Asymmetric noise uses memclean.noise's default pairs c -> (c+1) % 10 for every dataset (also MNIST).",
        "Cleanlab folds use the same TrainConfig except eval_every = epochs (only the last checkpoint is needed; "
        "evaluation passes do not change training). Held-out folds are normalised with the training fold's mean/std.",
        "Timings on a shared 2-core CPU with other processes possibly running; see curvature_cost.loadavg_1min_before_after and machine.torch_threads.",
        "Curvature cost: one epoch = a one-epoch memclean.train.train run on the same images and settings, "
        "optimisation steps only (the trainer's own clock).",
        "Official-style curvature: same model and same normalised inputs as ours; mean-reduced loss (so the last, "
        "smaller batch's scores are inflated by 128/last), plain norm; ours: sum-reduced, squared norm, input grads only.",
    ]
    if not args.skip_cleanlab and cleanlab is None:
        notes.append("cleanlab is not installed (pip install -e '.[bench]'): the cleanlab figures are null.")
    notes += [f"skipped {what}: {reason}" for what, reason in result["skipped"].items()]
    for d, v in result["datasets"].items():
        for s, e in v["settings"].items():
            acc = e["ours"]["final_train_accuracy"]
            if acc is not None and acc < 0.99:
                notes.append(
                    f"{d}/{s}: final train accuracy on noisy labels {acc} < 0.99 (flipped samples memorized: "
                    f"{e['ours']['train_accuracy_on_flipped']}); curvature needs a network that has memorized the flips."
                )
    result["notes"] = notes
    result["partial"] = False
    result["total_seconds"] = rnd(time.perf_counter() - t_start, 1)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
