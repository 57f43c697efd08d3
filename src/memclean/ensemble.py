"""Subset ensembles: K proxy networks, each trained on its own subset, and every sample's fate in and out.

The memorization estimators (Feldman & Zhang's memorization, the hold-out
C-score, confident learning on out-of-sample probabilities) compare what the
members that trained on a sample predict for it with what the members that
never saw it predict. This module trains those members and keeps, for every
member and every sample, whether the sample was in the member's training
subset (the K×N ``mask``) and the member's final logits for it.

Subsets. Each sample ``i`` gets a fixed uniform number ``u_i`` (seeded by
``seed``); member ``k`` leaves out the samples with
``(u_i + k·φ) mod 1 < 1 − subset_ratio`` (``φ`` the golden ratio's fractional
part). So member ``k``'s subset depends only on ``seed`` and ``k`` — never on
``K`` — each member trains on ``subset_ratio`` of the samples, and the rotations
``k·φ`` spread evenly (three-gap theorem): once every gap between them is
shorter than ``min(r, 1 − r)``, every sample is both in and out of at least one
member. :func:`coverage_members` gives the smallest such ``K``; fewer members
are refused with one line.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pydantic
import torch
from pydantic import ConfigDict, Field

from memclean.errors import MemcleanError
from memclean.io import atomic_path
from memclean.progress import Progress, no_progress
from memclean.train import Checkpoint, TrainConfig, evaluate, softmax, to_device, train

log = logging.getLogger(__name__)

#: Fractional part of the golden ratio: the rotation between consecutive members' out-sets.
PHI = (math.sqrt(5.0) - 1.0) / 2.0


@pydantic.dataclasses.dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class EnsembleConfig:
    """How the subset ensemble is trained (trained only when an enabled scorer needs it)."""

    members: Annotated[int, Field(ge=2, le=10_000, description="K members, each on its own subset")] = 8
    subset_ratio: Annotated[
        float, Field(gt=0.0, lt=1.0, description="fraction of the samples each member trains on")
    ] = 0.7
    epochs: Annotated[
        int | None, Field(ge=1, le=10_000, description="epochs per member; null = score.trainer.epochs")
    ] = None
    seed: Annotated[int, Field(ge=0, description="seeds the subsets and the members' initialisation")] = 0


def gaps(members: int) -> float:
    """Largest gap between the rotations ``k·φ mod 1`` of ``members`` members (on the unit circle)."""
    points = np.sort(np.mod(np.arange(members) * PHI, 1.0))
    return float(np.max(np.diff(np.append(points, points[0] + 1.0))))


def coverage_members(subset_ratio: float) -> int:
    """Smallest K for which every sample is in at least one member's subset and out of at least one."""
    need = min(subset_ratio, 1.0 - subset_ratio)
    k = 2
    while gaps(k) >= need:
        k += 1
    return k


def out_mask(n: int, config: EnsembleConfig, members: range | None = None) -> np.ndarray:
    """K×N boolean: ``True`` where sample ``i`` is *out* of member ``k``'s training subset."""
    u = np.random.default_rng(config.seed).random(n)
    ks = np.arange(config.members) if members is None else np.asarray(members)
    return np.mod(u[None, :] + ks[:, None] * PHI, 1.0) < 1.0 - config.subset_ratio


