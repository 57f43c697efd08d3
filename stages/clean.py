"""DVC stage ``clean``: the cleaned dataset artifact.

Writes ``data/clean/manifest.parquet`` (every input row with ``keep``,
``drop_reason``, ``suspected``, scores, ``dup_group`` and ``suggested_label``;
rows in = rows out), ``data/clean/export/`` (kept samples, per
``clean.export``) and the metrics ``data/reports/clean.json``.
"""

from __future__ import annotations

import json

from memclean import project
from memclean.errors import MemcleanError
from memclean.export import export_kept
from memclean.gate import cleaning_gate
from memclean.io import params_digest, read_parquet, write_json, write_parquet
from memclean.policy import decide, threshold_at_precision
from memclean.schema import DUPLICATES_SCHEMA, manifest_schema


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
    threshold = None
    if scorer is not None and f"{scorer}_score" in vscores and f"{scorer}_score" in scores:
        threshold = threshold_at_precision(
            vscores[f"{scorer}_score"].to_numpy(), vscores["is_flipped"].to_numpy(), params.target_precision
        )
    elif scorer is not None:
        project.log.warning("scorer %s produced no scores: nothing is dropped by score", scorer)
        scorer = None

    result = decide(samples, duplicates, scores, params, scorer, threshold, gate.passed, classes)
    names = [c[: -len("_score")] for c in scores.columns if c.endswith("_score")]
    digest = params_digest(params.model_dump(mode="json"))
    write_parquet(
        result.manifest,
        project.MANIFEST,
        manifest_schema(names),
        metadata={"classes": classes, "params_digest": digest, **project.manifest_metadata()},
    )
    export = export_kept(result.manifest, pixels, classes, project.EXPORT, params.export)
    write_json(
        {
            **result.summary,
            "scorer": scorer,
            "threshold": threshold,
            "target_precision": params.target_precision,
            "score_action": params.score_action,
            "gate": {"passed": gate.passed, "reason": gate.reason, "auroc": gate.auroc},
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


if __name__ == "__main__":
    project.run_stage(main, "clean")
