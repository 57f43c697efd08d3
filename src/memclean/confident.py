"""Confident learning: estimate which given labels are wrong from out-of-sample probabilities.

Pure-numpy implementation of Northcutt, Jiang & Chuang, "Confident Learning: Estimating
Uncertainty in Dataset Labels", JAIR 70 (2021), written from the paper and checked against
the behaviour of the reference library (cleanlab 2.x, ``cleanlab.count`` and
``cleanlab.filter``). cleanlab itself is AGPL and is never imported here.

Notation: ``N`` samples, ``K`` classes, ``probs`` the ``(N, K)`` out-of-sample predicted
probabilities ``p̂(ỹ = j; x)``, ``labels`` the given (possibly wrong) labels ``ỹ``. Every
``(K, K)`` joint is indexed **[given label, true label]**: row ``i`` counts samples whose
given label is ``i``, column ``j`` those the model confidently puts in class ``j``.

The steps, each a public function:

1. :func:`per_class_thresholds` — ``t_j``, the mean self-confidence of class ``j`` (paper eq. 2).
2. :func:`confident_joint` — the confident counts ``C[i, j]`` (paper eq. 1), calibrated by
   default so that row ``i`` sums to the number of samples labelled ``i`` (paper eq. 3;
   cleanlab ``calibrate_confident_joint``); :func:`calibrate_joint` does that step alone.
3. :func:`joint_distribution` and :func:`noise_matrix` — ``Q̂[i, j] = P(given=i, true=j)``
   and ``P(given=i | true=j)``.
4. :func:`estimated_issues` — how many labels are wrong: the off-diagonal mass.
5. :func:`find_issues` — which labels are wrong: prune by noise rate (paper §3.2) or the
   off-diagonal of the confident joint.
6. :func:`label_quality` / :func:`suspicion` — per-sample ranking scores.

:class:`ConfidentLearning` runs all of them once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from memclean.errors import MemcleanError

QualityMethod = Literal["self_confidence", "normalized_margin"]
IssueMethod = Literal["prune_by_noise_rate", "confident_off_diagonal"]
ArgmaxRule = Literal["confident", "overall"]

QUALITY_METHODS: tuple[str, ...] = ("self_confidence", "normalized_margin")
ISSUE_METHODS: tuple[str, ...] = ("prune_by_noise_rate", "confident_off_diagonal")
ARGMAX_RULES: tuple[str, ...] = ("confident", "overall")

#: Slack in ``p >= t`` comparisons and in "the model predicts the given label" (cleanlab's value).
FUZZ = 1e-6
#: Lower bound on a threshold, so a class whose mean self-confidence is 0 does not make every
#: sample "confident" in it (cleanlab clips at ``2 * FUZZ``).
MIN_THRESHOLD = 2 * FUZZ
#: Tolerance on probabilities: entries in ``[-PROB_TOL, 1 + PROB_TOL]``, rows summing to ``1 ± ROW_SUM_TOL``.
PROB_TOL = 1e-6
ROW_SUM_TOL = 1e-3


# --------------------------------------------------------------------------- validation


def _check_probs(probs: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """``probs`` as a float64 ``(N, K)`` array with ``N ≥ 1``, ``K ≥ 2``, rows on the simplex."""
    try:
        p = np.asarray(probs, dtype=np.float64)
    except (TypeError, ValueError):
        raise MemcleanError("confident learning: probs must be a numeric (N, K) array") from None
    if p.ndim != 2:
        raise MemcleanError(f"confident learning: probs must be a 2-D (N, K) array; got shape {p.shape}")
    n, k = p.shape
    if num_classes is not None and int(num_classes) != k:
        raise MemcleanError(f"confident learning: probs has {k} columns but num_classes is {num_classes}")
    if k < 2:
        raise MemcleanError(f"confident learning needs at least two classes; got {k}")
    if n == 0:
        raise MemcleanError("confident learning: probs has no rows")
    if not np.isfinite(p).all():
        raise MemcleanError(f"confident learning: probs has {int((~np.isfinite(p)).sum())} non-finite values")
    if p.min() < -PROB_TOL or p.max() > 1 + PROB_TOL:
        raise MemcleanError(
            f"confident learning: probs must lie in [0, 1]; got values in [{p.min():.6g}, {p.max():.6g}]"
        )
    sums = p.sum(axis=1)
    bad = np.abs(sums - 1.0) > ROW_SUM_TOL
    if bad.any():
        first = int(np.argmax(bad))
        raise MemcleanError(
            f"confident learning: each row of probs must sum to 1; {int(bad.sum())} rows do not "
            f"(row {first} sums to {sums[first]:.6g})"
        )
    return p


def _check_labels(labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    """``labels`` as an int64 ``(n,)`` array with values in ``[0, num_classes)``."""
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise MemcleanError(f"confident learning: labels must be a 1-D array of {n} labels; got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise MemcleanError(f"confident learning: labels must be integers; got dtype {y.dtype}")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise MemcleanError(
            f"confident learning: labels must be in [0, {num_classes}); got values in [{y.min()}, {y.max()}]"
        )
    return y


def _check_inputs(
    probs: np.ndarray, labels: np.ndarray, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    p = _check_probs(probs, num_classes)
    y = _check_labels(labels, p.shape[0], p.shape[1])
    return p, y, p.shape[1]


def _check_joint(joint: np.ndarray) -> np.ndarray:
    """``joint`` as a float64 ``(K, K)`` array of finite, non-negative entries."""
    try:
        c = np.asarray(joint, dtype=np.float64)
    except (TypeError, ValueError):
        raise MemcleanError("confident learning: the joint must be a numeric (K, K) array") from None
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] < 2:
        raise MemcleanError(f"confident learning: the joint must be a square (K, K) array, K ≥ 2; got shape {c.shape}")
    if not np.isfinite(c).all() or (c < 0).any():
        raise MemcleanError("confident learning: the joint must hold finite, non-negative counts")
    return c


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise MemcleanError(f"confident learning: unknown {what} {value!r}; choose one of {', '.join(choices)}")


# --------------------------------------------------------------------------- thresholds and joint


def per_class_thresholds(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class confidence thresholds ``t_j`` (paper eq. 2).

    ``t_j`` is the mean predicted probability of class ``j`` over the samples whose given
    label is ``j`` — the model's average self-confidence in class ``j``. It is clipped from
    below at :data:`MIN_THRESHOLD` (as cleanlab's ``get_confident_thresholds``).

    Parameters
    ----------
    probs
        ``(N, K)`` out-of-sample predicted probabilities; rows sum to 1.
    labels
        ``(N,)`` given labels, integers in ``[0, K)``.
    num_classes
        ``K``; must equal ``probs.shape[1]``.

    Returns
    -------
    numpy.ndarray
        ``(K,)`` float64 thresholds. A class with **no** sample labelled with it gets
        ``+inf``: no sample can be confidently counted into a class the dataset never uses
        (cleanlab uses the sentinel 2, which has the same effect on valid probabilities).

    Raises
    ------
    MemcleanError
        When ``probs`` or ``labels`` are malformed (one line).
    """
    p, y, k = _check_inputs(probs, labels, num_classes)
    counts = np.bincount(y, minlength=k)
    sums = np.bincount(y, weights=p[np.arange(len(y)), y], minlength=k)
    t = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)
    return np.maximum(t, MIN_THRESHOLD)


