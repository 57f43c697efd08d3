"""Subset ensembles: K proxy networks, each trained on its own subset, and every sample's fate in and out.

The memorization estimators (Feldman & Zhang's memorization, the hold-out
C-score, confident learning on out-of-sample probabilities) compare what the
members that trained on a sample predict for it with what the members that
never saw it predict. This module trains those members and keeps, for every
member and every sample, whether the sample was in the member's training
subset (the K×N ``mask``) and the member's final logits for it.

Subsets come in **rounds** of ``m`` members (``m`` = :func:`coverage_members`
of the subset ratio: 5 at 0.7). Round ``b`` draws a fresh uniform number
``u_i^b`` per sample (seeded by ``(seed, b)``); its ``j``-th member leaves out the
samples with ``(u_i^b + j·φ) mod 1 < 1 − ratio`` (``φ`` the golden ratio's
fractional part). Within a round the rotations ``j·φ`` spread evenly
(three-gap theorem), so one round already holds every sample out of some member
and in another — cross-fitting, what a CPU can afford. Rounds are independent of
each other, so with more rounds every pair of samples gets its own in/out
pattern, which the influence estimator needs (one rotation round alone gives at
most ``2m`` distinct patterns). Member ``k``'s subset depends only on ``seed``,
``k`` and the ratio — never on ``K`` — so more members can be added later.
:func:`members_needed` gives the smallest ``K`` that covers every sample; fewer
are refused with one line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pydantic
from pydantic import ConfigDict, Field

from memclean.errors import MemcleanError
from memclean.executor import map_jobs
from memclean.io import array_digest, atomic_path
from memclean.progress import Progress
from memclean.trainconfig import TrainConfig, softmax

if TYPE_CHECKING:  # torch and the trainer load when a member trains (stages that only read members start faster)
    import torch

    from memclean.train import Checkpoint

log = logging.getLogger(__name__)

#: Fractional part of the golden ratio: the rotation between consecutive members' out-sets.
PHI = (math.sqrt(5.0) - 1.0) / 2.0


#: Default ensemble budget (in full-run equivalents) per device type when ``budget`` is null.
DEFAULT_BUDGET = {"cpu": 4.0, "cuda": 45.0}


@pydantic.dataclasses.dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class EnsembleConfig:
    """How the subset ensemble is trained (trained only when an enabled scorer needs it)."""

    members: Annotated[
        int | None,
        Field(ge=2, le=10_000, description="K members, each on its own subset; null = planned from `budget`"),
    ] = None
    subset_ratio: Annotated[
        float | list[Annotated[float, Field(gt=0.0, lt=1.0)]],
        Field(description="fraction of the samples each member trains on; a list cycles over the members"),
    ] = 0.7
    epochs: Annotated[
        int | None, Field(ge=1, le=10_000, description="epochs per member; null = score.trainer.epochs")
    ] = None
    budget: Annotated[
        float | None,
        Field(
            gt=0.0,
            description="when members is null: training cost allowed, in full runs (null = 4 on CPU, 45 on CUDA)",
        ),
    ] = None
    seed: Annotated[int, Field(ge=0, description="seeds the subsets and the members' initialisation")] = 0
    executor: Annotated[
        Literal["local", "processes", "dask"],
        Field(
            description="local: members back to back in this process; processes: one worker process per core, "
            "one thread each; dask: on a cluster"
        ),
    ] = "local"
    dask_address: Annotated[
        str | None, Field(description="Dask scheduler address; null = start a LocalCluster (executor: dask)")
    ] = None

    @pydantic.field_validator("subset_ratio")
    @classmethod
    def _ratio(cls, value: float | list[float]) -> float | list[float]:
        ratios = value if isinstance(value, list) else [value]
        if not ratios:
            raise ValueError("give at least one ratio")
        if not all(0.0 < r < 1.0 for r in ratios):
            raise ValueError("every ratio must lie strictly between 0 and 1")
        return value

    @property
    def ratios(self) -> list[float]:
        """The subset ratios, cycled over the members (member ``k`` uses ``ratios[k % len(ratios)]``)."""
        return list(self.subset_ratio) if isinstance(self.subset_ratio, list) else [float(self.subset_ratio)]

    def ratio_of(self, k: int) -> float:
        """Member ``k``'s subset ratio."""
        ratios = self.ratios
        return ratios[k % len(ratios)]


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


