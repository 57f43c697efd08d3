"""Gradient dissection across the subset ensemble (after Gu & Tresp: one way to learn, N ways to memorize).

A sample the members *learn* is fitted by the features they share, so the
direction in which its loss rises fastest in input space is about the same in
every member. A sample they *memorize* (a flipped label, an atypical image) is
fitted by whatever idiosyncratic feature each member happened to grow, so those
directions disagree from member to member.

For member ``k`` and sample ``i``, ``g_ki = ∇ₓ ℓ(f_k(x_i), y_i)`` is the input
gradient of the cross-entropy at the given label (eval mode, no augmentation,
per-sample losses summed so a batch's size does not scale them). It is
normalised to unit length and reduced to ``d`` dimensions by one fixed random
Gaussian projection ``P`` (Johnson–Lindenstrauss; seeded by a constant, so every
member and every run uses the same one), then normalised again:
``u_ki = Pᵀĝ_ki / ‖Pᵀĝ_ki‖``. Over the ``K_i`` members used for sample ``i``
(all of them, or those where it is out / in: ``members``)::

    score_i = 1 − mean_{k≠l} ⟨u_ki, u_li⟩ = 1 − (‖Σ_k u_ki‖² − Σ_k ‖u_ki‖²) / (K_i (K_i − 1))

which is ``1 − (‖Σ_k u_ki‖² − K_i) / (K_i (K_i − 1))`` for unit vectors: 0 when
every member agrees, 1 when their directions are orthogonal (or random), up to
``1 + 1/(K_i − 1)`` when they cancel. A zero gradient (a loss that underflows to
exactly zero) stays a zero vector: it agrees with nothing. Fewer than two
members for a sample gives NaN.

Each member records the ``N×d`` projected directions once, after its last
epoch (:meth:`Dissection.member_probe`; stored as float16 in
``Ensemble.extras["dissection"]``). Cost per member: one forward and backward
pass over every sample (about three evaluation passes) and an ``N×D×d``
matrix product (``D`` = pixels × channels).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

import numpy as np
import pydantic
from pydantic import Field

from memclean.ensemble import Ensemble
from memclean.scores.base import PARAMS_CONFIG, EnsembleScorer, ScoreResult, register

if TYPE_CHECKING:  # torch loads when a member is probed: stages that only read params start without it
    import torch

    from memclean.train import Checkpoint

#: Seed of the random projection: a constant, so every member (and every run) projects alike.
PROJECTION_SEED = 20_240_917


def projection(features: int, dims: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The fixed ``features×dims`` Gaussian projection (drawn on the CPU, so the same on every device)."""
    import torch

    gen = torch.Generator().manual_seed(PROJECTION_SEED)
    return torch.randn(features, dims, generator=gen, dtype=torch.float32).div_(dims**0.5).to(device)


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length; zero rows stay zero."""
    import torch

    return x / x.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def projected_gradients(cp: Checkpoint, dims: int) -> np.ndarray:
    """``N×dims`` float32: every sample's unit input-gradient direction, projected and renormalised.

    The model is only read: ``torch.autograd.grad`` asks for the input's
    gradient alone, so no ``.grad`` of a weight is written and the mode and
    ``requires_grad`` flags stay as they are.
    """
    import torch
    import torch.nn.functional as F

    model, data = cp.model, cp.data
    n = len(data)
    features = int(np.prod(data.pixels.shape[1:]))
    proj = projection(features, dims, cp.device)
    out = torch.empty((n, dims), dtype=torch.float32, device=cp.device)
    step = cp.config.eval_batch_size
    with torch.enable_grad():
        for start in range(0, n, step):
            sl = slice(start, start + step)
            x = data.batch(sl).detach().requires_grad_(True)
            with cp.autocast():
                logits = model(x)
            loss = F.cross_entropy(logits.float(), data.labels[sl], reduction="sum")
            (grad,) = torch.autograd.grad(loss, x)
            flat = _unit(grad.float().reshape(len(grad), -1))
            out[sl] = _unit(flat @ proj)
    return out.cpu().numpy()


def disagreement(directions: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``1 −`` mean pairwise cosine over the members ``use`` marks, and how many they are.

    Parameters
    ----------
    directions
        ``K×N×d`` unit (or zero) vectors, any float dtype; renormalised here in
        float64 so float16 storage does not bias the cosines.
    use
        ``K×N`` bool: which members count for each sample.

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray]
        ``(N,)`` float64 scores (NaN where fewer than two members count) and the ``(N,)`` member counts.
    """
    u = directions.astype(np.float64)
    norms = np.linalg.norm(u, axis=2, keepdims=True)
    u = np.divide(u, norms, out=np.zeros_like(u), where=norms > 0)
    u *= use[:, :, None]
    total = u.sum(axis=0)  # N×d
    squares = (u * u).sum(axis=(0, 2))  # Σ_k ‖u_ki‖²: the member count, less any zero vectors
    count = use.sum(axis=0)
    pairs = count * (count - 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_cosine = ((total * total).sum(axis=1) - squares) / pairs
    return np.where(count >= 2, 1.0 - mean_cosine, np.nan), count


@pydantic.dataclasses.dataclass(config=PARAMS_CONFIG)
class DissectionParams:
    """Options of ``dissection``."""

    dims: Annotated[
        int, Field(ge=2, le=4096, description="dimensions of the fixed random projection of each input gradient")
    ] = 64
    members: Annotated[
        Literal["all", "out", "in"],
        Field(
            description="members compared for each sample: all, those that never saw it (out), or trained on it (in)"
        ),
    ] = "all"


@register
class Dissection(EnsembleScorer):
    name = "dissection"
    description = "1 - mean pairwise cosine of the members' input-gradient directions at the given label (ensemble)"
    Params = DissectionParams
    default = False

    def member_probe(self, cp: Checkpoint) -> np.ndarray:
        return projected_gradients(cp, int(self.params["dims"]))

    def from_ensemble(self, ensemble: Ensemble) -> ScoreResult:
        directions = ensemble.extras.get(self.name)
        if directions is None:
            raise RuntimeError(f"the ensemble holds no {self.name} probes: train it with this scorer's member_probe")
        expected = (ensemble.members, len(ensemble.labels))
        if directions.ndim != 3 or directions.shape[:2] != expected:
            raise RuntimeError(f"{self.name} probes have shape {directions.shape}, expected {expected}×d")
        which = self.params["members"]
        use = (
            np.ones_like(ensemble.in_mask, dtype=bool)
            if which == "all"
            else (ensemble.in_mask if which == "in" else ~ensemble.in_mask)
        )
        scores, _ = disagreement(np.asarray(directions), np.asarray(use, dtype=bool))
        return ScoreResult(scores)