def _confident_class(p: np.ndarray, thresholds: np.ndarray, argmax: str) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: the class it is confidently counted into, and whether it is counted at all."""
    above = p >= thresholds[None, :] - FUZZ
    counted = np.asarray(above.any(axis=1), dtype=bool)
    if argmax == "confident":
        # Paper eq. 1: the argmax over the classes whose probability reaches their threshold.
        guess = np.where(above, p, -np.inf).argmax(axis=1)
    else:
        # cleanlab ≥ 2: the single confident class, or the overall argmax when several are confident.
        guess = np.where(above.sum(axis=1) > 1, p.argmax(axis=1), above.argmax(axis=1))
    return guess.astype(np.int64), counted


def _check_thresholds(thresholds: np.ndarray, k: int) -> np.ndarray:
    try:
        t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise MemcleanError("confident learning: thresholds must be a numeric (K,) array") from None
    if t.shape != (k,):
        raise MemcleanError(f"confident learning: thresholds must have {k} entries; got {t.size}")
    if np.isnan(t).any():
        raise MemcleanError("confident learning: thresholds must not be NaN")
    return t


def _round_preserving_row_totals(m: np.ndarray) -> np.ndarray:
    """Round each row to integers whose total is the row's rounded total.

    Rounds every entry half-to-even, then moves the missing (or extra) units onto the
    entries whose rounding was the furthest off: most rounded down when units are missing,
    most rounded up when there are too many — cleanlab's ``round_preserving_sum``. Ties are
    broken deterministically (adding: higher column first; removing: lower column first);
    cleanlab breaks them with numpy's unstable sort, so on exact ties (small counts) the two
    may put a unit in different cells of a row. Row totals are the same either way.
    """
    out = np.rint(m)
    for r in range(m.shape[0]):
        target = np.rint(m[r].sum())
        while abs(out[r].sum() - target) > 0.5:
            diff = int(np.rint(target - out[r].sum()))
            step = 1 if diff > 0 else -1
            order = np.argsort(m[r] - out[r], kind="stable")
            order = order[::-1] if step > 0 else order
            out[r, order[: min(abs(diff), m.shape[1])]] += step
    return out.astype(np.int64)


def calibrate_joint(counts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Calibrate confident counts so each row sums to its given-label count (paper eq. 3).

    As cleanlab's ``calibrate_confident_joint`` (with the diagonal floor its
    ``compute_confident_joint`` applies first):

    1. every diagonal cell is raised to at least 1 — each class keeps one confidently
       correct sample, so a row with no confident sample calibrates to "all correct";
    2. row ``i`` is rescaled to sum to ``|{x : ỹ = i}|``;
    3. the whole matrix is rescaled to sum to ``N`` (a no-op after 2 for single labels);
    4. each row is rounded to integers preserving its total (largest remainder).

    Rows of classes with no labelled sample are all zero.

    Parameters
    ----------
    counts
        ``(K, K)`` uncalibrated confident counts, ``[given, true]``.
    labels
        ``(N,)`` given labels in ``[0, K)``.

    Returns
    -------
    numpy.ndarray
        ``(K, K)`` int64 calibrated counts: row sums equal ``np.bincount(labels, minlength=K)``,
        total ``N``.
    """
    c = _check_joint(counts).copy()
    k = c.shape[0]
    y = _check_labels(labels, len(np.asarray(labels)), k)
    np.fill_diagonal(c, np.maximum(np.diag(c), 1.0))
    label_counts = np.bincount(y, minlength=k).astype(np.float64)
    cal = c / np.maximum(c.sum(axis=1), np.finfo(np.float64).tiny)[:, None] * label_counts[:, None]
    # Sum column by column, as cleanlab does (its joint is column-major), so that a value that
    # should be an exact .5 is off by the same ulp and rounds the same way.
    total = np.sum(np.ascontiguousarray(cal.T))
    if total > 0:
        cal = cal / total * label_counts.sum()
    return _round_preserving_row_totals(cal)


