"""The numbers of a report, computed once from the inputs: shared by the view model and the metrics."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from memclean.errors import MemcleanError
from memclean.report.formatting import NA, get, label_name, num
from memclean.report.inputs import REQUIRED_COLUMNS, ReportInputs
from memclean.schema import HELDOUT_SPLITS, INFLUENCE_SCHEMA, Reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowCounts:
    """Rows of (part of) the manifest: all, ok at ingest, quarantined at ingest, kept and dropped by clean."""

    rows: int
    ok: int
    quarantined: int
    kept: int
    dropped: int


def row_counts(m: pd.DataFrame) -> RowCounts:
    """Count the rows of a prepared manifest, or of a part of one.

    Parameters
    ----------
    m
        Rows of the manifest from :func:`prepare_manifest` (``status``, boolean ``keep``).

    Returns
    -------
    RowCounts
    """
    keep = m["keep"]
    return RowCounts(
        rows=len(m),
        ok=int((m["status"] == "ok").sum()),
        quarantined=int((m["status"] == "quarantined").sum()),
        kept=int(keep.sum()),
        dropped=int((~keep).sum()),
    )


def split_counts(m: pd.DataFrame) -> dict[str, RowCounts]:
    """:func:`row_counts` of each split: training splits first, then held-out ones, each by name.

    Parameters
    ----------
    m
        The manifest from :func:`prepare_manifest`.

    Returns
    -------
    dict
        ``split -> counts``; rows without a split count under ``n/a`` (last).
    """
    split = m["split"].astype(object).where(m["split"].notna(), None)
    names = sorted({s for s in split if s is not None}, key=lambda s: (str(s) in HELDOUT_SPLITS, str(s)))
    out = {str(name): row_counts(m[split == name]) for name in names}
    if split.isna().any():
        out[NA] = row_counts(m[split.isna()])
    return out


#: The manifest column that classes a suspected row (``likely_mislabeled`` / ``atypical`` / null).
SUSPICION = "suspicion"
LIKELY_MISLABELED = "likely_mislabeled"
ATYPICAL = "atypical"


def suspicion_counts(m: pd.DataFrame, clean: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """Rows classed ``likely_mislabeled`` and ``atypical``: the manifest's column, else clean.json's counts.

    Parameters
    ----------
    m
        The manifest from :func:`prepare_manifest` (``suspicion`` only when the clean stage wrote it).
    clean
        ``clean.json``.

    Returns
    -------
    (int or None, int or None)
        ``None`` where neither says (an older run).
    """
    if SUSPICION in m.columns:
        values = m[SUSPICION].astype(object)
        return int((values == LIKELY_MISLABELED).sum()), int((values == ATYPICAL).sum())
    return _count(get(clean, "likely_mislabeled")), _count(get(clean, "atypical"))


def noise_interval(value: Any) -> tuple[float, float] | None:
    """``[lo, hi]`` of clean.json's ``noise_rate_ci95`` as two finite floats, else ``None``."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    lo, hi = num(value[0]), num(value[1])
    return None if lo is None or hi is None else (lo, hi)


#: The scorer that writes ``noise_matrix.json`` (when the file does not name one).
NOISE_MATRIX_SCORER = "confident_learning"


@dataclass(frozen=True)
class NoiseFacts:
    """Confident learning's estimated noise matrix, checked.

    ``available`` is false when the scorer did not run or the file holds no
    usable matrix (``reason`` says why); then ``classes`` and ``joint`` are
    empty and ``errors``/``rate`` are ``None``. ``joint[g][t]`` counts the
    rows given class ``g`` whose true class is estimated to be ``t``.
    """

    available: bool
    reason: str | None
    scorer: str
    classes: list[str]
    joint: list[list[int]]
    errors: int | None
    rate: float | None

    @property
    def total(self) -> int:
        """Rows the matrix counts."""
        return sum(map(sum, self.joint))


def _count(value: Any) -> int | None:
    """A non-negative whole count (``3`` or ``3.0``), else ``None``."""
    number = num(value)
    return int(number) if number is not None and number >= 0 and number == int(number) else None


