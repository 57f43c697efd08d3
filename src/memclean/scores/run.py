"""Run a set of scorers over one training run; isolate failures; check finiteness."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from memclean.ensemble import Ensemble, EnsembleConfig, train_ensemble
from memclean.errors import MemcleanError
from memclean.progress import Progress
from memclean.scores.base import EnsembleScorer, Scorer, available, create, defaults, scorer_class
from memclean.trainconfig import TrainConfig, TrainResult

if TYPE_CHECKING:
    from memclean.train import Checkpoint

log = logging.getLogger(__name__)

#: Not a registered scorer: the rank average of other scorers (see :func:`combined_rank`).
COMBINED = "combined"
COMBINED_DESCRIPTION = "mean normalised rank of the other label-error scorers (or of score.combine)"


def default_scorers() -> dict[str, dict[str, Any]]:
    """The scorers run when none are named: every default one (see ``Scorer.default``), then ``combined``."""
    return {**{name: {} for name in defaults()}, COMBINED: {}}


def resolve_scorers(scorers: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Full options of the scorers to run: every registered one, with ``scorers`` merged over the defaults.

    Parameters
    ----------
    scorers
        Scorer name → its params (``{}``/``None``: the defaults), or ``False`` to
        skip that scorer. ``None`` or an empty mapping: every scorer with its defaults.

    Raises
    ------
    MemcleanError
        For an unknown scorer name, a bad option, or nothing left to run (one line).
    """
    out = default_scorers()
    for name, params in dict(scorers or {}).items():
        if name not in available() and name != COMBINED:
            raise MemcleanError(
                f"unknown scorer {name!r} in score.scorers; available: {', '.join([*available(), COMBINED])}"
            )
        if params is False:
            out.pop(name, None)
            continue
        if name == COMBINED:
            if params not in (None, True, {}):
                raise MemcleanError("score.scorers.combined takes no params; list its inputs in score.combine")
        elif params is None or params is True or isinstance(params, Mapping):
            out[name] = scorer_class(name).validate_params(None if params is True else params)
        else:
            raise MemcleanError(f"score.scorers.{name} must be a mapping of params, or false to skip it")
    for name in out:
        if name != COMBINED and not out[name]:
            out[name] = scorer_class(name).validate_params(None)
    if not [n for n in out if n != COMBINED]:
        raise MemcleanError("score.scorers skips every scorer: leave at least one")
    return out


def ranks_label_errors(name: str) -> bool:
    """Whether a scorer's score ranks label errors (``combined`` does; see ``Scorer.oriented``)."""
    return name == COMBINED or (name in available() and scorer_class(name).oriented)


