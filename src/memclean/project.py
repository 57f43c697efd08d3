"""The layout of a memclean project folder and what every stage entry point shares.

A project folder holds ``params.yaml``, ``dvc.yaml`` and ``data/``; the stage
entry points in ``stages/`` run from its root. This module names every file
the pipeline reads or writes (one place), loads the validated params, the
ingested dataset, wraps progress for terminals *and* logs, and turns a
:class:`~memclean.errors.MemcleanError` into a one-line exit.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from memclean.errors import MemcleanError
from memclean.io import PIXELS_DIGEST_KEY, clean_stale_temps, load_pair, read_metadata
from memclean.options import PipelineParams, ScoreParams, load_params
from memclean.schema import HELDOUT_SPLITS
from memclean.scores import ScoringOutcome, score_dataset

T = TypeVar("T")

log = logging.getLogger("memclean.stages")

PARAMS_FILE = Path(os.environ.get("MEMCLEAN_PARAMS", "params.yaml"))
DATA = Path("data")
INTERIM = DATA / "interim"
REPORTS = DATA / "reports"
CLEAN = DATA / "clean"

PARAMS_DIR = INTERIM / "params"  # one normalised JSON per section, written by the `params` stage
SAMPLES = INTERIM / "samples.parquet"
PIXELS = INTERIM / "pixels.npy"
DUPLICATES = INTERIM / "duplicates.parquet"
DUPLICATE_PAIRS = INTERIM / "duplicate_pairs.parquet"  # every verified pair: exact, near, similar
SCORES = INTERIM / "scores.parquet"
ENSEMBLE = INTERIM / "ensemble.npy"  # K×N records (in, ratio, logits, probes) of the subset ensemble; K = 0 if none
#: Project modules loaded only when a run trains (torch with them), so that stages that never train
#: start without torch. A stage that may train names them in ``LOADS_WHEN_TRAINING``: its dvc.yaml
#: deps must cover them as well as its imports (tests/test_dvc_deps.py imports both).
TRAINER_MODULES = ("memclean.train", "memclean.tdo")
MEMBER_CACHE = DATA / "cache" / "members"  # trained ensemble members, reused by later runs (not a DVC output)
NOISY_LABELS = INTERIM / "noisy_labels.parquet"
VALIDATION_SCORES = INTERIM / "validation_scores.parquet"
MANIFEST = CLEAN / "manifest.parquet"
EXPORT = CLEAN / "export"

INGEST_METRICS = REPORTS / "ingest.json"
DEDUP_METRICS = REPORTS / "dedup.json"
SCORE_METRICS = REPORTS / "score.json"
VALIDATION = REPORTS / "validation.json"
ROC = REPORTS / "roc.csv"  # scorer, fpr, tpr: every scorer's ROC curve in one file (a DVC plot)
INFLUENCE = REPORTS / "influence.parquet"  # fz_influence: the strongest influencers of each held-out row
NOISE_MATRIX = REPORTS / "noise_matrix.json"  # confident learning's estimated given × true label counts
CLEAN_METRICS = REPORTS / "clean.json"
AUDIT_HTML = REPORTS / "audit.html"
AUDIT_MD = REPORTS / "audit.md"
REPORT_METRICS = REPORTS / "metrics.json"
TIMINGS = REPORTS / "timings"  # <stage>.json: wall-clock figures, never a dependency of another stage

#: Seconds between progress lines in logs when no terminal shows a bar.
PROGRESS_LOG_INTERVAL_S = float(os.environ.get("MEMCLEAN_PROGRESS_INTERVAL", "30"))


def params(path: Path | None = None) -> PipelineParams:
    """The whole params file, validated (every section, whichever stage asks)."""
    return load_params(path or PARAMS_FILE)


def load_samples() -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Every row of the samples table, the pixels and the class names, checked to be one ingest run's pair."""
    samples, pixels, metadata = load_pair(SAMPLES, PIXELS)
    return samples, pixels, [str(c) for c in metadata.get("classes") or []]


def manifest_metadata() -> dict[str, Any]:
    """What the manifest carries over from ``samples.parquet``: the pixel digest, the ingest source and root."""
    meta = read_metadata(SAMPLES)
    return {key: meta.get(key) for key in (PIXELS_DIGEST_KEY, "source", "root")}


def load_dataset() -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """The ``ok`` rows of the samples table (in pixel-row order), the pixels and the class names."""
    samples, pixels, classes = load_samples()
    ok = samples[samples["status"] == "ok"].sort_values("row").reset_index(drop=True)
    if len(ok) != len(pixels):
        raise MemcleanError("samples.parquet and pixels.npy disagree: rerun the ingest stage")
    return ok, pixels, classes


