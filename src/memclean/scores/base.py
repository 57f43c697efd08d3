"""The scorer contract and registry.

A scorer is a registered class with a ``name``, ``defaults`` (merged with the
user's params), a checkpoint hook and a ``result``. Every score is oriented
**higher = more suspicious**. The registry is explicit: each module registers
its classes with :func:`register` and :mod:`memclean.scores` imports them.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from memclean.errors import MemcleanError
from memclean.train import Checkpoint

log = logging.getLogger(__name__)


@dataclass
class ScoreResult:
    """One scorer's output: a score per sample, optionally a suggested label."""

    scores: np.ndarray  # (N,) float64, higher = more suspicious
    suggested_label: np.ndarray | None = None  # (N,) int64


class Scorer(ABC):
    """Base class: accumulate signals at checkpoints, then produce scores.

    Subclasses set ``name`` and ``defaults`` and implement
    :meth:`on_checkpoint` and :meth:`result`. ``self.params`` holds the
    defaults merged with the user's values.
    """

    name: ClassVar[str]
    defaults: ClassVar[dict[str, Any]] = {}
    description: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise MemcleanError(
                f"unknown params for scorer {self.name!r}: {sorted(unknown)} (known: {sorted(self.defaults)})"
            )
        self.params: dict[str, Any] = {**self.defaults, **params}

    @abstractmethod
    def on_checkpoint(self, cp: Checkpoint) -> None:
        """Accumulate this checkpoint's signal."""

    @abstractmethod
    def result(self) -> ScoreResult:
        """Final scores (call after training)."""


_REGISTRY: dict[str, type[Scorer]] = {}


def register(cls: type[Scorer]) -> type[Scorer]:
    """Class decorator adding a scorer to the registry under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"scorer {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of the registered scorers."""
    return sorted(_REGISTRY)


def create(name: str, params: Mapping[str, Any] | None = None) -> Scorer:
    """Instantiate a registered scorer with its defaults merged with ``params``."""
    if name not in _REGISTRY:
        raise MemcleanError(f"unknown scorer {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name](**dict(params or {}))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z
