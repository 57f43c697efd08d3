"""``fz_influence``: how much one other sample alone carries a sample's prediction (Feldman & Zhang, 2020).

For a target ``j`` and every other source ``i``, over the members that did
not train on ``j`` (see :mod:`memclean.influence`)::

    infl(i→j) = mean_{k: i∈S_k, j∉S_k} s_kj − mean_{k: i∉S_k, j∉S_k} s_kj

The score of a target is ``max(0, max_{i≠j} infl(i→j))``: near 1 when the
members predict ``j``'s label only when one particular other sample was in
their training subset — a near-duplicate or a leak (a test image copied into
training, with its label). It is **not** a label-error ranking (``oriented =
False``): a mislabeled sample scores high only when it has a mislabeled twin.

Targets are the held-out rows (``Ensemble.heldout``) when some are marked,
otherwise every row; sources are the rows that are not held out (every row
when none is marked, or when every row is), never the target itself. Rows
that are not targets, and targets without an eligible source, score ``0.0``
(no single sample is seen carrying them), so every score is finite; their
``se`` and ``source`` columns are NaN.

``min_members`` (default 2) skips pairs with a one-member group, which reach
influence 1 by chance (see :mod:`memclean.influence`). Sources that share a
membership pattern get the same estimate: one round of the ensemble's
rotations gives at most ``2m`` patterns (``m`` = 5 members at ratio 0.7), but
rounds are drawn independently (:mod:`memclean.ensemble`), so with a few rounds
(K ≥ 20) nearly every source has its own pattern; the scorer warns when many
share one.

Outputs: the score; columns ``se`` (standard error of the strongest pair) and
``source`` (its source row position, as float); table ``influence``: the
``top_k`` sources of every target (:func:`memclean.influence.fz_influence`).
Cost: O(targets × distinct source patterns × K), in blocks of at most ~256 MB (10,000 × 10,000
with 64 members: ~3.5 s on one CPU core).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pydantic
from pydantic import Field

from memclean.ensemble import Ensemble
from memclean.influence import fz_influence
from memclean.scores.base import PARAMS_CONFIG, EnsembleScorer, ScoreResult, register
from memclean.scores.memorization import Signal, _signal


@pydantic.dataclasses.dataclass(config=PARAMS_CONFIG)
class InfluenceParams:
    """Options of ``fz_influence``."""

    signal: Annotated[Signal, Field(description="correct (Feldman & Zhang) or probability of the given label")] = (
        "correct"
    )
    top_k: Annotated[int, Field(ge=1, le=1000, description="strongest sources kept per target in the table")] = 5
    min_members: Annotated[
        int, Field(ge=1, description="skip pairs with fewer members in either group (source in / out)")
    ] = 2


def split_rows(heldout: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean target and source masks: held-out rows → training rows, or every row → every row."""
    if heldout is not None:
        held = np.asarray(heldout, dtype=bool)
        if held.shape != (n,):
            raise ValueError(f"heldout has shape {held.shape}, expected ({n},)")
        if held.any() and not held.all():
            return held, ~held
    every = np.ones(n, dtype=bool)
    return every, every


@register
class FZInfluence(EnsembleScorer):
    name = "fz_influence"
    description = (
        "Feldman-Zhang influence: max over other samples of how much one alone lifts this one's held-out "
        "correctness (duplicates/leaks, not label errors; ensemble)"
    )
    Params = InfluenceParams
    default = False
    oriented = False

    def from_ensemble(self, ensemble: Ensemble) -> ScoreResult:
        n = len(ensemble.labels)
        targets, sources = split_rows(ensemble.heldout, n)
        res = fz_influence(
            ensemble.in_mask,
            _signal(ensemble, self.params["signal"]),
            targets=targets,
            sources=sources,
            top_k=self.params["top_k"],
            min_members=self.params["min_members"],
        )
        scores = np.zeros(n)
        se = np.full(n, np.nan)
        source = np.full(n, np.nan)
        found = res.strongest_source >= 0
        rows = res.targets[found]
        scores[rows] = np.maximum(res.strongest[found], 0.0)
        se[rows] = res.strongest_se[found]
        source[rows] = res.strongest_source[found]
        return ScoreResult(scores, columns={"se": se, "source": source}, tables={"influence": res.table})
