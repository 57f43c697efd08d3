"""The scorer contract and registry.

A scorer is a registered class with a ``name``, a one-line ``description``, a
typed ``Params`` dataclass (its options, their defaults and ranges), a
checkpoint hook and a ``result``. Every score is oriented **higher = more
suspicious**. The registry is the only list of scorers: every module of this
package is imported by :mod:`memclean.scores`, and each registers its classes
with :func:`register`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd
import pydantic
from pydantic import ConfigDict

from memclean.ensemble import Ensemble
from memclean.errors import MemcleanError, describe_validation_error
from memclean.progress import Progress

if TYPE_CHECKING:
    from memclean.train import Checkpoint

log = logging.getLogger(__name__)

#: Configuration shared by every scorer's ``Params`` dataclass: unknown keys are errors.
PARAMS_CONFIG = ConfigDict(extra="forbid", frozen=True)


@pydantic.dataclasses.dataclass(config=PARAMS_CONFIG)
class NoParams:
    """Options of a scorer that takes none."""


@dataclass
class ScoreResult:
    """One scorer's output: a score per sample, optionally a suggested label, more columns and tables.

    Attributes
    ----------
    scores
        ``(N,)`` float64, higher = more suspicious.
    suggested_label
        ``(N,)`` int64 label the scorer believes in, or ``None``.
    columns
        More per-sample ``(N,)`` float64 values, written beside the score as
        ``<scorer>_<key>`` (e.g. ``fz_memorization_se``, the standard error).
    tables
        Artifacts beyond one value per sample, by name (e.g. ``influence``:
        the strongest influence pairs; ``noise_matrix``). The score stage writes
        the ones it knows (see :mod:`memclean.project`).
    """

    scores: np.ndarray
    suggested_label: np.ndarray | None = None
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


class Scorer(ABC):
    """Base class: accumulate signals at checkpoints, then produce scores.

    Subclasses set ``name``, ``description`` and (when they take options)
    ``Params``, a :func:`pydantic.dataclasses.dataclass` with
    :data:`PARAMS_CONFIG`, and implement :meth:`on_checkpoint` and
    :meth:`result`. ``self.params`` holds the validated options as a dict.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    #: What the scorer reads: ``run`` (the main training run's checkpoints) or ``ensemble``.
    needs: ClassVar[str] = "run"
    #: Whether it runs when ``score.scorers`` does not name it.
    default: ClassVar[bool] = True
    #: Whether its score ranks label errors (higher = more suspicious). ``False`` for an estimator whose
    #: score means something else (e.g. ``fz_influence``: how much one other sample carries this one).
    oriented: ClassVar[bool] = True

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = self.validate_params(params)
        #: Progress wrapper for long work in :meth:`result` (set by ``score_dataset``).
        self.progress: Progress | None = None

    @classmethod
    def validate_params(cls, params: Mapping[str, Any] | None) -> dict[str, Any]:
        """The scorer's options: ``params`` merged over the defaults, type- and range-checked.

        Raises
        ------
        MemcleanError
            One line naming each bad key.
        """
        try:
            return asdict(cls.Params(**dict(params or {})))
        except pydantic.ValidationError as exc:
            raise MemcleanError(describe_validation_error(exc, f"score.scorers.{cls.name}")) from None
        except TypeError as exc:  # pragma: no cover - a positional/keyword mismatch in Params
            raise MemcleanError(f"score.scorers.{cls.name}: {exc}") from None

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The scorer's default options."""
        return cls.validate_params({})

    @abstractmethod
    def on_checkpoint(self, cp: Checkpoint) -> None:
        """Accumulate this checkpoint's signal."""

    @abstractmethod
    def result(self) -> ScoreResult:
        """Final scores (call after training)."""


class EnsembleScorer(Scorer):
    """A scorer computed from the subset ensemble (:mod:`memclean.ensemble`), not from checkpoints.

    Subclasses implement :meth:`from_ensemble`. The ensemble is trained only
    when an enabled scorer needs it, after the main run, and handed over with
    :meth:`attach`.
    """

    needs = "ensemble"
    #: Whether a row's score reads only the members that held it out (and its given label). Such a
    #: score does not depend on the row's own training label, so ``validate.mode: heldout`` can
    #: recompute it for injected labels from the same members without training again.
    out_of_sample: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._ensemble: Ensemble | None = None

    def on_checkpoint(self, cp: Checkpoint) -> None:
        """The main run's checkpoints are not used."""

    def member_probe(self, cp: Checkpoint) -> np.ndarray | None:
        """What to record from each member besides its logits: ``N×d`` values, or ``None`` (the default).

        Called once per member after its last epoch with a checkpoint over
        **every** sample (``cp.data`` holds all N samples with the member's
        normalisation, ``cp.logits`` its logits for them, ``cp.model`` the member
        in eval mode). The values are stored as float16 in
        ``Ensemble.extras[self.name]`` (K×N×d) and saved with the ensemble. The
        method must be deterministic and must not change the model.
        """
        return None

    def attach(self, ensemble: Ensemble) -> None:
        """Hand over the trained ensemble."""
        self._ensemble = ensemble

    @abstractmethod
    def from_ensemble(self, ensemble: Ensemble) -> ScoreResult:
        """Scores from the members' in/out fates."""

    def result(self) -> ScoreResult:
        if self._ensemble is None:
            raise RuntimeError("no ensemble was trained")
        return self.from_ensemble(self._ensemble)


_REGISTRY: dict[str, type[Scorer]] = {}


def register(cls: type[Scorer]) -> type[Scorer]:
    """Class decorator adding a scorer to the registry under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"scorer {cls.name!r} registered twice")
    if not cls.description:
        raise ValueError(f"scorer {cls.name!r} has no description")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Names of the registered scorers, in registration order."""
    return list(_REGISTRY)


def defaults() -> list[str]:
    """Names of the scorers that run unless ``score.scorers`` says otherwise."""
    return [name for name, cls in _REGISTRY.items() if cls.default]


def scorer_class(name: str) -> type[Scorer]:
    """The registered class called ``name``."""
    if name not in _REGISTRY:
        raise MemcleanError(f"unknown scorer {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def create(name: str, params: Mapping[str, Any] | None = None) -> Scorer:
    """Instantiate a registered scorer with its defaults merged with ``params``."""
    return scorer_class(name)(**dict(params or {}))
