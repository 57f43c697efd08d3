"""Synthetic mislabel injection with an exact count and a fixed seed.

The dataset already holds label errors of its own, so the flips go only to rows
the first scoring run considers clean (``eligible``; see :func:`own_suspects`)
and ``validate`` measures among those rows. Every kind flips exactly
``round(rate·N)`` rows, N = all rows passed in (``rate`` stays "the fraction of
the ok rows flipped"), chosen among the eligible rows; a label is never flipped
to itself.

* ``symmetric``: rows chosen uniformly; each gets a label drawn uniformly from
  the *other* classes.
* ``asymmetric``: class-pair flips ``c → pairs[c]`` (default ``c → c+1 mod K``),
  rows chosen uniformly among the eligible rows whose class has a target.
* ``instance`` (instance-dependent, what human errors look like): rows drawn
  without replacement with probability ∝ ``1 − p[i, y_i] + epsilon`` under a
  reference model's held-out probabilities ``p`` (the score stage's subset
  ensemble), each flipped to the class the model confuses it with,
  ``argmax_{c≠y_i} p[i, c]`` (ties: the lowest class). Rows whose probabilities
  are not finite (never held out) are not eligible.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from memclean.errors import MemcleanError

NOISE_KINDS = ("symmetric", "asymmetric", "instance")

#: Weight every eligible row keeps in ``instance`` noise, however confident the reference model.
INSTANCE_EPSILON = 1e-3


def own_suspects(issue: np.ndarray | None, n: int) -> np.ndarray:
    """Rows suspected of being label errors *before* any injection: ``issue >= 0.5``.

    ``issue`` is ``scores.parquet``'s ``confident_learning_issue`` (1.0 = confident
    learning marks the row as an issue on the original labels; NaN counts as not
    suspected). ``None`` (the column is absent: confident learning did not run)
    suspects no row — the fallback; the caller logs it and ``validate`` records that
    own errors were not excluded.
    """
    if issue is None:
        return np.zeros(n, dtype=bool)
    values = np.asarray(issue, dtype=np.float64)
    if values.shape != (n,):
        raise MemcleanError(f"confident_learning_issue has {values.size} rows, expected {n}: rerun the score stage")
    with np.errstate(invalid="ignore"):
        return values >= 0.5


def flip_count(n: int, rate: float) -> int:
    """Number of rows flipped: ``round(rate·n)``."""
    if not 0.0 <= rate < 1.0:
        raise MemcleanError(f"noise rate must be in [0, 1); got {rate}")
    return round(rate * n)


def instance_flips(
    labels: np.ndarray,
    probabilities: np.ndarray,
    k: int,
    seed: int = 0,
    eligible: np.ndarray | None = None,
    epsilon: float = INSTANCE_EPSILON,
) -> np.ndarray:
    """Instance-dependent noise: flip exactly ``k`` rows towards the class they are confused with.

    Parameters
    ----------
    labels
        ``(N,)`` integer labels.
    probabilities
        ``(N, C)`` held-out probabilities of a reference model.
    k
        Number of rows to flip.
    seed
        Seed of the draw (same inputs and seed → same flips).
    eligible
        ``(N,)`` bool: rows that may be flipped (default all). Rows with a non-finite
        probability are never eligible.
    epsilon
        Weight added to every eligible row (≥ 0), so confidently right rows can still be drawn.

    Returns
    -------
    numpy.ndarray
        The noisy labels (int64): rows drawn without replacement with probability
        ∝ ``1 − p[i, y_i] + epsilon``, each set to ``argmax_{c≠y_i} p[i, c]``.
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    n = len(y)
    if p.ndim != 2 or p.shape[0] != n or p.shape[1] < 2:
        raise MemcleanError(f"instance noise needs N×C probabilities (C ≥ 2) for {n} labels; got shape {p.shape}")
    if n and (y.min() < 0 or y.max() >= p.shape[1]):
        raise MemcleanError(f"labels outside [0, {p.shape[1]}) for instance noise")
    if epsilon < 0:
        raise MemcleanError(f"epsilon must be ≥ 0; got {epsilon}")
    ok = np.isfinite(p).all(axis=1)
    if eligible is not None:
        ok &= np.asarray(eligible, dtype=bool)
    pool = np.flatnonzero(ok)
    weight = np.clip(1.0 - p[pool, y[pool]], 0.0, None) + epsilon
    if k > np.count_nonzero(weight):
        raise MemcleanError(f"instance noise: {k} flips requested but only {np.count_nonzero(weight)} rows can flip")
    noisy = y.copy()
    if k == 0:
        return noisy
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(pool, size=k, replace=False, p=weight / weight.sum()))
    others = p[idx].copy()
    others[np.arange(k), y[idx]] = -np.inf
    noisy[idx] = others.argmax(axis=1)
    return noisy


