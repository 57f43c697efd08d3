"""``tdo`` — turn-over dropout self-influence (Kobayashi et al., 2020; also Liu, Lin & Jaggi).

One extra training run (:func:`memclean.tdo.train_tdo`) in which sample ``i``
trains only the sub-network of its fixed, index-hashed mask ``m_i``; then::

    tdo_i = ℓ(x_i, y_i; 1 − m_i) − ℓ(x_i, y_i; m_i)

(cross-entropy of the given label, eval mode, no augmentation). High = fitted
only by the half of the network that saw the sample: memorised, likely
mislabelled. The main run is not used beyond its data and settings: the hook
keeps ``cp.data``, ``cp.config`` and ``cp.device`` at the last checkpoint and
:meth:`TDO.result` trains the turn-over run with the same trainer settings
(seed derived from ``config.seed``).

Cost: about one more training run plus two evaluation passes; off by default.
The time is spent in ``result()``, so it does not appear in the scorer's hook
seconds of :class:`~memclean.scores.run.ScoringOutcome`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pydantic
from pydantic import Field

from memclean.scores.base import PARAMS_CONFIG, Scorer, ScoreResult, register
from memclean.trainconfig import MaskLayers, TrainConfig

if TYPE_CHECKING:  # torch loads when the turn-over run trains: stages that only read params start without it
    import torch

    from memclean.train import Checkpoint, DeviceData


@pydantic.dataclasses.dataclass(config=PARAMS_CONFIG)
class TDOParams:
    """Options of the ``tdo`` scorer."""

    keep: Annotated[
        float, Field(ge=0.1, le=0.9, description="fraction of each masked layer's units in a sample's own mask")
    ] = 0.3
    epochs: Annotated[
        int | None, Field(ge=1, le=10_000, description="epochs of the turn-over run; null = score.trainer.epochs")
    ] = None
    layers: Annotated[
        MaskLayers,
        Field(description="where the masks go: 'all' (every block's channels) or 'penultimate' (pooled features)"),
    ] = "penultimate"


@register
class TDO(Scorer):
    name = "tdo"
    description = "turn-over dropout self-influence: loss(flipped mask) - loss(own mask) (Kobayashi et al.)"
    Params = TDOParams
    #: Documentation only: it trains its own turn-over dropout run after the main one.
    needs = "tdo"
    default = False

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._data: DeviceData | None = None
        self._config: TrainConfig | None = None
        self._device: torch.device | None = None
        self._num_classes = 0

    def on_checkpoint(self, cp: Checkpoint) -> None:
        """Keep what the turn-over run needs at the main run's last checkpoint."""
        if cp.is_last:
            self._data, self._config, self._device = cp.data, cp.config, cp.device
            self._num_classes = int(cp.logits.shape[1])

    def result(self) -> ScoreResult:
        """Train the turn-over run and score ``flipped loss − own loss``."""
        if self._data is None or self._config is None or self._device is None:
            raise RuntimeError("scorer tdo saw no last checkpoint")
        from memclean.tdo import train_tdo

        run = train_tdo(
            self._data,
            self._num_classes,
            self._config,
            self._device,
            keep=float(self.params["keep"]),
            layers=self.params["layers"],
            epochs=self.params["epochs"],
            progress=self.progress,
        )
        self._data = None  # let the device copy of the dataset go
        scores = np.asarray(run.self_influence, dtype=np.float64)
        return ScoreResult(scores, columns={"own_loss": run.own_loss, "flipped_loss": run.flipped_loss})
