"""Benchmark of the subset-ensemble memorization estimators (:mod:`memclean.ensemble`) against injected label noise.

Prints one JSON object on stdout and writes it to ``bench/results/ensemble.json``
(progress goes to stderr). It trains only through the library
(:func:`memclean.scores.score_dataset`, :func:`memclean.ensemble.train_ensemble`
and :func:`memclean.train.train`) and loads data with ``bench/scoring.py``'s
loader. What it measures:

1. **Detection quality.** For each dataset (MNIST, Fashion-MNIST when the
   Debian package ``dataset-fashion-mnist`` is installed, CIFAR-10; a
   fixed-seed random subset of the *train* split, the same subset as
   ``bench/scoring.py`` draws) and each noise setting (10 % symmetric, 20 %
   asymmetric ``c → c+1 mod 10``, :func:`memclean.noise.inject`'s default
   pairs), one :func:`memclean.scores.score_dataset` run on the noisy labels
   with *every* registered scorer (:func:`memclean.scores.available`, the
   opt-in ensemble ones ``fz_memorization``, ``cscore`` and
   ``confident_learning`` included, default params) plus ``combined`` (the
   rank average of all the others), and the subset ensemble of
   ``--members`` members at subset ratio 0.7. Per scorer: AUROC, AP and
   precision@k (k = number of flips) from
   :func:`memclean.metrics.detection_metrics`. Also: the Spearman correlation
   of the ``cscore`` and ``learning_speed`` scores (hold-out vs in-training
   probability of the given label), the out-of-sample accuracy of the
   ensemble, and the training seconds of the main run
   (``outcome.seconds["train"]``: optimisation, per-epoch evaluation passes and
   the scorers' checkpoint hooks, curvature included) and of the ensemble
   (``outcome.seconds["ensemble"]``) with their ratio.
2. **Cleanlab reference** (``bench/scoring.py``'s :func:`run_cleanlab`: 5-fold
   out-of-fold probabilities of the same network and :class:`TrainConfig`,
   ranked by ``cleanlab.rank.get_label_quality_scores``), its AUROC/AP beside
   ours. cleanlab is the optional ``bench`` extra; without it the figures are
   null and the notes say so.
3. **Ensemble cost** (first dataset benchmarked, clean labels, the same
   :class:`TrainConfig`): the wall seconds of one full-data
   :func:`memclean.train.train` run, timed between the ensembles (median of
   the runs), and of :func:`memclean.ensemble.train_ensemble` for each
   ``--cost-members`` K at subset ratio 0.7, in the same process. Reported as
   the ratio ensemble / full run, beside the nominal ``K × 0.7`` and the ratio
   of the optimisation time alone (what the trainer's images/s measure;
   evaluation passes excluded on both sides). Each member is timed through
   ``train_ensemble``'s ``train_member`` hook (a thin wrapper of
   :func:`memclean.train.train`).

A dataset whose files are absent is skipped with one line (``skipped`` in the
JSON). Timings are from whatever machine runs it; the JSON records the load
average before and after each part.

Usage (from the repository root)::

    .venv/bin/python bench/ensemble.py [--datasets mnist,fashion,cifar10] [--subset N] [--epochs E]
        [--width W] [--members K] [--cost-members 8,16] [--skip-cost] [--skip-detection] [--device DEVICE]
        [--threads T] [--skip-cleanlab] [--crop-padding P] [--flip] [--out FILE]

The defaults (2,000 images per dataset, 12 epochs, width 16, K = 8; cost at K = 8 and 16) are sized
for about 8 minutes on an idle 2-core CPU with MNIST and CIFAR-10 present (estimated from the
undisturbed parts of a run: a 12-epoch member on 1,400 MNIST images takes ≈5.4 s with 2 threads, one
full-data run ≈13 s); Fashion-MNIST adds about a quarter. The same run took 29 minutes under ``nice``
with other processes keeping the load at 3–4. With 2 threads, a busy second core slows single runs
by up to 20×; ``--threads 1`` is slower but steadier on a shared machine, and cost figures
disturbed by other load are flagged ``disturbed``.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from memclean.ensemble import EnsembleConfig, coverage_members, train_ensemble
from memclean.errors import MemcleanError
from memclean.metrics import detection_metrics
from memclean.noise import inject
from memclean.scores import COMBINED, available, score_dataset
from memclean.train import TrainConfig, TrainResult, select_device, train

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/scoring.py, also when imported from elsewhere
from scoring import (
    DATASETS,
    FOLDS,
    NOISE_SETTINGS,
    NUM_CLASSES,
    SEED,
    cleanlab_version,
    load_subset,
    missing_reason,
    rnd,
    round_metrics,
    run_cleanlab,
)

log = logging.getLogger("bench.ensemble")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results" / "ensemble.json"
SUBSET_RATIO = 0.7
ENSEMBLE_SCORERS = ("fz_memorization", "cscore", "confident_learning")
DEFAULTS: dict[str, Any] = {
    "datasets": "mnist,fashion,cifar10",
    "subset": 2000,
    "epochs": 12,
    "width": 16,
    "members": 8,
    "cost_members": "8,16",
}
#: Slowest/fastest ratio of like timings above which a cost figure is flagged ``disturbed`` (other load).
DISTURBED_SPREAD = 1.5
#: Where else to look for the Debian package's files when ``DATASETS["fashion"]["root"]`` is absent.
FASHION_GLOBS = ("/usr/share/*/fashion*mnist*", "/usr/share/*/*/fashion*mnist*")


def all_scorers() -> dict[str, dict[str, Any]]:
    """Every registered scorer with its defaults, the opt-in ensemble ones named explicitly, then ``combined``.

    Returns
    -------
    dict
        Scorer name → params (``{}``: the defaults).
    """
    names = list(available())
    missing = [s for s in ENSEMBLE_SCORERS if s not in names]
    if missing:
        raise MemcleanError(f"the library registers no {', '.join(missing)} scorer")
    return {**{name: {} for name in names}, COMBINED: {}}


def locate_fashion() -> None:
    """Point ``bench/scoring.py``'s Fashion-MNIST entry at the installed files when they are not where it looks.

    The Debian package ``dataset-fashion-mnist`` is expected under
    ``/usr/share/datasets/fashion-mnist``; when that folder lacks the IDX
    train files, a few globs under ``/usr/share`` are tried and the first
    folder holding them replaces the entry's root (in this process only).
    """
    if missing_reason("fashion") is None:
        return
    spec = DATASETS["fashion"]
    for pattern in FASHION_GLOBS:
        for candidate in sorted(glob.glob(pattern)):
            DATASETS["fashion"] = {**spec, "root": Path(candidate)}
            if Path(candidate).is_dir() and missing_reason("fashion") is None:
                log.info("Fashion-MNIST found in %s", candidate)
                return
    DATASETS["fashion"] = spec


def loadavg() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages, rounded (``None`` where the OS has none).

    Returns
    -------
    list of float or None
    """
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return None


