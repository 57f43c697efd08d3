"""The report's view model: everything the page shows, already formatted as plain (unescaped) text.

:func:`memclean.report.build.build_view` computes it from
:class:`~memclean.report.inputs.ReportInputs`; the HTML and Markdown templates
only lay it out (and escape it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: A PNG data URI, or ``None`` where there is no image.
ImageURI = str | None

#: The validation gate: passed, failed, or unknown (no gate in the JSON reports).
GateState = Literal["pass", "fail", "unknown"]


@dataclass(frozen=True)
class Status:
    """What the clean stage did with a row: ``kind`` is kept, flagged (kept but suspected) or dropped."""

    kind: Literal["kept", "flagged", "dropped"]
    reason: str = ""  #: the drop reason code (dropped rows only)


@dataclass(frozen=True)
class Header:
    """The page title line; ``gate`` is the validation gate's state."""

    rows: str
    kept: str
    dropped: str
    scorer: str
    gate: GateState


@dataclass(frozen=True)
class ReasonRow:
    """Rows dropped for one reason code, the stage that dropped them and the share of all rows."""

    code: str
    stage: str
    meaning: str
    rows: str
    share: str


@dataclass(frozen=True)
class SplitRow:
    """Rows of one split (or of all, ``split`` = "total"): read, ok and quarantined at ingest, kept and dropped."""

    split: str
    rows: str
    ok: str
    quarantined: str
    kept: str
    dropped: str


@dataclass(frozen=True)
class Summary:
    """Headline counts and their shares of all rows, rows per split, drops by reason, dataset facts, provenance.

    ``splits`` ends with the total; ``dataset`` and ``provenance`` (the ingest
    source, dataset root and commit) are (label, value) pairs.
    """

    rows: str
    kept: str
    kept_share: str
    dropped: str
    dropped_share: str
    quarantined: str
    quarantined_share: str
    suspected: str
    suspected_share: str
    groups: str
    splits: list[SplitRow]
    reasons: list[ReasonRow]
    dataset: list[tuple[str, str]]
    provenance: list[tuple[str, str]]


@dataclass(frozen=True)
class Cleaning:
    """What the score said about the rows and what was done with them (``clean.json``).

    ``rows`` are (label, value) pairs; ``gate_failed`` puts ``reason`` ("why")
    and ``advice`` ("what to try") prominently on the page.
    """

    rows: list[tuple[str, str]]
    gate_failed: bool
    reason: str
    advice: list[str]


@dataclass(frozen=True)
class ClassRow:
    """Rows of one class before (ok rows) and after cleaning (kept rows)."""

    name: str
    before: str
    after: str
    removed: str
    removed_share: str


@dataclass(frozen=True)
class ClassBalance:
    """The class-balance bar chart and table."""

    figure: ImageURI
    rows: list[ClassRow]


@dataclass(frozen=True)
class ScorerRow:
    """One scorer's validation result; ``roles`` holds "best", "gate" and/or "cleaning"."""

    name: str
    auroc: str
    ap: str
    precision_at_k: str
    k: str
    nonfinite: str
    roles: list[str]
    description: str
    auroc_all_rows: str = "n/a"  #: AUROC over every row (the dataset's own errors count as negatives)


@dataclass(frozen=True)
class Validation:
    """The validation gate, the injected noise, each scorer's result and the cleaning-by-score rule."""

    gate: GateState
    gate_scorer: str
    gate_auroc: str
    gate_min: str
    gate_reason: str
    warning: str | None
    noise_flipped: str
    noise_n: str
    noise_kind: str
    noise_rate: str
    noise_seed: str
    scorers: list[ScorerRow]
    show_descriptions: bool
    show_all_rows: bool  #: some scorer has ``auroc_all_rows``: the table gets the "AUROC (all rows)" column
    measured_on: str | None  #: what the metrics were measured on (``validation.json``'s ``measured_on``)
    failures: list[tuple[str, str]]
    roc_figure: ImageURI
    scorer: str
    threshold: str
    target_precision: str
    score_action: str
    suspected: str
    dropped_by_score: str
    rule: str


@dataclass(frozen=True)
class Histograms:
    """The score histograms; ``threshold`` is ``None`` when clean.json has none."""

    figure: ImageURI
    threshold: str | None
    gate_failed: bool


@dataclass(frozen=True)
class Suspect:
    """One top-suspect tile; ``differs`` when the suggested label is not the given one."""

    sample_id: str
    given: str
    suggested: str
    differs: bool
    score: str
    image: ImageURI
    status: Status
    suspicion: str = ""  #: the badge text ("likely mislabeled", "atypical, kept"...); "" when none
    confidence: str = ""  #: out-of-sample probability of the suggested label ("" when unknown)


