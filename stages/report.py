"""DVC stage ``report``: the audit report of a cleaning run.

Reads the cleaned manifest, the pixels, the duplicate groups and the JSON
reports of the earlier stages, and writes ``data/reports/audit.html`` (one
self-contained page: inline CSS, images as data URIs), ``data/reports/audit.md``
(the same summary in Markdown) and ``data/reports/metrics.json`` (headline
numbers, a DVC metrics file).

The page also names the dataset (the ingest source and root recorded in the
manifest's metadata, else in ``ingest.json``), the
git commit of the project folder (``+ uncommitted changes`` when tracked source
files were edited; ``n/a`` outside a git checkout) and the validated value of
every params section (``data/interim/params/<section>.json``, written by the
``params`` stage).

Two sections come from files the ``score`` stage writes: the strongest train →
held-out influence pairs (``influence.parquet``, empty when ``fz_influence`` did
not run) and confident learning's estimated noise matrix (``noise_matrix.json``,
whose label-error count and noise rate also go into ``metrics.json``).

The manifest, ``pixels.npy`` and ``duplicates.parquet`` are required; a missing
JSON report, params file, ROC file, influence table or noise matrix (e.g. from an
older run) only leaves its part of the page as ``n/a`` / not available.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from memclean import project
from memclean.errors import MemcleanError
from memclean.io import (
    atomic_path,
    load_pair,
    params_digest,
    read_parquet,
    write_json,
)
from memclean.options import SECTIONS
from memclean.report import ReportInputs, ReportOptions, build_report
from memclean.schema import DUPLICATES_SCHEMA, INFLUENCE_SCHEMA
from memclean.scores import describe

#: Tracked paths whose uncommitted edits mark the commit "+ uncommitted changes" (not dvc.lock or
#: params.yaml: ``dvc repro`` rewrites the one, and the report shows the values of the other).
SOURCE_PATHS: tuple[str, ...] = ("src", "stages", "pyproject.toml", "dvc.yaml")

#: Seconds one git command may take before the commit shows as n/a.
GIT_TIMEOUT_S = 30.0


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` (with a warning) when the file does not exist."""
    if not path.exists():
        project.log.warning("%s not found: its part of the report shows n/a", path)
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise MemcleanError(f"{path} is not valid JSON ({exc}): rerun the stage that writes it") from None
    if not isinstance(obj, dict):
        raise MemcleanError(f"{path} must hold a JSON object")
    return obj


def _read_roc(path: Path) -> dict[str, pd.DataFrame]:
    """Scorer → its ROC points, from validate's ``roc.csv``."""
    if not path.is_file():
        project.log.warning("%s not found: the report has no ROC curves", path)
        return {}
    frame = pd.read_csv(path)
    if not {"scorer", "fpr", "tpr"} <= set(frame.columns):
        raise MemcleanError(f"{path} lacks scorer/fpr/tpr columns: rerun the validate stage")
    return {
        str(name): part[["fpr", "tpr"]].reset_index(drop=True) for name, part in frame.groupby("scorer", sort=False)
    }


def _read_influence(path: Path) -> pd.DataFrame | None:
    """``fz_influence``'s pairs from the score stage; ``None`` (with a warning) when the file does not exist."""
    if not path.exists():
        project.log.warning("%s not found: the report shows the influence pairs as not available", path)
        return None
    return read_parquet(path, INFLUENCE_SCHEMA)


