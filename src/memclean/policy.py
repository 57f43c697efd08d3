"""Cleaning decisions: which rows to keep, and why the others go.

Every input row comes out with ``keep`` and, when not kept, one
``drop_reason`` (the first that applies, in this order):

1. quarantined at ingest → its ingest reason;
2. ``conflicting_duplicate`` — a duplicate group whose labels disagree (all members);
3. ``split_leak`` — members of a group that also reaches a held-out split
   (``test``/``val``/…) and that are not themselves held-out;
4. ``exact_duplicate`` — every copy but the first of a set of identical images;
5. ``near_duplicate`` — with ``drop_near_duplicates`` (see :func:`near_drop_rule`), every
   member but the first of a duplicate group within one split (edited copies of one photo;
   identical ones are ``exact_duplicate`` first);
6. ``nonfinite_score`` — the chosen scorer gave no finite score;
7. ``suspected_label_error`` — a **likely mislabeled** row (below), at most
   ``min(estimated label errors, max_drop_fraction × ok rows)`` of them, highest
   scores first.

Rules 6–7 are the rules *by score*. They drop nothing when the validation gate
failed (a failed scorer decides nothing), with ``score_action="flag"`` (rule 7),
or for a row of a held-out split (:data:`~memclean.schema.HELDOUT_SPLITS`)
unless ``drop_heldout_by_score`` is set.

What the score says about a row is recorded whatever is then done with it, so
it means the same whether the gate passed or not:

* ``suspected`` — the row is ok, its score is finite and at or above the
  threshold (:func:`threshold_by_estimated_precision`: the lowest score whose
  rows are estimated to reach ``target_precision`` on this data, the false
  positives estimated from how validate's unflipped rows score): the network
  had to memorize it;
* ``suspicion`` — for suspected rows, ``likely_mislabeled`` when the label is
  also contradicted out of sample — by default (``likely_rule: disagreement``)
  the subset ensemble's out-of-sample prediction is another class
  (``confident_learning_disagrees``); with ``likely_rule: confident_learning``
  confident learning must mark the row as a label issue
  (``confident_learning_issue``, stricter) — and ``atypical`` otherwise (a hard
  or rare but probably correct image: kept and flagged); null for the others.
  Without those columns (ensemble scorers disabled) every suspected row is
  ``likely_mislabeled``: the threshold alone decides, and the summary says so.

No rule ever removes the last kept sample of a class: such a sample is kept
and its ``drop_reason`` cleared.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from memclean.errors import MemcleanError
from memclean.gate import Gate
from memclean.options import CleanParams
from memclean.schema import HELDOUT_SPLITS, Reason, Status

log = logging.getLogger(__name__)


#: The ``clean`` params are the policy: defaults, types and ranges live in :mod:`memclean.options`.
CleanPolicy = CleanParams

#: ``suspicion`` of a suspected row that confident learning marks as a label issue (or of every
#: suspected row when confident learning did not run).
LIKELY_MISLABELED = "likely_mislabeled"
#: ``suspicion`` of a suspected row that confident learning does not mark: atypical but probably correct.
ATYPICAL = "atypical"
#: The column of ``scores.parquet`` holding confident learning's verdict (1.0: a label issue).
CL_ISSUE = "confident_learning_issue"
#: The column of ``scores.parquet``: 1.0 when the out-of-sample prediction is another class than the label.
CL_DISAGREES = "confident_learning_disagrees"
#: Out-of-sample probability of ``suggested_label`` (confident learning), shown as ``suggested_confidence``.
CL_SUGGESTED_P = "confident_learning_suggested_p"
#: The manifest column with :data:`LIKELY_MISLABELED` / :data:`ATYPICAL` / null.
SUSPICION = "suspicion"  # manifest column: likely_mislabeled / atypical / null
#: Below this final training accuracy the proxy network has not fit its labels (gate advice).
LOW_TRAIN_ACCURACY = 0.95
#: Two-sided 95 % normal quantile, for the Wilson interval.
_Z95 = 1.959963984540054


def wilson_interval(k: int, n: int, z: float = _Z95) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion ``k / n`` (``None`` when ``n`` is 0)."""
    if n <= 0:
        return None
    p = min(max(k / n, 0.0), 1.0)
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k <= 0 else max(0.0, centre - half)
    high = 1.0 if k >= n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class NoiseEstimate:
    """Confident learning's estimate of how many given labels are wrong (``noise_matrix.json``).

    ``errors`` is the off-diagonal mass of the calibrated confident joint, over
    ``n`` rows (the joint's total). The 95 % interval is Wilson's for a
    binomial ``errors / n``: it covers the sampling uncertainty of the rate, not
    the estimator's own bias (which grows when the out-of-sample probabilities
    are poor).
    """

    errors: int | None
    n: int

    @classmethod
    def from_report(cls, report: Mapping[str, Any] | None, n_rows: int) -> NoiseEstimate:
        """Read ``noise_matrix.json``'s dict; not ``available`` (or missing) gives ``errors=None``."""
        if not report or not report.get("available") or report.get("estimated_label_errors") is None:
            return cls(None, n_rows)
        joint = report.get("joint")
        total = int(np.asarray(joint, dtype=np.int64).sum()) if joint else 0
        return cls(int(report["estimated_label_errors"]), total or n_rows)

    @property
    def rate(self) -> float | None:
        """Estimated noise rate, ``errors / n``."""
        return None if self.errors is None or self.n <= 0 else self.errors / self.n

    def to_dict(self) -> dict[str, Any]:
        """The ``clean.json`` keys: ``estimated_label_errors``, ``estimated_noise_rate``, ``noise_rate_ci95``..."""
        ci = wilson_interval(self.errors, self.n) if self.errors is not None else None
        rate = self.rate
        return {
            "estimated_label_errors": self.errors,
            "estimated_noise_rate": None if rate is None else round(rate, 6),
            "noise_rate_ci95": None if ci is None else [round(ci[0], 6), round(ci[1], 6)],
            "noise_estimate": {
                "source": "confident learning (noise_matrix.json)" if self.errors is not None else "not available",
                "rows": self.n,
                "interval": "Wilson score interval, 95 %, binomial in rows: sampling uncertainty only",
            },
        }


