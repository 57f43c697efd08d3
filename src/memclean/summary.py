"""The run summary: one typed model read from the stages' JSON reports, rendered for every view.

``make run`` / ``memclean run`` / ``memclean show`` print :meth:`RunSummary.text`;
the Prefect flow publishes :meth:`RunSummary.markdown` and the table methods
as artifacts. Nothing else formats these numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from memclean.gate import Gate


def _num(value: Any, digits: int = 4) -> str:
    """A number for people: floats to ``digits`` decimals, ``None`` as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _interval(value: Any) -> tuple[float, float] | None:
    """``[low, high]`` from JSON, or ``None``."""
    if not isinstance(value, list | tuple) or len(value) != 2 or None in value:
        return None
    return float(value[0]), float(value[1])


def read_report(path: Path) -> dict[str, Any] | None:
    """A stage's JSON report as a dict; ``None`` when missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class IngestCounts:
    """Rows read, usable and quarantined (``ingest.json``)."""

    rows: int
    ok: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)
    by_split: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class DedupCounts:
    """Duplicate groups (``dedup.json``)."""

    groups: int
    exact: int
    near: int
    label_conflict: int
    cross_split: int


@dataclass(frozen=True)
class Validation:
    """Injected noise, per-scorer detection metrics and the gate (``validation.json``)."""

    noise: dict[str, Any]
    scorers: dict[str, dict[str, Any]]
    best: str | None
    gate: Gate

    def table(self) -> pd.DataFrame:
        """One row per scorer, best AUROC first (ties: the later name first, as :func:`~memclean.gate.best_scorer`)."""
        rows = [
            {"scorer": name, "auroc": r.get("auroc"), "ap": r.get("ap"), "precision_at_k": r.get("precision_at_k")}
            for name, r in self.scorers.items()
        ]
        frame = pd.DataFrame(rows, columns=["scorer", "auroc", "ap", "precision_at_k"])
        order = frame.sort_values(["auroc", "scorer"], ascending=[False, False], na_position="last", kind="stable")
        return order.reset_index(drop=True)


@dataclass(frozen=True)
class CleanCounts:
    """What cleaning kept and dropped (``clean.json``)."""

    rows: int
    kept: int
    dropped: int
    dropped_by_score: int
    suspected: int
    by_reason: dict[str, int]
    score_rule: str | None = None
    near_duplicate_rule: str | None = None
    likely_mislabeled: int | None = None
    atypical: int | None = None
    estimated_noise_rate: float | None = None
    noise_rate_ci95: tuple[float, float] | None = None
    advice: tuple[str, ...] = ()

    @classmethod
    def from_manifest(cls, manifest: pd.DataFrame) -> CleanCounts:
        """Counts read off a clean manifest itself (when its ``clean.json`` is not at hand)."""
        keep = manifest["keep"].astype(bool)
        reasons = manifest.loc[~keep, "drop_reason"].value_counts()
        suspected = (
            manifest["suspected"].astype(bool) if "suspected" in manifest else pd.Series(False, index=manifest.index)
        )
        suspicion = manifest.get("suspicion")
        return cls(
            rows=len(manifest),
            kept=int(keep.sum()),
            dropped=int((~keep).sum()),
            dropped_by_score=int(reasons.get("suspected_label_error", 0)),
            suspected=int(suspected.sum()),
            by_reason={str(k): int(v) for k, v in sorted(reasons.items())},
            likely_mislabeled=int((suspicion == "likely_mislabeled").sum()) if suspicion is not None else None,
            atypical=int((suspicion == "atypical").sum()) if suspicion is not None else None,
        )

    def reason_table(self) -> pd.DataFrame:
        """``reason, count`` of dropped rows, most first."""
        frame = pd.DataFrame(
            sorted(self.by_reason.items(), key=lambda kv: (-kv[1], kv[0])), columns=["reason", "count"]
        )
        return frame


@dataclass(frozen=True)
class RunSummary:
    """Headline numbers of a pipeline run; each part is ``None`` when its stage has not run."""

    ingest: IngestCounts | None = None
    dedup: DedupCounts | None = None
    validation: Validation | None = None
    clean: CleanCounts | None = None

    @classmethod
    def from_reports(
        cls,
        ingest: Mapping[str, Any] | None = None,
        dedup: Mapping[str, Any] | None = None,
        validation: Mapping[str, Any] | None = None,
        clean: Mapping[str, Any] | None = None,
    ) -> RunSummary:
        """Build from the loaded JSON reports of the stages (any may be missing)."""
        return cls(
            ingest=IngestCounts(
                rows=int(ingest.get("rows", 0)),
                ok=int(ingest.get("ok", 0)),
                quarantined=int(ingest.get("quarantined", 0)),
                reasons=dict(ingest.get("quarantine_reasons") or {}),
                by_split={str(k): dict(v) for k, v in (ingest.get("by_split") or {}).items()},
            )
            if ingest
            else None,
            dedup=DedupCounts(
                groups=int(dedup.get("groups", 0)),
                exact=int(dedup.get("exact_groups", 0)),
                near=int(dedup.get("near_groups", 0)),
                label_conflict=int(dedup.get("label_conflict_groups", 0)),
                cross_split=int(dedup.get("cross_split_groups", 0)),
            )
            if dedup
            else None,
            validation=Validation(
                noise=dict(validation.get("noise") or {}),
                scorers={str(k): dict(v or {}) for k, v in (validation.get("scorers") or {}).items()},
                best=validation.get("best"),
                gate=Gate.from_dict(validation.get("gate") or {}),
            )
            if validation
            else None,
            clean=CleanCounts(
                rows=int(clean.get("rows", 0)),
                kept=int(clean.get("kept", 0)),
                dropped=int(clean.get("dropped", 0)),
                dropped_by_score=int(clean.get("dropped_by_score", 0)),
                suspected=int(clean.get("suspected", 0)),
                by_reason={str(k): int(v) for k, v in (clean.get("by_reason") or {}).items()},
                score_rule=clean.get("score_rule"),
                near_duplicate_rule=clean.get("near_duplicate_rule"),
                likely_mislabeled=_opt_int(clean.get("likely_mislabeled")),
                atypical=_opt_int(clean.get("atypical")),
                estimated_noise_rate=_opt_float(clean.get("estimated_noise_rate")),
                noise_rate_ci95=_interval(clean.get("noise_rate_ci95")),
                advice=tuple(str(a) for a in (clean.get("advice") or ())),
            )
            if clean
            else None,
        )

    @classmethod
    def from_dir(cls, reports: Path) -> RunSummary:
        """Read ``ingest.json``, ``dedup.json``, ``validation.json`` and ``clean.json`` from ``reports``."""
        return cls.from_reports(
            *(read_report(reports / f"{n}.json") for n in ("ingest", "dedup", "validation", "clean"))
        )

    # ------------------------------------------------------------------ views

    def lines(self) -> list[str]:
        """The summary as short sentences (shared by the text and Markdown views)."""
        out: list[str] = []
        if self.ingest:
            i = self.ingest
            reasons = ", ".join(f"{k} {v}" for k, v in i.reasons.items()) or "none"
            out.append(f"ingest: {i.rows} rows, {i.ok} ok, {i.quarantined} quarantined ({reasons})")
        if self.dedup:
            d = self.dedup
            out.append(
                f"dedup: {d.groups} groups ({d.exact} exact, {d.near} near), "
                f"{d.label_conflict} with conflicting labels, {d.cross_split} across splits"
            )
        if self.validation:
            v, g = self.validation, self.validation.gate
            n = v.noise
            out.append(
                f"validate: {n.get('flipped')}/{n.get('n')} labels flipped "
                f"({n.get('kind')}, rate {n.get('rate')}, seed {n.get('seed')}); "
                f"best scorer {v.best} (AUROC {_num((v.scorers.get(v.best or '') or {}).get('auroc'))})"
            )
            out.append(
                f"gate: {'passed' if g.passed else 'FAILED'} on {g.scorer} "
                f"(AUROC {_num(g.auroc)}, minimum {_num(g.min_auroc)}): {g.reason}"
            )
        if self.clean:
            c = self.clean
            reasons = ", ".join(f"{k} {v}" for k, v in c.by_reason.items()) or "none"
            out.append(
                f"clean: {c.rows} rows, {c.kept} kept, {c.dropped} dropped ({reasons}); "
                f"{c.dropped_by_score} dropped and {c.suspected} suspected by score"
            )
            if c.likely_mislabeled is not None and c.atypical is not None:
                out.append(
                    f"suspected: {c.likely_mislabeled} likely mislabeled, "
                    f"{c.atypical} atypical but probably correct (kept, flagged)"
                )
            if c.estimated_noise_rate is not None:
                ci = c.noise_rate_ci95
                span = f" (95% CI {ci[0]:.4f}–{ci[1]:.4f})" if ci else ""
                out.append(f"estimated noise rate: {c.estimated_noise_rate:.4f}{span}")
            if c.score_rule:
                out.append(f"score rule: {c.score_rule}")
            if c.near_duplicate_rule:
                out.append(f"near duplicates: {c.near_duplicate_rule}")
            out += [f"advice: {a}" for a in c.advice]
        return out

    def text(self) -> str:
        """Plain text for a terminal: the sentences, then the AUROC table."""
        if not (self.ingest or self.dedup or self.validation or self.clean):
            return "no outputs yet: run `memclean run` (or `dvc repro`)"
        out = self.lines()
        if self.validation and self.validation.scorers:
            table = self.validation.table()
            out += ["", table.to_string(index=False, float_format=lambda x: f"{x:.4f}", na_rep="n/a")]
        return "\n".join(out)

    def markdown(self) -> str:
        """Markdown: the sentences as a list, then the AUROC and drop-reason tables."""
        out = [f"- {line}" for line in self.lines()]
        if self.validation and self.validation.scorers:
            out += ["", self.validation.table().to_markdown(index=False, floatfmt=".4f")]
        if self.clean and self.clean.by_reason:
            out += ["", self.clean.reason_table().to_markdown(index=False)]
        return "\n".join(out) + "\n"