def _square_counts(joint: Any) -> list[list[int]] | None:
    """``joint`` as a k×k list of non-negative integer counts (k ≥ 1); ``None`` when it is not one."""
    if not isinstance(joint, list) or not joint:
        return None
    out = []
    for row in joint:
        if not isinstance(row, list) or len(row) != len(joint):
            return None
        counts = [_count(v) for v in row]
        if any(c is None for c in counts):
            return None
        out.append([int(c) for c in counts if c is not None])
    return out


def noise_facts(report: Mapping[str, Any] | None, classes: list[str]) -> NoiseFacts | None:
    """Check ``noise_matrix.json`` (:func:`memclean.artifacts.noise_matrix_report`).

    Parameters
    ----------
    report
        The JSON object, or ``None`` when the file is missing.
    classes
        The manifest's class names: the matrix's names when the file has none (or a different number).

    Returns
    -------
    NoiseFacts or None
        ``None`` for a missing file. The label-error count and noise rate are
        the file's, else computed from the matrix.
    """
    if report is None:
        return None
    scorer = get(report, "scorer")
    scorer = str(scorer) if scorer is not None else NOISE_MATRIX_SCORER
    if get(report, "available") is not True:
        reason = get(report, "reason")
        return NoiseFacts(False, str(reason) if reason is not None else None, scorer, [], [], None, None)
    joint = _square_counts(get(report, "joint"))
    if joint is None:
        log.warning("noise_matrix.json has no k×k matrix of counts: the report shows it as not available")
        return NoiseFacts(False, "the file holds no given × true matrix of counts", scorer, [], [], None, None)
    k = len(joint)
    names = get(report, "classes")
    if not (isinstance(names, list) and len(names) == k):
        names = classes if len(classes) == k else [str(i) for i in range(k)]
    total = sum(map(sum, joint))
    errors = _count(get(report, "estimated_label_errors"))
    if errors is None:
        errors = total - sum(joint[i][i] for i in range(k))
    rate = num(get(report, "noise_rate"))
    if rate is None and total:
        rate = errors / total
    return NoiseFacts(True, None, scorer, [str(c) for c in names], joint, errors, rate)


def strongest_pairs(influence: pd.DataFrame | None, n: int) -> tuple[pd.DataFrame, int] | None:
    """The ``n`` strongest influence pairs: each target's rank-1 source, highest influence first.

    Parameters
    ----------
    influence
        ``influence.parquet`` (the columns of :data:`memclean.schema.INFLUENCE_SCHEMA`), or ``None``.
    n
        How many pairs.

    Returns
    -------
    (pandas.DataFrame, int) or None
        The pairs (influence ties and NaN influence last, by target id) and the
        number of targets with a pair; ``None`` when the table is missing or
        lacks a column (logged).
    """
    if influence is None:
        return None
    missing = [c for c in INFLUENCE_SCHEMA.names if c not in influence.columns]
    if missing:
        log.warning("the influence table lacks columns %s: the report shows it as not available", missing)
        return None
    if influence.empty:
        return influence.iloc[:0], 0
    table = influence.reset_index(drop=True)
    best = table[table["rank"] == table.groupby("target_id")["rank"].transform("min")]
    best = best.drop_duplicates("target_id")  # the first row of a tied rank
    values = pd.to_numeric(best["influence"], errors="coerce").astype(np.float64)
    ordered = best.assign(_v=values.fillna(-np.inf)).sort_values(
        ["_v", "target_id"], ascending=[False, True], kind="stable"
    )
    return ordered.drop(columns="_v").head(n), len(best)


