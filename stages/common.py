"""Glue shared by the stage scripts: params, paths, logging, progress, errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from tqdm.auto import tqdm

from memclean.errors import MemcleanError

T = TypeVar("T")

PARAMS_FILE = Path(os.environ.get("MEMCLEAN_PARAMS", "params.yaml"))
DATA = Path("data")
INTERIM = DATA / "interim"
REPORTS = DATA / "reports"
SAMPLES = INTERIM / "samples.parquet"
PIXELS = INTERIM / "pixels.npy"
DUPLICATES = INTERIM / "duplicates.parquet"
INGEST_METRICS = REPORTS / "ingest.json"
DEDUP_METRICS = REPORTS / "dedup.json"

log = logging.getLogger("memclean.stages")


def load_params(section: str) -> dict[str, Any]:
    """Return one section of ``params.yaml`` (empty dict when absent)."""
    if not PARAMS_FILE.exists():
        raise MemcleanError(f"{PARAMS_FILE} not found: run stages from the repository root")
    with PARAMS_FILE.open() as fh:
        params = yaml.safe_load(fh) or {}
    value = params.get(section) or {}
    if not isinstance(value, dict):
        raise MemcleanError(f"params.yaml section '{section}' must be a mapping")
    return value


def progress(iterable: Iterable[T], desc: str, total: int) -> Iterable[T]:
    """tqdm progress bar on stderr: shown on a terminal or with MEMCLEAN_PROGRESS=1, hidden otherwise."""
    disable = None if os.environ.get("MEMCLEAN_PROGRESS", "") == "" else os.environ["MEMCLEAN_PROGRESS"] == "0"
    return tqdm(iterable, desc=desc, total=total, unit="it", disable=disable, mininterval=1.0, leave=False)


def run(main: Callable[[], None], name: str) -> None:
    """Run a stage: log to stderr, and turn a :class:`MemcleanError` into a one-line exit."""
    logging.basicConfig(
        level=os.environ.get("MEMCLEAN_LOG", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        main()
    except MemcleanError as exc:
        print(f"memclean {name}: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None

SCORES = INTERIM / "scores.parquet"
NOISY_LABELS = INTERIM / "noisy_labels.parquet"
SCORE_METRICS = REPORTS / "score.json"
VALIDATION = REPORTS / "validation.json"
ROC_DIR = REPORTS / "roc"
VALIDATION_SCORES = INTERIM / "validation_scores.parquet"
CLEAN = DATA / "clean"
MANIFEST = CLEAN / "manifest.parquet"
EXPORT = CLEAN / "export"
CLEAN_METRICS = REPORTS / "clean.json"
AUDIT_HTML = REPORTS / "audit.html"
AUDIT_MD = REPORTS / "audit.md"
REPORT_METRICS = REPORTS / "metrics.json"


def check_keys(section: str, params: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Reject keys of a params section that the stage does not know."""
    unknown = set(params) - set(defaults)
    if unknown:
        raise MemcleanError(f"unknown {section} params: {sorted(unknown)} (known: {sorted(defaults)})")
