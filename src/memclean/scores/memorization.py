"""Scorers from the subset ensemble: a sample's fate when it is *in* training vs *out*.

With ``K`` members, ``in_i`` / ``out_i`` the members whose subset holds / lacks
sample ``i``, ``c_ki`` = 1 when member ``k`` predicts ``i``'s label and ``p_ki``
the probability it gives that label:

* ``fz_memorization`` — Feldman & Zhang (2020):
  ``mem_i = mean_{k∈in_i} s_ki − mean_{k∈out_i} s_ki`` with ``s = c`` (their
  definition) or ``s = p`` (``signal: probability``). High: the label is learnt
  only by fitting the sample itself — mislabeled or atypical. Its standard
  error ``sqrt(v_in/n_in + v_out/n_out)`` (``v`` the unbiased sample variance
  over the group's members; ``1/4``, the largest variance of a value in
  ``[0, 1]``, for a group of one) is the column ``fz_memorization_se``.
* ``cscore`` — the hold-out C-score of Jiang et al. (2021):
  ``C_i = mean_{k∈out_i} s_ki`` (expected held-out probability of the label, or
  correctness); score ``1 − C_i``. With several subset ratios, the mean
  is taken per ratio and then averaged over the ratios (their integral over
  subset sizes, as in the paper).
* ``confident_learning`` — Northcutt et al. (2021) on the out-of-sample
  probabilities ``P_i = mean_{k∈out_i} softmax_k(x_i)``: per-class thresholds,
  the confident joint, and the ranking ``1 − quality`` (self-confidence or
  normalised margin; :mod:`memclean.confident`). Suggests the most probable
  other class (its probability is the column ``confident_learning_suggested_p``,
  the manifest's ``suggested_confidence``); its column ``confident_learning_issue`` is 1 for the rows
  confident learning marks as label issues (prune by noise rate), and the
  table ``noise_matrix`` holds the calibrated confident joint (given × true
  counts), from which the noise rate is estimated.

They run by default; ``score.ensemble`` says how the members are trained
(:func:`memclean.ensemble.plan`: by default as many members as 4 full runs
afford on a CPU, 45 on CUDA, and never fewer than one round that holds every
sample out). Cost: ``members × subset_ratio × epochs / trainer epochs`` times
one full run, logged before training; skipping all the ensemble scorers
(``{name: false}``) trains no ensemble.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import pandas as pd
import pydantic
from pydantic import Field

from memclean import confident
from memclean.ensemble import Ensemble
from memclean.scores.base import PARAMS_CONFIG, EnsembleScorer, ScoreResult, register

Signal = Literal["correct", "probability"]


def _signal(ensemble: Ensemble, signal: str) -> np.ndarray:
    return ensemble.correct() if signal == "correct" else ensemble.given_probability()


@pydantic.dataclasses.dataclass(config=PARAMS_CONFIG)
class FZParams:
    """Options of ``fz_memorization``."""

    signal: Annotated[Signal, Field(description="correct (Feldman & Zhang) or probability of the given label")] = (
        "correct"
    )


@register
class FZMemorization(EnsembleScorer):
    name = "fz_memorization"
    description = "Feldman-Zhang memorization: mean over members trained on it - mean over members not (ensemble)"
    Params = FZParams
    default = True

    def from_ensemble(self, ensemble: Ensemble) -> ScoreResult:
        values = _signal(ensemble, self.params["signal"])
        inside, n_in = ensemble.mean_where(values, inside=True)
        outside, n_out = ensemble.mean_where(values, inside=False)
        se = np.sqrt(
            _variance(ensemble, values, inside, n_in, True) / n_in
            + _variance(ensemble, values, outside, n_out, False) / n_out
        )
        return ScoreResult(inside - outside, columns={"se": se})


def _variance(ensemble: Ensemble, values: np.ndarray, mean: np.ndarray, count: np.ndarray, inside: bool) -> np.ndarray:
    """Unbiased per-sample variance of ``values`` over the members where the sample is in (or out); 1/4 for one."""
    mask = ensemble.in_mask if inside else ~ensemble.in_mask
    squares = np.where(mask, (values - mean[None, :]) ** 2, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count >= 2, squares / np.maximum(count - 1, 1), 0.25)


@pydantic.dataclasses.dataclass(config=PARAMS_CONFIG)
class CScoreParams:
    """Options of ``cscore``."""

    signal: Annotated[Signal, Field(description="probability of the given label, or correct")] = "probability"


@register
class CScore(EnsembleScorer):
    name = "cscore"
    out_of_sample = True
    description = "1 - hold-out C-score: mean over members not trained on it of p(given label) (ensemble)"
    Params = CScoreParams
    default = True

    def from_ensemble(self, ensemble: Ensemble) -> ScoreResult:
        values = _signal(ensemble, self.params["signal"])
        per_ratio = []
        for group in ensemble.ratio_groups():
            outside, count = ensemble.subset(group).mean_where(values[group], inside=False)
            per_ratio.append(np.where(count > 0, outside, np.nan))
        with np.errstate(invalid="ignore"):
            held_out = np.nanmean(np.stack(per_ratio), axis=0) if len(per_ratio) > 1 else per_ratio[0]
        return ScoreResult(1.0 - held_out)


@pydantic.dataclasses.dataclass(config=PARAMS_CONFIG)
class CLParams:
    """Options of ``confident_learning``."""

    method: Annotated[
        Literal["self_confidence", "normalized_margin"],
        Field(description="ranking of the out-of-sample probabilities"),
    ] = "self_confidence"


@register
class ConfidentLearning(EnsembleScorer):
    name = "confident_learning"
    out_of_sample = True
    description = "confident learning on out-of-sample probabilities: 1 - label quality (ensemble)"
    Params = CLParams
    default = True

    def from_ensemble(self, ensemble: Ensemble) -> ScoreResult:
        probs = ensemble.out_of_sample_probabilities()
        labels = ensemble.labels
        others = probs.copy()
        others[np.arange(len(labels)), labels] = -np.inf
        cl = confident.ConfidentLearning.from_probs(probs, labels, probs.shape[1], self.params["method"])
        classes = pd.RangeIndex(probs.shape[1])
        joint = pd.DataFrame(cl.joint, index=classes.rename("given"), columns=classes.rename("true"))
        suggested = others.argmax(axis=1).astype(np.int64)
        return ScoreResult(
            cl.suspicion,
            suggested,
            columns={
                "issue": cl.issues.astype(np.float64),
                "disagrees": np.where(
                    np.isfinite(probs).all(axis=1), (probs.argmax(axis=1) != labels).astype(np.float64), np.nan
                ),
                "suggested_p": probs[np.arange(len(labels)), suggested],
            },
            tables={"noise_matrix": joint},
        )