@dataclass
class Facts:
    """Raw (unformatted) counts and settings of one cleaning run; ``None`` = unknown."""

    rows: int
    ok: int
    quarantined: int
    kept: int
    dropped: int
    by_split: dict[str, RowCounts]
    by_reason: dict[str, int]
    suspected: int
    score_columns: list[str]
    scorer: str | None
    threshold: float | None
    gate_passed: bool | None
    gate_scorer: str | None
    gate_auroc: float | None
    gate_min: float | None
    gate_reason: str | None
    best: str | None
    best_auroc: float | None
    class_before: dict[str, int]
    class_after: dict[str, int]
    groups: int | None
    exact_groups: int | None
    near_groups: int | None
    conflict_groups: int | None
    cross_groups: int | None
    noise: NoiseFacts | None = None
    likely_mislabeled: int | None = None
    atypical: int | None = None
    #: Confident learning's estimated noise rate: noise_matrix.json's ``noise_rate``, else clean.json's
    #: ``estimated_noise_rate`` (the same quantity: estimated errors over the confident joint's rows).
    noise_rate: float | None = None
    noise_ci95: tuple[float, float] | None = None
    label_errors: int | None = None

    @property
    def total(self) -> RowCounts:
        """The counts of all rows (the last line of the rows-by-split table)."""
        return RowCounts(self.rows, self.ok, self.quarantined, self.kept, self.dropped)

    @property
    def dropped_by_score(self) -> int:
        """Rows dropped because their score passed the threshold."""
        return self.by_reason.get(Reason.SUSPECTED_LABEL_ERROR.value, 0)


