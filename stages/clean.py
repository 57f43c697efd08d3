"""DVC stage ``clean``: the cleaned dataset artifact.

Writes ``data/clean/manifest.parquet`` (every input row with ``keep``,
``drop_reason``, ``suspected``, ``suspicion``, scores, ``dup_group`` and
``suggested_label``; rows in = rows out), ``data/clean/export/`` (kept samples,
per ``clean.export``) and the metrics ``data/reports/clean.json`` (with the
estimated noise rate and, when the gate failed, ``advice``). Reads confident
learning's ``noise_matrix.json``, the proxy network's ``score.json`` and
``dedup.json`` when present (:mod:`memclean.policy`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from memclean import project
from memclean.errors import MemcleanError
from memclean.export import export_kept
from memclean.gate import cleaning_gate
from memclean.io import params_digest, read_parquet, write_json, write_parquet
from memclean.policy import NoiseEstimate, Threshold, decide, gate_advice, threshold_by_estimated_precision
from memclean.schema import DUPLICATES_SCHEMA, manifest_schema


def _optional_report(path: Path) -> dict[str, Any] | None:
    """A JSON report another stage wrote, or ``None`` when missing or unreadable (it only refines decisions)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        project.log.warning("%s is missing or not JSON: going on without it", path)
        return None
    return data if isinstance(data, dict) else None


def main() -> None:
    params = project.params().clean
    samples, pixels, classes = project.load_samples()
    duplicates = read_parquet(project.DUPLICATES, DUPLICATES_SCHEMA)
    scores = read_parquet(project.SCORES)
    try:
        validation = json.loads(project.VALIDATION.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MemcleanError(f"{project.VALIDATION} is missing or not JSON ({exc}): rerun the validate stage") from None
    gate = cleaning_gate(validation, params.scorer)
    scorer = gate.scorer
    vscores = read_parquet(project.VALIDATION_SCORES)
    noise = _optional_report(project.NOISE_MATRIX)  # None when missing: no cap by estimated errors
    estimate = NoiseEstimate.from_report(noise, len(scores))
    cut = Threshold(None, None, None, 0)
    if scorer is not None and f"{scorer}_score" in vscores and f"{scorer}_score" in scores:
        # Correct labels score like validate's unflipped rows outside the suspected own errors.
        flipped = vscores["is_flipped"].to_numpy(dtype=bool)
        measured = np.ones(len(vscores), dtype=bool)
        if "suspected_own" in vscores:  # the rows suspected before injection are the dataset's own errors
            measured = ~vscores["suspected_own"].to_numpy(dtype=bool)
        injected = vscores[f"{scorer}_score"].to_numpy(dtype=np.float64, na_value=np.nan)
        cut = threshold_by_estimated_precision(
            scores[f"{scorer}_score"].to_numpy(dtype=np.float64, na_value=np.nan),
            injected[measured & ~flipped],
            len(scores) - (estimate.errors or 0),
            params.target_precision,
            injected_scores=injected[measured & flipped],
        )
    elif scorer is not None:
        project.log.warning("scorer %s produced no scores: nothing is dropped by score", scorer)
        scorer = None
    threshold = cut.value

    dedup = _optional_report(project.DEDUP_METRICS)  # drop_near_duplicates: auto needs its image-size verdict
    result = decide(samples, duplicates, scores, params, scorer, threshold, gate.passed, classes, noise, dedup)
    advice = gate_advice(gate, validation, _optional_report(project.SCORE_METRICS), result.summary["suspected"])
    names = [c[: -len("_score")] for c in scores.columns if c.endswith("_score")]
    digest = params_digest(params.model_dump(mode="json"))
    write_parquet(
        result.manifest,
        project.MANIFEST,
        manifest_schema(names),
        metadata={"classes": classes, "params_digest": digest, **project.manifest_metadata()},
    )
    export = export_kept(result.manifest, pixels, classes, project.EXPORT, params.export, progress=project.progress)
    write_json(
        {
            **result.summary,
            "scorer": scorer,
            **cut.to_dict(),
            "threshold_rule": "lowest score whose rows are estimated to reach target_precision, from the data "
            "(false positives = (rows - estimated label errors) x share of validate's unflipped rows scoring as "
            "high) or on the injected noise (flips among validate's measured rows scoring as high)",
            "target_precision": params.target_precision,
            "score_action": params.score_action,
            "gate": {"passed": gate.passed, "reason": gate.reason, "auroc": gate.auroc},
            "advice": advice,
            "drop_heldout_by_score": params.drop_heldout_by_score,
            "export": {k: export[k] for k in ("format", "samples")},
            "params_digest": digest,
        },
        project.CLEAN_METRICS,
    )
    project.log.info(
        "manifest: %d rows, %d kept, %d dropped %s",
        result.summary["rows"],
        result.summary["kept"],
        result.summary["dropped"],
        result.summary["by_reason"],
    )
    if not gate.passed:
        project.log.warning("the gate failed (%s): nothing is dropped by score", gate.reason)
        for line in advice:
            project.log.warning("try: %s", line)


if __name__ == "__main__":
    project.run_stage(main, "clean")