def confident_joint(
    probs: np.ndarray,
    labels: np.ndarray,
    thresholds: np.ndarray,
    *,
    calibrate: bool = True,
    argmax: ArgmaxRule = "confident",
) -> np.ndarray:
    """The confident joint ``C[i, j]``: samples labelled ``i`` confidently in class ``j`` (paper eq. 1).

    A sample is *confident in* class ``j`` when ``probs[x, j] ≥ t_j`` (with a slack of
    :data:`FUZZ`, as cleanlab). It is counted in row ``labels[x]``, column = its class:
    the argmax of ``probs[x]`` over the classes it is confident in. A sample confident in
    no class is not counted.

    Parameters
    ----------
    probs
        ``(N, K)`` out-of-sample predicted probabilities.
    labels
        ``(N,)`` given labels in ``[0, K)``.
    thresholds
        ``(K,)`` thresholds, normally :func:`per_class_thresholds`; ``+inf`` disables a class.
    calibrate
        ``True`` (default): return the **calibrated** joint (:func:`calibrate_joint`): integer
        counts whose row ``i`` sums to the number of samples labelled ``i`` and whose total is
        ``N``. ``False``: return the **raw** confident counts, exactly as defined above
        (no diagonal floor; total = number of counted samples).
    argmax
        ``"confident"`` (default): the argmax among the confident classes, as the paper's eq. 1.
        ``"overall"``: cleanlab's vectorised rule — the overall argmax of ``probs[x]`` when the
        sample is confident in two or more classes (it can then land in a class whose own
        threshold it misses; the two rules differ only then).

    Returns
    -------
    numpy.ndarray
        ``(K, K)`` int64 counts, ``[given, true]``.
    """
    p, y, k = _check_inputs(probs, labels)
    _check_choice(argmax, ARGMAX_RULES, "argmax rule")
    t = _check_thresholds(thresholds, k)
    guess, counted = _confident_class(p, t, argmax)
    raw = np.bincount(y[counted] * k + guess[counted], minlength=k * k).reshape(k, k).astype(np.int64)
    return calibrate_joint(raw, y) if calibrate else raw


