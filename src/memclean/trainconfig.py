"""The proxy trainer's settings and its torch-free outputs.

:class:`TrainConfig` (hyper-parameters, their defaults, ranges and descriptions),
:class:`TrainResult` (the summary of a run) and :func:`softmax` live here, apart from
:mod:`memclean.train`, so that the stages that only read settings or scores (params, ingest,
inject, clean, report) start without importing torch (about 2.3 s of every stage start on a
2-core CPU). :mod:`memclean.train` re-exports them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pydantic
from pydantic import ConfigDict, Field

from memclean.errors import MemcleanError, describe_validation_error

if TYPE_CHECKING:
    import torch

#: Device types on which ``channels_last: null`` means channels-last (see :meth:`TrainConfig.uses_channels_last`).
CHANNELS_LAST = frozenset({"cuda", "cpu"})

#: Where the turn-over dropout run (:mod:`memclean.tdo`) applies its masks (see that module's docstring).
MaskLayers = Literal["all", "penultimate"]

#: Width of the proxy CNN per device type when ``score.trainer.width`` is null. On a CPU half the
#: channels (16/32/64) train 2.6× (bf16) to 3.4× (float32) faster than 32/64/128 (a quarter of
#: the convolution FLOPs) and cost the CIFAR-10 10k gate 0.003 AUROC (README, "Speed on a
#: CPU"); on CUDA the wider net costs seconds.
DEFAULT_WIDTH: dict[str, int] = {"cuda": 32, "cpu": 16}


@pydantic.dataclasses.dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TrainConfig:
    """Hyper-parameters of the proxy network: the one home of their defaults, ranges and descriptions.

    SGD with Nesterov momentum; the learning rate warms up linearly for
    ``warmup_epochs`` and then decays linearly to zero. Memorization signals
    need the network to fit the (possibly noisy) labels, so ``epochs`` should
    bring train accuracy close to 100 %. Augmentation (``crop_padding``,
    ``flip``) applies to training batches only, never to evaluation passes, and
    is off by default.
    """

    epochs: Annotated[int, Field(ge=1, le=10_000, description="training epochs")] = 20
    batch_size: Annotated[int, Field(ge=2, description="training batch size")] = 128
    lr: Annotated[float, Field(gt=0.0, le=10.0, description="peak learning rate (SGD, Nesterov)")] = 0.05
    momentum: Annotated[float, Field(ge=0.0, lt=1.0, description="SGD momentum")] = 0.9
    weight_decay: Annotated[float, Field(ge=0.0, description="L2 weight decay")] = 5e-4
    warmup_epochs: Annotated[float, Field(ge=0.0, description="linear warm-up, then linear decay to 0")] = 1.0
    crop_padding: Annotated[
        int, Field(ge=0, description="random crop after reflect-padding N pixels per side (0 = off, at most side/2)")
    ] = 0
    flip: Annotated[bool, Field(description="random horizontal flip of half the training images")] = False
    width: Annotated[
        int | None,
        Field(
            ge=1,
            le=1024,
            description="channels of the first block, doubled per block; null = 32 on CUDA, 16 on a CPU",
        ),
    ] = None
    eval_every: Annotated[int, Field(ge=1, description="evaluation pass (scorer checkpoint) every N epochs")] = 1
    eval_batch_size: Annotated[int, Field(ge=1, description="batch size of the evaluation passes")] = 256
    seed: Annotated[int, Field(ge=0, description="seeds initialisation, batch order and augmentation")] = 0
    bf16: Annotated[
        bool | None,
        Field(description="bfloat16 autocast; null = on CUDA, and on a CPU with native bf16 (AVX512-BF16 or AMX)"),
    ] = None
    channels_last: Annotated[
        bool | None,
        Field(description="channels-last memory format of model and batches; null = on CUDA and on a CPU"),
    ] = None

    def resolved_width(self, device: torch.device) -> int:
        """Channels of the first block on ``device`` (``width``; null = :data:`DEFAULT_WIDTH` of its type)."""
        return self.width if self.width is not None else DEFAULT_WIDTH.get(device.type, DEFAULT_WIDTH["cpu"])

    def uses_channels_last(self, device: torch.device) -> bool:
        """Whether model and batches are channels-last on ``device`` (``channels_last``; null = :data:`CHANNELS_LAST`).

        On a CPU without AVX-512 (2-core AMD EPYC, float32) channels-last trained the width-16 proxy
        1.4× faster on CIFAR-10 (1,578–1,753 vs 1,155–1,190 img/s), width 32 1.3×, 8×8 digits
        1.2×, with evaluation passes 1.2–1.6× faster (README, "Speed on a CPU").
        """
        return self.channels_last if self.channels_last is not None else device.type in CHANNELS_LAST

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> TrainConfig:
        """Build from a params mapping; one-line :class:`MemcleanError` on unknown keys, bad types or ranges."""
        try:
            return cls(**dict(params or {}))
        except pydantic.ValidationError as exc:
            raise MemcleanError(describe_validation_error(exc, "score.trainer")) from None

    def checkpoints(self) -> list[int]:
        """Epochs (1-based) after which an evaluation pass runs."""
        eps = [e for e in range(1, self.epochs + 1) if (self.epochs - e) % self.eval_every == 0]
        return eps


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, in float64 (logits of any leading shape)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


@dataclass
class TrainResult:
    """Summary of one training run."""

    epochs: int
    seconds: float
    train_images_per_s: float
    final_train_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    device: str = "cpu"
    config: dict[str, Any] = field(default_factory=dict)
