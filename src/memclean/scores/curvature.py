"""Input-loss curvature (Garg, Ravikumar & Roy, ICML 2024).

For Rademacher probes ``v_i`` and a small step ``h``::

    curv(x) = mean_i ‖∇ₓℓ(x + h·v_i) − ∇ₓℓ(x)‖²

a Hutchinson estimate of ``h²·Tr(H²)`` for the input Hessian ``H``, averaged
over checkpoints. Differences from the official code, all on purpose:

* per-sample losses (``reduction="sum"``), so a sample's score does not depend
  on the size of the batch it fell in (the official mean-reduced loss makes the
  last, smaller batch's scores larger);
* gradients with respect to the input only: the weights' ``requires_grad`` is
  switched off during the pass;
* the clean gradient ``∇ₓℓ(x)`` is computed once per checkpoint, not once per
  probe;
* the squared norm, which is what the formula above estimates; the official
  code averages the plain norm.

The pass always runs in float32, even on CUDA: a step of ``h = 1e-3`` on
normalised inputs is below bfloat16's resolution.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pydantic
from pydantic import Field

from memclean.scores.base import PARAMS_CONFIG, Scorer, ScoreResult, register

if TYPE_CHECKING:  # torch loads when a pass runs: stages that only validate params start without it
    import torch

    from memclean.train import Checkpoint


def input_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∇ₓ of the summed per-sample cross-entropy (weights untouched)."""
    import torch
    import torch.nn.functional as F

    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x).float(), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def curvature_pass(
    model: torch.nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]] | None,
    h: float,
    n_probes: int,
    generator: torch.Generator,
    make_batch=None,
    n: int | None = None,
    batch_size: int = 512,
) -> np.ndarray:
    """Curvature of every sample at the model's current weights.

    Either ``batches`` (a list of ``(x, y)``) or ``make_batch(slice) -> (x, y)``
    with ``n`` samples is given. Returns ``(N,)`` float64.
    """
    import torch

    was_training = model.training
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    out = []
    try:
        iterator = (
            batches
            if batches is not None
            else (make_batch(slice(s, s + batch_size)) for s in range(0, int(n or 0), batch_size))
        )
        for x, y in iterator:
            g0 = input_gradient(model, x, y)
            acc = torch.zeros(len(x), dtype=torch.float64, device=x.device)
            for _ in range(n_probes):
                v = torch.randint(0, 2, x.shape, generator=generator, device=x.device, dtype=torch.int8)
                v = v.to(x.dtype).mul_(2).sub_(1)
                g = input_gradient(model, x + h * v, y)
                acc += (g - g0).pow(2).flatten(1).sum(1).double()
            out.append((acc / n_probes).cpu())
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)
    return torch.cat(out).numpy()


#: Default spacing of the curvature passes on CUDA (the paper's "every 4th epoch").
CUDA_EVERY = 4


@pydantic.dataclasses.dataclass(config=PARAMS_CONFIG)
class CurvatureParams:
    """Options of the ``curvature`` scorer."""

    h: Annotated[float, Field(gt=0.0, le=1.0, description="finite-difference step on the normalised input")] = 1e-3
    n_probes: Annotated[int, Field(ge=1, le=256, description="Rademacher probes per checkpoint")] = 2
    every: Annotated[
        int | None,
        Field(
            ge=1,
            description="every N-th epoch, counted back from the last; null = 4 on CUDA, the last epoch only on a "
            "CPU (a pass costs about 3 training epochs there)",
        ),
    ] = None
    batch_size: Annotated[int, Field(ge=1, description="batch size of the pass")] = 128
    seed: Annotated[int, Field(ge=0, description="seed of the probes")] = 0


@register
class Curvature(Scorer):
    name = "curvature"
    description = "input-loss curvature, mean ||grad(x+hv) - grad(x)||^2 over probes and checkpoints"
    Params = CurvatureParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._sum: np.ndarray | None = None
        self._count = 0

    def on_checkpoint(self, cp: Checkpoint) -> None:
        every = max(1, int(self.params["every"] or (CUDA_EVERY if cp.device.type == "cuda" else cp.config.epochs)))
        if (cp.config.epochs - cp.epoch) % every != 0:
            return
        import torch

        gen = torch.Generator(device=cp.device).manual_seed(int(self.params["seed"]) * 1_000_003 + cp.epoch)
        data = cp.data
        curv = curvature_pass(
            cp.model,
            None,
            float(self.params["h"]),
            int(self.params["n_probes"]),
            gen,
            make_batch=lambda sl: (data.batch(sl), data.labels[sl]),
            n=len(data),
            batch_size=int(self.params["batch_size"]),
        )
        self._sum = curv if self._sum is None else self._sum + curv
        self._count += 1

    def result(self) -> ScoreResult:
        if self._sum is None:
            raise RuntimeError("curvature saw no checkpoint on its schedule")
        return ScoreResult(self._sum / self._count)