@dataclass(frozen=True)
class Member:
    """One member of a duplicate group.

    ``label`` is the manifest's class name (the duplicate table's when the
    manifest lacks the row), ``table_label`` the one the duplicate table
    recorded; ``status`` is ``None`` for a sample outside the manifest.
    """

    sample_id: str
    label: str
    table_label: str
    split: str
    distance: str
    representative: bool
    image: ImageURI
    status: Status | None


@dataclass(frozen=True)
class DuplicateGroup:
    """One duplicate group; ``conflict_text``/``cross_text`` are yes, no or n/a (column missing)."""

    id: str
    kind: Literal["exact", "near"]
    size: int
    conflict: bool
    cross: bool
    conflict_text: str
    cross_text: str
    members: list[Member]


@dataclass(frozen=True)
class DuplicateTier:
    """One tier of verified duplicate pairs (exact, near or similar) and what the pipeline does with it."""

    kind: str
    pairs: str
    cross: str
    meaning: str


@dataclass(frozen=True)
class Duplicates:
    """Duplicate-group counts and the groups shown; ``groups`` is ``None`` without a duplicate table."""

    total: str
    exact: str
    near: str
    conflict: str
    cross: str
    method: str
    max_distance: str
    group_count: int
    groups: list[DuplicateGroup] | None
    tiers: list[DuplicateTier]


@dataclass(frozen=True)
class PairSide:
    """One image of an influence pair: the held-out target or its training source.

    ``label`` is the given class name; ``split``, ``label``, ``image`` and
    ``status`` are n/a / ``None`` for a sample outside the manifest.
    """

    sample_id: str
    split: str
    label: str
    image: ImageURI
    status: Status | None


@dataclass(frozen=True)
class InfluencePair:
    """A held-out image and the training image that most carries its prediction (Feldman & Zhang)."""

    position: int
    influence: str
    se: str
    n_in: str
    n_out: str
    target: PairSide
    source: PairSide


@dataclass(frozen=True)
class Influence:
    """``fz_influence``'s strongest pairs.

    ``state``: ``shown`` (pairs, perhaps none), ``off`` (the table is empty:
    the scorer did not run) or ``missing`` (no table: an older run).
    """

    state: Literal["shown", "off", "missing"]
    pairs: list[InfluencePair]
    targets: str


@dataclass(frozen=True)
class NoiseCell:
    """One count of the noise matrix; ``off`` for a non-zero count off the diagonal (a label error)."""

    count: str
    diagonal: bool
    off: bool


@dataclass(frozen=True)
class NoiseRow:
    """The row of one given class: its counts by estimated true class, its total and its noise rate."""

    given: str
    cells: list[NoiseCell]
    total: str
    noise_rate: str


@dataclass(frozen=True)
class NoiseMatrix:
    """Confident learning's estimated given × true matrix.

    ``state``: ``shown``, ``unavailable`` (the scorer did not run or the file is
    unusable: ``reason``) or ``missing`` (no file: an older run).
    """

    state: Literal["shown", "unavailable", "missing"]
    reason: str
    scorer: str
    classes: list[str]
    rows: list[NoiseRow]
    total: str
    errors: str
    noise_rate: str
    noise_share: str


@dataclass(frozen=True)
class QuarantineRow:
    """One row quarantined at ingest."""

    sample_id: str
    reason: str
    detail: str


@dataclass(frozen=True)
class Quarantine:
    """Rows quarantined at ingest: the total, the count per reason and the first ``cap`` rows."""

    total: str
    cap: int
    truncated: bool
    by_reason: list[tuple[str, str]]
    rows: list[QuarantineRow]


@dataclass(frozen=True)
class RunRow:
    """One device/timing line: ``label`` for the page, ``key`` (the JSON key) for the Markdown."""

    label: str
    key: str
    score: str
    validate: str


@dataclass(frozen=True)
class Run:
    """Device and timings of the scoring and the validation runs, failed scorers, the trainer settings."""

    rows: list[RunRow]
    failures: list[RunRow]
    trainer: str | None


@dataclass(frozen=True)
class ParamsSection:
    """The validated values of one params section as (dotted key, value) pairs; ``None`` when unknown."""

    name: str
    values: list[tuple[str, str]] | None


@dataclass(frozen=True)
class ReportView:
    """Everything the report shows, section by section.

    ``top_suspects`` is ``None`` when the manifest has no score of the
    cleaning scorer, ``quarantine`` when no row was quarantined, ``cleaning``
    when neither ``clean.json`` nor the manifest says how suspected rows were
    classed (an older run).
    """

    header: Header
    summary: Summary
    cleaning: Cleaning | None
    class_balance: ClassBalance
    validation: Validation
    histograms: Histograms
    top_suspects: list[Suspect] | None
    noise_matrix: NoiseMatrix
    duplicates: Duplicates
    influence: Influence
    quarantine: Quarantine | None
    run: Run
    digests: list[tuple[str, str]]
    params: list[ParamsSection]
