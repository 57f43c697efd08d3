"""DVC stage ``report``: the audit report of a cleaning run.

Reads the cleaned manifest, the pixels, the duplicate groups and the JSON
reports of the earlier stages, and writes ``data/reports/audit.html`` (one
self-contained page: inline CSS, images as data URIs), ``data/reports/audit.md``
(the same summary in Markdown) and ``data/reports/metrics.json`` (headline
numbers, a DVC metrics file).

The manifest, ``pixels.npy`` and ``duplicates.parquet`` are required; a missing
JSON report or ROC folder only leaves its part of the page as ``n/a``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from memclean.errors import MemcleanError
from memclean.io import atomic_path, load_pixels, params_digest, read_metadata, read_parquet, write_json
from memclean.report import ReportInputs, ReportOptions, build_report
from memclean.schema import DUPLICATES_SCHEMA
from stages import common

DEFAULTS = {"top_suspects": 48, "duplicate_groups": 12}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        common.log.warning("%s not found: its part of the report shows n/a", path)
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise MemcleanError(f"{path} is not valid JSON ({exc}): rerun the stage that writes it") from None
    if not isinstance(obj, dict):
        raise MemcleanError(f"{path} must hold a JSON object")
    return obj


def _read_roc(directory: Path) -> dict[str, pd.DataFrame]:
    curves: dict[str, pd.DataFrame] = {}
    if not directory.is_dir():
        common.log.warning("%s not found: the report has no ROC curves", directory)
        return curves
    for path in sorted(directory.glob("*.csv")):
        frame = pd.read_csv(path)
        if {"fpr", "tpr"} <= set(frame.columns):
            curves[path.stem] = frame
        else:
            common.log.warning("%s has no fpr/tpr columns; skipped", path)
    return curves


def _write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def main() -> None:
    params = {**DEFAULTS, **common.load_params("report")}
    common.check_keys("report", params, DEFAULTS)
    options = ReportOptions(top_suspects=params["top_suspects"], duplicate_groups=params["duplicate_groups"])
    manifest = read_parquet(common.MANIFEST)
    meta = read_metadata(common.MANIFEST)
    pixels = load_pixels(common.PIXELS)
    duplicates = read_parquet(common.DUPLICATES, DUPLICATES_SCHEMA)
    classes = meta.get("classes") or []
    if not isinstance(classes, list):
        raise MemcleanError(f"{common.MANIFEST}: schema metadata 'classes' must be a list")
    digest = params_digest({"report": params})
    inputs = ReportInputs(
        manifest=manifest,
        classes=[str(c) for c in classes],
        pixels=pixels,
        duplicates=duplicates,
        validation=_read_json(common.VALIDATION),
        roc=_read_roc(common.ROC_DIR),
        ingest=_read_json(common.INGEST_METRICS),
        dedup=_read_json(common.DEDUP_METRICS),
        score=_read_json(common.SCORE_METRICS),
        clean=_read_json(common.CLEAN_METRICS),
        params_digests={"manifest": meta.get("params_digest"), "report": digest},
    )
    report = build_report(inputs, options)
    _write_text(report.html, common.AUDIT_HTML)
    _write_text(report.markdown, common.AUDIT_MD)
    write_json({**report.metrics, "params_digest": digest}, common.REPORT_METRICS)
    common.log.info("wrote %s, %s and %s", common.AUDIT_HTML, common.AUDIT_MD, common.REPORT_METRICS)


if __name__ == "__main__":
    common.run(main, "report")