def describe(name: str) -> str:
    """One-line description of a scorer (``combined`` included); empty for an unknown name."""
    if name == COMBINED:
        return COMBINED_DESCRIPTION
    return scorer_class(name).description if name in available() else ""


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
        Scorer name → seconds spent in its hooks and its result; ``train`` for
        the training itself, ``ensemble`` for the subset ensemble.
    train
        The training summary.
    ensemble
        The subset ensemble, when an enabled scorer needed one.
    columns
        Scorer name → its extra per-sample columns (``ScoreResult.columns``).
    tables
        Table name → the table a scorer produced (``ScoreResult.tables``).
    """

    scores: pd.DataFrame
    failures: dict[str, str] = field(default_factory=dict)
    nonfinite: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    train: TrainResult | None = None
    ensemble: Ensemble | None = None
    columns: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def scorer_names(self) -> list[str]:
        """Names of the scorers that produced scores, in column order."""
        return [c[: -len("_score")] for c in self.scores.columns if c.endswith("_score")]

    def _run(self) -> TrainResult:
        if self.train is None:
            raise ValueError("scoring outcome without a training run")
        return self.train

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary that depends only on the inputs and settings (no timings)."""
        if self.train is None:  # rescored from a trained ensemble (:func:`rescore_heldout`)
            return {
                "mode": "heldout",
                "scorers": self.scorer_names,
                "failures": self.failures,
                "nonfinite": self.nonfinite,
                "ensemble_members": self.ensemble.members if self.ensemble is not None else 0,
            }
        tr = self._run()
        return {
            "mode": "retrain",
            "device": tr.device,
            "final_train_accuracy": round(tr.final_train_accuracy, 6),
            "scorers": self.scorer_names,
            "failures": self.failures,
            "nonfinite": self.nonfinite,
            "trainer": tr.config,
            "ensemble_members": self.ensemble.members if self.ensemble is not None else 0,
        }

    def timings(self) -> dict[str, Any]:
        """Wall-clock figures of the run (kept apart from :meth:`summary` so outputs are reproducible)."""
        if self.train is None:
            return {"mode": "heldout", "scorer_seconds": {k: round(v, 3) for k, v in self.seconds.items()}}
        tr = self._run()
        return {
            "device": tr.device,
            "train_seconds": round(tr.seconds, 3),
            "train_images_per_s": round(tr.train_images_per_s, 1),
            "scorer_seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


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
        except Exception as exc:
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
        ranks.append((pd.Series(c).rank(method="average").to_numpy() - 1) / max(1, len(c) - 1))
    return np.mean(ranks, axis=0)


def score_dataset(
    pixels: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    scorers: Mapping[str, Mapping[str, Any]],
    config: TrainConfig,
    device: Any,
    combine: Sequence[str] | None = None,
    progress: Progress | None = None,
    callbacks: Sequence[Callable[[Checkpoint], None]] = (),
    ensemble: EnsembleConfig | None = None,
    heldout: np.ndarray | None = None,
    cache: Path | None = None,
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
    callbacks
        More checkpoint callbacks, called after the scorers' hooks (e.g. to keep the last model).
    ensemble
        How to train the subset ensemble, when an enabled scorer needs one (default settings otherwise).
    heldout
        N bool: rows of a held-out split (``test``/``val``), for the scorers that treat them apart.
    cache
        Folder of already-trained ensemble members (see :class:`memclean.ensemble.MemberCache`).

    Returns
    -------
    ScoringOutcome
    """
    from memclean.train import train  # torch loads here, not when the params stage validates scorer names

    names = [n for n in scorers if n != COMBINED]
    guarded = [_Guarded(create(name, scorers[name])) for name in names]
    for g in guarded:
        g.scorer.progress = progress
    result = train(pixels, labels, num_classes, config, device, callbacks=[*guarded, *callbacks], progress=progress)
    frame = pd.DataFrame(index=pd.RangeIndex(len(labels)))
    outcome = ScoringOutcome(frame, train=result, seconds={"train": result.seconds})
    needy = [g for g in guarded if isinstance(g.scorer, EnsembleScorer)]
    if needy:
        probes = {g.scorer.name: g.scorer for g in needy}
        ens = train_ensemble(
            pixels,
            labels,
            num_classes,
            config,
            ensemble or EnsembleConfig(),
            device,
            progress,
            probes=probes,
            cache=cache,
        )
        ens.heldout = None if heldout is None else np.asarray(heldout, dtype=bool)
        outcome.ensemble, outcome.seconds["ensemble"] = ens, ens.seconds
        for g in needy:
            assert isinstance(g.scorer, EnsembleScorer)
            g.scorer.attach(ens)
    _collect(outcome, guarded, len(labels), scorers, combine)
    return outcome


def _collect(
    outcome: ScoringOutcome,
    guarded: Sequence[_Guarded],
    n: int,
    scorers: Mapping[str, Mapping[str, Any]],
    combine: Sequence[str] | None,
) -> None:
    """Ask every scorer for its result; fill ``outcome`` (scores, failures, columns, ``combined``)."""
    frame = outcome.scores
    suggested: np.ndarray | None = None
    for g in guarded:
        name = g.scorer.name
        t0 = time.perf_counter()
        if g.error is None:
            try:
                res = g.scorer.result()
            except Exception as exc:
                g.error = f"{type(exc).__name__}: {exc}"
                log.debug("%s", traceback.format_exc())
        outcome.seconds[name] = g.seconds + time.perf_counter() - t0
        if g.error is not None:
            outcome.failures[name] = g.error
            continue
        values = np.asarray(res.scores, dtype=np.float64)
        if values.shape != (n,):
            outcome.failures[name] = f"returned shape {values.shape}, expected ({n},)"
            continue
        bad = ~np.isfinite(values)
        if bad.all():
            outcome.failures[name] = "no finite score for any sample"
            log.warning("scorer %s failed: no finite score for any sample", name)
            continue
        if bad.any():
            outcome.nonfinite[name] = int(bad.sum())
            log.warning("scorer %s produced %d non-finite scores (set to NaN)", name, int(bad.sum()))
            values = np.where(bad, np.nan, values)
        frame[f"{name}_score"] = values
        extra = {key: np.asarray(v, dtype=np.float64) for key, v in res.columns.items()}
        bad_extra = [key for key, v in extra.items() if v.shape != (n,)]
        if bad_extra:
            log.warning("scorer %s: dropping columns of the wrong shape: %s", name, bad_extra)
        outcome.columns[name] = {key: v for key, v in extra.items() if key not in bad_extra}
        outcome.tables.update(res.tables)
        if res.suggested_label is not None and suggested is None:
            suggested = res.suggested_label
    if COMBINED in scorers:
        parts = list(combine) if combine else [s for s in outcome.scorer_names if ranks_label_errors(s)]
        missing = [p for p in parts if f"{p}_score" not in frame]
        if missing:
            outcome.failures[COMBINED] = f"inputs unavailable: {missing}"
        elif parts:
            frame[f"{COMBINED}_score"] = combined_rank([frame[f"{p}_score"].to_numpy() for p in parts])
    if not outcome.scorer_names:
        raise MemcleanError(f"every scorer failed: {outcome.failures}")
    frame["suggested_label"] = pd.array(suggested, dtype="Int32") if suggested is not None else pd.NA


def heldout_scorers(scorers: Iterable[str]) -> list[str]:
    """The scorers named in ``scorers`` whose scores read only held-out members (``EnsembleScorer.out_of_sample``)."""
    return [
        name
        for name in scorers
        if name in available() and issubclass(cls := scorer_class(name), EnsembleScorer) and cls.out_of_sample
    ]


def rescore_heldout(
    ensemble: Ensemble,
    scorers: Mapping[str, Mapping[str, Any]],
    combine: Sequence[str] | None = None,
) -> ScoringOutcome:
    """The out-of-sample scorers recomputed from an already trained ensemble, against ``ensemble.labels``.

    A row's out-of-sample score reads only the members that did not train on it, so it
    does not depend on the row's own training label: scoring injected labels needs no new
    training. The members were trained on the labels of the first run, though, so the
    *other* injected flips are absent from their training data (a mild optimism, measured
    by ``bench/noisy_gate.py --validate-mode``).

    Parameters
    ----------
    ensemble
        The trained subset ensemble, its ``labels`` set to the labels to score (e.g. from
        :func:`memclean.ensemble.load_ensemble` with the noisy labels).
    scorers
        Scorer name → params; only :func:`heldout_scorers` of them run (and ``combined`` of those).
    combine
        Inputs of ``combined`` (default: every successful one).

    Returns
    -------
    ScoringOutcome
        Without ``train``; ``summary()`` says ``mode: heldout``.

    Raises
    ------
    MemcleanError
        When none of ``scorers`` is an out-of-sample scorer.
    """
    names = heldout_scorers(scorers)
    if not names:
        raise MemcleanError(
            "validate.mode heldout needs an out-of-sample ensemble scorer (cscore or confident_learning) "
            "in score.scorers"
        )
    guarded = [_Guarded(create(name, scorers[name])) for name in names]
    for g in guarded:
        assert isinstance(g.scorer, EnsembleScorer)
        g.scorer.attach(ensemble)
    n = len(ensemble.labels)
    outcome = ScoringOutcome(pd.DataFrame(index=pd.RangeIndex(n)), ensemble=ensemble)
    wanted = {name: scorers[name] for name in names}
    if COMBINED in scorers and len(names) > 1:
        wanted[COMBINED] = {}
    _collect(outcome, guarded, n, wanted, [c for c in combine if c in names] if combine else None)
    return outcome
