"""Feldman & Zhang's influence estimator on a subset ensemble, blocked so that it never holds an N×N matrix.

With ``K`` members, ``S_k`` member ``k``'s training subset and ``s_kj`` a
signal of member ``k`` on sample ``j`` (``1`` when it predicts ``j``'s label —
Feldman & Zhang's definition — or the probability it gives that label), the
influence of a *source* ``i`` on a *target* ``j ≠ i`` is read off the members
that did **not** train on ``j``::

    in  = {k : i ∈ S_k, j ∉ S_k}      out = {k : i ∉ S_k, j ∉ S_k}
    infl(i→j) = mean_{k∈in} s_kj − mean_{k∈out} s_kj

(NaN when either group is empty), with the Welch standard error
``se = sqrt(var_in/n_in + var_out/n_out)``, each ``var`` the unbiased
(``ddof = 1``) variance of its group. A group of a single member has no
variance of its own: it borrows the pooled within-group variance of the pair,
``(SS_in + SS_out) / (n_in + n_out − 2)`` (which is the other group's variance,
the single member contributing no spread), and when both groups hold one
member each it is ``0.25``, the largest variance of a signal in ``[0, 1]`` — a
conservative ``se`` of ``sqrt(0.5) ≈ 0.71``. With the 0/1 signal, groups that
agree within themselves have no spread and ``se = 0`` however few members they
hold: judge small groups by ``n_in`` / ``n_out`` (and ``min_members``), not by
``se`` alone. The largest of many such estimates is biased upwards: with ~10
members, a target that one member gets wrong finds, among a few hundred
sources, one whose single out-member is that member (influence 1, ``se`` 0);
``min_members = 3`` sets those aside.

Computation. With ``In`` / ``Out`` the K×N membership indicators and, for a
block of targets ``J``, ``T = (s ⊙ Out)[:, J]``, every count and sum is a
product over the K axis::

    n_in  = Out[:, J]ᵀ · In        sum_in  = Tᵀ · In
    n_out = Σ_k Out[k, J] − n_in   sum_out = Σ_k T[k] − sum_in

so ``influence = sum_in/n_in − sum_out/n_out`` for a whole block at once. The
standard error (sums of squares too) is computed only for the pairs kept.
Sources with the same membership column (the same in/out pattern over the K
members) have the same influence on every target, so the block is computed
once per distinct pattern, and only the first ``top_k + 1`` sources of each
pattern are candidates for a target's top ``k``. Targets are processed in
blocks sized so that a block's work arrays stay within ``memory_bytes``, and
the ``top_k`` of each target are picked with a partition (ties: the smaller
source position first). Arithmetic is float64: counts and 0/1 sums are exact.

Identifiability. A target sees a source only through the ~``(1 − r)·K``
members that held the target out (``r`` the subset ratio), and two sources
with the same pattern over them are indistinguishable: with independent random
subsets (Feldman & Zhang) telling N sources apart takes ``(1 − r)·K`` well
above ``log2 N``. One round of the ensemble's golden-ratio rotations
(:func:`memclean.ensemble.out_mask`, ``m`` members) gives at most ``2m``
distinct patterns whatever ``N`` is; its rounds are drawn independently, so the
patterns multiply with every round (a warning says when sources still share
patterns).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

log = logging.getLogger(__name__)

#: Default memory budget of one block's work arrays (bytes).
MEMORY_BYTES = 256 * 2**20
#: Bytes per (target, source pattern) pair of one block: four float64 arrays (n_in, n_out, the two means)
#: and boolean masks, with a margin.
BYTES_PER_PAIR = 6 * 8
#: Bytes per (target, candidate source) pair of one block while picking the top k (values, their partition,
#: masks, the tie-break's cumulative sum).
BYTES_PER_SOURCE = 5 * 8
#: Variance of a group when no group of the pair has two members: the largest variance of a signal in [0, 1].
FALLBACK_VARIANCE = 0.25
#: Columns of the top-k table, in order.
COLUMNS = ("target", "source", "rank", "influence", "se", "n_in", "n_out")


@dataclass(frozen=True)
class InfluenceResult:
    """The ``top_k`` strongest sources of every target, and the strongest influence each target receives.

    Attributes
    ----------
    table
        One row per (target, source) pair kept, sorted by target then rank, with
        columns ``target``, ``source`` (int64 row positions), ``rank`` (int64,
        1 = strongest), ``influence``, ``se`` (float64), ``n_in``, ``n_out``
        (int64: members in each group). A target has fewer than ``top_k`` rows
        when fewer sources meet ``min_members``.
    targets
        The target positions (int64), in the order of the vectors below.
    strongest
        Per target: ``max_i infl(i→j)`` over its eligible sources; NaN when none is eligible.
    strongest_se
        The standard error of that pair (NaN when none).
    strongest_source
        Its source position (int64; ``-1`` when none).
    """

    table: pd.DataFrame
    targets: np.ndarray
    strongest: np.ndarray
    strongest_se: np.ndarray
    strongest_source: np.ndarray


@dataclass(frozen=True)
class PairStatistics:
    """Influence, standard error and group sizes of every (target, source) pair: |targets|×|sources| arrays."""

    influence: np.ndarray
    se: np.ndarray
    n_in: np.ndarray
    n_out: np.ndarray


def _positions(selection: ArrayLike | None, n: int, what: str) -> np.ndarray:
    """Row positions (sorted, unique int64) from ``None`` (every row), a boolean mask or integer positions."""
    if selection is None:
        return np.arange(n, dtype=np.int64)
    sel = np.asarray(selection)
    if sel.dtype == np.bool_:
        if sel.shape != (n,):
            raise ValueError(f"{what} mask has shape {sel.shape}, expected ({n},)")
        return np.flatnonzero(sel).astype(np.int64)
    if sel.size and not np.issubdtype(sel.dtype, np.integer):
        raise ValueError(f"{what} must be a boolean mask or integer positions, got {sel.dtype}")
    pos = np.unique(sel.astype(np.int64).ravel())
    if pos.size and (pos[0] < 0 or pos[-1] >= n):
        raise ValueError(f"{what} positions must lie in [0, {n})")
    return pos


def _check(in_mask: np.ndarray, signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    in_mask = np.asarray(in_mask, dtype=bool)
    signal = np.asarray(signal, dtype=np.float64)
    if in_mask.ndim != 2 or signal.shape != in_mask.shape:
        raise ValueError(f"in_mask {in_mask.shape} and signal {signal.shape} must both be K×N")
    if not np.isfinite(signal).all():
        raise ValueError("signal has non-finite values")
    return in_mask, signal


def standard_error(
    n_in: np.ndarray,
    n_out: np.ndarray,
    s_in: np.ndarray,
    s_out: np.ndarray,
    q_in: np.ndarray,
    q_out: np.ndarray,
) -> np.ndarray:
    """Welch standard error of ``mean_in − mean_out`` from group sizes, sums and sums of squares.

    A one-member group takes the pooled within-group variance ``(SS_in + SS_out) / (n_in + n_out − 2)``;
    with no degree of freedom at all, :data:`FALLBACK_VARIANCE`. NaN where a group is empty.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        ss_in = np.maximum(q_in - s_in * (s_in / n_in), 0.0)  # sums of squared deviations
        ss_out = np.maximum(q_out - s_out * (s_out / n_out), 0.0)
        ss_in = np.where(n_in > 0, ss_in, 0.0)
        ss_out = np.where(n_out > 0, ss_out, 0.0)
        dof = n_in + n_out - 2.0
        pooled = np.divide(ss_in + ss_out, dof, out=np.full(np.shape(dof), FALLBACK_VARIANCE), where=dof > 0)
        var_in = np.divide(ss_in, n_in - 1.0, out=pooled.copy(), where=n_in >= 2)
        var_out = np.divide(ss_out, n_out - 1.0, out=pooled, where=n_out >= 2)
        se = np.sqrt(var_in / n_in + var_out / n_out)
    return np.where((n_in > 0) & (n_out > 0), se, np.nan)


