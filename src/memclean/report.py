"""The audit report: one self-contained HTML page, a Markdown summary and headline metrics.

Everything here takes explicit inputs (the cleaned manifest, the pixel array,
the duplicate table and the JSON reports of the earlier stages, already
loaded) and returns strings and dicts; the ``report`` stage writes them.

The HTML page has no external reference of any kind: CSS is inline and every
image (matplotlib figures, sample thumbnails) is a ``data:image/png;base64``
URI. Every string that comes from the data (sample ids, file names, class
names, reason details, scorer names) is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image

from memclean.errors import MemcleanError
from memclean.schema import INGEST_REASONS, Reason

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

#: ``id`` of every section of the HTML page, in page order.
SECTION_IDS: tuple[str, ...] = (
    "summary",
    "class-balance",
    "validation",
    "score-histograms",
    "top-suspects",
    "duplicate-groups",
    "quarantined",
    "run",
    "params",
)

#: Sentence shown (HTML and Markdown) when the validation gate failed.
GATE_FAILED_TEXT = "The validation gate FAILED: nothing was dropped by score."

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
    Reason.CONFLICTING_DUPLICATE.value: "duplicate group with disagreeing labels",
    Reason.SPLIT_LEAK.value: "duplicate of a held-out (test/val) image",
    Reason.SUSPECTED_LABEL_ERROR.value: "score above the validated threshold",
    Reason.NONFINITE_SCORE.value: "the scorer gave no finite score",
}

_INGEST_CODES = frozenset(r.value for r in INGEST_REASONS)
_NA = "n/a"
_THUMB = 72  # target thumbnail size in CSS pixels


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
    """

    top_suspects: int = 48
    duplicate_groups: int = 12
    max_quarantined: int = 200

    def __post_init__(self) -> None:
        for name in ("top_suspects", "duplicate_groups", "max_quarantined"):
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


# --------------------------------------------------------------------------- helpers


