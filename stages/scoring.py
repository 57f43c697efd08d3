"""Shared by the ``score`` and ``validate`` stages: the same scoring on given labels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from memclean.errors import MemcleanError
from memclean.io import load_pixels, read_metadata, read_parquet
from memclean.schema import SAMPLES_SCHEMA
from memclean.scores import DEFAULT_SCORERS, ScoringOutcome, available, score_dataset
from memclean.train import TrainConfig, select_device
from stages import common

DEFAULTS: dict[str, Any] = {
    "device": "auto",
    "trainer": {},
    "scorers": DEFAULT_SCORERS,
    "combine": None,
}


def load_dataset() -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """The ``ok`` rows of the samples table (in pixel-row order), the pixels and the class names."""
    samples = read_parquet(common.SAMPLES, SAMPLES_SCHEMA)
    ok = samples[samples["status"] == "ok"].sort_values("row").reset_index(drop=True)
    pixels = load_pixels(common.PIXELS)
    if len(ok) != len(pixels):
        raise MemcleanError("samples.parquet and pixels.npy disagree: rerun the ingest stage")
    classes = read_metadata(common.SAMPLES).get("classes") or []
    return ok, pixels, list(classes)


def score_params() -> dict[str, Any]:
    params = {**DEFAULTS, **common.load_params("score")}
    common.check_keys("score", params, DEFAULTS)
    scorers = params["scorers"] or {}
    if not isinstance(scorers, dict) or not scorers:
        raise MemcleanError("score.scorers must map at least one scorer name to its params")
    unknown = [n for n in scorers if n not in available() and n != "combined"]
    if unknown:
        raise MemcleanError(f"unknown scorers {unknown}; available: {', '.join(available())}, combined")
    params["scorers"] = {name: dict(p or {}) for name, p in scorers.items()}
    return params


def run_scoring(labels: np.ndarray, num_classes: int, pixels: np.ndarray, params: dict[str, Any]) -> ScoringOutcome:
    config = TrainConfig.from_params(dict(params["trainer"] or {}))
    device = select_device(params["device"])
    return score_dataset(
        pixels,
        labels,
        num_classes,
        params["scorers"],
        config,
        device,
        combine=params["combine"],
        progress=common.progress,
    )


def outcome_summary(outcome: ScoringOutcome) -> dict[str, Any]:
    """JSON-ready summary of a scoring run (device, timings, failures)."""
    tr = outcome.train
    assert tr is not None
    return {
        "device": tr.device,
        "train_seconds": round(tr.seconds, 3),
        "train_images_per_s": round(tr.train_images_per_s, 1),
        "final_train_accuracy": round(tr.final_train_accuracy, 6),
        "scorer_seconds": {k: round(v, 3) for k, v in outcome.seconds.items()},
        "scorers": outcome.scorer_names,
        "failures": outcome.failures,
        "nonfinite": outcome.nonfinite,
        "trainer": tr.config,
    }
