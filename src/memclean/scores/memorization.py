"""Scorers from the subset ensemble: a sample's fate when it is *in* training vs *out*.

With ``K`` members, ``in_i`` / ``out_i`` the members whose subset holds / lacks
sample ``i``, ``c_ki`` = 1 when member ``k`` predicts ``i``'s label and ``p_ki``
the probability it gives that label:

* ``fz_memorization`` — Feldman & Zhang (2020):
  ``mem_i = mean_{k∈in_i} s_ki − mean_{k∈out_i} s_ki`` with ``s = c`` (their
  definition) or ``s = p`` (``signal: probability``). High: the label is learnt
  only by fitting the sample itself — mislabeled or atypical.
* ``cscore`` — the hold-out C-score of Jiang et al. (2021):
  ``C_i = mean_{k∈out_i} s_ki`` (expected held-out probability of the label, or
  correctness); score ``1 − C_i``.
* ``confident_learning`` — Northcutt et al. (2021) on the out-of-sample
  probabilities ``P_i = mean_{k∈out_i} softmax_k(x_i)``: per-class thresholds,
  the confident joint, and the ranking ``1 − quality`` (self-confidence or
  normalised margin; :mod:`memclean.confident`). Suggests the most probable
  other class.

They are opt-in while their defaults are measured: name them in
``score.scorers`` (e.g. ``{fz_memorization: {}}``) and ``score.ensemble`` says
how the members are trained. Cost: ``members × subset_ratio × epochs / trainer
epochs`` times one full run, logged before training.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import pydantic
from pydantic import Field

from memclean.confident import suspicion
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
    default = False

    def from_ensemble(self, ensemble: Ensemble) -> ScoreResult:
        values = _signal(ensemble, self.params["signal"])
        inside, _ = ensemble.mean_where(values, inside=True)
        outside, _ = ensemble.mean_where(values, inside=False)
        return ScoreResult(inside - outside)


@pydantic.dataclasses.dataclass(config=PARAMS_CONFIG)
class CScoreParams:
    """Options of ``cscore``."""

    signal: Annotated[Signal, Field(description="probability of the given label, or correct")] = "probability"


@register
class CScore(EnsembleScorer):
    name = "cscore"
    description = "1 - hold-out C-score: mean over members not trained on it of p(given label) (ensemble)"
    Params = CScoreParams
    default = False

    def from_ensemble(self, ensemble: Ensemble) -> ScoreResult:
        outside, _ = ensemble.mean_where(_signal(ensemble, self.params["signal"]), inside=False)
        return ScoreResult(1.0 - outside)


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
    description = "confident learning on out-of-sample probabilities: 1 - label quality (ensemble)"
    Params = CLParams
    default = False

    def from_ensemble(self, ensemble: Ensemble) -> ScoreResult:
        probs = ensemble.out_of_sample_probabilities()
        labels = ensemble.labels
        others = probs.copy()
        others[np.arange(len(labels)), labels] = -np.inf
        return ScoreResult(suspicion(probs, labels, self.params["method"]), others.argmax(axis=1).astype(np.int64))