def inject(
    labels: np.ndarray,
    num_classes: int,
    kind: str = "symmetric",
    rate: float = 0.1,
    seed: int = 0,
    pairs: Mapping[int, int] | None = None,
    *,
    eligible: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
) -> np.ndarray:
    """Return a copy of ``labels`` with exactly ``round(rate·N)`` labels flipped.

    Parameters
    ----------
    labels
        ``(N,)`` integer labels in ``[0, num_classes)``.
    num_classes
        Number of classes (≥ 2).
    kind
        ``symmetric``, ``asymmetric`` or ``instance``.
    rate
        Fraction of the N samples to flip, in ``[0, 1)``.
    seed
        Seed of the generator (same seed → same flips).
    pairs
        Asymmetric flips ``{from_class: to_class}``; default ``c → (c+1) % K``.
    eligible
        ``(N,)`` bool: the rows that may be flipped (default all): rows not suspected
        of an error of their own.
    probabilities
        ``instance``: the ``(N, num_classes)`` held-out probabilities of the reference model.

    Returns
    -------
    numpy.ndarray
        The noisy labels (int64).
    """
    y = np.asarray(labels, dtype=np.int64)
    if kind not in NOISE_KINDS:
        raise MemcleanError(f"unknown noise kind {kind!r}; choose one of {', '.join(NOISE_KINDS)}")
    k = flip_count(len(y), rate)
    if num_classes < 2:
        raise MemcleanError("noise injection needs at least two classes")
    allowed = np.ones(len(y), dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    if allowed.shape != y.shape:
        raise MemcleanError(f"eligible has {allowed.size} rows, expected {len(y)}")
    if kind == "instance":
        if probabilities is None:
            raise MemcleanError("instance noise needs the reference model's probabilities")
        if np.shape(probabilities)[-1] != num_classes:
            raise MemcleanError(
                f"instance noise: probabilities have {np.shape(probabilities)[-1]} classes, not {num_classes}"
            )
        return instance_flips(y, probabilities, k, seed, allowed)
    rng = np.random.default_rng(seed)
    noisy = y.copy()
    if kind == "symmetric":
        pool = np.flatnonzero(allowed)
        if k > len(pool):
            raise MemcleanError(f"symmetric noise: {k} flips requested but only {len(pool)} rows are eligible")
        idx = pool[rng.choice(len(pool), size=k, replace=False)]
        offset = rng.integers(1, num_classes, size=k)  # 1..K-1: never the true label
        noisy[idx] = (y[idx] + offset) % num_classes
        return noisy
    mapping = {int(a): int(b) for a, b in (pairs or {c: (c + 1) % num_classes for c in range(num_classes)}).items()}
    for a, b in mapping.items():
        if not (0 <= a < num_classes and 0 <= b < num_classes) or a == b:
            raise MemcleanError(f"invalid asymmetric pair {a} -> {b} for {num_classes} classes")
    pool = np.flatnonzero(np.isin(y, list(mapping)) & allowed)
    if k > len(pool):
        raise MemcleanError(
            f"asymmetric noise: {k} flips requested but only {len(pool)} samples have a target class"
            " (among the rows not suspected of an error of their own)"
        )
    idx = rng.choice(pool, size=k, replace=False)
    noisy[idx] = np.array([mapping[int(c)] for c in y[idx]], dtype=np.int64)
    return noisy