# --------------------------------------------------------------------------- derived estimates


def joint_distribution(joint: np.ndarray) -> np.ndarray:
    """The estimated joint distribution ``Q̂[i, j] = P(given = i, true = j)``.

    The (calibrated) joint divided by its total, so it sums to 1 and its row sums are the
    given-label priors ``P(given = i)`` (cleanlab ``estimate_joint``).

    Parameters
    ----------
    joint
        ``(K, K)`` counts, ``[given, true]``, normally ``confident_joint(..., calibrate=True)``.

    Returns
    -------
    numpy.ndarray
        ``(K, K)`` float64 summing to 1 (all zeros if the joint is all zeros).
    """
    c = _check_joint(joint)
    total = c.sum()
    return c / total if total > 0 else c


def noise_matrix(joint: np.ndarray) -> np.ndarray:
    """The noise matrix ``P(given = i | true = j)``: how each true class is relabelled.

    Column ``j`` of the joint divided by its sum (paper §3.1; cleanlab ``estimate_latent``'s
    ``noise_matrix`` before its clipping), so **each column sums to 1** and the diagonal
    ``[j, j]`` is the probability that a sample of true class ``j`` kept its label. A column
    with no mass (no sample counted into true class ``j``) is the identity column: no noise
    is estimated for a class nothing was counted into. The joint itself, normalised to sum
    to 1, is :func:`joint_distribution`.

    Parameters
    ----------
    joint
        ``(K, K)`` counts, ``[given, true]``, normally ``confident_joint(..., calibrate=True)``.

    Returns
    -------
    numpy.ndarray
        ``(K, K)`` float64, columns summing to 1.
    """
    c = _check_joint(joint)
    cols = c.sum(axis=0)
    out = np.where(cols > 0, c / np.where(cols > 0, cols, 1.0), 0.0)
    empty = cols <= 0
    out[:, empty] = np.eye(c.shape[0])[:, empty]
    return out


def estimated_issues(joint: np.ndarray, n: int | None = None) -> int:
    """Estimated number of wrong labels: the joint's off-diagonal mass times ``n``.

    ``round(n · (1 − trace(joint) / sum(joint)))``. With the calibrated joint (whose total is
    ``N``) and ``n`` left out, this is exactly the sum of its off-diagonal cells and equals
    cleanlab's ``num_label_issues(..., estimation_method="off_diagonal_calibrated")``.

    cleanlab's *default* ``estimation_method="off_diagonal"`` is different and needs the
    samples, not just a joint: it counts the samples in the off-diagonal of the
    **uncalibrated** joint whose argmax prediction is not their given label — that is
    ``find_issues(..., method="confident_off_diagonal").sum()`` here
    (:attr:`ConfidentLearning.num_confident_off_diagonal`). cleanlab's docs note it can
    undercount with few classes; the calibrated estimate used here is the paper's.

    Parameters
    ----------
    joint
        ``(K, K)`` counts or probabilities, ``[given, true]``.
    n
        Number of samples to scale to; default: the joint's total (right for counts).

    Returns
    -------
    int
        The estimated count (0 for an all-zero joint).
    """
    c = _check_joint(joint)
    total = c.sum()
    if total <= 0:
        return 0
    scale = total if n is None else float(n)
    if scale < 0:
        raise MemcleanError(f"confident learning: n must be ≥ 0; got {n}")
    return int(np.rint(scale * (1.0 - np.trace(c) / total)))


# --------------------------------------------------------------------------- per-sample scores