def _get(mapping: Any, *keys: str) -> Any:
    """Nested ``dict.get`` that returns ``None`` on any missing level."""
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _num(value: Any) -> float | None:
    """A finite float, or ``None``."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _fmt(value: Any, digits: int = 4) -> str:
    """Format a value for display (unescaped); missing or NaN -> ``n/a``."""
    if value is None or value is pd.NA:
        return _NA
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        if not math.isfinite(float(value)):
            return _NA
        text = f"{float(value):.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, Mapping | list | tuple):
        if isinstance(value, Mapping):
            return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
        return ", ".join(map(_fmt, value))
    return str(value)


def _h(value: Any, digits: int = 4) -> str:
    """Format and HTML-escape."""
    return html.escape(_fmt(value, digits), quote=True)


def _fixed(value: Any, digits: int = 4) -> str:
    """A number with a fixed number of decimals (for aligned columns), or ``n/a``."""
    number = _num(value)
    return _NA if number is None else f"{number:.{digits}f}"


def _md(value: Any, digits: int = 4) -> str:
    """Format and escape for a Markdown table cell (HTML-escaped, pipes escaped, one line)."""
    text = html.escape(_fmt(value, digits), quote=False)
    return " ".join(text.replace("|", "\\|").split())


def _mpl(text: Any) -> str:
    """Make a string safe as matplotlib text (no mathtext)."""
    return str(text).replace("$", r"\$")


def _pct(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else _NA


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A matplotlib figure on the Agg canvas (matplotlib is imported on first use: it is slow to import)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _figure_uri(fig: Figure, dpi: int = 96) -> str:
    """Render a matplotlib figure (Agg) and return a PNG data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_data_uri(image: np.ndarray, size: int = _THUMB) -> str:
    """Encode one ``C×H×W`` uint8 image as a PNG data URI.

    Parameters
    ----------
    image
        ``C×H×W`` (C = 1 or 3) or ``H×W`` uint8 pixels.
    size
        Target size of the longer side. Smaller images are enlarged by an
        integer factor with nearest-neighbour sampling (so 8×8 digits stay
        crisp); larger ones are shrunk with Lanczos filtering.

    Returns
    -------
    str
        ``data:image/png;base64,...``
    """
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr[:3], 0, -1)
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    img = Image.fromarray(arr, mode="L" if arr.ndim == 2 else "RGB")
    longest = max(img.size)
    if longest <= size:
        factor = max(1, size // longest)
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    else:
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _label_name(label: Any, classes: Sequence[str]) -> str | None:
    if label is None or label is pd.NA or (isinstance(label, float) and math.isnan(label)):
        return None
    idx = int(label)
    return str(classes[idx]) if 0 <= idx < len(classes) else str(idx)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """An HTML table from already-escaped cells."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table from already-escaped cells."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


# --------------------------------------------------------------------------- the facts


@dataclass
class _Facts:
    """Numbers computed once and shared by the HTML, the Markdown and the metrics."""

    rows: int
    ok: int
    quarantined: int
    kept: int
    dropped: int
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


def _prepare_manifest(manifest: pd.DataFrame, pixels: np.ndarray | None) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in manifest.columns]
    if missing:
        raise MemcleanError(f"the manifest lacks columns {missing}: was it written by the clean stage?")
    m = manifest.reset_index(drop=True).copy()
    defaults: dict[str, Any] = {
        "label": pd.NA, "label_name": None, "split": None, "reason": None, "detail": None, "row": pd.NA,
        "drop_reason": None, "suspected": False, "suggested_label": pd.NA, "dup_group": pd.NA,
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


def _score_columns(m: pd.DataFrame) -> list[str]:
    return [c for c in m.columns if c.endswith("_score") and pd.api.types.is_numeric_dtype(m[c])]


def _facts(inp: ReportInputs, m: pd.DataFrame) -> _Facts:
    ok_mask = m["status"] == "ok"
    dropped = m.loc[~m["keep"], "drop_reason"].fillna("unknown").astype(str)
    by_reason = {str(k): int(v) for k, v in sorted(dropped.value_counts().items())}
    score_cols = _score_columns(m)
    names = [c[: -len("_score")] for c in score_cols]

    # The scorer the clean stage used; fall back to the gate's, then the best one.
    scorer = None
    for candidate in (_get(inp.clean, "scorer"), _get(inp.validation, "gate", "scorer"), _get(inp.validation, "best")):
        if isinstance(candidate, str) and candidate in names:
            scorer = candidate
            break
    if scorer is None and names:
        scorer = "combined" if "combined" in names else names[0]

    gate = _get(inp.clean, "gate") if isinstance(_get(inp.clean, "gate"), Mapping) else None
    vgate = _get(inp.validation, "gate") if isinstance(_get(inp.validation, "gate"), Mapping) else {}
    gate = {**(vgate or {}), **(gate or {})}
    passed = gate.get("passed")
    best = _get(inp.validation, "best")

    classes = list(inp.classes)

    def class_counts(mask: pd.Series) -> dict[str, int]:
        vc = m.loc[mask, "label"].dropna().astype(int).value_counts()
        order = range(len(classes)) if classes else sorted(vc.index)
        out = {(_label_name(k, classes) or str(k)): int(vc.get(k, 0)) for k in order}
        for k in sorted(set(vc.index) - set(order)):
            out[str(k)] = int(vc[k])
        return out

    dups = inp.duplicates
    groups = exact_g = near_g = conflict_g = cross_g = None
    if dups is not None and "group_id" in dups.columns:
        groups = int(dups["group_id"].nunique())
        if "kind" in dups.columns:
            exact_ids = set(dups.loc[dups["kind"] == "exact", "group_id"])
            exact_g, near_g = len(exact_ids), groups - len(exact_ids)
        if "label_conflict" in dups.columns:
            conflict_g = int(dups.loc[dups["label_conflict"].astype(bool), "group_id"].nunique())
        if "cross_split" in dups.columns:
            cross_g = int(dups.loc[dups["cross_split"].astype(bool), "group_id"].nunique())
    dd = inp.dedup
    groups = groups if groups is not None else _get(dd, "groups")
    exact_g = exact_g if exact_g is not None else _get(dd, "exact_groups")
    near_g = near_g if near_g is not None else _get(dd, "near_groups")
    conflict_g = conflict_g if conflict_g is not None else _get(dd, "label_conflict_groups")
    cross_g = cross_g if cross_g is not None else _get(dd, "cross_split_groups")

    facts = _Facts(
        rows=len(m),
        ok=int(ok_mask.sum()),
        quarantined=int((m["status"] == "quarantined").sum()),
        kept=int(m["keep"].sum()),
        dropped=int((~m["keep"]).sum()),
        by_reason=by_reason,
        suspected=int(m["suspected"].sum()),
        score_columns=score_cols,
        scorer=scorer,
        threshold=_num(_get(inp.clean, "threshold")),
        gate_passed=bool(passed) if isinstance(passed, bool | np.bool_) else None,
        gate_scorer=gate.get("scorer"),
        gate_auroc=_num(gate.get("auroc")),
        gate_min=_num(gate.get("min_auroc")),
        gate_reason=gate.get("reason"),
        best=best if isinstance(best, str) else None,
        best_auroc=_num(_get(inp.validation, "scorers", best, "auroc")) if isinstance(best, str) else None,
        class_before=class_counts(ok_mask),
        class_after=class_counts(ok_mask & m["keep"]),
        groups=groups,
        exact_groups=exact_g,
        near_groups=near_g,
        conflict_groups=conflict_g,
        cross_groups=cross_g,
    )
    for key, mine in (("rows", facts.rows), ("kept", facts.kept), ("dropped", facts.dropped)):
        theirs = _get(inp.clean, key)
        if isinstance(theirs, int) and theirs != mine:
            log.warning("clean.json says %s=%s but the manifest has %s", key, theirs, mine)
    return facts


def _top_suspects(m: pd.DataFrame, scorer: str | None, n: int) -> pd.DataFrame | None:
    """The ``n`` ok rows with the highest finite ``<scorer>_score`` (column ``_s``), highest first.

    ``None`` when the manifest has no such score column. Ties keep manifest order.
    """
    col = f"{scorer}_score" if scorer else None
    if col is None or col not in m.columns:
        return None
    values = m[col].to_numpy(dtype=np.float64, na_value=np.nan)
    usable = (m["status"] == "ok").to_numpy() & np.isfinite(values)
    top = m.loc[usable].assign(_s=values[usable])
    return top.sort_values("_s", ascending=False, kind="stable").head(n)


def _metrics(f: _Facts, inp: ReportInputs) -> dict[str, Any]:
    return {
        "rows": f.rows,
        "ok": f.ok,
        "quarantined": f.quarantined,
        "kept": f.kept,
        "dropped": f.dropped,
        "dropped_by_reason": f.by_reason,
        "dropped_by_score": f.by_reason.get(Reason.SUSPECTED_LABEL_ERROR.value, 0),
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
    }


# --------------------------------------------------------------------------- figures


def _class_balance_figure(before: Mapping[str, int], after: Mapping[str, int]) -> str | None:
    names = list(before) + [k for k in after if k not in before]
    if not names:
        return None
    x = np.arange(len(names))
    width = max(6.0, min(14.0, 0.45 * len(names) + 2))
    fig = _new_figure((width, 3.6))
    ax = fig.add_subplot()
    ax.bar(x - 0.2, [before.get(n, 0) for n in names], 0.4, label="before (ok rows)", color="#9aa7b8")
    ax.bar(x + 0.2, [after.get(n, 0) for n in names], 0.4, label="after (kept)", color="#2f6fb3")
    if len(names) <= 60:
        ax.set_xticks(x, [_mpl(n)[:18] for n in names], rotation=0 if len(names) <= 12 else 90, fontsize=8)
    else:
        ax.set_xticks([])
        ax.set_xlabel(f"{len(names)} classes")
    ax.set_ylabel("samples")
    top = max([*before.values(), *after.values(), 1])
    ax.set_ylim(0, top * 1.18)
    ax.legend(frameon=False, fontsize=8, loc="upper center", ncol=2)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return _figure_uri(fig)


def _roc_figure(roc: Mapping[str, pd.DataFrame], scorers: Mapping[str, Any], highlight: str | None) -> str | None:
    curves = {n: f for n, f in roc.items() if {"fpr", "tpr"} <= set(f.columns) and len(f)}
    if not curves:
        return None
    fig = _new_figure((6.2, 4.6))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=1, ls="--")
    order = sorted(curves, key=lambda n: -(_num(_get(scorers, n, "auroc")) or 0.0))
    for name in order:
        frame = curves[name]
        value = _num(_get(scorers, name, "auroc"))
        auroc = f"{value:.4f}" if value is not None else _NA
        lw = 2.6 if name == highlight else 1.3
        ax.plot(frame["fpr"], frame["tpr"], lw=lw, label=_mpl(f"{name} (AUROC {auroc})"), zorder=3 if name == highlight else 2)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (injected flips found)")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return _figure_uri(fig)


def _histogram_figure(
    m: pd.DataFrame, cols: Sequence[str], chosen: str | None, threshold: float | None, applied: bool = True
) -> str | None:
    ok = m["status"] == "ok"
    series = {c[: -len("_score")]: m.loc[ok, c].to_numpy(dtype=np.float64, na_value=np.nan) for c in cols}
    series = {n: v[np.isfinite(v)] for n, v in series.items()}
    series = {n: v for n, v in series.items() if len(v)}
    if not series:
        return None
    names = sorted(series, key=lambda n: (n != chosen, n))
    ncol = min(4, len(names))
    nrow = math.ceil(len(names) / ncol)
    from matplotlib.ticker import MaxNLocator, NullFormatter

    fig = _new_figure((3.3 * ncol, 2.5 * nrow))
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        values = series[name]
        is_chosen = name == chosen
        ax.hist(values, bins=40, color="#2f6fb3" if is_chosen else "#9aa7b8", log=True)
        title = f"{name} (cleaning scorer)" if is_chosen else name
        ax.set_title(_mpl(title), fontsize=9, fontweight="bold" if is_chosen else "normal")
        if is_chosen and threshold is not None:
            label = f"threshold {threshold:.4g}" + ("" if applied else " (not applied)")
            ax.axvline(threshold, color="#c0392b", ls="--", lw=1.5, label=label)
            ax.legend(frameon=False, fontsize=7)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useMathText=True)
        ax.xaxis.get_offset_text().set_fontsize(7)
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.spines[["top", "right"]].set_visible(False)
    fig.supxlabel("score (higher = more suspicious)", fontsize=8)
    fig.supylabel("samples (log)", fontsize=8)
    fig.tight_layout()
    return _figure_uri(fig)


# --------------------------------------------------------------------------- HTML

_CSS = """
:root { --fg:#1f2933; --muted:#5f6b7a; --line:#d9dee5; --ok:#1e7b45; --bad:#b42318; --warn:#a15c07; --accent:#2f6fb3; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Helvetica, Arial, sans-serif;
       color: var(--fg); margin: 0; background: #f5f7fa; }
header { background: #1f2933; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header p { margin: 0; color: #c8d1dc; }
nav { padding: 8px 32px; background: #e9edf2; border-bottom: 1px solid var(--line); font-size: 13px; }
nav a { color: var(--accent); margin-right: 14px; text-decoration: none; }
main { padding: 8px 32px 40px; max-width: 1400px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 14px 20px; margin: 16px 0; }
h2 { font-size: 18px; margin: 0 0 10px; }
h3 { font-size: 14px; margin: 12px 0 6px; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 3px 10px; text-align: left; vertical-align: top; }
th { background: #f0f3f7; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 10px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 130px; }
.card .v { font-size: 22px; font-weight: 600; }
.card .k { color: var(--muted); font-size: 12px; }
.cols { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.gate { padding: 10px 14px; border-radius: 6px; margin: 8px 0; font-weight: 600; }
.gate.pass { background: #e6f4ea; color: var(--ok); border: 1px solid #a6d8b5; }
.gate.fail { background: #fdecea; color: var(--bad); border: 1px solid #f5b5ae; }
.gate.unknown { background: #fff6e5; color: var(--warn); border: 1px solid #f1d29a; }
.note { color: var(--muted); font-size: 12px; }
.warn { color: var(--bad); font-weight: 600; }
img.fig { max-width: 100%; height: auto; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(128px, 1fr)); gap: 10px; }
.tile { margin: 0; border: 1px solid var(--line); border-radius: 5px; padding: 6px; font-size: 11px; background: #fff; }
.tile img { display: block; margin: 0 auto 4px; image-rendering: pixelated; width: 72px; height: auto; background: #000; }
.tile.dropped { border-color: #f0a59c; background: #fff8f7; }
.tile.flagged { border-color: #f1d29a; background: #fffbf2; }
.tile .sid { font-family: ui-monospace, "DejaVu Sans Mono", monospace; color: var(--muted);
             overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.tile .diff { color: var(--bad); }
.badge { display: inline-block; max-width: 100%; border-radius: 3px; padding: 0 5px; margin-top: 2px;
         font-size: 10px; font-weight: 600; overflow-wrap: anywhere; }
.badge.kept { background: #e6f4ea; color: var(--ok); }
.badge.drop { background: #fdecea; color: var(--bad); }
.badge.flag { background: #fff6e5; color: var(--warn); }
.groups { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
.group { border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; }
.group.conflict { border-color: #f0a59c; }
.group.cross { border-left: 4px solid var(--warn); }
.group h3 { margin: 2px 0 6px; font-size: 13px; }
.members { display: flex; flex-wrap: wrap; gap: 8px; }
.members .tile { width: 124px; }
.noimg { width: 72px; height: 72px; margin: 0 auto 4px; display: flex; align-items: center; justify-content: center;
         background: #eee; color: var(--muted); }
td.detail { max-width: 640px; word-break: break-word; }
.narrow td { max-width: 360px; overflow-wrap: anywhere; }
td.mono, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; word-break: break-all; }
"""


class _Html:
    """Builds the HTML sections; holds the prepared manifest and the facts."""

    def __init__(self, inp: ReportInputs, opts: ReportOptions, m: pd.DataFrame, f: _Facts) -> None:
        self.inp, self.opts, self.m, self.f = inp, opts, m, f
        self.classes = list(inp.classes)

    # ---- small pieces

    def thumb(self, row: Any) -> str:
        if self.inp.pixels is None or row is None or row is pd.NA:
            return '<div class="noimg">no image</div>'
        uri = image_data_uri(np.asarray(self.inp.pixels[int(row)]))
        return f'<img src="{uri}" alt="sample image">'

    def status_badge(self, keep: bool, reason: Any, suspected: bool) -> tuple[str, str]:
        """(tile class, badge HTML)."""
        if not keep:
            code = _h(reason).replace("_", "_<wbr>")  # escaped text holds no "_" of its own markup
            return "dropped", f'<span class="badge drop">dropped: {code}</span>'
        if suspected:
            return "flagged", '<span class="badge flag">kept, flagged</span>'
        return "", '<span class="badge kept">kept</span>'

    @staticmethod
    def card(value: Any, key: str) -> str:
        return f'<div class="card"><div class="v">{_h(value)}</div><div class="k">{html.escape(key)}</div></div>'

    @staticmethod
    def section(sid: str, title: str, body: str) -> str:
        return f'<section id="{sid}"><h2>{html.escape(title)}</h2>\n{body}\n</section>'

    # ---- sections

    def summary(self) -> str:
        f, ing = self.f, self.inp.ingest
        cards = "".join(
            [
                self.card(f.rows, "rows in"),
                self.card(f.kept, f"kept ({_pct(f.kept, f.rows)})"),
                self.card(f.dropped, f"dropped ({_pct(f.dropped, f.rows)})"),
                self.card(f.quarantined, "quarantined at ingest"),
                self.card(f.suspected, "suspected by score"),
                self.card(f.groups, "duplicate groups"),
            ]
        )
        rows = []
        for code, n in sorted(f.by_reason.items(), key=lambda kv: (kv[0] not in _INGEST_CODES, -kv[1], kv[0])):
            stage = "ingest" if code in _INGEST_CODES else "clean"
            rows.append([_h(code), stage, _h(REASON_TEXT.get(code, "")), f'<span class="num">{_h(n)}</span>', _pct(n, f.rows)])
        rows.append(["<b>total dropped</b>", "", "", f"<b>{_h(f.dropped)}</b>", _pct(f.dropped, f.rows)])
        reasons = _table(["reason", "stage", "meaning", "rows", "share"], rows) if f.by_reason else "<p>No row was dropped.</p>"
        size = _get(ing, "image_size")
        facts = _table(
            ["", ""],
            [
                ["images stored at", _h(f"{size[0]}×{size[1]}" if isinstance(size, list) and len(size) == 2 else size)],
                ["channels", _h(_get(ing, "channels"))],
                ["resized at ingest", _h(_get(ing, "resized"))],
                ["classes", _h(len(self.classes) if self.classes else None)],
                ["score action", _h(_get(self.inp.clean, "score_action"))],
                ["notes", _h(_get(ing, "notes") or None)],
            ],
        )
        body = (
            f'<div class="cards">{cards}</div><div class="cols">'
            f"<div><h3>Rows dropped, by reason</h3>{reasons}</div><div><h3>Dataset</h3>{facts}</div></div>"
        )
        return self.section("summary", "Summary", body)

    def class_balance(self) -> str:
        f = self.f
        uri = _class_balance_figure(f.class_before, f.class_after)
        fig = f'<img class="fig" src="{uri}" alt="class balance before and after cleaning">' if uri else "<p>n/a</p>"
        rows = []
        for name in f.class_before:
            b, a = f.class_before.get(name, 0), f.class_after.get(name, 0)
            rows.append([_h(name), _h(b), _h(a), _h(b - a), _pct(b - a, b)])
        table = _table(["class", "before", "after", "removed", "removed %"], rows) if rows else ""
        note = '<p class="note">Before: rows read at ingest (status ok). After: those kept in the cleaned manifest.</p>'
        body = f'{note}<div class="cols"><div>{fig}</div><div>{table}</div></div>'
        return self.section("class-balance", "Class balance before / after", body)

    def gate_box(self) -> str:
        f = self.f
        detail = (
            f"scorer {_h(f.gate_scorer)}, AUROC {_h(f.gate_auroc)} (minimum {_h(f.gate_min)}): {_h(f.gate_reason)}"
        )
        if f.gate_passed is True:
            return f'<div class="gate pass">Validation gate passed — {detail}</div>'
        if f.gate_passed is False:
            return f'<div class="gate fail">{html.escape(GATE_FAILED_TEXT)}<br>{detail}</div>'
        return f'<div class="gate unknown">Validation gate: n/a — {detail}</div>'

    def validation(self) -> str:
        f, val = self.f, self.inp.validation
        noise = _get(val, "noise") or {}
        noise_p = (
            f"<p>{_h(_get(noise, 'flipped'))} of {_h(_get(noise, 'n'))} labels were flipped on purpose "
            f"({_h(_get(noise, 'kind'))} noise, rate {_h(_get(noise, 'rate'))}, seed {_h(_get(noise, 'seed'))}); "
            "each scorer is measured on how well it finds them.</p>"
        )
        scorers = _get(val, "scorers") or {}
        rows = []
        for name, r in sorted(scorers.items(), key=lambda kv: -(_num(_get(kv[1], "auroc")) or 0.0)):
            roles = (("best", f.best), ("gate", f.gate_scorer), ("cleaning", f.scorer))
            tags = [tag for tag, who in roles if who == name]
            rows.append(
                [
                    f"<b>{_h(name)}</b>" if tags else _h(name),
                    _fixed(_get(r, "auroc")),
                    _fixed(_get(r, "ap")),
                    _fixed(_get(r, "precision_at_k")),
                    _h(_get(r, "k")),
                    _h(_get(r, "nonfinite")),
                    html.escape(", ".join(tags)),
                ]
            )
        header = ["scorer", "AUROC", "AP", "P@k", "k", "non-finite", ""]
        table = _table(header, rows) if rows else "<p>n/a: no validation results.</p>"
        failures = _get(val, "run", "failures") or {}
        fail_p = ""
        if isinstance(failures, Mapping) and failures:
            items = "".join(f"<li>{_h(k)}: {_h(v)}</li>" for k, v in failures.items())
            fail_p = f'<p class="warn">Scorers that failed:</p><ul>{items}</ul>'
        uri = _roc_figure(self.inp.roc, scorers, f.scorer)
        roc = f'<img class="fig" src="{uri}" alt="ROC curves of every scorer">' if uri else "<p>No ROC curves.</p>"
        clean = self.inp.clean
        dropped_by_score = f.by_reason.get(Reason.SUSPECTED_LABEL_ERROR.value, 0)
        rule = _table(
            ["", ""],
            [
                ["cleaning scorer", _h(f.scorer)],
                ["threshold", _h(f.threshold, 6)],
                ["target precision", _h(_get(clean, "target_precision"))],
                ["score action", _h(_get(clean, "score_action"))],
                ["rows above threshold (suspected)", _h(f.suspected)],
                ["dropped by score", _h(dropped_by_score)],
                ["rule", _h(_get(clean, "score_rule"))],
            ],
            cls="narrow",
        )
        warn = ""
        if f.gate_passed is False and dropped_by_score:
            warn = f'<p class="warn">Inconsistent: the gate failed but {dropped_by_score} rows were dropped by score.</p>'
        elif f.gate_passed and f.threshold is None:
            warn = '<p class="warn">No threshold reached the target precision: nothing was dropped by score.</p>'
        body = (
            f"{self.gate_box()}{warn}{noise_p}<div class=\"cols\"><div>{table}{fail_p}<h3>Cleaning by score</h3>{rule}</div>"
            f"<div>{roc}</div></div>"
        )
        return self.section("validation", "Validation on injected label noise", body)

    def histograms(self) -> str:
        f = self.f
        uri = _histogram_figure(self.m, f.score_columns, f.scorer, f.threshold, applied=f.gate_passed is not False)
        if uri is None:
            body = "<p>n/a: the manifest has no scores.</p>"
        else:
            thr = (
                f"The dashed line is the cleaning threshold ({_h(f.threshold, 6)})"
                + (", not applied because the validation gate failed." if f.gate_passed is False else ".")
                if f.threshold is not None
                else "No threshold was set (clean.json has none), so no line is drawn."
            )
            body = (
                f'<p class="note">Score distributions over the ok rows; the cleaning scorer comes first. {thr} '
                "Which samples were truly mislabeled is unknown here, so these are plain distributions.</p>"
                f'<img class="fig" src="{uri}" alt="score histograms">'
            )
        return self.section("score-histograms", "Score distributions", body)

    def top_suspects(self) -> str:
        f, m, n = self.f, self.m, self.opts.top_suspects
        top = _top_suspects(m, f.scorer, n)
        if top is None:
            return self.section("top-suspects", "Top suspects", "<p>n/a: no scores in the manifest.</p>")
        tiles = []
        for _, r in top.iterrows():
            given = r["label_name"] if isinstance(r["label_name"], str) else _label_name(r["label"], self.classes)
            sugg = _label_name(r["suggested_label"], self.classes)
            diff = ' class="diff"' if sugg is not None and sugg != given else ""
            cls, badge = self.status_badge(bool(r["keep"]), r["drop_reason"], bool(r["suspected"]))
            tiles.append(
                f'<figure class="tile {cls}">{self.thumb(r["row"])}<figcaption>'
                f'<div class="sid" title="{_h(r["sample_id"])}">{_h(r["sample_id"])}</div>'
                f"<div>given <b>{_h(given)}</b></div><div>suggested <b{diff}>{_h(sugg)}</b></div>"
                f"<div>score {_fixed(r['_s'])}</div>{badge}</figcaption></figure>"
            )
        note = (
            f'<p class="note">The {len(top)} ok rows with the highest <b>{_h(f.scorer)}</b> score (the cleaning scorer), '
            "highest first. Red: dropped; amber: kept but flagged.</p>"
        )
        body = note + (f'<div class="grid">{"".join(tiles)}</div>' if tiles else "<p>No scored rows.</p>")
        return self.section("top-suspects", "Top suspects", body)

    def duplicate_groups(self) -> str:
        f, dups, n = self.f, self.inp.duplicates, self.opts.duplicate_groups
        counts = (
            f"<p>{_h(f.groups)} groups: {_h(f.exact_groups)} exact, {_h(f.near_groups)} near; "
            f"{_h(f.conflict_groups)} with conflicting labels, {_h(f.cross_groups)} spanning splits "
            f"(method {_h(_get(self.inp.dedup, 'method'))}, max distance {_h(_get(self.inp.dedup, 'max_distance'))}).</p>"
        )
        if dups is None or dups.empty or "group_id" not in dups.columns:
            return self.section("duplicate-groups", "Duplicate groups", counts + "<p>No duplicate groups.</p>")
        ordered = self.ordered_groups(dups)
        info = self.m.set_index("sample_id")[["row", "keep", "drop_reason", "suspected", "label_name"]]
        info = info[~info.index.duplicated()]
        cards = []
        for gid in ordered[:n]:
            g = dups[dups["group_id"] == gid]
            conflict = bool(g.get("label_conflict", pd.Series([False])).astype(bool).any())
            cross = bool(g.get("cross_split", pd.Series([False])).astype(bool).any())
            kinds = "exact" if "kind" in g and (g["kind"] == "exact").any() else "near"
            tags = [kinds, f"{len(g)} members"] + (["label conflict"] if conflict else []) + (["cross-split"] if cross else [])
            members = []
            for _, r in g.iterrows():
                sid = r["sample_id"]
                meta = info.loc[sid] if sid in info.index else None
                row = meta["row"] if meta is not None else None
                label = _label_name(r.get("label"), self.classes)
                if meta is not None and isinstance(meta["label_name"], str):
                    label = meta["label_name"]
                if meta is not None:
                    cls, badge = self.status_badge(bool(meta["keep"]), meta["drop_reason"], bool(meta["suspected"]))
                else:
                    cls, badge = "", ""
                rep = "<div>representative</div>" if bool(r.get("is_representative", False)) else ""
                members.append(
                    f'<figure class="tile {cls}">{self.thumb(row)}<figcaption>'
                    f'<div class="sid" title="{_h(sid)}">{_h(sid)}</div>'
                    f"<div>label <b>{_h(label)}</b></div><div>split {_h(r.get('split'))}</div>"
                    f"<div>distance {_h(r.get('distance'))}</div>{rep}{badge}</figcaption></figure>"
                )
            classes = "group" + (" conflict" if conflict else "") + (" cross" if cross else "")
            cards.append(
                f'<div class="{classes}"><h3>group {_h(gid)} — {html.escape(" · ".join(tags))}</h3>'
                f'<div class="members">{"".join(members)}</div></div>'
            )
        shown = (
            f'<p class="note">Showing {min(n, len(ordered))} of {len(ordered)} groups: '
            "label conflicts and cross-split groups first, then the largest.</p>"
        )
        return self.section("duplicate-groups", "Duplicate groups", f'{counts}{shown}<div class="groups">{"".join(cards)}</div>')

    @staticmethod
    def ordered_groups(dups: pd.DataFrame) -> list[Any]:
        """Group ids: label conflicts and cross-split groups first, then larger groups, then by id."""
        flags = pd.DataFrame({"group_id": dups["group_id"]})
        for col in ("label_conflict", "cross_split"):
            flags[col] = dups[col].fillna(False).astype(bool) if col in dups else False
        agg = flags.groupby("group_id", sort=True).agg(
            size=("group_id", "size"), conflict=("label_conflict", "any"), cross=("cross_split", "any")
        ).reset_index()
        agg["prio"] = agg["conflict"].astype(int) + agg["cross"].astype(int)
        agg = agg.sort_values(["prio", "size", "group_id"], ascending=[False, False, True], kind="stable")
        return list(agg["group_id"])

    def quarantined(self) -> str:
        q = self.m[self.m["status"] == "quarantined"]
        cap = self.opts.max_quarantined
        if q.empty:
            return self.section("quarantined", "Quarantined rows", "<p>No row was quarantined at ingest.</p>")
        rows = [
            [f'<span class="mono">{_h(r.sample_id)}</span>', _h(r.reason), _h(r.detail)]
            for r in q.head(cap).itertuples(index=False)
        ]
        table = _table(["sample_id", "reason", "detail"], rows)
        table = table.replace("<td>", '<td class="detail">')
        listed = f"; the first {cap} are listed." if len(q) > cap else "."
        note = f"<p>{_h(len(q))} rows were quarantined at ingest{listed}</p>"
        by = q["reason"].fillna("unknown").value_counts()
        counts = "<p>" + ", ".join(f"{_h(k)}: {_h(int(v))}" for k, v in by.items()) + "</p>"
        return self.section("quarantined", "Quarantined rows", note + counts + table)

    def run(self) -> str:
        score, vrun = self.inp.score, _get(self.inp.validation, "run") or {}
        keys = [
            ("device", "device"),
            ("train seconds", "train_seconds"),
            ("train images / s", "train_images_per_s"),
            ("final train accuracy", "final_train_accuracy"),
        ]
        rows = [[html.escape(label), _h(_get(score, k), 3), _h(_get(vrun, k), 3)] for label, k in keys]
        names = sorted(set(_get(score, "scorer_seconds") or {}) | set(_get(vrun, "scorer_seconds") or {}))
        for name in names:
            rows.append(
                [f"seconds: {_h(name)}", _h(_get(score, "scorer_seconds", name), 3), _h(_get(vrun, "scorer_seconds", name), 3)]
            )
        for name in sorted(set(_get(score, "failures") or {}) | set(_get(vrun, "failures") or {})):
            rows.append([f"failed: {_h(name)}", _h(_get(score, "failures", name)), _h(_get(vrun, "failures", name))])
        table = _table(["", "score (real labels)", "validate (injected noise)"], rows)
        trainer = _get(score, "trainer") or _get(vrun, "trainer")
        extra = f'<p class="note">trainer: {_h(trainer)}</p>' if isinstance(trainer, Mapping) else ""
        return self.section("run", "Device and timings", table + extra)

    def params(self) -> str:
        rows = [[_h(name), f'<span class="mono">{_h(digest)}</span>'] for name, digest in _digests(self.inp).items()]
        table = _table(["artifact", "params digest"], rows) if rows else "<p>n/a</p>"
        note = (
            '<p class="note">Short SHA-256 digests of each stage\'s parameters: '
            "two runs with equal digests used the same settings.</p>"
        )
        return self.section("params", "Parameter digests", note + table)

    def page(self) -> str:
        f = self.f
        sections = [
            self.summary(), self.class_balance(), self.validation(), self.histograms(), self.top_suspects(),
            self.duplicate_groups(), self.quarantined(), self.run(), self.params(),
        ]
        titles = ["Summary", "Classes", "Validation", "Scores", "Top suspects", "Duplicates", "Quarantine", "Run", "Params"]
        nav = "".join(f'<a href="#{sid}">{t}</a>' for sid, t in zip(SECTION_IDS, titles, strict=True))
        gate = {True: "gate passed", False: "gate FAILED", None: "gate n/a"}[f.gate_passed]
        subtitle = (
            f"{_h(f.rows)} rows in · {_h(f.kept)} kept · {_h(f.dropped)} dropped · "
            f"cleaning scorer {_h(f.scorer)} · {gate}"
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>memclean audit</title><style>{_CSS}</style></head><body>"
            f"<header><h1>memclean audit</h1><p>{subtitle}</p></header><nav>{nav}</nav><main>\n"
            + "\n".join(sections)
            + "\n</main></body></html>\n"
        )


def _digests(inp: ReportInputs) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, mapping in (("ingest", inp.ingest), ("dedup", inp.dedup), ("score", inp.score),
                          ("validate", inp.validation), ("clean", inp.clean)):
        digest = _get(mapping, "params_digest")
        if digest is not None:
            out[name] = str(digest)
    for name, digest in inp.params_digests.items():
        if digest is not None:
            out[name] = str(digest)
    return out


# --------------------------------------------------------------------------- Markdown


def _markdown(inp: ReportInputs, opts: ReportOptions, m: pd.DataFrame, f: _Facts) -> str:
    out = ["# memclean audit", ""]
    out += [f"{_md(f.rows)} rows in, {_md(f.kept)} kept, {_md(f.dropped)} dropped. "
            f"Cleaning scorer: {_md(f.scorer)}.", ""]

    out += ["## Summary", ""]
    out += _md_table(
        ["", "rows", "share"],
        [
            ["rows in", _md(f.rows), "100.0%"],
            ["kept", _md(f.kept), _pct(f.kept, f.rows)],
            ["dropped", _md(f.dropped), _pct(f.dropped, f.rows)],
            ["quarantined at ingest", _md(f.quarantined), _pct(f.quarantined, f.rows)],
            ["suspected by score", _md(f.suspected), _pct(f.suspected, f.rows)],
        ],
    )
    out += ["", "### Dropped by reason", ""]
    if f.by_reason:
        out += _md_table(
            ["reason", "stage", "meaning", "rows"],
            [[_md(k), "ingest" if k in _INGEST_CODES else "clean", _md(REASON_TEXT.get(k, "")), _md(v)]
             for k, v in sorted(f.by_reason.items(), key=lambda kv: (kv[0] not in _INGEST_CODES, -kv[1], kv[0]))],
        )
    else:
        out.append("No row was dropped.")

    out += ["", "## Class balance", ""]
    out += _md_table(
        ["class", "before", "after", "removed"],
        [[_md(k), _md(v), _md(f.class_after.get(k, 0)), _md(v - f.class_after.get(k, 0))] for k, v in f.class_before.items()],
    )

    val = inp.validation
    out += ["", "## Validation", ""]
    if f.gate_passed is False:
        out.append(f"**{GATE_FAILED_TEXT}**")
    elif f.gate_passed:
        out.append("**The validation gate passed.**")
    else:
        out.append("**Validation gate: n/a.**")
    out += ["", f"Gate: scorer {_md(f.gate_scorer)}, AUROC {_md(f.gate_auroc)} (minimum {_md(f.gate_min)}): "
            f"{_md(f.gate_reason)}.", ""]
    noise = _get(val, "noise") or {}
    out += [f"Injected noise: {_md(_get(noise, 'flipped'))} of {_md(_get(noise, 'n'))} labels flipped "
            f"({_md(_get(noise, 'kind'))}, rate {_md(_get(noise, 'rate'))}, seed {_md(_get(noise, 'seed'))}).", ""]
    scorers = _get(val, "scorers") or {}
    if scorers:
        out += _md_table(
            ["scorer", "AUROC", "AP", "P@k", "k"],
            [[_md(n) + (" (best)" if n == f.best else ""), _fixed(_get(r, "auroc")), _fixed(_get(r, "ap")),
              _fixed(_get(r, "precision_at_k")), _md(_get(r, "k"))]
             for n, r in sorted(scorers.items(), key=lambda kv: -(_num(_get(kv[1], "auroc")) or 0.0))],
        )
    else:
        out.append("n/a: no validation results.")
    out += ["", f"Threshold on {_md(f.scorer)}: {_md(f.threshold, 6)}; target precision "
            f"{_md(_get(inp.clean, 'target_precision'))}; score action {_md(_get(inp.clean, 'score_action'))}; "
            f"dropped by score: {_md(f.by_reason.get(Reason.SUSPECTED_LABEL_ERROR.value, 0))}.", ""]

    out += [f"## Top suspects ({_md(f.scorer)})", ""]
    top = _top_suspects(m, f.scorer, opts.top_suspects)
    if top is not None:
        rows = []
        for _, r in top.iterrows():
            given = r["label_name"] if isinstance(r["label_name"], str) else _label_name(r["label"], inp.classes)
            state = "kept" if r["keep"] else f"dropped ({_md(r['drop_reason'])})"
            if r["keep"] and r["suspected"]:
                state = "kept, flagged"
            suggested = _label_name(r["suggested_label"], inp.classes)
            rows.append([_md(r["sample_id"]), _md(given), _md(suggested), _fixed(r["_s"]), state])
        out += _md_table(["sample_id", "given", "suggested", "score", "status"], rows) if rows else ["No scored rows."]
    else:
        out.append("n/a: no scores in the manifest.")

    out += ["", "## Duplicates", ""]
    out += [f"{_md(f.groups)} groups ({_md(f.exact_groups)} exact, {_md(f.near_groups)} near); "
            f"{_md(f.conflict_groups)} with conflicting labels; {_md(f.cross_groups)} spanning splits.", ""]
    dups = inp.duplicates
    if dups is not None and not dups.empty and "group_id" in dups.columns:
        rows = []
        for gid in _Html.ordered_groups(dups)[: opts.duplicate_groups]:
            g = dups[dups["group_id"] == gid]
            members = ", ".join(
                f"{_md(r['sample_id'])} ({_md(_label_name(r.get('label'), inp.classes))}, {_md(r.get('split'))})"
                for _, r in g.iterrows()
            )
            conflict = bool(g["label_conflict"].any()) if "label_conflict" in g else None
            cross = bool(g["cross_split"].any()) if "cross_split" in g else None
            rows.append([_md(gid), _md(conflict), _md(cross), members])
        out += _md_table(["group", "label conflict", "cross-split", "members (label, split)"], rows)

    out += ["", "## Quarantined rows", ""]
    q = m[m["status"] == "quarantined"]
    if q.empty:
        out.append("No row was quarantined at ingest.")
    else:
        cap = opts.max_quarantined
        out.append(f"{_md(len(q))} rows quarantined" + (f"; the first {cap} are listed." if len(q) > cap else "."))
        out.append("")
        out += _md_table(["sample_id", "reason", "detail"],
                         [[_md(r.sample_id), _md(r.reason), _md(r.detail)] for r in q.head(cap).itertuples(index=False)])

    out += ["", "## Device and timings", ""]
    score, vrun = inp.score, _get(val, "run") or {}
    keys = ("device", "train_seconds", "train_images_per_s", "final_train_accuracy")
    rows = [[k, _md(_get(score, k), 3), _md(_get(vrun, k), 3)] for k in keys]
    for name in sorted(set(_get(score, "scorer_seconds") or {}) | set(_get(vrun, "scorer_seconds") or {})):
        seconds = (_md(_get(score, "scorer_seconds", name), 3), _md(_get(vrun, "scorer_seconds", name), 3))
        rows.append([f"seconds: {_md(name)}", *seconds])
    out += _md_table(["", "score", "validate"], rows)

    out += ["", "## Parameter digests", ""]
    digests = _digests(inp)
    out += _md_table(["artifact", "params digest"], [[_md(k), f"`{_md(v)}`"] for k, v in digests.items()]) if digests else ["n/a"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- entry point


def build_report(inputs: ReportInputs, options: ReportOptions | None = None) -> Report:
    """Render the audit report.

    Parameters
    ----------
    inputs
        The manifest, pixels, duplicates and the earlier stages' reports.
    options
        How many suspects, groups and quarantined rows to show.

    Returns
    -------
    Report
        The HTML page, the Markdown summary and the headline metrics.

    Raises
    ------
    MemcleanError
        When the manifest lacks required columns or indexes outside ``pixels``.
    """
    opts = options or ReportOptions()
    m = _prepare_manifest(inputs.manifest, inputs.pixels)
    facts = _facts(inputs, m)
    page = _Html(inputs, opts, m, facts).page()
    markdown = _markdown(inputs, opts, m, facts)
    metrics = _metrics(facts, inputs)
    log.info(
        "report: %d rows, %d kept, %d dropped; HTML %.1f kB", facts.rows, facts.kept, facts.dropped, len(page) / 1024
    )
    return Report(html=page, markdown=markdown, metrics=metrics)
