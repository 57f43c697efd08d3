"""Cleaning decisions: which rows to keep, and why the others go.

Every input row comes out with ``keep`` and, when not kept, one
``drop_reason`` (the first that applies, in this order):

1. quarantined at ingest → its ingest reason;
2. ``conflicting_duplicate`` — a duplicate group whose labels disagree (all members);
3. ``split_leak`` — members of a group that also reaches a held-out split
   (``test``/``val``/…) and that are not themselves held-out;
4. ``exact_duplicate`` — every copy but the first of a set of identical images;
5. ``nonfinite_score`` — the chosen scorer gave no finite score (only when the
   validation gate passed: a failed scorer decides nothing);
6. ``suspected_label_error`` — the chosen score is at or above the threshold
   set on the injected noise, for at most ``max_drop_fraction`` of the ok rows
   (highest scores first); with ``score_action="flag"`` these rows are kept and
   only marked ``suspected``. Nothing is dropped by score when the validation
   gate failed.

No rule ever removes the last kept sample of a class: such a sample is kept
and its ``drop_reason`` cleared.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve

from memclean.errors import MemcleanError
from memclean.options import CleanParams
from memclean.schema import HELDOUT_SPLITS, Reason, Status

log = logging.getLogger(__name__)


#: The ``clean`` params are the policy: defaults, types and ranges live in :mod:`memclean.options`.
CleanPolicy = CleanParams


def threshold_at_precision(scores: np.ndarray, is_positive: np.ndarray, target: float) -> float | None:
    """Lowest score ``t`` on the precision–recall curve whose rows scoring ``≥ t`` reach ``target`` precision.

    The curve is :func:`sklearn.metrics.precision_recall_curve`'s, which ends at
    the threshold where recall first reaches 1 (lower thresholds only add
    negatives). Returns ``None`` when no threshold reaches the target or there
    is no positive. Non-finite scores are ignored.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(is_positive, dtype=bool)
    finite = np.isfinite(s)
    s, y = s[finite], y[finite]
    if not y.any():
        return None
    precision, _, thresholds = precision_recall_curve(y, s)
    reaches = precision[:-1] >= target  # the last point (precision 1, recall 0) has no threshold
    if not reaches.any():
        return None
    return float(thresholds[np.argmax(reaches)])


@dataclass
class CleanResult:
    """The manifest and a summary of the decisions."""

    manifest: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)


def decide(
    samples: pd.DataFrame,
    duplicates: pd.DataFrame,
    scores: pd.DataFrame,
    policy: CleanPolicy,
    scorer: str | None,
    threshold: float | None,
    gate_passed: bool,
    classes: list[str] | None = None,
) -> CleanResult:
    """Apply the cleaning rules to every input row.

    Parameters
    ----------
    samples
        The ingest samples table (every input row).
    duplicates
        The dedup table.
    scores
        ``sample_id``, ``<scorer>_score`` columns and ``suggested_label`` for the ok rows.
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
    m = m.join(extra[score_cols + (["suggested_label"] if "suggested_label" in extra else [])], on="sample_id")
    if "suggested_label" not in m:
        m["suggested_label"] = pd.NA
    dup = duplicates.set_index("sample_id")
    m["dup_group"] = m["sample_id"].map(dup["group_id"]).astype("Int64")

    ok = (m["status"] == Status.OK.value).to_numpy()
    reason = pd.Series(pd.NA, index=m.index, dtype="string")
    reason[~ok] = m.loc[~ok, "reason"].astype("string")

    def mark(mask: np.ndarray, code: Reason) -> None:
        free = mask & ok & reason.isna().to_numpy()
        reason[free] = code.value

    in_group = m["dup_group"].notna().to_numpy()
    if policy.drop_conflicting_duplicates and in_group.any():
        conflict = m["sample_id"].map(dup["label_conflict"]).fillna(False).to_numpy(dtype=bool)
        mark(conflict, Reason.CONFLICTING_DUPLICATE)
    if policy.drop_split_leaks and in_group.any():
        cross = m["sample_id"].map(dup["cross_split"]).fillna(False).to_numpy(dtype=bool)
        groups_heldout = set(m.loc[in_group & m["split"].isin(HELDOUT_SPLITS).to_numpy(), "dup_group"].dropna())
        reaches_heldout = m["dup_group"].isin(groups_heldout).fillna(False).to_numpy(dtype=bool)
        mark(cross & reaches_heldout & ~m["split"].isin(HELDOUT_SPLITS).to_numpy(), Reason.SPLIT_LEAK)
    if policy.drop_exact_duplicates:
        digest = m["pixel_sha256"].where(ok)
        later_copy = digest.notna().to_numpy() & digest.duplicated(keep="first").to_numpy()
        mark(later_copy, Reason.EXACT_DUPLICATE)

    suspected = np.zeros(n_in, dtype=bool)
    by_score = 0
    nonfinite = 0
    score_note = "no scorer chosen"
    if scorer is not None:
        col = f"{scorer}_score"
        if col not in m:
            raise MemcleanError(f"scores.parquet has no column {col!r}; scorers present: {score_cols}")
        values = m[col].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ok & ~np.isfinite(values)
        nonfinite = int(bad.sum())
        if gate_passed:  # a scorer that failed validation decides nothing, not even by its missing values
            mark(bad, Reason.NONFINITE_SCORE)
        if not gate_passed:
            score_note = "validation gate failed: nothing dropped by score"
        elif threshold is None:
            score_note = f"no threshold reaches target precision {policy.target_precision}: nothing dropped by score"
        else:
            candidates = ok & np.isfinite(values) & (values >= threshold) & reason.isna().to_numpy()
            cap = int(np.floor(policy.max_drop_fraction * ok.sum()))
            idx = np.nonzero(candidates)[0]
            if len(idx) > cap:
                order = np.lexsort((idx, -values[idx]))  # highest scores first, ties by row order
                idx = idx[order[:cap]]
            suspected[idx] = True
            by_score = len(idx)
            score_note = f"{scorer} ≥ {threshold:.6g} (precision ≥ {policy.target_precision} on injected noise)"
            if candidates.sum() > cap:
                score_note += f"; capped at max_drop_fraction={policy.max_drop_fraction} ({cap} rows)"
            if policy.score_action == "drop":
                mark(suspected, Reason.SUSPECTED_LABEL_ERROR)

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
    m["suggested_label"] = m["suggested_label"].astype("Int32")
    if len(m) != n_in:
        raise AssertionError("rows in != rows out")

    names = list(classes or [])

    def counts(mask: np.ndarray) -> dict[str, int]:
        vc = m.loc[mask, "label"].value_counts()
        return {(names[int(k)] if int(k) < len(names) else str(k)): int(v) for k, v in sorted(vc.items())}

    by_reason = m.loc[~m["keep"], "drop_reason"].value_counts()
    summary = {
        "rows": n_in,
        "ok": int(ok.sum()),
        "kept": int(keep.sum()),
        "dropped": int((~keep).sum()),
        "by_reason": {str(k): int(v) for k, v in sorted(by_reason.items())},
        "suspected": int(suspected.sum()),
        "dropped_by_score": int(by_score if policy.score_action == "drop" else 0),
        "nonfinite_scores": nonfinite,
        "restored_last_of_class": restored,
        "score_rule": score_note,
        "class_counts_before": counts(ok),
        "class_counts_after": counts(keep & ok),
    }
    return CleanResult(m, summary)
