"""Memorization scorers behind one registry (see :mod:`memclean.scores.base`).

Every module of this package is imported here, in name order, so a new scorer
is one new module whose classes are decorated with
:func:`~memclean.scores.base.register`; no other list names it.
"""

import importlib
import pkgutil

from memclean.scores.base import (
    EnsembleScorer,
    Scorer,
    ScoreResult,
    available,
    create,
    defaults,
    register,
    scorer_class,
)

_INFRASTRUCTURE = frozenset({"base", "run"})
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in _INFRASTRUCTURE:
        importlib.import_module(f"{__name__}.{_module}")

from memclean.scores.run import (  # noqa: E402  (after the registrations)
    COMBINED,
    ScoringOutcome,
    combined_rank,
    default_scorers,
    describe,
    heldout_scorers,
    ranks_label_errors,
    rescore_heldout,
    resolve_scorers,
    score_dataset,
)

__all__ = [
    "COMBINED",
    "EnsembleScorer",
    "ScoreResult",
    "Scorer",
    "ScoringOutcome",
    "available",
    "combined_rank",
    "create",
    "default_scorers",
    "defaults",
    "describe",
    "heldout_scorers",
    "ranks_label_errors",
    "register",
    "rescore_heldout",
    "resolve_scorers",
    "score_dataset",
    "scorer_class",
]