class _Kernel:
    """The K-axis operands shared by every block: the sources' membership and the targets' masked signals."""

    def __init__(self, in_mask: np.ndarray, signal: np.ndarray, sources: np.ndarray) -> None:
        self.in_src = np.ascontiguousarray(in_mask[:, sources], dtype=np.float64)  # K×m
        self.out = ~in_mask
        self.signal = signal

    def _operands(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out_t = self.out[:, targets].astype(np.float64)  # K×b
        return out_t, self.signal[:, targets] * out_t  # the signal on the members that did not train on it

    def influence(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(influence, n_in, n_out)`` of every (target, source) pair, ``|targets|×m`` (NaN: a group is empty)."""
        out_t, t = self._operands(targets)
        n_in = out_t.T @ self.in_src
        n_out = np.subtract(out_t.sum(axis=0)[:, None], n_in)
        mean_in = t.T @ self.in_src
        mean_out = np.subtract(t.sum(axis=0)[:, None], mean_in)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_in /= n_in
            mean_out /= n_out
        mean_in -= mean_out
        return mean_in, n_in, n_out

    def standard_error(self, targets: np.ndarray, sources: np.ndarray) -> np.ndarray:
        """Standard error of the pairs ``(targets[p], sources[p])`` (positions in this kernel's columns)."""
        out_t, t = self._operands(targets)
        in_s = self.in_src[:, sources]
        n_in, s_in, q_in = (out_t * in_s).sum(axis=0), (t * in_s).sum(axis=0), (t * t * in_s).sum(axis=0)
        n_out, s_out, q_out = out_t.sum(axis=0) - n_in, t.sum(axis=0) - s_in, (t * t).sum(axis=0) - q_in
        return standard_error(n_in, n_out, s_in, s_out, q_in, q_out)


def pair_statistics(
    in_mask: np.ndarray, signal: np.ndarray, targets: ArrayLike | None = None, sources: ArrayLike | None = None
) -> PairStatistics:
    """Influence, se and group sizes of every (target, source) pair: |targets|×|sources| arrays.

    For inspection and small problems (it holds every pair); :func:`fz_influence` is the blocked
    version. Pairs with ``source == target`` are computed like any other (their ``n_in`` is 0, so NaN).
    """
    in_mask, signal = _check(in_mask, signal)
    n = in_mask.shape[1]
    tgt, src = _positions(targets, n, "targets"), _positions(sources, n, "sources")
    kernel = _Kernel(in_mask, signal, src)
    influence, n_in, n_out = kernel.influence(tgt)
    rows, cols = np.meshgrid(tgt, np.arange(len(src)), indexing="ij")
    se = kernel.standard_error(rows.ravel(), cols.ravel()).reshape(influence.shape)
    return PairStatistics(influence, se, n_in, n_out)


def block_size(patterns: int, sources: int, memory_bytes: int) -> int:
    """Targets per block so that a block's work arrays stay within ``memory_bytes`` (at least 1).

    A block holds ~``BYTES_PER_PAIR`` per (target, source pattern) pair while computing the statistics and
    ~``BYTES_PER_SOURCE`` per (target, source) pair while picking the top ``k``.
    """
    per_target = BYTES_PER_PAIR * max(1, patterns) + BYTES_PER_SOURCE * max(1, sources)
    return max(1, int(memory_bytes) // per_target)


def source_patterns(in_mask: np.ndarray, sources: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct membership columns among ``sources``: one representative row each, and each source's pattern.

    Sources with the same column of ``in_mask`` have the same influence on every target, so the statistics
    are computed once per pattern. Returns ``(representatives, pattern_of_source)``.
    """
    if len(sources) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    packed = np.packbits(in_mask[:, sources], axis=0).T  # m×ceil(K/8)
    _, first, inverse = np.unique(packed, axis=0, return_index=True, return_inverse=True)
    return sources[first], inverse.reshape(-1).astype(np.int64)


def _first_of_each(groups: np.ndarray, count: int) -> np.ndarray:
    """Indices of the first ``count`` members (in index order) of each group, ascending."""
    order = np.argsort(groups, kind="stable")
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    within = np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    return np.sort(order[within < count]).astype(np.int64)


def _top_k(key: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the positions of the ``k`` largest finite ``key`` values: ``(rows, cols)`` sorted by row, rank.

    Ties go to the smaller column. ``key`` holds ``-inf`` for ineligible entries (never returned).
    """
    m = key.shape[1]
    k = min(k, m)
    if k == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    kth = np.partition(key, m - k, axis=1)[:, m - k : m - k + 1]  # the k-th largest of each row
    chosen = key >= kth
    chosen &= key > -np.inf
    crowded = np.flatnonzero(chosen.sum(axis=1) > k)  # rows with ties at the k-th value: lower columns first
    if len(crowded):
        sub, cut = key[crowded], kth[crowded]
        above = sub > cut
        ties = sub == cut
        room = k - above.sum(axis=1, keepdims=True)
        chosen[crowded] = above | (ties & (np.cumsum(ties, axis=1) <= room))
    rows, cols = np.nonzero(chosen)
    del chosen
    order = np.lexsort((cols, -key[rows, cols], rows))
    return rows[order].astype(np.int64), cols[order].astype(np.int64)


def fz_influence(
    in_mask: np.ndarray,
    signal: np.ndarray,
    targets: ArrayLike | None = None,
    sources: ArrayLike | None = None,
    top_k: int = 5,
    min_members: int = 1,
    memory_bytes: int = MEMORY_BYTES,
) -> InfluenceResult:
    """The ``top_k`` most influential sources of every target (Feldman & Zhang), in blocks of targets.

    Parameters
    ----------
    in_mask
        K×N bool: ``True`` where sample ``i`` is in member ``k``'s training subset.
    signal
        K×N float in ``[0, 1]``: ``Ensemble.correct()`` (Feldman & Zhang) or ``Ensemble.given_probability()``.
    targets, sources
        Rows to score and rows that may influence them: a boolean mask, integer positions, or ``None``
        (every row). A target is never its own source.
    top_k
        Sources kept per target (at least 1).
    min_members
        Pairs with fewer than this many members in either group are skipped (at least 1).
    memory_bytes
        Budget of one block's work arrays (|block|×|source patterns| statistics and
        |block|×|candidates| selection; the K×N inputs and the returned table aside).

    Returns
    -------
    InfluenceResult
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if min_members < 1:
        raise ValueError(f"min_members must be at least 1, got {min_members}")
    in_mask, signal = _check(in_mask, signal)
    n = in_mask.shape[1]
    tgt = _positions(targets, n, "targets")
    src = _positions(sources, n, "sources")
    representatives, pattern_of = source_patterns(in_mask, src)
    if 0 < len(representatives) < len(src):
        log.warning(
            "fz_influence: %d sources share %d membership patterns over %d members: sources with the same "
            "pattern get the same influence on every target (ties go to the lower row); more members "
            "(score.ensemble.members ≥ 20: independent rounds of subsets) tell the pairs apart",
            len(src),
            len(representatives),
            in_mask.shape[0],
        )
    # Candidates: the first top_k + 1 sources (by position) of each pattern — no other source can rank in a
    # target's top_k (ties go to lower positions; the +1 stands in for the target itself).
    cand = _first_of_each(pattern_of, top_k + 1)  # indices into src, ascending
    cand_pattern = pattern_of[cand]
    column_of = np.full(n, -1, dtype=np.int64)  # candidate column of each row (-1: not a candidate)
    column_of[src[cand]] = np.arange(len(cand))
    kernel = _Kernel(in_mask, signal, representatives)
    step = block_size(len(representatives), len(cand), memory_bytes)

    strongest = np.full(len(tgt), np.nan)
    strongest_se = np.full(len(tgt), np.nan)
    strongest_source = np.full(len(tgt), -1, dtype=np.int64)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, len(tgt) if len(src) else 0, step):
        block = tgt[start : start + step]
        influence, n_in, n_out = kernel.influence(block)  # per (target, pattern)
        influence[(n_in < min_members) | (n_out < min_members) | np.isnan(influence)] = -np.inf
        values = np.take(influence, cand_pattern, axis=1)  # per (target, candidate source)
        self_col = column_of[block]
        rows = np.flatnonzero(self_col >= 0)
        values[rows, self_col[rows]] = -np.inf
        r, c = _top_k(values, top_k)
        del values
        pat = cand_pattern[c]
        c = cand[c]
        infl = influence[r, pat]
        se = kernel.standard_error(block[r], pat)
        ranks = np.empty(0, dtype=np.int64)
        if len(r):
            starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
            ranks = np.arange(len(r)) - np.repeat(starts, np.diff(np.r_[starts, len(r)])) + 1
            strongest[start + r[starts]] = infl[starts]
            strongest_se[start + r[starts]] = se[starts]
            strongest_source[start + r[starts]] = src[c[starts]]
        parts.append(
            {
                "target": block[r],
                "source": src[c],
                "rank": ranks.astype(np.int64),
                "influence": infl,
                "se": se,
                "n_in": n_in[r, pat].astype(np.int64),
                "n_out": n_out[r, pat].astype(np.int64),
            }
        )
        del influence, n_in, n_out
    table = pd.DataFrame(
        {
            name: np.concatenate([p[name] for p in parts])
            if parts
            else np.empty(0, np.float64 if name in ("influence", "se") else np.int64)
            for name in COLUMNS
        }
    )
    return InfluenceResult(table, tgt, strongest, strongest_se, strongest_source)