def _quality(p: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    rows = np.arange(len(y))
    self_conf = p[rows, y]
    if method == "self_confidence":
        q = self_conf
    else:
        others = p.copy()
        others[rows, y] = -np.inf
        q = (self_conf - others.max(axis=1) + 1.0) / 2.0
    return np.clip(q, 0.0, 1.0)


def label_quality(probs: np.ndarray, labels: np.ndarray, method: QualityMethod = "self_confidence") -> np.ndarray:
    """Per-sample label quality in ``[0, 1]``; **lower** = more likely mislabelled.

    As cleanlab's ``rank.get_label_quality_scores`` (``adjust_pred_probs=False``):

    * ``self_confidence``: ``p[x, ỹ]``, the probability of the given label;
    * ``normalized_margin``: ``(p[x, ỹ] − max_{j≠ỹ} p[x, j] + 1) / 2``.

    Parameters
    ----------
    probs
        ``(N, K)`` out-of-sample predicted probabilities.
    labels
        ``(N,)`` given labels in ``[0, K)``.
    method
        ``"self_confidence"`` or ``"normalized_margin"``.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64 in ``[0, 1]``.
    """
    _check_choice(method, QUALITY_METHODS, "quality method")
    p, y, _ = _check_inputs(probs, labels)
    return _quality(p, y, method)


def suspicion(probs: np.ndarray, labels: np.ndarray, method: QualityMethod = "self_confidence") -> np.ndarray:
    """``1 − label_quality(probs, labels, method)``: higher = more suspicious, as every memclean score.

    Parameters
    ----------
    probs
        ``(N, K)`` out-of-sample predicted probabilities.
    labels
        ``(N,)`` given labels in ``[0, K)``.
    method
        ``"self_confidence"`` or ``"normalized_margin"``.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64 in ``[0, 1]``.
    """
    return 1.0 - label_quality(probs, labels, method)


# --------------------------------------------------------------------------- finding the issues


def _prune_counts(cal: np.ndarray, label_counts: np.ndarray) -> np.ndarray:
    """How many samples to prune from each off-diagonal cell of the calibrated joint.

    Every given class keeps at least one sample (cleanlab's ``min_examples_per_class=1``):
    when a row's diagonal is 0 it is set to 1 and the row's non-zero off-diagonal cells are
    reduced uniformly by the missing unit, clipped at 0 and floored.
    """
    m = cal.astype(np.float64).copy()
    for i in np.flatnonzero((np.diag(m) < 1) & (label_counts > 0)):
        off = m[i].copy()
        off[i] = 0.0
        nonzero = max(int(np.count_nonzero(off)), 1)
        off = np.floor(np.maximum(off - (1.0 - m[i, i]) / nonzero, 0.0))
        off[i] = 1.0
        m[i] = off
    np.fill_diagonal(m, 0.0)
    return m.astype(np.int64)


def _agrees_with_prediction(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Samples whose given label is the model's argmax (ties within :data:`FUZZ` go to the label)."""
    return p[np.arange(len(y)), y] + FUZZ >= p.max(axis=1)


def find_issues(
    probs: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    method: IssueMethod = "prune_by_noise_rate",
    *,
    argmax: ArgmaxRule = "confident",
) -> np.ndarray:
    """Boolean mask of the samples whose given label is estimated to be wrong.

    * ``prune_by_noise_rate`` (paper §3.2, "PBNR"; cleanlab's default ``filter_by``): compute
      the calibrated joint; for each off-diagonal cell ``(i, j)`` flag the ``n_ij = joint[i, j]``
      samples labelled ``i`` with the largest margin ``p[x, j] − p[x, i]`` (ties: lower index
      first). A sample may be picked by several cells; the mask is their union. Each given
      class keeps at least one sample and a class with a single sample is never pruned
      (cleanlab's ``min_examples_per_class=1``).
    * ``confident_off_diagonal`` (paper's ``C_{ỹ,y*}``; cleanlab ``filter_by="confident_learning"``):
      flag the samples counted off the diagonal of the (uncalibrated) confident joint.

    In both, a sample whose given label is the model's argmax prediction is never flagged
    (as cleanlab). ``find_issues(..., "confident_off_diagonal").sum()`` equals cleanlab's
    default ``count.num_label_issues``.

    Parameters
    ----------
    probs
        ``(N, K)`` out-of-sample predicted probabilities.
    labels
        ``(N,)`` given labels in ``[0, K)``.
    num_classes
        ``K``; must equal ``probs.shape[1]``.
    method
        ``"prune_by_noise_rate"`` or ``"confident_off_diagonal"``.
    argmax
        Which class a sample confident in several classes is counted into; see
        :func:`confident_joint`.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` bool, ``True`` = likely mislabelled.
    """
    _check_choice(method, ISSUE_METHODS, "issue method")
    _check_choice(argmax, ARGMAX_RULES, "argmax rule")
    p, y, k = _check_inputs(probs, labels, num_classes)
    thresholds = per_class_thresholds(p, y, k)
    guess, counted = _confident_class(p, thresholds, argmax)
    if method == "confident_off_diagonal":
        flagged = counted & (guess != y)
    else:
        raw = np.bincount(y[counted] * k + guess[counted], minlength=k * k).reshape(k, k)
        label_counts = np.bincount(y, minlength=k)
        prune = _prune_counts(calibrate_joint(raw, y), label_counts)
        flagged = np.zeros(len(y), dtype=bool)
        for i in range(k):
            members = np.flatnonzero(y == i)
            if len(members) <= 1:
                continue
            for j in np.flatnonzero(prune[i] > 0):
                margin = p[members, j] - p[members, i]
                order = np.lexsort((members, -margin))  # largest margin first, then lower index
                flagged[members[order[: prune[i, j]]]] = True
    return flagged & ~_agrees_with_prediction(p, y)


# --------------------------------------------------------------------------- bundle


@dataclass(frozen=True, eq=False)
class ConfidentLearning:
    """Every confident-learning estimate for one ``(probs, labels)`` pair.

    Attributes
    ----------
    thresholds
        ``(K,)`` per-class thresholds (:func:`per_class_thresholds`; ``+inf`` for unused classes).
    raw_joint
        ``(K, K)`` int64 uncalibrated confident counts ``[given, true]``.
    joint
        ``(K, K)`` int64 calibrated joint: row sums = given-label counts, total ``N``.
    noise_matrix
        ``(K, K)`` ``P(given = i | true = j)``, columns summing to 1 (:func:`noise_matrix`).
    estimated_issues
        Estimated number of wrong labels: off-diagonal sum of :attr:`joint`.
    num_confident_off_diagonal
        Samples off the diagonal of :attr:`raw_joint` not predicted as their given label
        (cleanlab's default ``num_label_issues``).
    suspicion
        ``(N,)`` per-sample score in ``[0, 1]``, higher = more suspicious (:func:`suspicion`).
    issues
        ``(N,)`` bool mask from :func:`find_issues`.
    method, prune
        The suspicion method and the issue-finding method used.
    """

    thresholds: np.ndarray
    raw_joint: np.ndarray
    joint: np.ndarray
    noise_matrix: np.ndarray
    estimated_issues: int
    num_confident_off_diagonal: int
    suspicion: np.ndarray
    issues: np.ndarray
    method: str
    prune: str

    @property
    def joint_distribution(self) -> np.ndarray:
        """``P(given = i, true = j)``: :attr:`joint` normalised to sum 1."""
        return joint_distribution(self.joint)

    @classmethod
    def from_probs(
        cls,
        probs: np.ndarray,
        labels: np.ndarray,
        num_classes: int,
        method: QualityMethod = "self_confidence",
        *,
        prune: IssueMethod = "prune_by_noise_rate",
        argmax: ArgmaxRule = "confident",
    ) -> ConfidentLearning:
        """Run confident learning on out-of-sample ``probs`` and given ``labels``.

        Parameters
        ----------
        probs
            ``(N, K)`` out-of-sample predicted probabilities; rows sum to 1.
        labels
            ``(N,)`` given labels in ``[0, K)``.
        num_classes
            ``K``; must equal ``probs.shape[1]``.
        method
            Per-sample suspicion score: ``"self_confidence"`` or ``"normalized_margin"``.
        prune
            Issue mask: ``"prune_by_noise_rate"`` or ``"confident_off_diagonal"``.
        argmax
            ``"confident"`` (paper) or ``"overall"`` (cleanlab); see :func:`confident_joint`.

        Raises
        ------
        MemcleanError
            Malformed inputs or an unknown method (one line).
        """
        _check_choice(method, QUALITY_METHODS, "quality method")
        _check_choice(prune, ISSUE_METHODS, "issue method")
        _check_choice(argmax, ARGMAX_RULES, "argmax rule")
        p, y, k = _check_inputs(probs, labels, num_classes)
        thresholds = per_class_thresholds(p, y, k)
        raw = confident_joint(p, y, thresholds, calibrate=False, argmax=argmax)
        cal = calibrate_joint(raw, y)
        return cls(
            thresholds=thresholds,
            raw_joint=raw,
            joint=cal,
            noise_matrix=noise_matrix(cal),
            estimated_issues=estimated_issues(cal),
            num_confident_off_diagonal=int(find_issues(p, y, k, "confident_off_diagonal", argmax=argmax).sum()),
            suspicion=1.0 - _quality(p, y, method),
            issues=find_issues(p, y, k, prune, argmax=argmax),
            method=method,
            prune=prune,
        )
