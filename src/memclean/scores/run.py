"""Run a set of scorers over one training run; isolate failures; check finiteness."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from memclean.errors import MemcleanError
from memclean.scores.base import Scorer, create
from memclean.progress import Progress
from memclean.train import Checkpoint, TrainConfig, TrainResult, train

log = logging.getLogger(__name__)

COMBINED = "combined"

#: The scorers run when none are named: every registered one, then ``combined``.
DEFAULT_SCORERS: dict[str, dict[str, Any]] = {
    name: {} for name in ("learning_speed", "aum", "forgetting", "el2n", "loss", "curvature", COMBINED)
}


@dataclass
class ScoringOutcome:
    """Scores of one training run.

    Attributes
    ----------
    scores
        One ``<name>_score`` column per successful scorer (higher = more
        suspicious; non-finite values replaced by NaN), plus ``suggested_label``.
    failures
        Scorer name → error message, for scorers that raised.
    nonfinite
        Scorer name → number of non-finite scores that were replaced by NaN.
    seconds
        Scorer name → seconds spent in its hooks; ``train`` for the training itself.
    train
        The training summary.
    """

    scores: pd.DataFrame
    failures: dict[str, str] = field(default_factory=dict)
    nonfinite: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    train: TrainResult | None = None

    @property
    def scorer_names(self) -> list[str]:
        return [c[: -len("_score")] for c in self.scores.columns if c.endswith("_score")]


class _Guarded:
    """Calls one scorer's hook; records the first exception instead of raising."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.error: str | None = None
        self.seconds = 0.0

    def __call__(self, cp: Checkpoint) -> None:
        if self.error is not None:
            return
        t0 = time.perf_counter()
        try:
            self.scorer.on_checkpoint(cp)
        except Exception as exc:  # noqa: BLE001 - one scorer must not stop the others
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("scorer %s failed at epoch %d: %s", self.scorer.name, cp.epoch, self.error)
            log.debug("%s", traceback.format_exc())
        finally:
            self.seconds += time.perf_counter() - t0


def combined_rank(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Mean of the normalised ranks (0–1) of several score columns; NaN ranks highest."""
    ranks = []
    for col in columns:
        c = np.where(np.isfinite(col), col, np.inf)
        ranks.append((rankdata(c, method="average") - 1) / max(1, len(c) - 1))
    return np.mean(ranks, axis=0)


def score_dataset(
    pixels: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    scorers: Mapping[str, Mapping[str, Any]],
    config: TrainConfig,
    device,
    combine: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> ScoringOutcome:
    """Train once and compute every requested scorer on that run.

    Parameters
    ----------
    pixels, labels, num_classes
        The dataset (``N×C×H×W`` uint8) and the labels to score against.
    scorers
        Scorer name → params (merged over the scorer's defaults). The name
        ``combined`` is not a registered scorer: it adds the rank average of
        ``combine`` (default: every other successful scorer).
    config, device
        Trainer settings and device.
    progress
        Optional progress wrapper.

    Returns
    -------
    ScoringOutcome
    """
    names = [n for n in scorers if n != COMBINED]
    guarded = [_Guarded(create(name, scorers[name])) for name in names]
    result = train(pixels, labels, num_classes, config, device, callbacks=guarded, progress=progress)
    frame = pd.DataFrame(index=pd.RangeIndex(len(labels)))
    outcome = ScoringOutcome(frame, train=result, seconds={"train": result.seconds})
    suggested: np.ndarray | None = None
    for g in guarded:
        name = g.scorer.name
        outcome.seconds[name] = g.seconds
        if g.error is None:
            try:
                res = g.scorer.result()
            except Exception as exc:  # noqa: BLE001
                g.error = f"{type(exc).__name__}: {exc}"
        if g.error is not None:
            outcome.failures[name] = g.error
            continue
        values = np.asarray(res.scores, dtype=np.float64)
        if values.shape != (len(labels),):
            outcome.failures[name] = f"returned shape {values.shape}, expected ({len(labels)},)"
            continue
        bad = ~np.isfinite(values)
        if bad.any():
            outcome.nonfinite[name] = int(bad.sum())
            log.warning("scorer %s produced %d non-finite scores (set to NaN)", name, int(bad.sum()))
            values = np.where(bad, np.nan, values)
        frame[f"{name}_score"] = values
        if res.suggested_label is not None and suggested is None:
            suggested = res.suggested_label
    if COMBINED in scorers:
        parts = list(combine) if combine else outcome.scorer_names
        missing = [p for p in parts if f"{p}_score" not in frame]
        if missing:
            outcome.failures[COMBINED] = f"inputs unavailable: {missing}"
        elif parts:
            frame[f"{COMBINED}_score"] = combined_rank([frame[f"{p}_score"].to_numpy() for p in parts])
    if not outcome.scorer_names:
        raise MemcleanError(f"every scorer failed: {outcome.failures}")
    frame["suggested_label"] = pd.array(suggested, dtype="Int32") if suggested is not None else pd.NA
    return outcome