def prepare_manifest(manifest: pd.DataFrame, pixels: np.ndarray | None) -> pd.DataFrame:
    """Check the manifest and fill the optional columns the report reads.

    Parameters
    ----------
    manifest
        The cleaned manifest.
    pixels
        The pixel array ``manifest.row`` indexes, or ``None``.

    Returns
    -------
    pandas.DataFrame
        A copy with a fresh index, every optional column present, ``keep`` and
        ``suspected`` as booleans and ``row`` as ``Int64``.

    Raises
    ------
    MemcleanError
        When a required column is missing or a row index is outside ``pixels``.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
    if missing:
        raise MemcleanError(f"the manifest lacks columns {missing}: was it written by the clean stage?")
    m = manifest.reset_index(drop=True).copy()
    defaults: dict[str, Any] = {
        "label": pd.NA,
        "label_name": None,
        "split": None,
        "reason": None,
        "detail": None,
        "row": pd.NA,
        "drop_reason": None,
        "suspected": False,
        "suggested_label": pd.NA,
        "dup_group": pd.NA,
    }
    for col, value in defaults.items():
        if col not in m.columns:
            m[col] = value
    m["keep"] = m["keep"].fillna(False).astype(bool)
    m["suspected"] = m["suspected"].fillna(False).astype(bool)
    m["row"] = pd.array(m["row"], dtype="Int64")
    if pixels is not None:
        rows = m["row"].dropna()
        if len(rows) and (rows.min() < 0 or rows.max() >= len(pixels)):
            raise MemcleanError(
                f"manifest row index {int(rows.max())} is outside pixels.npy ({len(pixels)} images): "
                "the manifest and pixels.npy come from different runs; rerun the pipeline"
            )
    return m


def _class_counts(m: pd.DataFrame, mask: pd.Series, classes: list[str]) -> dict[str, int]:
    """Rows per class name under ``mask``: every known class in order, then unknown labels."""
    vc = m.loc[mask, "label"].dropna().astype(int).value_counts()
    order = range(len(classes)) if classes else sorted(vc.index)
    out = {(label_name(k, classes) or str(k)): int(vc.get(k, 0)) for k in order}
    for k in sorted(set(vc.index) - set(order)):
        out[str(k)] = int(vc[k])
    return out


def _group_counts(inp: ReportInputs) -> tuple[int | None, ...]:
    """Duplicate groups: all, exact, near, with a label conflict, spanning splits (table first, then dedup.json)."""
    dups = inp.duplicates
    groups = exact = near = conflict = cross = None
    if dups is not None and "group_id" in dups.columns:
        groups = int(dups["group_id"].nunique())
        if "kind" in dups.columns:
            exact_ids = set(dups.loc[dups["kind"] == "exact", "group_id"])
            exact, near = len(exact_ids), groups - len(exact_ids)
        if "label_conflict" in dups.columns:
            conflict = int(dups.loc[dups["label_conflict"].astype(bool), "group_id"].nunique())
        if "cross_split" in dups.columns:
            cross = int(dups.loc[dups["cross_split"].astype(bool), "group_id"].nunique())
    keys = ("groups", "exact_groups", "near_groups", "label_conflict_groups", "cross_split_groups")
    counts = (groups, exact, near, conflict, cross)
    return tuple(c if c is not None else get(inp.dedup, k) for c, k in zip(counts, keys, strict=True))


def compute_facts(inp: ReportInputs, m: pd.DataFrame) -> Facts:
    """Count what the report shows.

    Parameters
    ----------
    inp
        The report inputs.
    m
        The manifest from :func:`prepare_manifest`.

    Returns
    -------
    Facts
    """
    ok_mask = m["status"] == "ok"
    dropped = m.loc[~m["keep"], "drop_reason"].fillna("unknown").astype(str)
    by_reason = {str(k): int(v) for k, v in sorted(dropped.value_counts().items())}
    score_cols = [c for c in m.columns if c.endswith("_score") and pd.api.types.is_numeric_dtype(m[c])]
    names = [c[: -len("_score")] for c in score_cols]

    # The scorer the clean stage used; fall back to the gate's, then the best one.
    scorer = None
    for candidate in (get(inp.clean, "scorer"), get(inp.validation, "gate", "scorer"), get(inp.validation, "best")):
        if isinstance(candidate, str) and candidate in names:
            scorer = candidate
            break
    if scorer is None and names:
        scorer = "combined" if "combined" in names else names[0]

    clean_gate = get(inp.clean, "gate")
    validation_gate = get(inp.validation, "gate")
    gate = {
        **(validation_gate if isinstance(validation_gate, Mapping) else {}),
        **(clean_gate if isinstance(clean_gate, Mapping) else {}),
    }
    passed = gate.get("passed")
    best = get(inp.validation, "best")
    classes = list(inp.classes)
    groups, exact, near, conflict, cross = _group_counts(inp)
    noise = noise_facts(inp.noise_matrix, classes)
    likely, atypical = suspicion_counts(m, inp.clean)
    noise_rate = noise.rate if noise is not None else None
    if noise_rate is None:
        noise_rate = num(get(inp.clean, "estimated_noise_rate"))
    label_errors = noise.errors if noise is not None else None
    if label_errors is None:
        label_errors = _count(get(inp.clean, "estimated_label_errors"))

    total = row_counts(m)
    facts = Facts(
        rows=total.rows,
        ok=total.ok,
        quarantined=total.quarantined,
        kept=total.kept,
        dropped=total.dropped,
        by_split=split_counts(m),
        by_reason=by_reason,
        suspected=int(m["suspected"].sum()),
        score_columns=score_cols,
        scorer=scorer,
        threshold=num(get(inp.clean, "threshold")),
        gate_passed=bool(passed) if isinstance(passed, bool | np.bool_) else None,
        gate_scorer=gate.get("scorer"),
        gate_auroc=num(gate.get("auroc")),
        gate_min=num(gate.get("min_auroc")),
        gate_reason=gate.get("reason"),
        best=best if isinstance(best, str) else None,
        best_auroc=num(get(inp.validation, "scorers", best, "auroc")) if isinstance(best, str) else None,
        class_before=_class_counts(m, ok_mask, classes),
        class_after=_class_counts(m, ok_mask & m["keep"], classes),
        groups=groups,
        exact_groups=exact,
        near_groups=near,
        conflict_groups=conflict,
        cross_groups=cross,
        noise=noise,
        likely_mislabeled=likely,
        atypical=atypical,
        noise_rate=noise_rate,
        noise_ci95=noise_interval(get(inp.clean, "noise_rate_ci95")),
        label_errors=label_errors,
    )
    for key, mine in (("rows", facts.rows), ("kept", facts.kept), ("dropped", facts.dropped)):
        theirs = get(inp.clean, key)
        if isinstance(theirs, int) and theirs != mine:
            log.warning("clean.json says %s=%s but the manifest has %s", key, theirs, mine)
    return facts


def highest_scores(m: pd.DataFrame, scorer: str | None, n: int) -> pd.DataFrame | None:
    """The ``n`` ok rows with the highest finite ``<scorer>_score``, highest first; ties keep manifest order.

    Parameters
    ----------
    m
        The manifest from :func:`prepare_manifest`.
    scorer
        The scorer name, or ``None``.
    n
        How many rows.

    Returns
    -------
    pandas.DataFrame or None
        The rows with their score in column ``_s``; ``None`` when the manifest
        has no such score column.
    """
    col = f"{scorer}_score" if scorer else None
    if col is None or col not in m.columns:
        return None
    values = m[col].to_numpy(dtype=np.float64, na_value=np.nan)
    usable = (m["status"] == "ok").to_numpy() & np.isfinite(values)
    top = m.loc[usable].assign(_s=values[usable])
    return top.sort_values("_s", ascending=False, kind="stable").head(n)


def ordered_groups(dups: pd.DataFrame) -> list[Any]:
    """Duplicate group ids: label conflicts and cross-split groups first, then larger groups, then by id.

    Parameters
    ----------
    dups
        The dedup table (``group_id``; ``label_conflict`` and ``cross_split`` when present).

    Returns
    -------
    list
        Every group id once, in display order.
    """
    flags = pd.DataFrame({"group_id": dups["group_id"]})
    for col in ("label_conflict", "cross_split"):
        flags[col] = dups[col].fillna(False).astype(bool) if col in dups else False
    agg = (
        flags.groupby("group_id", sort=True)
        .agg(size=("group_id", "size"), conflict=("label_conflict", "any"), cross=("cross_split", "any"))
        .reset_index()
    )
    agg["prio"] = agg["conflict"].astype(int) + agg["cross"].astype(int)
    agg = agg.sort_values(["prio", "size", "group_id"], ascending=[False, False, True], kind="stable")
    return list(agg["group_id"])


def digests(inp: ReportInputs) -> dict[str, str]:
    """``artifact -> params digest``: the JSON reports' digests, then :attr:`ReportInputs.params_digests`.

    Parameters
    ----------
    inp
        The report inputs.

    Returns
    -------
    dict
    """
    out: dict[str, str] = {}
    for name, mapping in (
        ("ingest", inp.ingest),
        ("dedup", inp.dedup),
        ("score", inp.score),
        ("validate", inp.validation),
        ("clean", inp.clean),
    ):
        digest = get(mapping, "params_digest")
        if digest is not None:
            out[name] = str(digest)
    for name, digest in inp.params_digests.items():
        if digest is not None:
            out[name] = str(digest)
    return out


def metrics(f: Facts, inp: ReportInputs) -> dict[str, Any]:
    """The headline numbers (a DVC metrics file: JSON-serialisable, no NaN).

    Parameters
    ----------
    f
        The facts of the run.
    inp
        The report inputs.

    Returns
    -------
    dict
        ``noise_rate`` is confident learning's estimated noise rate (clean.json's
        ``estimated_noise_rate`` is the same quantity, so it is not repeated under
        that name; it fills in when noise_matrix.json is missing); ``likely_mislabeled`` and ``atypical`` count the suspected rows
        by class.
    """
    return {
        "rows": f.rows,
        "ok": f.ok,
        "quarantined": f.quarantined,
        "kept": f.kept,
        "dropped": f.dropped,
        "dropped_by_reason": f.by_reason,
        "dropped_by_score": f.dropped_by_score,
        "suspected": f.suspected,
        "best_scorer": f.best,
        "best_auroc": f.best_auroc,
        "cleaning_scorer": f.scorer,
        "threshold": f.threshold,
        "gate_scorer": f.gate_scorer,
        "gate_auroc": f.gate_auroc,
        "gate_passed": f.gate_passed,
        "duplicate_groups": f.groups,
        "exact_groups": f.exact_groups,
        "near_groups": f.near_groups,
        "label_conflict_groups": f.conflict_groups,
        "cross_split_groups": f.cross_groups,
        "split_leaks_dropped": f.by_reason.get(Reason.SPLIT_LEAK.value, 0),
        "classes": len(inp.classes) if inp.classes else len(f.class_before),
        "estimated_label_errors": f.label_errors,
        "noise_rate": f.noise_rate,
        "likely_mislabeled": f.likely_mislabeled,
        "atypical": f.atypical,
    }