#: What each ``decision_rule`` adds to the score rule, in words.
RULE_TEXT = {
    "score_and_disagreement": " and the ensemble's out-of-sample prediction is another class than the label",
    "score_and_confident_learning": " and confident learning marks a label issue",
    "score_only": "; no confident-learning column (ensemble scorers off): the threshold alone decides",
}


def likely_rule(wanted: str, verdicts: Mapping[str, np.ndarray]) -> tuple[str, np.ndarray | None]:
    """Which verdict makes a suspected row *likely mislabeled*: ``(decision_rule, mask or None)``.

    ``disagreement`` reads :data:`CL_DISAGREES` and ``confident_learning`` :data:`CL_ISSUE`;
    when the wanted column is absent (scores from an older run) the other one is used, and
    with neither, every suspected row is likely mislabeled (``score_only``).
    """
    rules = {CL_DISAGREES: "score_and_disagreement", CL_ISSUE: "score_and_confident_learning"}
    order = [CL_DISAGREES, CL_ISSUE] if wanted == "disagreement" else [CL_ISSUE, CL_DISAGREES]
    for column in order:
        if column in verdicts:
            return rules[column], verdicts[column]
    return "score_only", None


@dataclass(frozen=True)
class Threshold:
    """The score threshold of ``clean`` and what it is expected to achieve on this dataset."""

    value: float | None
    estimated_precision: float | None
    expected_false_positives: float | None
    rows_above: int
    precision_on_injected: float | None = None
    decided_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``clean.json`` keys."""

        def r(x: float | None) -> float | None:
            return None if x is None else round(float(x), 6)

        return {
            "threshold": self.value,
            "estimated_precision": r(self.estimated_precision),
            "expected_false_positives": r(self.expected_false_positives),
            "precision_on_injected": r(self.precision_on_injected),
            "threshold_decided_by": self.decided_by,
            "rows_above_threshold": self.rows_above,
        }


def _above(sorted_values: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """How many of ``sorted_values`` are ``≥`` each candidate."""
    return len(sorted_values) - np.searchsorted(sorted_values, candidates, side="left")


def _finite_sorted(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return np.sort(v[np.isfinite(v)])


def threshold_by_estimated_precision(
    scores: np.ndarray,
    null_scores: np.ndarray,
    expected_correct: float,
    target: float,
    injected_scores: np.ndarray | None = None,
) -> Threshold:
    """Lowest score ``t`` at which the rows of ``scores`` scoring ``≥ t`` are estimated to reach ``target`` precision.

    Two estimates of the precision of ``{scores ≥ t}``; ``t`` is the lowest score at
    which either reaches ``target``:

    * **from the data** (``decided_by: "data"``): correct rows are assumed to score like
      ``null_scores`` (validate's unflipped rows outside the suspected own errors), so
      ``FP(t) = expected_correct · P(null ≥ t)`` of the ``count(t)`` rows above ``t`` are
      correct and the precision is ``1 − FP(t) / count(t)`` (an empirical false-discovery
      rate). The dataset's own errors that score high are not counted as false positives.
    * **on the injected noise** (``decided_by: "injected"``, when ``injected_scores`` is
      given): flips above ``t`` over flips and null rows above ``t``, i.e. the precision
      at which the injected flips are found among the measured rows.

    Both err on the safe side in the same way: the null rows still hold the dataset's own
    errors that confident learning did not flag, and those score high. The first
    suffers when many remain (confident learning misses many errors); the second
    reflects the injected rate rather than the dataset's own, and suffers when the
    injected flips are as hard as the own errors. Neither needs the other's assumption.

    Parameters
    ----------
    scores
        The scores of the data as given (higher = more suspicious); non-finite ones ignored.
    null_scores
        Scores of rows with a correct label, from the same scorer (non-finite ones ignored).
    expected_correct
        How many rows of ``scores`` are expected to carry a correct label (rows − estimated errors).
    target
        Precision to reach, in ``(0, 1]``.
    injected_scores
        Scores of the injected flips among the measured rows, or ``None``.

    Returns
    -------
    Threshold
        ``value`` is ``None`` when no threshold reaches the target (or an input is empty).
    """
    x = _finite_sorted(scores)
    null = _finite_sorted(null_scores)
    if not len(x) or not len(null):
        return Threshold(None, None, None, 0)
    candidates = np.unique(x)[::-1]
    rows_above = _above(x, candidates)
    null_above = _above(null, candidates)
    false_pos = np.minimum(rows_above, max(float(expected_correct), 0.0) * null_above / len(null))
    from_data = 1.0 - false_pos / rows_above
    on_injected = np.zeros_like(from_data)
    if injected_scores is not None:
        flips_above = _above(_finite_sorted(injected_scores), candidates)
        with np.errstate(invalid="ignore", divide="ignore"):
            on_injected = np.where(flips_above > 0, flips_above / (flips_above + null_above), 0.0)
    precision = np.maximum(from_data, on_injected)
    reaches = np.flatnonzero(precision >= target - 1e-12)
    if not len(reaches):
        return Threshold(None, None, None, 0)
    i = int(reaches.max())  # the lowest such threshold
    return Threshold(
        float(candidates[i]),
        float(from_data[i]),
        float(false_pos[i]),
        int(rows_above[i]),
        float(on_injected[i]) if injected_scores is not None else None,
        "data" if from_data[i] >= target - 1e-12 else "injected",
    )


def gate_advice(
    gate: Gate,
    validation: Mapping[str, Any] | None = None,
    score_report: Mapping[str, Any] | None = None,
    suspected: int = 0,
) -> list[str]:
    """Short, actionable advice when the validation gate failed (``[]`` when it passed).

    Parameters
    ----------
    gate
        The gate ``clean`` applied.
    validation
        ``validation.json`` (per-scorer AUROC, the injected noise).
    score_report
        ``score.json`` (``final_train_accuracy`` of the proxy network, the scorers that ran).
    suspected
        Rows at or above the threshold (flagged, not dropped).
    """
    if gate.passed:
        return []
    validation = validation or {}
    score_report = score_report or {}
    advice: list[str] = []
    noise = validation.get("noise") or {}
    if gate.scorer is None or (gate.auroc is None and "produced no scores" in gate.reason):
        advice.append(
            f"scorer {gate.scorer!r} produced no scores: enable a scorer in score.scorers or set validate.scorer: best"
        )
    elif gate.auroc is None:
        advice.append(
            f"the injected noise flipped {noise.get('flipped', 0)} labels, so nothing could be measured: "
            "set inject.rate between 0 and 1 (e.g. 0.1)"
        )
    accuracy = score_report.get("final_train_accuracy")
    if isinstance(accuracy, int | float) and accuracy < LOW_TRAIN_ACCURACY:
        advice.append(
            f"the proxy network fit only {accuracy:.1%} of its training labels (memorization scores need "
            f"≥ {LOW_TRAIN_ACCURACY:.0%}): raise score.trainer.epochs or score.trainer.width"
        )
    elif gate.auroc is not None:
        fit = f"the proxy network fits its labels ({accuracy:.1%}) but " if isinstance(accuracy, int | float) else ""
        scorers = validation.get("scorers") or {}
        better = [
            (float(r["auroc"]), name)
            for name, r in scorers.items()
            if (r or {}).get("auroc") is not None
            and float(r["auroc"]) >= gate.min_auroc
            and name != gate.scorer
            and (r or {}).get("ranks_label_errors", True)
        ]
        if better:
            auroc, name = max(better)
            advice.append(
                f"{fit}{gate.scorer} separates the injected noise poorly; {name} reaches AUROC {auroc:.4f}: "
                f"set validate.scorer: best (or clean.scorer: {name})"
            )
        else:
            ran = set(score_report.get("scorers") or scorers)
            missing = [s for s in ("fz_memorization", "cscore", "confident_learning") if s not in ran]
            enable = f"enable the ensemble scorers ({', '.join(missing)}) in score.scorers" if missing else ""
            more = "train more ensemble members (score.ensemble.members or budget)"
            advice.append(
                f"{fit}no scorer reaches validate.min_auroc {gate.min_auroc}: "
                + (f"{enable}, or {more}" if enable else more)
            )
    advice.append(
        f"nothing was dropped by score; the {suspected} rows above the threshold are only flagged "
        "(suspected): review them with `memclean show`; once the gate passes, clean.score_action: flag "
        "still only flags them"
    )
    return advice


@dataclass
class CleanResult:
    """The manifest and a summary of the decisions."""

    manifest: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def near_drop_rule(setting: bool | str, dedup: Mapping[str, Any] | None) -> tuple[bool, str]:
    """Whether near-duplicate groups are thinned to one member per split, and why.

    Parameters
    ----------
    setting
        ``clean.drop_near_duplicates``: ``True``, ``False`` or ``"auto"``.
    dedup
        The dedup stage's ``dedup.json`` (``None`` when missing). Its ``hash_candidates``
        says whether the images were large enough (``dedup.min_hash_side``) for the near
        tier to mean *one photo edited*: hash candidates, the colour and the local checks.
        On smaller images (8×8 digits) "near" only means very alike — different
        handwriting of one digit — so ``auto`` keeps them.

    Returns
    -------
    tuple[bool, str]
        The decision and a one-line reason for ``clean.json``.
    """
    if setting != "auto":
        on = bool(setting)
        return on, f"clean.drop_near_duplicates: {str(on).lower()}"
    if dedup is None:
        return False, "auto: off (no dedup.json to tell whether the near tier was verified as photos)"
    if dedup.get("hash_candidates"):
        return True, "auto: on (images large enough for the photo checks: one of each near group kept per split)"
    return False, "auto: off (images under dedup.min_hash_side: near means very alike, not one photo; only reported)"


def decide(
    samples: pd.DataFrame,
    duplicates: pd.DataFrame,
    scores: pd.DataFrame,
    policy: CleanPolicy,
    scorer: str | None,
    threshold: float | None,
    gate_passed: bool,
    classes: list[str] | None = None,
    noise: Mapping[str, Any] | None = None,
    dedup: Mapping[str, Any] | None = None,
) -> CleanResult:
    """Apply the cleaning rules to every input row.

    Parameters
    ----------
    samples
        The ingest samples table (every input row).
    duplicates
        The dedup table.
    scores
        ``sample_id``, ``<scorer>_score`` columns, ``suggested_label`` and (when confident
        learning ran) ``confident_learning_issue`` for the ok rows.
    policy
        The rules' settings.
    scorer
        Name of the scorer whose score drops samples (``None``: none).
    threshold
        Score threshold from validation (``None``: none reached the target precision).
    gate_passed
        Whether the validation gate passed; when not, nothing is dropped by score.
    classes
        Class names, for the per-class counts.
    noise
        ``noise_matrix.json`` (confident learning's estimate); its ``estimated_label_errors``
        caps the rows dropped by score.
    dedup
        The dedup stage's ``dedup.json``: decides ``drop_near_duplicates: auto``
        (:func:`near_drop_rule`).

    Returns
    -------
    CleanResult
        ``manifest`` has one row per row of ``samples``, in the same order.
    """
    m = samples.reset_index(drop=True).copy()
    n_in = len(m)
    score_cols = [c for c in scores.columns if c.endswith("_score")]
    extra = scores.set_index("sample_id")
    if not extra.index.is_unique:
        raise MemcleanError("scores.parquet has repeated sample_id values")
    wanted = score_cols + [c for c in ("suggested_label", CL_ISSUE, CL_DISAGREES, CL_SUGGESTED_P) if c in extra]
    m = m.join(extra[wanted], on="sample_id")
    confidence = m.pop(CL_SUGGESTED_P) if CL_SUGGESTED_P in m else pd.Series(np.nan, index=m.index)
    verdicts = {
        c: m.pop(c).to_numpy(dtype=np.float64, na_value=np.nan) == 1.0 for c in (CL_ISSUE, CL_DISAGREES) if c in m
    }
    rule, cl_issue = likely_rule(policy.likely_rule, verdicts)
    if "suggested_label" not in m:
        m["suggested_label"] = pd.NA
    dup = duplicates.set_index("sample_id")
    m["dup_group"] = m["sample_id"].map(dup["group_id"]).astype("Int64")

    ok = (m["status"] == Status.OK.value).to_numpy()
    n_ok = int(ok.sum())
    reason = pd.Series(pd.NA, index=m.index, dtype="string")
    reason[~ok] = m.loc[~ok, "reason"].astype("string")
    heldout = m["split"].isin(HELDOUT_SPLITS).to_numpy(dtype=bool)

    def mark(mask: np.ndarray, code: Reason) -> None:
        free = mask & ok & reason.isna().to_numpy()
        reason[free] = code.value

    in_group = m["dup_group"].notna().to_numpy()
    if policy.drop_conflicting_duplicates and in_group.any():
        conflict = m["sample_id"].map(dup["label_conflict"]).fillna(False).to_numpy(dtype=bool)
        mark(conflict, Reason.CONFLICTING_DUPLICATE)
    if policy.drop_split_leaks and in_group.any():
        cross = m["sample_id"].map(dup["cross_split"]).fillna(False).to_numpy(dtype=bool)
        groups_heldout = set(m.loc[in_group & heldout, "dup_group"].dropna())
        reaches_heldout = m["dup_group"].isin(groups_heldout).fillna(False).to_numpy(dtype=bool)
        mark(cross & reaches_heldout & ~heldout, Reason.SPLIT_LEAK)
    if policy.drop_exact_duplicates:
        digest = m["pixel_sha256"].where(ok)
        later_copy = digest.notna().to_numpy() & digest.duplicated(keep="first").to_numpy()
        mark(later_copy, Reason.EXACT_DUPLICATE)
    drop_near, near_note = near_drop_rule(policy.drop_near_duplicates, dedup)
    if drop_near and in_group.any():
        # One of each near group per split: every later member of the group in that split goes.
        members = m.loc[in_group & ok, ["dup_group", "split"]]
        later = np.zeros(n_in, dtype=bool)
        later[members.index[members.duplicated(keep="first")]] = True
        mark(later, Reason.NEAR_DUPLICATE)

    estimate = NoiseEstimate.from_report(noise, n_ok)
    by_score_allowed = ~heldout | policy.drop_heldout_by_score
    suspected = np.zeros(n_in, dtype=bool)
    likely = np.zeros(n_in, dtype=bool)
    nonfinite = 0
    cap: int | None = None
    capped = 0
    heldout_spared = 0
    score_note = "no scorer chosen"
    if scorer is not None:
        col = f"{scorer}_score"
        if col not in m:
            raise MemcleanError(f"scores.parquet has no column {col!r}; scorers present: {score_cols}")
        values = m[col].to_numpy(dtype=np.float64, na_value=np.nan)
        finite = np.isfinite(values)
        bad = ok & ~finite
        nonfinite = int(bad.sum())
        if gate_passed:  # a scorer that failed validation decides nothing, not even by its missing values
            mark(bad & by_score_allowed, Reason.NONFINITE_SCORE)
        if threshold is not None:  # recorded whatever the gate says, so `suspected` means one thing
            suspected = ok & finite & (values >= threshold)
            likely = suspected & cl_issue if cl_issue is not None else suspected.copy()
        if not gate_passed:
            score_note = "validation gate failed: nothing dropped by score"
            if threshold is not None:
                score_note += f"; {int(suspected.sum())} rows with {scorer} ≥ {threshold:.6g} only flagged"
        elif threshold is None:
            score_note = f"no threshold reaches target precision {policy.target_precision}: nothing dropped by score"
        else:
            score_note = f"{scorer} ≥ {threshold:.6g} (estimated precision ≥ {policy.target_precision} on this data)"
            score_note += RULE_TEXT[rule]
            eligible = likely & reason.isna().to_numpy()
            heldout_spared = int((eligible & ~by_score_allowed).sum())
            idx = np.nonzero(eligible & by_score_allowed)[0]
            cap_fraction = int(np.floor(policy.max_drop_fraction * n_ok))
            cap = cap_fraction if estimate.errors is None else min(cap_fraction, estimate.errors)
            if len(idx) > cap:
                order = np.lexsort((idx, -values[idx]))  # highest scores first, ties by row order
                capped = len(idx) - cap
                idx = idx[order[:cap]]
            if capped:
                limits = f"max_drop_fraction={policy.max_drop_fraction}: {cap_fraction}"
                if estimate.errors is not None:
                    limits += f", estimated label errors: {estimate.errors}"
                score_note += f"; capped at {cap} rows ({limits})"
            if heldout_spared:
                score_note += f"; {heldout_spared} held-out rows only flagged (clean.drop_heldout_by_score: false)"
            if policy.score_action == "drop":
                selected = np.zeros(n_in, dtype=bool)
                selected[idx] = True
                mark(selected, Reason.SUSPECTED_LABEL_ERROR)

    keep = reason.isna().to_numpy().copy()
    # Never remove the last kept sample of a class.
    restored = 0
    labels = m["label"]
    for cls in labels[ok].dropna().unique():
        members = np.nonzero(ok & (labels == cls).fillna(False).to_numpy())[0]
        if len(members) and not keep[members].any():
            droppable = members[reason.iloc[members].notna().to_numpy()]
            if scorer is not None:
                vals = m[f"{scorer}_score"].to_numpy(dtype=np.float64, na_value=np.inf)[droppable]
                pick = droppable[np.lexsort((droppable, vals))[0]]
            else:
                pick = droppable[0]
            reason.iloc[pick] = pd.NA
            keep[pick] = True
            restored += 1
    if restored:
        log.warning("kept %d samples that were the last of their class", restored)

    m["keep"] = keep
    m["drop_reason"] = reason.astype(object).where(reason.notna(), None)
    m["suspected"] = suspected
    suspicion = np.full(n_in, None, dtype=object)
    suspicion[suspected & ~likely] = ATYPICAL
    suspicion[likely] = LIKELY_MISLABELED
    m[SUSPICION] = suspicion
    m["suggested_label"] = m["suggested_label"].astype("Int32")
    m["suggested_confidence"] = confidence.astype("float64").round(6)
    if len(m) != n_in:
        raise AssertionError("rows in != rows out")

    names = list(classes or [])

    def counts(mask: np.ndarray) -> dict[str, int]:
        vc = m.loc[mask, "label"].value_counts()
        return {(names[int(k)] if int(k) < len(names) else str(k)): int(v) for k, v in sorted(vc.items())}

    by_reason = m.loc[~m["keep"], "drop_reason"].value_counts()
    summary = {
        "rows": n_in,
        "ok": n_ok,
        "kept": int(keep.sum()),
        "dropped": int((~keep).sum()),
        "by_reason": {str(k): int(v) for k, v in sorted(by_reason.items())},
        "suspected": int(suspected.sum()),
        "likely_mislabeled": int(likely.sum()),
        "atypical": int((suspected & ~likely).sum()),
        "dropped_by_score": int(by_reason.get(Reason.SUSPECTED_LABEL_ERROR.value, 0)),
        "drop_cap": cap,
        "capped": capped,
        "heldout_flagged_not_dropped": heldout_spared,
        "decision_rule": rule,
        "nonfinite_scores": nonfinite,
        "restored_last_of_class": restored,
        "score_rule": score_note,
        "near_duplicate_rule": near_note,
        **estimate.to_dict(),
        "class_counts_before": counts(ok),
        "class_counts_after": counts(keep & ok),
    }
    return CleanResult(m, summary)
