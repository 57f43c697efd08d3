"""Training-dynamics scorers computed from the evaluation logits at checkpoints.

* ``learning_speed`` — Jiang et al.'s C-score proxy: mean over checkpoints of
  p(y|x); score = 1 − that. Also suggests a label: the most probable other class
  on average.
* ``aum`` — Pleiss et al.'s area under the margin: mean of
  ``z_y − max_{k≠y} z_k``; score = −AUM.
* ``forgetting`` — Toneva et al.: number of correct → incorrect transitions
  between consecutive checkpoints; samples never classified correctly get
  the maximum possible count plus one.
* ``el2n`` — Paul et al.: ``‖softmax − onehot‖₂`` early in training, averaged
  over the checkpoints in the first ``early_fraction`` of the epochs.
* ``loss`` — mean cross-entropy over checkpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pydantic
from pydantic import Field

from memclean.scores.base import PARAMS_CONFIG, Scorer, ScoreResult, register
from memclean.trainconfig import softmax

if TYPE_CHECKING:
    from memclean.train import Checkpoint


def _given(cp: Checkpoint) -> np.ndarray:
    return cp.data.labels.cpu().numpy()


class _MeanOverCheckpoints(Scorer):
    """Average a per-sample quantity over the checkpoints."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._sum: np.ndarray | None = None
        self._count = 0

    def quantity(self, cp: Checkpoint) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_checkpoint(self, cp: Checkpoint) -> None:
        q = self.quantity(cp)
        self._sum = q if self._sum is None else self._sum + q
        self._count += 1

    def mean(self) -> np.ndarray:
        if self._sum is None:
            raise RuntimeError(f"scorer {self.name} saw no checkpoint")
        return self._sum / self._count


@register
class LearningSpeed(_MeanOverCheckpoints):
    name = "learning_speed"
    description = "1 - mean p(given label) over checkpoints (C-score proxy)"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._prob_sum: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    def quantity(self, cp: Checkpoint) -> np.ndarray:
        p = softmax(cp.logits)
        self._prob_sum = p if self._prob_sum is None else self._prob_sum + p
        self._labels = _given(cp)
        return p[np.arange(len(p)), self._labels]

    def result(self) -> ScoreResult:
        assert self._prob_sum is not None and self._labels is not None
        others = self._prob_sum.copy()
        others[np.arange(len(others)), self._labels] = -np.inf
        return ScoreResult(1.0 - self.mean(), others.argmax(axis=1).astype(np.int64))


@register
class AUM(_MeanOverCheckpoints):
    name = "aum"
    description = "-(mean margin z_y - max_{k!=y} z_k) over checkpoints (Pleiss et al.)"

    def quantity(self, cp: Checkpoint) -> np.ndarray:
        z = cp.logits.astype(np.float64)
        y = _given(cp)
        assigned = z[np.arange(len(z)), y]
        z[np.arange(len(z)), y] = -np.inf
        return assigned - z.max(axis=1)

    def result(self) -> ScoreResult:
        return ScoreResult(-self.mean())


@register
class Forgetting(Scorer):
    name = "forgetting"
    description = "correct -> incorrect transitions between checkpoints (Toneva et al.)"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._prev: np.ndarray | None = None
        self._events: np.ndarray | None = None
        self._ever: np.ndarray | None = None
        self._checkpoints = 0

    def on_checkpoint(self, cp: Checkpoint) -> None:
        correct = cp.logits.argmax(axis=1) == _given(cp)
        if self._prev is None:
            self._events = np.zeros(len(correct), np.float64)
            self._ever = correct.copy()
        else:
            assert self._events is not None and self._ever is not None
            self._events += self._prev & ~correct
            self._ever |= correct
        self._prev = correct
        self._checkpoints += 1

    def result(self) -> ScoreResult:
        assert self._events is not None and self._ever is not None and self._prev is not None
        scores = self._events.copy()
        # Never learned: more suspicious than any forgetting count.
        scores[~self._ever] = self._checkpoints + 1
        # Ties broken by whether the sample ends misclassified.
        scores += 0.5 * ~self._prev
        return ScoreResult(scores)


@pydantic.dataclasses.dataclass(config=PARAMS_CONFIG)
class EL2NParams:
    """Options of the ``el2n`` scorer."""

    early_fraction: Annotated[
        float, Field(gt=0.0, le=1.0, description="average over checkpoints in this first fraction of the epochs")
    ] = 0.2


@register
class EL2N(_MeanOverCheckpoints):
    name = "el2n"
    description = "||softmax - onehot||_2 early in training (Paul et al.)"
    Params = EL2NParams

    def on_checkpoint(self, cp: Checkpoint) -> None:
        limit = max(1, round(cp.config.epochs * float(self.params["early_fraction"])))
        if cp.epoch <= limit or (self._count == 0 and cp.is_last):
            super().on_checkpoint(cp)

    def quantity(self, cp: Checkpoint) -> np.ndarray:
        p = softmax(cp.logits)
        p[np.arange(len(p)), _given(cp)] -= 1.0
        return np.sqrt((p * p).sum(axis=1))

    def result(self) -> ScoreResult:
        return ScoreResult(self.mean())


@register
class Loss(_MeanOverCheckpoints):
    name = "loss"
    description = "mean cross-entropy of the given label over checkpoints"

    def quantity(self, cp: Checkpoint) -> np.ndarray:
        z = cp.logits.astype(np.float64)
        y = _given(cp)
        zmax = z.max(axis=1)
        lse = zmax + np.log(np.exp(z - zmax[:, None]).sum(axis=1))
        return lse - z[np.arange(len(z)), y]

    def result(self) -> ScoreResult:
        return ScoreResult(self.mean())
