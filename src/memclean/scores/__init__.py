"""Memorization scorers behind one registry (see :mod:`memclean.scores.base`)."""

from memclean.scores import curvature, dynamics  # noqa: F401  (explicit registration)
from memclean.scores.base import Scorer, ScoreResult, available, create, register
from memclean.scores.run import DEFAULT_SCORERS, ScoringOutcome, combined_rank, score_dataset

__all__ = [
    "DEFAULT_SCORERS",
    "ScoreResult",
    "Scorer",
    "ScoringOutcome",
    "available",
    "combined_rank",
    "create",
    "register",
    "score_dataset",
]