def heldout_rows(ok: pd.DataFrame) -> np.ndarray:
    """N bool: the ``ok`` rows of a held-out split (``test``, ``val``)."""
    return ok["split"].isin(sorted(HELDOUT_SPLITS)).to_numpy()


def run_scoring(
    labels: np.ndarray, num_classes: int, pixels: np.ndarray, params: ScoreParams, heldout: np.ndarray | None = None
) -> ScoringOutcome:
    """One training run of the proxy network on ``labels`` with every scorer of ``params`` (and its ensemble)."""
    from memclean.train import select_device  # torch loads in the stages that train, not in every stage

    return score_dataset(
        pixels,
        labels,
        num_classes,
        params.scorers,
        params.trainer,
        select_device(params.device),
        combine=params.combine,
        progress=progress,
        ensemble=params.ensemble,
        heldout=heldout,
        cache=MEMBER_CACHE,
    )


def _rate(done: int, elapsed: float) -> str:
    """``done`` items in ``elapsed`` seconds as a rate: ``2.5 it/s``, or ``40.0 s/it`` for slow items."""
    if done == 0 or elapsed <= 0:
        return "rate n/a"
    per_s = done / elapsed
    return f"{per_s:.2f} it/s" if per_s >= 1 else f"{1 / per_s:.1f} s/it"


def _progress_line(desc: str, done: int, total: int, elapsed: float) -> None:
    """Log ``desc: done/total (pct), rate, elapsed, ETA`` (the ETA from the mean rate so far)."""
    pct = 100 * done / total if total else 0.0
    eta = f"ETA {elapsed / done * (total - done):.0f} s" if done else "ETA n/a"
    log.info("%s: %d/%d (%.0f%%), %s, %.0f s elapsed, %s", desc, done, total, pct, _rate(done, elapsed), elapsed, eta)


def _log_progress(iterable: Iterable[T], desc: str, total: int, interval: float) -> Iterator[T]:
    """Yield from ``iterable``, logging a progress line every ``interval`` seconds.

    A daemon thread logs the line, so the interval stays steady when one item
    (an epoch, an ensemble member) takes longer than it; the thread stops when
    the iteration ends, fails or is abandoned. Work that took at least one
    interval ends with a ``done in`` line.

    Parameters
    ----------
    iterable
        The work items.
    desc
        What the line calls them (e.g. ``train epochs``).
    total
        How many items ``iterable`` yields.
    interval
        Seconds between lines (at least 0.01).

    Yields
    ------
    T
        The items of ``iterable``.
    """
    interval = max(float(interval), 0.01)
    start = time.monotonic()
    done = 0
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(interval):
            _progress_line(desc, done, total, time.monotonic() - start)

    thread = threading.Thread(target=heartbeat, name=f"memclean-progress {desc}", daemon=True)
    thread.start()
    try:
        for item in iterable:
            yield item
            done += 1
    finally:
        stop.set()
        thread.join()
    elapsed = time.monotonic() - start
    if elapsed >= interval:
        log.info("%s: %d/%d done in %.0f s, %s", desc, done, total, elapsed, _rate(done, elapsed))


def progress(iterable: Iterable[T], desc: str, total: int) -> Iterable[T]:
    """Progress of long work: a tqdm bar on a terminal, ETA lines in logs otherwise.

    ``MEMCLEAN_PROGRESS=1`` forces the bar, ``0`` forces log lines; the log
    interval is ``MEMCLEAN_PROGRESS_INTERVAL`` seconds (default 30). Each log
    line reads ``<desc>: done/total (pct), rate, elapsed, ETA`` (see :func:`_log_progress`).
    """
    choice = os.environ.get("MEMCLEAN_PROGRESS", "")
    bar = sys.stderr.isatty() if choice == "" else choice == "1"
    if bar:
        return tqdm(iterable, desc=desc, total=total, unit="it", mininterval=1.0, leave=False)
    return _log_progress(iterable, desc, total, PROGRESS_LOG_INTERVAL_S)


def run_stage(main: Callable[[], None], name: str) -> None:
    """Run a stage: log to stderr, remove temporaries a killed run left, run ``main``.

    A :class:`MemcleanError` becomes a one-line exit (status 1).
    """
    logging.basicConfig(
        level=os.environ.get("MEMCLEAN_LOG", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        folders = (INTERIM, PARAMS_DIR, REPORTS, CLEAN, TIMINGS, MEMBER_CACHE)
        removed = clean_stale_temps(*(d for d in folders if d.is_dir()))
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted run", len(removed))
        main()
    except MemcleanError as exc:
        sys.stderr.write(f"memclean {name}: error: {exc}\n")
        raise SystemExit(1) from None