def optimisation_seconds(result: TrainResult, n: int) -> float:
    """Seconds a run spent in optimisation steps alone (no evaluation passes, no checkpoint hooks).

    Parameters
    ----------
    result
        The run's summary (its ``train_images_per_s`` counts optimisation time only).
    n
        Number of training images.

    Returns
    -------
    float
    """
    return n * result.epochs / max(result.train_images_per_s, 1e-9)


def spread(seconds: list[float]) -> float:
    """Slowest over fastest of repeated timings of the same work (1.0 for fewer than two).

    Parameters
    ----------
    seconds
        The timings.

    Returns
    -------
    float
    """
    return max(seconds) / max(min(seconds), 1e-9) if len(seconds) > 1 else 1.0


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation over the samples where both scores are finite.

    Parameters
    ----------
    a, b
        Two score vectors of the same length.

    Returns
    -------
    float or None
        ``None`` when fewer than three samples are finite in both.
    """
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return None
    return rnd(float(spearmanr(a[ok], b[ok]).statistic))


# --------------------------------------------------------------------------- detection


def run_setting(
    pixels: np.ndarray,
    clean: np.ndarray,
    noisy: np.ndarray,
    config: TrainConfig,
    ens_config: EnsembleConfig,
    device: torch.device,
    scorers: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """One :func:`score_dataset` run with every scorer and the subset ensemble, as detection figures.

    Parameters
    ----------
    pixels
        ``N×C×H×W`` uint8 images.
    clean, noisy
        The true labels and the labels trained on and scored.
    config, ens_config
        Trainer and ensemble settings.
    device
        Where to train.
    scorers
        Scorer name → params (:func:`all_scorers`).

    Returns
    -------
    dict
        Per-scorer metrics, best scorer, Spearman(cscore, learning_speed), accuracies, seconds.
    """
    flipped = noisy != clean
    t0 = time.perf_counter()
    outcome = score_dataset(pixels, noisy, NUM_CLASSES, scorers, config, device, ensemble=ens_config)
    wall = time.perf_counter() - t0
    cols = outcome.scores
    per_scorer = {
        name: round_metrics(detection_metrics(flipped, cols[f"{name}_score"].to_numpy()))
        for name in scorers
        if f"{name}_score" in cols
    }
    best = max(
        (s for s in per_scorer if per_scorer[s]["auroc"] is not None),
        key=lambda s: per_scorer[s]["auroc"],
        default=None,
    )
    best_ens = max(
        (s for s in ENSEMBLE_SCORERS if s in per_scorer and per_scorer[s]["auroc"] is not None),
        key=lambda s: per_scorer[s]["auroc"],
        default=None,
    )
    rho = rho_cl = None
    if "cscore_score" in cols and "learning_speed_score" in cols:
        rho = spearman(cols["cscore_score"].to_numpy(), cols["learning_speed_score"].to_numpy())
    if "cscore_score" in cols and "confident_learning_score" in cols:
        rho_cl = spearman(cols["cscore_score"].to_numpy(), cols["confident_learning_score"].to_numpy())
    tr = outcome.train
    assert tr is not None
    train_s = outcome.seconds.get("train")
    ens_s = outcome.seconds.get("ensemble")
    ens_fig: dict[str, Any] = {"members": None}
    if outcome.ensemble is not None:
        ens = outcome.ensemble
        oos = ens.out_of_sample_probabilities().argmax(axis=1)
        in_correct, _ = ens.mean_where(ens.correct(), inside=True)
        ens_fig = {
            "members": ens.members,
            "out_of_sample_accuracy_vs_noisy": rnd(float((oos == noisy).mean())),
            "out_of_sample_accuracy_vs_true": rnd(float((oos == clean).mean())),
            "in_sample_accuracy_vs_noisy": rnd(float(np.nanmean(in_correct))),
            "in_sample_accuracy_on_flipped": rnd(float(np.nanmean(in_correct[flipped]))),
        }
    return {
        "scorers": per_scorer,
        "failures": outcome.failures,
        "nonfinite": outcome.nonfinite,
        "best_scorer": best,
        "best_auroc": per_scorer[best]["auroc"] if best else None,
        "best_ensemble_scorer": best_ens,
        "best_ensemble_auroc": per_scorer[best_ens]["auroc"] if best_ens else None,
        "spearman_cscore_vs_learning_speed": rho,
        "spearman_cscore_vs_confident_learning": rho_cl,
        "final_train_accuracy": rnd(tr.final_train_accuracy),
        "ensemble": ens_fig,
        "seconds": {
            "train": rnd(train_s, 2),
            "train_optimisation_only": rnd(optimisation_seconds(tr, len(noisy)), 2),
            "ensemble": rnd(ens_s, 2),
            "ensemble_over_train": rnd(ens_s / train_s, 3) if ens_s is not None and train_s else None,
            "scorer_hooks": {k: rnd(v, 3) for k, v in outcome.seconds.items() if k not in ("train", "ensemble")},
            "wall": rnd(wall, 2),
        },
    }


def bench_dataset(
    name: str,
    pixels: np.ndarray,
    clean: np.ndarray,
    config: TrainConfig,
    ens_config: EnsembleConfig,
    device: torch.device,
    scorers: dict[str, dict[str, Any]],
    cleanlab: str | None,
    skip_cleanlab: bool,
) -> dict[str, Any]:
    """Every noise setting on one dataset: all scorers with the ensemble, then the cleanlab reference.

    Parameters
    ----------
    name
        The dataset's key in ``bench/scoring.py``'s ``DATASETS``.
    pixels, clean
        The subset's images and true labels.
    config, ens_config
        Trainer and ensemble settings.
    device
        Where to train.
    scorers
        Scorer name → params.
    cleanlab
        Installed cleanlab version; ``None``: the cleanlab figures are null.
    skip_cleanlab
        Leave the cleanlab keys out altogether.

    Returns
    -------
    dict
        One entry per noise setting.
    """
    out: dict[str, Any] = {}
    for setting in NOISE_SETTINGS:
        noisy = inject(clean, NUM_CLASSES, setting["kind"], setting["rate"], seed=SEED, pairs=setting["pairs"])
        flipped = noisy != clean
        log.info("%s/%s: scoring with the ensemble (%d flips)", name, setting["name"], int(flipped.sum()))
        load_before = loadavg()
        entry: dict[str, Any] = {
            "noise": {"kind": setting["kind"], "rate": setting["rate"], "seed": SEED, "flipped": int(flipped.sum())},
            **run_setting(pixels, clean, noisy, config, ens_config, device, scorers),
        }
        entry["loadavg_before_after"] = [load_before, loadavg()]
        sec = entry["seconds"]
        log.info(
            "  best %s AUROC %s; best ensemble scorer %s AUROC %s; spearman(cscore, learning_speed) %s; "
            "train %ss, ensemble %ss (×%s)",
            entry["best_scorer"],
            entry["best_auroc"],
            entry["best_ensemble_scorer"],
            entry["best_ensemble_auroc"],
            entry["spearman_cscore_vs_learning_speed"],
            sec["train"],
            sec["ensemble"],
            sec["ensemble_over_train"],
        )
        log.info("  " + ", ".join(f"{k}={v['auroc']}" for k, v in entry["scorers"].items()))
        if not skip_cleanlab:
            ref: dict[str, Any] | None = None
            if cleanlab is not None:
                log.info("%s/%s: cleanlab reference (%d folds)", name, setting["name"], FOLDS)
                full = run_cleanlab(pixels, noisy, clean, flipped, config, device, FOLDS, SEED, cleanlab)
                ref = {k: full[k] for k in ("method", "folds", "auroc", "ap", "precision_at_k", "seconds")}
            entry["cleanlab"] = ref
            entry["cleanlab_auroc"] = ref["auroc"] if ref else None
            entry["cleanlab_ap"] = ref["ap"] if ref else None
            entry["ensemble_scorers_beating_cleanlab_auroc"] = (
                [
                    s
                    for s in ENSEMBLE_SCORERS
                    if s in entry["scorers"] and (entry["scorers"][s]["auroc"] or 0) > (ref["auroc"] or 1)
                ]
                if ref
                else None
            )
        out[setting["name"]] = entry
    return out


# --------------------------------------------------------------------------- cost


class MemberClock:
    """A ``train_member`` for :func:`memclean.ensemble.train_ensemble` that times each member's training.

    It calls :func:`memclean.train.train` unchanged and records, per member,
    the wall seconds of the call and the optimisation seconds.
    """

    def __init__(self, trainer: Callable[..., TrainResult] = train) -> None:
        self.trainer = trainer
        self.wall: list[float] = []
        self.optimisation: list[float] = []

    def __call__(self, pixels: np.ndarray, labels: np.ndarray, *args: Any, **kwargs: Any) -> TrainResult:
        """Train one member and record its seconds.

        Parameters
        ----------
        pixels, labels
            The member's subset.
        *args, **kwargs
            Passed on to :func:`memclean.train.train`.

        Returns
        -------
        TrainResult
        """
        t0 = time.perf_counter()
        result = self.trainer(pixels, labels, *args, **kwargs)
        self.wall.append(time.perf_counter() - t0)
        self.optimisation.append(optimisation_seconds(result, len(labels)))
        return result


def bench_cost(
    pixels: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    members: list[int],
    device: torch.device,
) -> dict[str, Any]:
    """The ensemble's training cost as a multiple of one full-data run, side by side.

    After an untimed one-epoch warm-up, full-data runs and ensembles alternate
    (full, K₁, full, K₂, …, full), so every ensemble lies between two full
    runs; the ratios use the median full run.

    Parameters
    ----------
    pixels, labels
        The dataset (clean labels).
    config
        Trainer settings, shared by the full runs and the members.
    members
        The ensemble sizes K to time.
    device
        Where to train.

    Returns
    -------
    dict
        Full-run seconds (each and median), and per K: ensemble seconds, the
        measured and nominal ratios, member seconds.
    """
    n = len(labels)
    full_wall: list[float] = []
    full_opt: list[float] = []

    def full_run() -> None:
        t0 = time.perf_counter()
        res = train(pixels, labels, NUM_CLASSES, config, device)
        full_wall.append(time.perf_counter() - t0)
        full_opt.append(optimisation_seconds(res, n))
        log.info("cost: full-data run %.1fs (optimisation %.1fs)", full_wall[-1], full_opt[-1])

    train(pixels, labels, NUM_CLASSES, replace(config, epochs=1), device)  # untimed warm-up on these shapes
    load_before = loadavg()
    full_run()
    runs: dict[int, dict[str, Any]] = {}
    for k in members:
        clock = MemberClock()
        cfg = EnsembleConfig(members=k, subset_ratio=SUBSET_RATIO, seed=SEED)
        t0 = time.perf_counter()
        ens = train_ensemble(pixels, labels, NUM_CLASSES, config, cfg, device, train_member=clock)
        wall = time.perf_counter() - t0
        runs[k] = {"ensemble_seconds": ens.seconds, "wall": wall, "clock": clock}
        log.info("cost: ensemble K=%d %.1fs", k, ens.seconds)
        full_run()
    med_wall, med_opt = statistics.median(full_wall), statistics.median(full_opt)
    per_k: dict[str, Any] = {}
    for k, r in runs.items():
        clock = r["clock"]
        ens_s = r["ensemble_seconds"]
        per_k[str(k)] = {
            "ensemble_seconds": rnd(ens_s, 2),
            "ratio_to_full_run": rnd(ens_s / med_wall, 3),
            "nominal_ratio": rnd(k * SUBSET_RATIO, 3),
            "ratio_optimisation_only": rnd(sum(clock.optimisation) / med_opt, 3),
            "member_seconds_median": rnd(statistics.median(clock.wall), 2),
            "member_seconds": [rnd(x, 2) for x in clock.wall],
            "evaluation_and_overhead_seconds": rnd(ens_s - sum(clock.wall), 2),
            "disturbed": spread(clock.wall) > DISTURBED_SPREAD,
        }
    return {
        "n": n,
        "subset_ratio": SUBSET_RATIO,
        "trainer": asdict(config),
        "order": "full, " + ", ".join(f"K={k}, full" for k in members),
        "full_run_seconds_median": rnd(med_wall, 2),
        "full_run_seconds": [rnd(x, 2) for x in full_wall],
        "full_run_optimisation_seconds_median": rnd(med_opt, 2),
        "full_runs_disturbed": spread(full_wall) > DISTURBED_SPREAD,
        "members": per_k,
        "loadavg_before_after": [load_before, loadavg()],
    }


# --------------------------------------------------------------------------- main


def parse_members(value: str) -> list[int]:
    """Parse ``--cost-members`` (``"8,16"``); an empty string gives no K.

    Parameters
    ----------
    value
        Comma-separated integers.

    Returns
    -------
    list of int

    Raises
    ------
    ValueError
        For a value that is not an integer.
    """
    return [int(v) for v in value.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print its JSON object and write it to ``--out``.

    Parameters
    ----------
    argv
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0, or 1 after a one-line error.
    """
    p = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--datasets", default=DEFAULTS["datasets"], help="comma-separated: mnist, fashion, cifar10")
    p.add_argument("--subset", type=int, default=DEFAULTS["subset"], help="images per dataset (train split)")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="epochs of the main run and each member")
    p.add_argument("--width", type=int, default=DEFAULTS["width"], help="proxy CNN width")
    p.add_argument("--members", type=int, default=DEFAULTS["members"], help="ensemble members K for the detection")
    p.add_argument(
        "--cost-members", default=DEFAULTS["cost_members"], help="ensemble sizes K timed against a full-data run"
    )
    p.add_argument("--skip-cost", action="store_true", help="leave out the cost measurement")
    p.add_argument(
        "--skip-detection", action="store_true", help="only the cost measurement (on the first dataset present)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--skip-cleanlab", action="store_true", help="leave the cleanlab reference out")
    p.add_argument("--crop-padding", type=int, default=0, help="trainer augmentation: random crop padding (0 = off)")
    p.add_argument("--flip", action="store_true", help="trainer augmentation: random horizontal flips")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file (default {DEFAULT_OUT.relative_to(REPO)})")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    for d in names:
        if d not in DATASETS:
            p.error(f"unknown dataset {d!r}; choose from {', '.join(DATASETS)}")
    need = coverage_members(SUBSET_RATIO)
    try:
        cost_members = parse_members(args.cost_members)
    except ValueError:
        p.error(f"--cost-members: comma-separated integers expected (got {args.cost_members!r})")
    for k in [args.members, *cost_members]:
        if k < need:
            p.error(f"ensemble members must be at least {need} at subset_ratio {SUBSET_RATIO} (got {k})")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = select_device(args.device)
        scorers = all_scorers()
        config = TrainConfig(
            epochs=args.epochs, width=args.width, seed=SEED, crop_padding=args.crop_padding, flip=args.flip
        )
        ens_config = EnsembleConfig(members=args.members, subset_ratio=SUBSET_RATIO, seed=SEED)
    except (MemcleanError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        log.error("bench/ensemble.py: error: %s", str(exc).splitlines()[0])
        return 1
    locate_fashion()
    cleanlab = None if args.skip_cleanlab else cleanlab_version()
    notes: list[str] = []
    if not args.skip_cleanlab and cleanlab is None:
        msg = "cleanlab is not installed (pip install -e '.[bench]'): the cleanlab figures are null"
        log.warning(msg)
        notes.append(msg + ".")
    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "memclean subset-ensemble estimators: detection of injected label noise, cost vs one run",
        "machine": {
            "device": str(device),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "nice": os.nice(0) if hasattr(os, "nice") else None,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cuda_device": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "loadavg_start": loadavg(),
        "subset": args.subset,
        "trainer": asdict(config),
        "ensemble": {**asdict(ens_config), "coverage_members": need},
        "scorers": list(scorers),
        "combined_of": "every other scorer that succeeded",
        "cleanlab": cleanlab,
        "cleanlab_folds": FOLDS if cleanlab else None,
        "datasets": {},
        "cost": None,
        "skipped": {},
    }

    def write(final: bool) -> None:
        result["partial"] = not final
        result["elapsed_seconds"] = rnd(time.perf_counter() - t_start, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    def skip(what: str, reason: str) -> None:
        log.warning("skipping %s: %s", what, reason)
        result["skipped"][what] = reason

    cost_data: tuple[str, np.ndarray, np.ndarray] | None = None
    for d in names:
        reason = missing_reason(d)
        if reason:
            skip(d, reason)
            continue
        try:
            pixels, clean, info = load_subset(d, args.subset)
        except Exception as exc:  # a corrupt or unreadable file: one line, the other datasets still run
            skip(d, f"cannot read it: {type(exc).__name__}: {exc}")
            continue
        log.info("%s: %s (%.1fs)", d, info["shape"], info["load_seconds"])
        if cost_data is None:
            cost_data = (d, pixels, clean)
        if args.skip_detection:
            break
        t0 = time.perf_counter()
        settings = bench_dataset(d, pixels, clean, config, ens_config, device, scorers, cleanlab, args.skip_cleanlab)
        result["datasets"][d] = {"data": info, "settings": settings, "seconds": rnd(time.perf_counter() - t0, 1)}
        write(final=False)
    if args.skip_cost or not cost_members:
        pass
    elif cost_data is None:
        skip("cost", "no dataset could be loaded")
    else:
        d, pixels, clean = cost_data
        log.info("cost on %s: full-data run vs ensembles K=%s", d, cost_members)
        result["cost"] = {"dataset": d, **bench_cost(pixels, clean, config, cost_members, device)}
    notes += [
        "Scores: higher = more suspicious; the best scorer is chosen per setting after the fact (max AUROC).",
        "Asymmetric noise uses memclean.noise's default pairs c -> (c+1) % 10 for every dataset.",
        "seconds.train is outcome.seconds['train'] (TrainResult.seconds of the main run: optimisation, the "
        "evaluation pass every epoch and every scorer's checkpoint hooks, curvature's passes included); "
        "seconds.ensemble is outcome.seconds['ensemble'] (members' training, one evaluation of each member "
        "on every sample). Their ratio is therefore below the cost section's ratio to a bare full-data run.",
        "Cost: full-data memclean.train.train runs (same TrainConfig, evaluation every epoch, no scorer) "
        "alternate with the ensembles; ratios use the median full run. ratio_optimisation_only compares "
        "optimisation steps alone (nominal K x subset_ratio).",
        "Cost figures flagged 'disturbed' (slowest/fastest of like timings > 1.5) were slowed by other load: "
        "rerun them (--skip-detection) on a quieter machine, or with --threads 1.",
        "With cscore's default signal (probability) and confident_learning's default method (self_confidence) "
        "both rank 1 - mean over out-members of p(given label): identical rankings "
        "(spearman_cscore_vs_confident_learning).",
        "CIFAR-10 here is a JPEG-recompressed copy (../shared/data/README.md).",
        "Timings on a shared CPU: see loadavg_* and machine.torch_threads.",
    ]
    notes += [f"skipped {what}: {reason}" for what, reason in result["skipped"].items()]
    result["notes"] = notes
    result["loadavg_end"] = loadavg()
    result["total_seconds"] = rnd(time.perf_counter() - t_start, 1)
    write(final=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