def round_size(config: EnsembleConfig) -> int:
    """Members per round of rotations: enough for one round to hold every sample out at each ratio."""
    return max(coverage_members(r) for r in config.ratios)


def _member_out(n: int, config: EnsembleConfig, k: int, m: int, draws: dict[int, np.ndarray]) -> np.ndarray:
    b, j = divmod(k, m)
    if b not in draws:
        rng = np.random.default_rng(config.seed if b == 0 else [config.seed, b])
        draws[b] = rng.random(n)
    return np.mod(draws[b] + j * PHI, 1.0) < 1.0 - config.ratio_of(k)


def out_mask(n: int, config: EnsembleConfig, members: range | int | None = None) -> np.ndarray:
    """K×N boolean: ``True`` where sample ``i`` is *out* of member ``k``'s training subset.

    ``members``: the members to draw (a range, or a count from 0); default ``config.members``.
    """
    if members is None:
        members = config.members or 0
    ks = range(members) if isinstance(members, int) else members
    m = round_size(config)
    draws: dict[int, np.ndarray] = {}
    rows = [_member_out(n, config, int(k), m, draws) for k in ks]
    return np.stack(rows) if rows else np.zeros((0, n), dtype=bool)


def members_needed(n: int, config: EnsembleConfig, limit: int = 10_000) -> int:
    """Smallest K for which each of these ``n`` samples is in some member's subset and out of another's."""
    m = round_size(config)
    draws: dict[int, np.ndarray] = {}
    seen_in = np.zeros(n, dtype=bool)
    seen_out = np.zeros(n, dtype=bool)
    for k in range(limit):
        out = _member_out(n, config, k, m, draws)
        seen_out |= out
        seen_in |= ~out
        if k >= 1 and seen_in.all() and seen_out.all():
            return k + 1
    raise MemcleanError(f"score.ensemble.subset_ratio {config.subset_ratio} never holds every sample out")


@dataclass(frozen=True)
class EnsemblePlan:
    """What will be trained: members, epochs per member, and the cost in full-run equivalents."""

    members: int
    epochs: int
    cost: float
    rule: str