def _git(*args: str, consequence: str) -> str | None:
    """The output of ``git args`` in the current directory; ``None`` when git fails or is missing.

    A failure is logged as a warning that ends with ``consequence``.
    """
    try:
        proc = subprocess.run(
            ["git", "--no-optional-locks", *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        project.log.warning("git %s failed (%s): %s", args[0], exc, consequence)
        return None
    if proc.returncode != 0:
        error = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        project.log.warning("git %s failed (%s): %s", args[0], error[0], consequence)
        return None
    return proc.stdout


def git_commit() -> str | None:
    """The git commit of the project folder (the current directory), for the report.

    Returns
    -------
    str or None
        ``git rev-parse HEAD``, followed by ``+ uncommitted changes`` when
        ``git status --porcelain`` lists an edited tracked file under
        :data:`SOURCE_PATHS` (``(uncommitted changes unknown)`` when that
        command fails); ``None`` when there is no git, no repository or no
        commit. Never raises.
    """
    head = _git("rev-parse", "--verify", "HEAD", consequence="the report's commit shows n/a")
    if head is None or not head.strip():
        return None
    commit = head.strip()
    status = ("status", "--porcelain", "--untracked-files=no", "--", *SOURCE_PATHS)
    changes = _git(*status, consequence="the report cannot tell whether the sources were edited")
    if changes is None:
        return f"{commit} (uncommitted changes unknown)"
    return f"{commit} + uncommitted changes" if changes.strip() else commit


def dataset_origin(*records: Mapping[str, Any]) -> dict[str, str | None]:
    """The ingest ``source`` and dataset ``root``, each from the first record that has it.

    Parameters
    ----------
    *records
        Metadata mappings, most trusted first (e.g. the manifest's schema
        metadata, then ``ingest.json``).

    Returns
    -------
    dict
        ``{"source": ..., "root": ...}``; ``None`` where no record has a value.
    """
    out: dict[str, str | None] = {}
    for key in ("source", "root"):
        value = next((r[key] for r in records if r.get(key) is not None), None)
        out[key] = None if value is None else str(value)
    return out


def _read_params() -> dict[str, dict[str, Any] | None]:
    """The validated values of every params section, as the ``params`` stage wrote them (``None``: missing)."""
    return {name: _read_json(project.PARAMS_DIR / f"{name}.json") for name in SECTIONS}


def _write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def main() -> None:
    params = project.params().report
    options = ReportOptions(top_suspects=params.top_suspects, duplicate_groups=params.duplicate_groups)
    manifest, pixels, meta = load_pair(project.MANIFEST, project.PIXELS, schema=None)
    duplicates = read_parquet(project.DUPLICATES, DUPLICATES_SCHEMA)
    classes = meta.get("classes") or []
    if not isinstance(classes, list):
        raise MemcleanError(f"{project.MANIFEST}: schema metadata 'classes' must be a list")
    digest = params_digest({"report": params.model_dump(mode="json")})
    validation = _read_json(project.VALIDATION) or {}
    ingest = _read_json(project.INGEST_METRICS) or {}
    origin = dataset_origin(meta, ingest)
    inputs = ReportInputs(
        manifest=manifest,
        classes=[str(c) for c in classes],
        pixels=pixels,
        duplicates=duplicates,
        validation=validation,
        roc=_read_roc(project.ROC),
        ingest=ingest,
        dedup=_read_json(project.DEDUP_METRICS) or {},
        score=_read_json(project.SCORE_METRICS) or {},
        clean=_read_json(project.CLEAN_METRICS) or {},
        params_digests={"manifest": str(meta.get("params_digest")), "report": digest},
        scorer_descriptions={name: describe(name) for name in validation.get("scorers") or {}},
        source=origin["source"],
        root=origin["root"],
        commit=git_commit(),
        params=_read_params(),
        influence=_read_influence(project.INFLUENCE),
        noise_matrix=_read_json(project.NOISE_MATRIX),
    )
    report = build_report(inputs, options)
    _write_text(report.html, project.AUDIT_HTML)
    _write_text(report.markdown, project.AUDIT_MD)
    write_json({**report.metrics, "params_digest": digest}, project.REPORT_METRICS)
    project.log.info("wrote %s, %s and %s", project.AUDIT_HTML, project.AUDIT_MD, project.REPORT_METRICS)


if __name__ == "__main__":
    project.run_stage(main, "report")
