"""Computing the view model (:class:`~memclean.report.model.ReportView`) from the report inputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd

from memclean.report.facts import (
    SUSPICION,
    Facts,
    RowCounts,
    digests,
    highest_scores,
    ordered_groups,
    strongest_pairs,
)
from memclean.report.figures import class_balance_figure, histogram_figure, image_data_uri, roc_figure
from memclean.report.formatting import NA, fixed, flatten, fmt, get, label_name, num, param_value, pct
from memclean.report.inputs import DECISION_RULE_TEXT, REASON_TEXT, SUSPICION_TEXT, ReportInputs, ReportOptions
from memclean.report.model import (
    ClassBalance,
    ClassRow,
    Cleaning,
    DuplicateGroup,
    Duplicates,
    DuplicateTier,
    GateState,
    Header,
    Histograms,
    ImageURI,
    Influence,
    InfluencePair,
    Member,
    NoiseCell,
    NoiseMatrix,
    NoiseRow,
    PairSide,
    ParamsSection,
    Quarantine,
    QuarantineRow,
    ReasonRow,
    ReportView,
    Run,
    RunRow,
    ScorerRow,
    SplitRow,
    Status,
    Summary,
    Suspect,
    Validation,
)
from memclean.schema import INGEST_REASONS

_INGEST_CODES = frozenset(r.value for r in INGEST_REASONS)
_GATE_STATE: dict[bool | None, GateState] = {True: "pass", False: "fail", None: "unknown"}
#: The ``clean.json`` keys of the suspicion classes and the noise estimate (absent from older runs).
_CLEANING_KEYS = (
    "likely_mislabeled",
    "atypical",
    "decision_rule",
    "estimated_noise_rate",
    "noise_rate_ci95",
    "drop_cap",
    "advice",
)


def noise_rate_text(rate: float | None, ci: tuple[float, float] | None) -> str:
    """``16.7% (95% interval 6.7%–35.9%)``; the interval only when known, ``n/a`` without a rate."""
    if rate is None:
        return NA
    return f"{rate:.1%}" + (f" (95% interval {ci[0]:.1%}–{ci[1]:.1%})" if ci is not None else "")


def suspicion_text(value: Any, keep: bool) -> str:
    """The badge of a suspected row (``""`` for none): "likely mislabeled", "atypical, kept"..."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return ""
    text = SUSPICION_TEXT.get(str(value), str(value))
    return f"{text}, kept" if value == "atypical" and keep else text


def _split_row(name: str, c: RowCounts) -> SplitRow:
    """One line of the rows-by-split table."""
    return SplitRow(name, fmt(c.rows), fmt(c.ok), fmt(c.quarantined), fmt(c.kept), fmt(c.dropped))


def params_sections(params: Mapping[str, Mapping[str, Any] | None]) -> list[ParamsSection]:
    """The params sections as tables of dotted keys (``score.trainer.epochs``) and their values.

    Parameters
    ----------
    params
        ``section -> validated values`` (:attr:`ReportInputs.params`); ``None`` = unknown.

    Returns
    -------
    list of ParamsSection
        One per section, in the mapping's order.
    """
    return [
        ParamsSection(
            fmt(name),
            None if values is None else [(key, param_value(value)) for key, value in flatten(values, str(name))],
        )
        for name, values in params.items()
    ]