def plan(n: int, trainer: TrainConfig, config: EnsembleConfig, device: torch.device) -> EnsemblePlan:
    """Choose K (when ``config.members`` is null) and state the cost, before anything trains.

    Rule: one member costs ``ratio × epochs / trainer.epochs`` of one full run.
    With ``members`` null, K is the most members the budget affords
    (``budget``, default 4 full runs on a CPU and 45 on CUDA), but never fewer
    than needed for every sample to be held out by at least one member and
    trained on by another (:func:`members_needed`; 5 at ratio 0.7): on a CPU
    that is cross-fitting with ~5 members, on a GPU ~64 members.

    Raises
    ------
    MemcleanError
        When an explicit ``members`` is too few for that coverage.
    """
    epochs = config.epochs or trainer.epochs
    needed = members_needed(n, config)
    per_member = float(np.mean(config.ratios)) * epochs / trainer.epochs
    if config.members is not None:
        if config.members < needed:
            raise MemcleanError(
                f"score.ensemble.members={config.members} leaves some samples never held out (or never trained "
                f"on) at subset_ratio {config.subset_ratio}: use at least {needed}"
            )
        members, rule = config.members, "members given"
    else:
        budget = config.budget or DEFAULT_BUDGET.get(device.type, DEFAULT_BUDGET["cpu"])
        members = max(needed, int(budget / per_member + 1e-9))
        rule = f"budget {budget:g} full runs on {device.type}, at least {needed} for coverage"
    return EnsemblePlan(members, epochs, members * per_member, rule)


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
    extras
        Probe name → K×N×d float16: what each member recorded besides its
        logits (see ``EnsembleScorer.member_probe``), e.g. ``dissection``'s
        projected input gradients.
    heldout
        N bool, ``True`` for rows of a held-out split (``test``/``val``), or
        ``None`` when unknown. Not saved: the samples table has the splits.
    ratios
        K subset ratios, one per member (``None``: one ratio for all).
    """

    in_mask: np.ndarray
    logits: np.ndarray
    labels: np.ndarray
    seconds: float = 0.0
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    heldout: np.ndarray | None = None
    ratios: np.ndarray | None = None

    @property
    def members(self) -> int:
        return int(self.in_mask.shape[0])

    def ratio_groups(self) -> list[np.ndarray]:
        """Member indices per distinct subset ratio (one group holding every member when ``ratios`` is None)."""
        if self.ratios is None:
            return [np.arange(self.members)]
        return [np.flatnonzero(self.ratios == r) for r in np.unique(self.ratios)]

    def subset(self, members: np.ndarray) -> Ensemble:
        """The ensemble of the chosen members only."""
        return Ensemble(
            self.in_mask[members],
            self.logits[members],
            self.labels,
            extras={k: v[members] for k, v in self.extras.items()},
            heldout=self.heldout,
            ratios=None if self.ratios is None else self.ratios[members],
        )

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


#: What a member records: its logits on every sample and each probe's values.
MemberOutput = dict[str, np.ndarray]


@dataclass(frozen=True)
class MemberJob:
    """One member to train: its index, its trainer settings and the rows of its subset."""

    k: int
    trainer: TrainConfig
    subset: np.ndarray


def train_member_job(
    job: MemberJob,
    pixels: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    device: str,
    probes: Mapping[str, Any],
    threads: int,
    train_member: Callable[..., Any] | None = None,
) -> MemberOutput:
    """Train one member on its subset; evaluate it on every sample; run the probes.

    ``probes``: name → object whose ``member_probe(checkpoint)`` gives N×d values
    (an :class:`~memclean.scores.base.EnsembleScorer`). A module-level function so
    that any executor can run it (the probe objects travel with the job). ``threads`` pins
    torch's intra-op threads for the job (and restores them after), so that a
    member computed on a Dask worker is bit-identical to one computed here.
    ``train_member``: the training function; ``None`` = :func:`memclean.train.train`.
    """
    import torch

    from memclean.train import evaluate, to_device, train

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        dev = torch.device(device)
        last = _LastModel()
        (train_member or train)(pixels[job.subset], labels[job.subset], num_classes, job.trainer, dev, callbacks=[last])
        if last.checkpoint is None:  # pragma: no cover - train() always ends on a checkpoint
            raise RuntimeError("a member finished without its last checkpoint")
        cp = last.checkpoint
        full = to_device(pixels, labels, dev, job.trainer.uses_channels_last(dev))
        data = replace(full, mean=cp.data.mean, std=cp.data.std)  # the member's own normalisation
        logits = evaluate(cp.model, data, job.trainer, dev)
        out: MemberOutput = {"logits": logits.astype(np.float16)}
        everything = replace(cp, data=data, logits=logits)
        for name, probe in probes.items():
            values = probe.member_probe(everything)
            if values is not None:
                out[name] = np.asarray(values, dtype=np.float32).reshape(len(labels), -1).astype(np.float16)
        return out
    finally:
        torch.set_num_threads(previous)


def _digest(*parts: Any) -> str:
    """SHA-256 over arrays (by :func:`memclean.io.array_digest`) and JSON-able values."""
    h = hashlib.sha256()
    for part in parts:
        h.update(
            array_digest(part).encode()
            if isinstance(part, np.ndarray)
            else json.dumps(part, sort_keys=True, default=str).encode()
        )
        h.update(b"\0")
    return h.hexdigest()


class MemberCache:
    """Members already trained, keyed by everything that determines their bytes.

    A member's key covers the pixels, the labels, its trainer settings (seed
    and epochs included, with width, bf16 and channels-last as resolved on the device), its subset, the probes (scorer names and params),
    torch's version and the thread count; a hit returns exactly what training
    would. So a rerun with more members trains only the new ones, and changing
    anything that matters retrains. Entries are ``<key>.npz``-free ``.npy``
    files written atomically; the folder may be deleted at any time.
    """

    def __init__(self, folder: Path, data_key: str) -> None:
        self.folder = folder
        self.data_key = data_key

    def key(self, job: MemberJob, probe_spec: Any, threads: int, device: torch.device) -> str:
        import torch

        from memclean.train import resolved_config

        settings = resolved_config(job.trainer, device)  # a rule that resolves differently retrains
        return _digest(self.data_key, settings, job.subset, probe_spec, torch.__version__, threads)

    def get(self, key: str) -> MemberOutput | None:
        path = self.folder / f"{key}.npy"
        if not path.is_file():
            return None
        try:
            records = np.load(path, allow_pickle=False)
            return {name: np.array(records[name]) for name in records.dtype.names or ()}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable cached member %s: %s", path.name, exc)
            return None

    def put(self, key: str, output: MemberOutput) -> None:
        n = len(output["logits"])
        dtype = np.dtype([(name, np.float16, (values.shape[1],)) for name, values in output.items()])
        records = np.zeros(n, dtype=dtype)
        for name, values in output.items():
            records[name] = values
        with atomic_path(self.folder / f"{key}.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, records, allow_pickle=False)


def train_ensemble(
    pixels: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    trainer: TrainConfig,
    config: EnsembleConfig,
    device: torch.device,
    progress: Progress | None = None,
    train_member: Callable[..., Any] | None = None,
    probes: Mapping[str, Any] | None = None,
    cache: Path | None = None,
) -> Ensemble:
    """Train the planned members on their subsets; evaluate each on every sample.

    Parameters
    ----------
    pixels, labels, num_classes
        The dataset (``N×C×H×W`` uint8) and the labels to train on.
    trainer
        The proxy network's settings; each member uses them with its own seed
        (and ``config.epochs`` when given), evaluating only after its last epoch.
    config
        Members (or the budget that plans them), subset ratios, epochs, seed, executor.
    device
        Where to train.
    progress
        Optional progress wrapper over the members.
    train_member
        The training function (``None``: :func:`memclean.train.train`; ``bench/ensemble.py``
        wraps it to time members). Local executor only.
    probes
        Name → object with a ``member_probe(checkpoint)`` method (an
        :class:`~memclean.scores.base.EnsembleScorer`): what each member records
        besides its logits, stored in ``Ensemble.extras[name]``.
    cache
        Folder of already-trained members (:class:`MemberCache`); ``None`` = no cache.

    Returns
    -------
    Ensemble

    Raises
    ------
    MemcleanError
        When ``config.members`` is too few for every sample to be both in and out of some member.
    """
    import torch

    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    the_plan = plan(n, trainer, config, device)
    k_total = the_plan.members
    log.info(
        "ensemble plan: %d members × %d epochs on ~%s of %d samples each ≈ %.1f× the training cost of one full "
        "run (%s)",
        k_total,
        the_plan.epochs,
        "/".join(f"{r:g}" for r in config.ratios),
        n,
        the_plan.cost,
        the_plan.rule,
    )
    in_mask = ~out_mask(n, config, k_total)
    probers = {name: p for name, p in (probes or {}).items() if _probes(p)}
    probe_spec = sorted((name, getattr(p, "params", None)) for name, p in probers.items())
    # Worker processes share the cores: one thread each (a member's bytes depend on its thread count).
    threads = 1 if config.executor == "processes" else torch.get_num_threads()
    jobs = [
        MemberJob(
            k,
            replace(trainer, seed=member_seed(config.seed, k), epochs=the_plan.epochs, eval_every=the_plan.epochs),
            np.nonzero(in_mask[k])[0],
        )
        for k in range(k_total)
    ]
    store = MemberCache(cache, _digest(pixels, labels, num_classes, str(device))) if cache else None
    keys = [store.key(job, probe_spec, threads, device) if store else "" for job in jobs]
    outputs: list[MemberOutput | None] = [store.get(key) if store else None for key in keys]
    todo = [job for job, out in zip(jobs, outputs, strict=True) if out is None]
    if len(todo) < len(jobs):
        log.info("ensemble: reusing %d cached member(s), training %d", len(jobs) - len(todo), len(todo))
    if config.executor != "local" and train_member is not None:
        raise MemcleanError("a custom train_member runs only with the local executor")
    start = time.perf_counter()
    local = config.executor == "local"
    shared: dict[str, Any] = {
        # A memory map travels to local worker processes by file name; to a Dask cluster as data.
        "pixels": {"local": np.asarray(pixels), "dask": np.array(pixels)}.get(config.executor, pixels),
        "labels": labels,
        "num_classes": num_classes,
        "device": str(device),
        "probes": probers,
        "threads": threads,
    }
    if local:
        shared["train_member"] = train_member
    trained = map_jobs(
        train_member_job,
        todo,
        config.executor,
        config.dask_address,
        shared=shared,
        progress=progress,
        desc="ensemble members",
    )
    fresh = iter(trained)
    for i, out in enumerate(outputs):
        if out is None:
            outputs[i] = out = next(fresh)
            if store:
                store.put(keys[i], out)
    done = [o for o in outputs if o is not None]
    logits = np.stack([o["logits"] for o in done])
    extras = {name: np.stack([o[name] for o in done]) for name in probers if all(name in o for o in done)}
    ratios = np.array([config.ratio_of(k) for k in range(k_total)], dtype=np.float64)
    return Ensemble(in_mask, logits, labels, time.perf_counter() - start, extras, ratios=ratios)


def _probes(obj: Any) -> bool:
    """Whether ``obj`` overrides ``member_probe`` (an ensemble scorer that records something per member)."""
    method = getattr(type(obj), "member_probe", None)
    if method is None:
        return False
    from memclean.scores.base import EnsembleScorer  # the scorers import this module

    return method is not EnsembleScorer.member_probe


def _record_dtype(num_classes: int, extras: Mapping[str, np.ndarray]) -> np.dtype:
    fields: list[tuple[Any, ...]] = [("in", np.bool_), ("ratio", np.float32), ("logits", np.float16, (num_classes,))]
    fields += [(f"x_{name}", np.float16, (values.shape[2],)) for name, values in sorted(extras.items())]
    return np.dtype(fields)


def save_ensemble(ensemble: Ensemble | None, path: Path, n: int, num_classes: int) -> None:
    """Write the K×N in-mask, subset ratio, logits and probe values as one structured ``.npy`` (K = 0 for none).

    ``np.save`` output is byte-identical for identical arrays (unlike ``.npz``,
    whose zip entries carry timestamps), and memory-maps for reading. Probe
    ``name`` is the field ``x_<name>``.
    """
    members = 0 if ensemble is None else ensemble.members
    extras = {} if ensemble is None else ensemble.extras
    records = np.zeros((members, n), dtype=_record_dtype(num_classes, extras))
    if ensemble is not None:
        records["in"] = ensemble.in_mask
        records["ratio"] = np.nan if ensemble.ratios is None else ensemble.ratios[:, None]
        records["logits"] = ensemble.logits
        for name, values in extras.items():
            records[f"x_{name}"] = values
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, records, allow_pickle=False)


def load_ensemble(path: Path, labels: np.ndarray) -> Ensemble | None:
    """Read :func:`save_ensemble`'s file back (``None`` when it holds no member)."""
    records = np.load(path, mmap_mode="r", allow_pickle=False)
    labels = np.asarray(labels, dtype=np.int64)
    names = records.dtype.names or ()
    if names[:3] != ("in", "ratio", "logits") or records.ndim != 2 or records.shape[1] != len(labels):
        raise MemcleanError(f"{path} is not an ensemble of these {len(labels)} samples: rerun the score stage")
    if records.shape[0] == 0:
        return None
    extras = {name[2:]: np.array(records[name]) for name in names[3:] if name.startswith("x_")}
    ratio = np.array(records["ratio"][:, 0], dtype=np.float64)
    ratios = None if np.isnan(ratio).any() else ratio
    return Ensemble(np.array(records["in"]), np.array(records["logits"]), labels, extras=extras, ratios=ratios)
