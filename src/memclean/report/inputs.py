"""The report's inputs, options and result, and the fixed texts and ids the page relies on.

:class:`ReportInputs` is what the report is made from, :class:`ReportOptions`
how much it shows and :class:`Report` what it gives back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from memclean.errors import MemcleanError
from memclean.schema import Reason

#: ``id`` of every section of the HTML page, in page order.
SECTION_IDS: tuple[str, ...] = (
    "summary",
    "class-balance",
    "validation",
    "score-histograms",
    "top-suspects",
    "noise-matrix",
    "duplicate-groups",
    "influence-pairs",
    "quarantined",
    "run",
    "params",
)

#: Sentence shown (HTML and Markdown) when the validation gate failed.
GATE_FAILED_TEXT = "The validation gate FAILED: nothing was dropped by score."

#: ``clean.json``'s ``decision_rule`` in words: which suspected rows count as likely mislabeled.
DECISION_RULE_TEXT: dict[str, str] = {
    "score_and_confident_learning": (
        "likely mislabeled = score at or above the threshold and confident learning marks a label issue; "
        "above the threshold only = atypical (kept, flagged)"
    ),
    "score_only": (
        "likely mislabeled = score at or above the threshold alone (no confident learning verdict: "
        "the ensemble scorers did not run), so no row is called atypical"
    ),
}
DECISION_RULE_TEXT["confident_learning_and_score"] = DECISION_RULE_TEXT["score_and_confident_learning"]

#: Badge of a top-suspect tile per manifest ``suspicion`` (an atypical row that was kept reads "atypical, kept").
SUSPICION_TEXT: dict[str, str] = {"likely_mislabeled": "likely mislabeled", "atypical": "atypical"}

#: Line shown (HTML and Markdown) when ``influence.parquet`` is empty: how to turn the scorer on.
INFLUENCE_OFF_TEXT = "fz_influence did not run: no influence pairs. Enable it in params.yaml with"

#: The params setting that enables ``fz_influence`` (shown after :data:`INFLUENCE_OFF_TEXT`).
INFLUENCE_ENABLE = "score.scorers: {fz_influence: {}}"

#: Columns the manifest must have for a report to be made.
REQUIRED_COLUMNS: tuple[str, ...] = ("sample_id", "status", "keep")

#: Readable explanation of each drop reason code.
REASON_TEXT: dict[str, str] = {
    Reason.UNREADABLE.value: "could not be read or decoded",
    Reason.MISSING.value: "listed file does not exist",
    Reason.TRUNCATED.value: "truncated image data",
    Reason.NOT_AN_IMAGE.value: "not an image",
    Reason.TOO_LARGE.value: "above the pixel-count limit",
    Reason.FORMAT_NOT_ALLOWED.value: "format not allowed",
    Reason.PATH_ESCAPE.value: "path outside the dataset root",
    Reason.UNKNOWN_LABEL.value: "label missing or unknown",
    Reason.DUPLICATE_PATH.value: "same file listed twice",
    Reason.EXACT_DUPLICATE.value: "identical copy of an earlier image",
    Reason.NEAR_DUPLICATE.value: "edited copy of an earlier image (same split)",
    Reason.CONFLICTING_DUPLICATE.value: "duplicate group with disagreeing labels",
    Reason.SPLIT_LEAK.value: "duplicate of a held-out (test/val) image",
    Reason.SUSPECTED_LABEL_ERROR.value: "score above the validated threshold",
    Reason.NONFINITE_SCORE.value: "the scorer gave no finite score",
}


@dataclass
class ReportInputs:
    """Everything the report is made from, already loaded.

    Attributes
    ----------
    manifest
        The cleaned manifest: one row per input row (``sample_id``, ``status``,
        ``keep``, ``drop_reason``, ``label``, ``row``, ``<scorer>_score``...).
    classes
        Class names; index = label.
    pixels
        ``N×C×H×W`` uint8 array indexed by ``manifest.row`` (may be a memmap);
        ``None`` leaves the image grids empty.
    duplicates
        The dedup table (``group_id``, ``sample_id``, ``kind``, ``distance``,
        ``label``, ``split``, ``label_conflict``, ``cross_split``...).
    validation
        ``validation.json`` (``noise``, ``scorers``, ``best``, ``gate``, ``run``).
    roc
        ROC curve per scorer: frames with ``fpr`` and ``tpr``.
    ingest, dedup, score, clean
        ``ingest.json``, ``dedup.json``, ``score.json`` and ``clean.json``.
    params_digests
        Extra ``name -> digest`` pairs to list (e.g. the manifest's metadata
        digest and the report's own); the JSON reports' digests are added.
    scorer_descriptions
        One-line description of each scorer (``name -> text``), shown in the
        validation table's "what it measures" column; a scorer missing here
        shows an empty cell, and the column is left out when none of the
        validated scorers has one.
    source, root
        The ingest source name (``digits``, ``imagefolder``...) and the dataset
        root it read, as recorded at ingest; ``None`` shows as n/a.
    commit
        The code the report was built from, e.g. the git commit of the project
        folder (``<sha> + uncommitted changes`` when its sources were edited);
        ``None`` shows as n/a.
    params
        The validated values of each params section (``section -> values``,
        nested mappings allowed), shown as dotted keys in the Params section;
        a section mapped to ``None`` shows as n/a.
    influence
        ``fz_influence``'s influence pairs (``influence.parquet``: the columns of
        :data:`memclean.schema.INFLUENCE_SCHEMA`, sample ids as in the manifest).
        Empty: the scorer did not run (the page says how to enable it);
        ``None``: no such file (an older run), shown as not available.
    noise_matrix
        Confident learning's estimated noise matrix (``noise_matrix.json``:
        ``available``, ``classes``, ``joint`` given × true counts,
        ``estimated_label_errors``, ``noise_rate``...; or ``available: false``
        with a ``reason``). ``None``: no such file, shown as not available.
    """

    manifest: pd.DataFrame
    classes: Sequence[str] = ()
    pixels: np.ndarray | None = None
    duplicates: pd.DataFrame | None = None
    validation: Mapping[str, Any] = field(default_factory=dict)
    roc: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    ingest: Mapping[str, Any] = field(default_factory=dict)
    dedup: Mapping[str, Any] = field(default_factory=dict)
    score: Mapping[str, Any] = field(default_factory=dict)
    clean: Mapping[str, Any] = field(default_factory=dict)
    params_digests: Mapping[str, str] = field(default_factory=dict)
    scorer_descriptions: Mapping[str, str] = field(default_factory=dict)
    source: str | None = None
    root: str | None = None
    commit: str | None = None
    params: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)
    influence: pd.DataFrame | None = None
    noise_matrix: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ReportOptions:
    """How much the report shows.

    Attributes
    ----------
    top_suspects
        Images in the top-suspects grid.
    duplicate_groups
        Duplicate groups shown side by side.
    max_quarantined
        Rows of the quarantine table (the total is always given).
    influence_pairs
        Strongest train → held-out influence pairs shown side by side.
    """

    top_suspects: int = 48
    duplicate_groups: int = 12
    max_quarantined: int = 200
    influence_pairs: int = 12

    def __post_init__(self) -> None:
        for name in ("top_suspects", "duplicate_groups", "max_quarantined", "influence_pairs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MemcleanError(f"report.{name} must be a non-negative integer; got {value!r}")


@dataclass
class Report:
    """The rendered report.

    Attributes
    ----------
    html
        The self-contained HTML page.
    markdown
        The Markdown summary.
    metrics
        Headline numbers (JSON-serialisable, no NaN).
    """

    html: str
    markdown: str
    metrics: dict[str, Any]
