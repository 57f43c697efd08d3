"""Label-aware kernel density on penultimate features: the C-score density proxy of Jiang et al. (2021).

Jiang, Zhang, Talwar & Mozer, "Characterizing Structural Regularities of
Labeled Data in Overparameterized Models" (ICML 2021) estimate the consistency
score of ``(x, y)`` without retraining from a kernel density on a trained
network's hidden representations ``h``::

    Ĉ^{±L}(x, y) = (1/N) Σ_{(x', y')} 2 (1[y = y'] − ½) K(h(x), h(x'))

(same-label mass minus other-label mass) with an RBF kernel ``K``. ``kde_density``
keeps that label-aware estimate but restricts the sum to the ``k`` nearest
neighbours of each sample (the sample itself excluded) and normalises it by the
total kernel mass, so that it does not depend on how dense the region is::

    w_j   = exp(−‖h(x) − h(x_j)‖² / (2σ²)),  j ∈ kNN(x)
    score = 1 − Σ_j w_j 1[y_j = y] / Σ_j w_j

The score lies in ``[0, 1]``, higher = more suspicious: 0 when every
neighbour (weighted by the kernel) shares the given label, 1 when none does. It
is a monotone transform of the normalised ``±L`` estimate, ``(Ĉ + 1) / 2 = 1 −
score``. Far neighbours contribute almost nothing, so the kNN truncation
changes little once ``k`` covers the kernel's reach.

Bandwidth: ``σ = bandwidth × median`` of all ``N × k`` neighbour distances, a
robust statistic that adapts to the scale of the features (which differs from
run to run) and is insensitive to a few outliers or duplicates. When that
median is 0 (most samples duplicated), the mean of the positive distances is
used; when every distance is 0, all weights are equal. Each row's weights are
computed relative to its nearest neighbour (``d² − d_min²`` in the exponent),
which leaves the ratio unchanged and keeps it from underflowing for isolated
samples.

Features come from the main run's network at its **last** checkpoint
(``model.embed``: global-average-pooled penultimate activations, eval mode, no
augmentation, batches of ``eval_batch_size``). Cost: one forward pass over the
data, plus an exact Euclidean k-nearest-neighbour search with scikit-learn's
:class:`~sklearn.neighbors.NearestNeighbors` — ``O(N² d)`` time for the
brute-force search used on these feature sizes, computed in chunks bounded by
scikit-learn's ``working_memory``; memory ``O(N (d + k))`` (the float32
features and the ``N × k`` neighbour table: about 100 MB for 100k samples,
256 features and ``k = 20``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pydantic
from pydantic import Field

from memclean.scores.base import PARAMS_CONFIG, Scorer, ScoreResult, register

if TYPE_CHECKING:
    from memclean.train import Checkpoint


def kernel_bandwidth(distances: np.ndarray, scale: float = 1.0) -> float:
    """RBF bandwidth ``σ``: ``scale`` times the median neighbour distance.

    Parameters
    ----------
    distances
        Neighbour distances of any shape (``N × k``).
    scale
        Multiplier of the median.

    Returns
    -------
    float
        ``σ > 0``; the mean of the positive distances when the median is 0, and
        1 when no distance is positive (the weights are then all equal anyway).
    """
    d = np.asarray(distances, dtype=np.float64).ravel()
    if d.size == 0:
        return 1.0
    sigma = float(np.median(d))
    if not sigma > 0.0:
        positive = d[d > 0.0]
        sigma = float(positive.mean()) if positive.size else 1.0
    return scale * sigma


def kde_label_scores(
    features: np.ndarray,
    labels: np.ndarray,
    neighbors: int = 20,
    bandwidth: float = 1.0,
) -> np.ndarray:
    """Label-aware kNN kernel density score: ``1 −`` the same-label share of the kernel mass.

    Parameters
    ----------
    features
        ``N × d`` feature vectors (e.g. penultimate activations).
    labels
        ``(N,)`` integer labels.
    neighbors
        ``k``: neighbours per sample, the sample itself excluded; at most
        ``N − 1`` are used.
    bandwidth
        Multiplier of the median neighbour distance giving the RBF ``σ``
        (see :func:`kernel_bandwidth`).

    Returns
    -------
    np.ndarray
        ``(N,)`` float64 in ``[0, 1]``, higher = more suspicious. All zeros
        when ``N < 2`` (no neighbour to disagree with).

    Raises
    ------
    ValueError
        When ``features`` and ``labels`` disagree in length, or ``neighbors``
        or ``bandwidth`` is not positive.
    """
    x = np.asarray(features, dtype=np.float32)
    if x.ndim == 1:
        x = x[:, None]
    x = x.reshape(len(x), -1)
    y = np.asarray(labels).ravel()
    if len(x) != len(y):
        raise ValueError(f"{len(x)} feature rows but {len(y)} labels")
    if neighbors < 1:
        raise ValueError(f"neighbors must be at least 1 (got {neighbors})")
    if not bandwidth > 0.0:
        raise ValueError(f"bandwidth must be positive (got {bandwidth})")
    n = len(x)
    k = min(int(neighbors), n - 1)
    if k < 1:
        return np.zeros(n, dtype=np.float64)
    # kneighbors() without a query excludes each sample by index (exact duplicates of it stay neighbours).
    from sklearn.neighbors import NearestNeighbors  # here: scikit-learn costs ~2 s to import in every stage

    dist, ind = NearestNeighbors(n_neighbors=k).fit(x).kneighbors()
    dist = dist.astype(np.float64)
    sigma = kernel_bandwidth(dist, bandwidth)
    sq = dist * dist
    weights = np.exp(-(sq - sq.min(axis=1, keepdims=True)) / (2.0 * sigma * sigma))
    same = (y[ind] == y[:, None]).astype(np.float64)
    return 1.0 - (weights * same).sum(axis=1) / weights.sum(axis=1)


def penultimate_features(cp: Checkpoint) -> np.ndarray:
    """``N × d`` float32 penultimate features of every sample at this checkpoint.

    Eval mode, no augmentation, batches of ``cp.config.eval_batch_size``, under
    the run's autocast; the model's mode is restored afterwards.
    """
    import torch  # loads when a run scores, not when the stages that only read params import this module

    model, data = cp.model, cp.data
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad(), cp.autocast():
            for start in range(0, len(data), cp.config.eval_batch_size):
                sl = slice(start, start + cp.config.eval_batch_size)
                out.append(model.embed(data.batch(sl)).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy()


@pydantic.dataclasses.dataclass(config=PARAMS_CONFIG)
class KDEDensityParams:
    """Options of the ``kde_density`` scorer."""

    neighbors: Annotated[int, Field(ge=1, description="k nearest neighbours in feature space (self excluded)")] = 20
    bandwidth: Annotated[
        float, Field(gt=0.0, le=100.0, description="RBF sigma as a multiple of the median neighbour distance")
    ] = 1.0


@register
class KDEDensity(Scorer):
    name = "kde_density"
    description = (
        "1 - same-label share of RBF kernel mass over k nearest neighbours in penultimate features "
        "(Jiang et al. C-score density proxy)"
    )
    Params = KDEDensityParams
    default = True

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._scores: np.ndarray | None = None

    def on_checkpoint(self, cp: Checkpoint) -> None:
        if not cp.is_last:
            return
        features = penultimate_features(cp)
        labels = cp.data.labels.cpu().numpy()
        self._scores = kde_label_scores(
            features, labels, int(self.params["neighbors"]), float(self.params["bandwidth"])
        )

    def result(self) -> ScoreResult:
        if self._scores is None:
            raise RuntimeError("kde_density saw no last checkpoint")
        return ScoreResult(self._scores)
