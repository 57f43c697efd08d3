"""DVC stage ``clean``: the cleaned dataset artifact.

Writes ``data/clean/manifest.parquet`` (every input row with ``keep``,
``drop_reason``, ``suspected``, scores, ``dup_group`` and ``suggested_label``;
rows in = rows out), ``data/clean/export/`` (kept samples, per
``clean.export``) and the metrics ``data/reports/clean.json``.
"""

from __future__ import annotations

import json

from memclean.errors import MemcleanError
from memclean.export import export_kept
from memclean.io import load_pixels, params_digest, read_metadata, read_parquet, write_json, write_parquet
from memclean.policy import CleanPolicy, decide, threshold_at_precision
from memclean.schema import DUPLICATES_SCHEMA, SAMPLES_SCHEMA, manifest_schema
from stages import common

DEFAULTS = {
    "scorer": "gate",
    "score_action": "drop",
    "target_precision": 0.9,
    "max_drop_fraction": 0.05,
    "drop_exact_duplicates": True,
    "drop_conflicting_duplicates": True,
    "drop_split_leaks": True,
    "export": "none",
}


def main() -> None:
    params = {**DEFAULTS, **common.load_params("clean")}
    common.check_keys("clean", params, DEFAULTS)
    policy = CleanPolicy(**{k: v for k, v in params.items() if k not in ("scorer", "export")})
    samples = read_parquet(common.SAMPLES, SAMPLES_SCHEMA)
    classes = list(read_metadata(common.SAMPLES).get("classes") or [])
    duplicates = read_parquet(common.DUPLICATES, DUPLICATES_SCHEMA)
    scores = read_parquet(common.SCORES)
    validation = json.loads(common.VALIDATION.read_text())
    gate = validation.get("gate", {})
    scorer = gate.get("scorer") if params["scorer"] == "gate" else params["scorer"]
    if scorer == gate.get("scorer"):
        gate_passed = bool(gate.get("passed"))
    else:  # a scorer other than the gated one must pass the same bar on validation
        auroc = (validation.get("scorers", {}).get(scorer) or {}).get("auroc") or 0.0
        gate_passed = auroc >= float(gate.get("min_auroc", 1.0))
    vscores = read_parquet(common.VALIDATION_SCORES)
    threshold = None
    if scorer and f"{scorer}_score" in vscores:
        threshold = threshold_at_precision(
            vscores[f"{scorer}_score"].to_numpy(), vscores["is_flipped"].to_numpy(), policy.target_precision
        )
    elif scorer:
        raise MemcleanError(f"validation has no scores for scorer {scorer!r}")

    result = decide(samples, duplicates, scores, policy, scorer, threshold, gate_passed, classes)
    names = [c[: -len("_score")] for c in scores.columns if c.endswith("_score")]
    digest = params_digest(params)
    write_parquet(
        result.manifest, common.MANIFEST, manifest_schema(names), metadata={"classes": classes, "params_digest": digest}
    )
    export = export_kept(result.manifest, load_pixels(common.PIXELS), classes, common.EXPORT, str(params["export"]))
    write_json(
        {
            **result.summary,
            "scorer": scorer,
            "threshold": threshold,
            "target_precision": policy.target_precision,
            "score_action": policy.score_action,
            "gate": {"passed": gate_passed, "reason": gate.get("reason"), "auroc": gate.get("auroc")},
            "export": {k: export[k] for k in ("format", "samples")},
            "params_digest": digest,
        },
        common.CLEAN_METRICS,
    )
    common.log.info(
        "manifest: %d rows, %d kept, %d dropped %s", result.summary["rows"], result.summary["kept"],
        result.summary["dropped"], result.summary["by_reason"],
    )


if __name__ == "__main__":
    common.run(main, "clean")
