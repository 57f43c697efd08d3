"""Synthetic mislabel injection with an exact rate and a fixed seed.

* ``symmetric``: ``round(rate·N)`` samples, chosen uniformly, get a label drawn
  uniformly from the *other* classes (never the true label).
* ``asymmetric``: class-pair flips ``c → pairs[c]`` (default ``c → c+1 mod K``),
  applied to ``round(rate·N)`` samples chosen uniformly among those whose class
  has a target.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from memclean.errors import MemcleanError

NOISE_KINDS = ("symmetric", "asymmetric")


def inject(
    labels: np.ndarray,
    num_classes: int,
    kind: str = "symmetric",
    rate: float = 0.1,
    seed: int = 0,
    pairs: Mapping[int, int] | None = None,
) -> np.ndarray:
    """Return a copy of ``labels`` with exactly ``round(rate·N)`` labels flipped.

    Parameters
    ----------
    labels
        ``(N,)`` integer labels in ``[0, num_classes)``.
    num_classes
        Number of classes (≥ 2).
    kind
        ``symmetric`` or ``asymmetric``.
    rate
        Fraction of samples to flip, in ``[0, 1)``.
    seed
        Seed of the generator (same seed → same flips).
    pairs
        Asymmetric flips ``{from_class: to_class}``; default ``c → (c+1) % K``.

    Returns
    -------
    numpy.ndarray
        The noisy labels (int64).
    """
    y = np.asarray(labels, dtype=np.int64)
    if kind not in NOISE_KINDS:
        raise MemcleanError(f"unknown noise kind {kind!r}; choose one of {', '.join(NOISE_KINDS)}")
    if not 0.0 <= rate < 1.0:
        raise MemcleanError(f"noise rate must be in [0, 1); got {rate}")
    if num_classes < 2:
        raise MemcleanError("noise injection needs at least two classes")
    rng = np.random.default_rng(seed)
    noisy = y.copy()
    if kind == "symmetric":
        k = round(rate * len(y))
        idx = rng.choice(len(y), size=k, replace=False)
        offset = rng.integers(1, num_classes, size=k)  # 1..K-1: never the true label
        noisy[idx] = (y[idx] + offset) % num_classes
        return noisy
    mapping = {int(a): int(b) for a, b in (pairs or {c: (c + 1) % num_classes for c in range(num_classes)}).items()}
    for a, b in mapping.items():
        if not (0 <= a < num_classes and 0 <= b < num_classes) or a == b:
            raise MemcleanError(f"invalid asymmetric pair {a} -> {b} for {num_classes} classes")
    eligible = np.nonzero(np.isin(y, list(mapping)))[0]
    k = round(rate * len(y))
    if k > len(eligible):
        raise MemcleanError(
            f"asymmetric noise: {k} flips requested but only {len(eligible)} samples have a target class"
        )
    idx = rng.choice(eligible, size=k, replace=False)
    noisy[idx] = np.array([mapping[int(c)] for c in y[idx]], dtype=np.int64)
    return noisy