def member_seed(seed: int, k: int) -> int:
    """The training seed of member ``k`` (independent of the number of members)."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0] % (2**31))


@dataclass
class Ensemble:
    """The members' fates of every sample.

    Attributes
    ----------
    in_mask
        K×N bool, ``True`` where sample ``i`` was in member ``k``'s training subset.
    logits
        K×N×C float16 final logits of every member for every sample (evaluation mode).
    labels
        N int64: the labels the members trained on.
    seconds
        Wall-clock seconds of the whole ensemble.
    """

    in_mask: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    seconds: float = 0.0

    @property
    def members(self) -> int:
        return int(self.in_mask.shape[0])

    def probabilities(self) -> np.ndarray:
        """K×N×C softmax probabilities (float64)."""
        return softmax(self.logits)

    def given_probability(self) -> np.ndarray:
        """K×N probability each member gives the sample's label."""
        p = self.probabilities()
        return np.take_along_axis(p, self.labels[None, :, None], axis=2)[:, :, 0]

    def correct(self) -> np.ndarray:
        """K×N float 1.0 where the member predicts the sample's label."""
        return (self.logits.argmax(axis=2) == self.labels[None, :]).astype(np.float64)

    def mean_where(self, values: np.ndarray, inside: bool) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample mean of K×N ``values`` over the members where the sample is in (or out), and its count."""
        mask = self.in_mask if inside else ~self.in_mask
        count = mask.sum(axis=0)
        total = np.where(mask, values, 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / count, count

    def out_of_sample_probabilities(self) -> np.ndarray:
        """N×C mean probabilities over the members that did not train on each sample."""
        p = self.probabilities()
        out = ~self.in_mask
        with np.errstate(invalid="ignore", divide="ignore"):
            return (p * out[:, :, None]).sum(axis=0) / out.sum(axis=0)[:, None]


class _LastModel:
    """Training callback keeping the last checkpoint (its model and normalisation)."""

    def __init__(self) -> None:
        self.checkpoint: Checkpoint | None = None

    def __call__(self, cp: Checkpoint) -> None:
        if cp.is_last:
            self.checkpoint = cp


def train_ensemble(
    pixels: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    trainer: TrainConfig,
    config: EnsembleConfig,
    device: torch.device,
    progress: Progress | None = None,
    train_member: Callable[..., Any] = train,
) -> Ensemble:
    """Train ``config.members`` proxy networks on their subsets; evaluate each on every sample.

    Parameters
    ----------
    pixels, labels, num_classes
        The dataset (``N×C×H×W`` uint8) and the labels to train on.
    trainer
        The proxy network's settings; each member uses them with its own seed
        (and ``config.epochs`` when given), evaluating only after its last epoch.
    config
        Members, subset ratio, epochs, seed.
    device
        Where to train.
    progress
        Optional progress wrapper over the members.
    train_member
        The training function (:func:`memclean.train.train`; ``bench/ensemble.py`` wraps it to time members).

    Returns
    -------
    Ensemble

    Raises
    ------
    MemcleanError
        When ``config.members`` is too few for every sample to be both in and out of some member.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    needed = coverage_members(config.subset_ratio)
    if config.members < needed:
        raise MemcleanError(
            f"score.ensemble.members={config.members} leaves some samples never held out (or never trained on) "
            f"at subset_ratio {config.subset_ratio}: use at least {needed}"
        )
    in_mask = ~out_mask(n, config)
    epochs = config.epochs or trainer.epochs
    log.info(
        "ensemble: %d members × %d epochs on ~%d of %d samples each ≈ %.1f× the training cost of one full run",
        config.members,
        epochs,
        round(config.subset_ratio * n),
        n,
        config.members * config.subset_ratio * epochs / trainer.epochs,
    )
    logits = np.empty((config.members, n, num_classes), dtype=np.float16)
    full = to_device(pixels, labels, device)
    start = time.perf_counter()
    wrap = progress or no_progress
    for k in wrap(range(config.members), "ensemble members", config.members):
        member = replace(trainer, seed=member_seed(config.seed, k), epochs=epochs, eval_every=epochs)
        subset = np.nonzero(in_mask[k])[0]
        last = _LastModel()
        train_member(pixels[subset], labels[subset], num_classes, member, device, callbacks=[last])
        if last.checkpoint is None:  # pragma: no cover - train() always ends on a checkpoint
            raise RuntimeError("a member finished without its last checkpoint")
        cp = last.checkpoint
        data = replace(full, mean=cp.data.mean, std=cp.data.std)  # the member's own normalisation
        logits[k] = evaluate(cp.model, data, member, device).astype(np.float16)
    return Ensemble(in_mask, logits, labels, time.perf_counter() - start)


def _record_dtype(num_classes: int) -> np.dtype:
    return np.dtype([("in", np.bool_), ("logits", np.float16, (num_classes,))])


def save_ensemble(ensemble: Ensemble | None, path: Path, n: int, num_classes: int) -> None:
    """Write the K×N in-mask and logits as one structured ``.npy`` (K = 0 when no ensemble was trained).

    ``np.save`` output is byte-identical for identical arrays (unlike ``.npz``,
    whose zip entries carry timestamps), and memory-maps for reading.
    """
    members = 0 if ensemble is None else ensemble.members
    records = np.zeros((members, n), dtype=_record_dtype(num_classes))
    if ensemble is not None:
        records["in"] = ensemble.in_mask
        records["logits"] = ensemble.logits
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, records, allow_pickle=False)


def load_ensemble(path: Path, labels: np.ndarray) -> Ensemble | None:
    """Read :func:`save_ensemble`'s file back (``None`` when it holds no member)."""
    records = np.load(path, mmap_mode="r", allow_pickle=False)
    labels = np.asarray(labels, dtype=np.int64)
    if records.dtype.names != ("in", "logits") or records.ndim != 2 or records.shape[1] != len(labels):
        raise MemcleanError(f"{path} is not an ensemble of these {len(labels)} samples: rerun the score stage")
    if records.shape[0] == 0:
        return None
    return Ensemble(np.array(records["in"]), np.array(records["logits"]), labels)