class _Builder:
    """Builds the view's sections from the inputs, the prepared manifest and the facts."""

    def __init__(self, inp: ReportInputs, opts: ReportOptions, m: pd.DataFrame, f: Facts) -> None:
        self.inp, self.opts, self.m, self.f = inp, opts, m, f
        self.classes = list(inp.classes)
        self.gate = _GATE_STATE[f.gate_passed]

    def info(self) -> pd.DataFrame:
        """The manifest by sample id (first row of a repeated id): what a tile shows of a sample."""
        info = self.m.set_index("sample_id")[
            ["row", "keep", "drop_reason", "suspected", "label_name", "label", "split"]
        ]
        return info[~info.index.duplicated()]

    def thumb(self, row: Any) -> ImageURI:
        """The thumbnail of pixel row ``row`` (``None`` without pixels or row)."""
        if self.inp.pixels is None or row is None or row is pd.NA:
            return None
        return image_data_uri(np.asarray(self.inp.pixels[int(row)]))

    @staticmethod
    def status(keep: bool, reason: Any, suspected: bool) -> Status:
        """What the clean stage did with a row."""
        if not keep:
            return Status("dropped", fmt(reason))
        return Status("flagged") if suspected else Status("kept")

    def summary(self) -> Summary:
        f, ing = self.f, self.inp.ingest
        order = sorted(f.by_reason.items(), key=lambda kv: (kv[0] not in _INGEST_CODES, -kv[1], kv[0]))
        reasons = [
            ReasonRow(
                code, "ingest" if code in _INGEST_CODES else "clean", REASON_TEXT.get(code, ""), fmt(n), pct(n, f.rows)
            )
            for code, n in order
        ]
        size = get(ing, "image_size")
        dataset = [
            ("images stored at", fmt(f"{size[0]}×{size[1]}" if isinstance(size, list) and len(size) == 2 else size)),
            ("channels", fmt(get(ing, "channels"))),
            ("resized at ingest", fmt(get(ing, "resized"))),
            ("classes", fmt(len(self.classes) if self.classes else None)),
            ("score action", fmt(get(self.inp.clean, "score_action"))),
            ("notes", fmt(get(ing, "notes") or None)),
        ]
        inp = self.inp
        provenance = [("source", fmt(inp.source)), ("root", fmt(inp.root)), ("commit", fmt(inp.commit))]
        splits = [_split_row(name, c) for name, c in [*f.by_split.items(), ("total", f.total)]]
        return Summary(
            rows=fmt(f.rows),
            kept=fmt(f.kept),
            kept_share=pct(f.kept, f.rows),
            dropped=fmt(f.dropped),
            dropped_share=pct(f.dropped, f.rows),
            quarantined=fmt(f.quarantined),
            quarantined_share=pct(f.quarantined, f.rows),
            suspected=fmt(f.suspected),
            suspected_share=pct(f.suspected, f.rows),
            groups=fmt(f.groups),
            splits=splits,
            reasons=reasons,
            dataset=dataset,
            provenance=provenance,
        )

    def cleaning(self) -> Cleaning | None:
        """The suspicion classes, decision rule and noise estimate; why and what to try when the gate failed."""
        f, clean = self.f, self.inp.clean
        advice_in = get(clean, "advice")
        advice = [fmt(a) for a in advice_in] if isinstance(advice_in, list) else []
        has_column = SUSPICION in self.m.columns
        if not has_column and f.gate_passed is not False and not any(get(clean, k) is not None for k in _CLEANING_KEYS):
            return None  # an older run: nothing new to say
        rule = get(clean, "decision_rule")
        if f.gate_passed is False:
            dropped = f"{fmt(f.dropped_by_score)} (the gate failed: likely mislabeled rows are only flagged)"
        else:
            dropped = fmt(f.dropped_by_score)
        rows = [
            ("likely mislabeled (dropped when the gate passes)", fmt(f.likely_mislabeled)),
            ("atypical (kept, flagged)", fmt(f.atypical)),
            ("dropped by score", dropped),
            ("decision rule", DECISION_RULE_TEXT.get(rule, fmt(rule)) if isinstance(rule, str) else NA),
            ("estimated noise rate (confident learning)", noise_rate_text(f.noise_rate, f.noise_ci95)),
            ("estimated label errors", fmt(f.label_errors)),
        ]
        cap, capped = get(clean, "drop_cap"), get(clean, "capped")
        if cap is not None:
            more = f" ({fmt(capped)} more likely mislabeled rows kept)" if num(capped) else ""
            rows.append(("drop cap (rows)", fmt(cap) + more))
        spared = get(clean, "heldout_flagged_not_dropped")
        if spared is not None:
            setting = get(clean, "drop_heldout_by_score")
            rows.append(
                (
                    "held-out rows flagged, not dropped",
                    fmt(spared) + (f" (clean.drop_heldout_by_score: {fmt(setting)})" if setting is not None else ""),
                )
            )
        return Cleaning(rows=rows, gate_failed=f.gate_passed is False, reason=fmt(f.gate_reason), advice=advice)

    def class_balance(self) -> ClassBalance:
        f = self.f
        rows = []
        for name, before in f.class_before.items():
            after = f.class_after.get(name, 0)
            rows.append(ClassRow(name, fmt(before), fmt(after), fmt(before - after), pct(before - after, before)))
        return ClassBalance(class_balance_figure(f.class_before, f.class_after), rows)

    def validation(self) -> Validation:
        f, val, clean = self.f, self.inp.validation, self.inp.clean
        noise = get(val, "noise") or {}
        scorers = get(val, "scorers") or {}
        rows = []
        for name, r in sorted(scorers.items(), key=lambda kv: -(num(get(kv[1], "auroc")) or 0.0)):
            roles = [
                tag for tag, who in (("best", f.best), ("gate", f.gate_scorer), ("cleaning", f.scorer)) if who == name
            ]
            rows.append(
                ScorerRow(
                    name=fmt(name),
                    auroc=fixed(get(r, "auroc")),
                    ap=fixed(get(r, "ap")),
                    precision_at_k=fixed(get(r, "precision_at_k")),
                    k=fmt(get(r, "k")),
                    nonfinite=fmt(get(r, "nonfinite")),
                    roles=roles,
                    description=str(self.inp.scorer_descriptions.get(name, "")),
                    auroc_all_rows=fixed(get(r, "auroc_all_rows")),
                )
            )
        all_rows = any(get(r, "auroc_all_rows") is not None for r in scorers.values())
        where = get(val, "measured_on")
        measured_on = None
        if isinstance(where, Mapping):
            measured_on = (
                f"AUROC, AP and P@k are measured on {fmt(get(where, 'rows'))} rows "
                f"({fmt(get(where, 'flipped'))} injected flips, {fmt(get(where, 'own_suspected_excluded'))} "
                f"suspected own label errors left out): {fmt(get(where, 'description'))}."
            )
        failed = get(val, "run", "failures") or {}
        failures = [(fmt(k), fmt(v)) for k, v in failed.items()] if isinstance(failed, Mapping) else []
        warning = None
        if f.gate_passed is False and f.dropped_by_score:
            warning = f"Inconsistent: the gate failed but {f.dropped_by_score} rows were dropped by score."
        elif f.gate_passed and f.threshold is None:
            warning = "No threshold reached the target precision: nothing was dropped by score."
        return Validation(
            gate=self.gate,
            gate_scorer=fmt(f.gate_scorer),
            gate_auroc=fmt(f.gate_auroc),
            gate_min=fmt(f.gate_min),
            gate_reason=fmt(f.gate_reason),
            warning=warning,
            noise_flipped=fmt(get(noise, "flipped")),
            noise_n=fmt(get(noise, "n")),
            noise_kind=fmt(get(noise, "kind")),
            noise_rate=fmt(get(noise, "rate")),
            noise_seed=fmt(get(noise, "seed")),
            scorers=rows,
            show_descriptions=any(r.description for r in rows),
            show_all_rows=all_rows,
            measured_on=measured_on,
            failures=failures,
            roc_figure=roc_figure(self.inp.roc, scorers, f.scorer),
            scorer=fmt(f.scorer),
            threshold=fmt(f.threshold, 6),
            target_precision=fmt(get(clean, "target_precision")),
            score_action=fmt(get(clean, "score_action")),
            suspected=fmt(f.suspected),
            dropped_by_score=fmt(f.dropped_by_score),
            rule=fmt(get(clean, "score_rule")),
        )

    def histograms(self) -> Histograms:
        f = self.f
        figure = histogram_figure(self.m, f.score_columns, f.scorer, f.threshold, applied=f.gate_passed is not False)
        threshold = fmt(f.threshold, 6) if f.threshold is not None else None
        return Histograms(figure, threshold, gate_failed=f.gate_passed is False)

    def top_suspects(self) -> list[Suspect] | None:
        top = highest_scores(self.m, self.f.scorer, self.opts.top_suspects)
        if top is None:
            return None
        tiles = []
        for _, r in top.iterrows():
            given = r["label_name"] if isinstance(r["label_name"], str) else label_name(r["label"], self.classes)
            suggested = label_name(r["suggested_label"], self.classes)
            tiles.append(
                Suspect(
                    sample_id=fmt(r["sample_id"]),
                    given=fmt(given),
                    suggested=fmt(suggested),
                    differs=suggested is not None and suggested != given,
                    score=fixed(r["_s"]),
                    image=self.thumb(r["row"]),
                    status=self.status(bool(r["keep"]), r["drop_reason"], bool(r["suspected"])),
                    suspicion=suspicion_text(r[SUSPICION], bool(r["keep"])) if SUSPICION in r else "",
                    confidence=fixed(r["suggested_confidence"], 2) if pd.notna(r.get("suggested_confidence")) else "",
                )
            )
        return tiles

    def group(self, gid: Any, g: pd.DataFrame, info: pd.DataFrame) -> DuplicateGroup:
        members = []
        for _, r in g.iterrows():
            sid = r["sample_id"]
            meta = info.loc[sid] if sid in info.index else None
            table_label = label_name(r.get("label"), self.classes)
            label = meta["label_name"] if meta is not None and isinstance(meta["label_name"], str) else table_label
            members.append(
                Member(
                    sample_id=fmt(sid),
                    label=fmt(label),
                    table_label=fmt(table_label),
                    split=fmt(r.get("split")),
                    distance=fmt(r.get("distance")),
                    representative=bool(r.get("is_representative", False)),
                    image=self.thumb(meta["row"] if meta is not None else None),
                    status=self.status(bool(meta["keep"]), meta["drop_reason"], bool(meta["suspected"]))
                    if meta is not None
                    else None,
                )
            )
        conflict = bool(g["label_conflict"].astype(bool).any()) if "label_conflict" in g else None
        cross = bool(g["cross_split"].astype(bool).any()) if "cross_split" in g else None
        return DuplicateGroup(
            id=fmt(gid),
            kind="exact" if "kind" in g and (g["kind"] == "exact").any() else "near",
            size=len(g),
            conflict=bool(conflict),
            cross=bool(cross),
            conflict_text=fmt(conflict),
            cross_text=fmt(cross),
            members=members,
        )

    def duplicates(self) -> Duplicates:
        f, dups = self.f, self.inp.duplicates
        groups: list[DuplicateGroup] | None = None
        count = 0
        if dups is not None and not dups.empty and "group_id" in dups.columns:
            ordered = ordered_groups(dups)
            count = len(ordered)
            info = self.info()
            groups = [
                self.group(gid, dups[dups["group_id"] == gid], info) for gid in ordered[: self.opts.duplicate_groups]
            ]
        return Duplicates(
            total=fmt(f.groups),
            exact=fmt(f.exact_groups),
            near=fmt(f.near_groups),
            conflict=fmt(f.conflict_groups),
            cross=fmt(f.cross_groups),
            method=fmt(get(self.inp.dedup, "method")),
            max_distance=fmt(get(self.inp.dedup, "max_distance")),
            group_count=count,
            groups=groups,
            tiers=self.duplicate_tiers(),
        )

    def duplicate_tiers(self) -> list[DuplicateTier]:
        """Verified pairs per tier from ``dedup.json`` (empty for an older file without tiers)."""
        d = self.inp.dedup
        if get(d, "similar_pairs") is None:
            return []
        near, similar = get(d, "thresholds", "near"), get(d, "thresholds", "similar")
        meaning = {
            "exact": "identical pixels: one of each set is kept (clean.drop_exact_duplicates)",
            "near": f"one photo after edits (verified similarity ≥ {fmt(near)}): grouped",
            "similar": f"same scene, another shot ({fmt(similar)} ≤ similarity < {fmt(near)}): "
            "listed in duplicate_pairs.parquet only",
        }
        return [
            DuplicateTier(kind, fmt(get(d, f"{kind}_pairs")), fmt(get(d, "cross_split_pairs", kind)), meaning[kind])
            for kind in ("exact", "near", "similar")
        ]

    def side(self, sample_id: Any, info: pd.DataFrame) -> PairSide:
        """One image of an influence pair, described from the manifest."""
        meta = info.loc[sample_id] if sample_id in info.index else None
        if meta is None:
            return PairSide(fmt(sample_id), fmt(None), fmt(None), None, None)
        label = meta["label_name"] if isinstance(meta["label_name"], str) else label_name(meta["label"], self.classes)
        return PairSide(
            sample_id=fmt(sample_id),
            split=fmt(meta["split"]),
            label=fmt(label),
            image=self.thumb(meta["row"]),
            status=self.status(bool(meta["keep"]), meta["drop_reason"], bool(meta["suspected"])),
        )

    def influence(self) -> Influence:
        found = strongest_pairs(self.inp.influence, self.opts.influence_pairs)
        if found is None:
            return Influence("missing", [], fmt(None))
        top, targets = found
        if not targets:
            return Influence("off", [], fmt(0))
        info = self.info()
        pairs = [
            InfluencePair(
                position=i + 1,
                influence=fixed(r["influence"]),
                se=fixed(r["se"]),
                n_in=fmt(r["n_in"]),
                n_out=fmt(r["n_out"]),
                target=self.side(r["target_id"], info),
                source=self.side(r["source_id"], info),
            )
            for i, (_, r) in enumerate(top.iterrows())
        ]
        return Influence("shown", pairs, fmt(targets))

    def noise_matrix(self) -> NoiseMatrix:
        nf = self.f.noise
        if nf is None or not nf.available:
            state: Literal["unavailable", "missing"] = "missing" if nf is None else "unavailable"
            scorer = fmt(nf.scorer if nf is not None else None)
            return NoiseMatrix(state, fmt(nf.reason if nf else None), scorer, [], [], NA, NA, NA, NA)
        rows = []
        for g, (name, counts) in enumerate(zip(nf.classes, nf.joint, strict=True)):
            cells = [NoiseCell(fmt(c), diagonal=g == t, off=g != t and c > 0) for t, c in enumerate(counts)]
            total = sum(counts)
            rows.append(NoiseRow(fmt(name), cells, fmt(total), pct(total - counts[g], total)))
        return NoiseMatrix(
            state="shown",
            reason="",
            scorer=fmt(nf.scorer),
            classes=[fmt(c) for c in nf.classes],
            rows=rows,
            total=fmt(nf.total),
            errors=fmt(nf.errors),
            noise_rate=fmt(nf.rate),
            noise_share=pct(nf.errors, nf.total) if nf.errors is not None else NA,
        )

    def quarantine(self) -> Quarantine | None:
        q = self.m[self.m["status"] == "quarantined"]
        if q.empty:
            return None
        cap = self.opts.max_quarantined
        by = q["reason"].fillna("unknown").value_counts()
        return Quarantine(
            total=fmt(len(q)),
            cap=cap,
            truncated=len(q) > cap,
            by_reason=[(fmt(k), fmt(int(v))) for k, v in by.items()],
            rows=[
                QuarantineRow(fmt(r.sample_id), fmt(r.reason), fmt(r.detail))
                for r in q.head(cap).itertuples(index=False)
            ],
        )

    def run(self) -> Run:
        score, vrun = self.inp.score, get(self.inp.validation, "run") or {}
        keys = (
            ("device", "device"),
            ("train seconds", "train_seconds"),
            ("train images / s", "train_images_per_s"),
            ("final train accuracy", "final_train_accuracy"),
        )
        # Wall-clock figures live in timings/*.json (no stage depends on them); rows only for what is given.
        rows = [
            RunRow(label, key, fmt(get(score, key), 3), fmt(get(vrun, key), 3))
            for label, key in keys
            if get(score, key) is not None or get(vrun, key) is not None
        ]
        for name in sorted(set(get(score, "scorer_seconds") or {}) | set(get(vrun, "scorer_seconds") or {})):
            label = f"seconds: {fmt(name)}"
            rows.append(
                RunRow(
                    label, label, fmt(get(score, "scorer_seconds", name), 3), fmt(get(vrun, "scorer_seconds", name), 3)
                )
            )
        failures = []
        for name in sorted(set(get(score, "failures") or {}) | set(get(vrun, "failures") or {})):
            label = f"failed: {fmt(name)}"
            failures.append(RunRow(label, label, fmt(get(score, "failures", name)), fmt(get(vrun, "failures", name))))
        trainer = get(score, "trainer") or get(vrun, "trainer")
        return Run(rows, failures, fmt(trainer) if isinstance(trainer, Mapping) else None)


def build_view(inputs: ReportInputs, options: ReportOptions, manifest: pd.DataFrame, facts: Facts) -> ReportView:
    """Compute everything the report shows (this renders the figures and thumbnails).

    Parameters
    ----------
    inputs
        The report inputs.
    options
        How many suspects, groups and quarantined rows to show.
    manifest
        The manifest from :func:`~memclean.report.facts.prepare_manifest`.
    facts
        The facts from :func:`~memclean.report.facts.compute_facts`.

    Returns
    -------
    ReportView
    """
    b = _Builder(inputs, options, manifest, facts)
    header = Header(fmt(facts.rows), fmt(facts.kept), fmt(facts.dropped), fmt(facts.scorer), b.gate)
    return ReportView(
        header=header,
        summary=b.summary(),
        cleaning=b.cleaning(),
        class_balance=b.class_balance(),
        validation=b.validation(),
        histograms=b.histograms(),
        top_suspects=b.top_suspects(),
        noise_matrix=b.noise_matrix(),
        duplicates=b.duplicates(),
        influence=b.influence(),
        quarantine=b.quarantine(),
        run=b.run(),
        digests=list(digests(inputs).items()),
        params=params_sections(inputs.params),
    )
