"""DVC stage ``validate``: do the scorers find injected mislabels on *this* dataset?

Runs the same scoring as ``score`` on the noisy labels and measures, per
scorer, AUROC, average precision and precision@k (k = number flipped). Writes
``data/reports/validation.json`` (metrics, the noise settings and the gate),
``data/reports/roc/<scorer>.csv`` (DVC plots, finite ``fpr``/``tpr``) and
``data/interim/validation_scores.parquet`` (the scores on the noisy labels with
``is_flipped``, from which ``clean`` sets its score threshold).

The gate: the scorer cleaning will use (``validate.scorer``; ``best`` picks the
highest AUROC) must reach ``validate.min_auroc``, or cleaning drops nothing by
score.
"""

from __future__ import annotations

import shutil

from memclean.errors import MemcleanError
from memclean.io import atomic_path, params_digest, read_metadata, read_parquet, write_json, write_parquet
from memclean.metrics import detection_metrics, roc_points
from memclean.schema import NOISY_LABELS_SCHEMA, validation_scores_schema
from stages import common
from stages.scoring import load_dataset, outcome_summary, run_scoring, score_params

DEFAULTS = {"scorer": "best", "min_auroc": 0.9}


def main() -> None:
    params = {**DEFAULTS, **common.load_params("validate")}
    common.check_keys("validate", params, DEFAULTS)
    sparams = score_params()
    ok, pixels, classes = load_dataset()
    noisy = read_parquet(common.NOISY_LABELS, NOISY_LABELS_SCHEMA)
    if not noisy["sample_id"].equals(ok["sample_id"]):
        raise MemcleanError("noisy_labels.parquet does not match samples.parquet: rerun the inject stage")
    flipped = noisy["is_flipped"].to_numpy()
    outcome = run_scoring(noisy["noisy_label"].to_numpy(dtype="int64"), len(classes), pixels, sparams)

    results = {}
    if common.ROC_DIR.exists():
        shutil.rmtree(common.ROC_DIR)
    for name in outcome.scorer_names:
        scores = outcome.scores[f"{name}_score"].to_numpy()
        results[name] = {**detection_metrics(flipped, scores), "nonfinite": outcome.nonfinite.get(name, 0)}
        with atomic_path(common.ROC_DIR / f"{name}.csv") as tmp:
            roc_points(flipped, scores).to_csv(tmp, index=False)

    ranked = sorted((r["auroc"] or 0.0, n) for n, r in results.items())
    best = ranked[-1][1] if ranked else None
    chosen = best if params["scorer"] == "best" else params["scorer"]
    min_auroc = float(params["min_auroc"])
    if chosen not in results:
        gate = {"scorer": chosen, "passed": False, "auroc": None, "min_auroc": min_auroc,
                "reason": f"scorer {chosen!r} produced no scores ({outcome.failures.get(chosen, 'not configured')})"}
    else:
        auroc = results[chosen]["auroc"]
        passed = auroc is not None and auroc >= min_auroc
        gate = {"scorer": chosen, "passed": passed, "auroc": auroc, "min_auroc": min_auroc,
                "reason": "AUROC reaches the minimum" if passed else f"AUROC {auroc} is below validate.min_auroc {min_auroc}"}
    vscores = outcome.scores.drop(columns=["suggested_label"])
    vscores.insert(0, "sample_id", ok["sample_id"].to_numpy())
    vscores.insert(1, "is_flipped", flipped)
    write_parquet(vscores, common.VALIDATION_SCORES, validation_scores_schema(outcome.scorer_names))
    noise_meta = read_metadata(common.NOISY_LABELS)
    report = {
        "noise": {k: noise_meta.get(k) for k in ("kind", "rate", "seed")} | {"flipped": int(flipped.sum()), "n": len(flipped)},
        "scorers": results,
        "best": best,
        "gate": gate,
        "run": outcome_summary(outcome),
        "params_digest": params_digest({"validate": params, "score": sparams}),
    }
    write_json(report, common.VALIDATION)
    common.log.info(
        "best scorer %s (AUROC %s); gate on %s %s: %s",
        best, results.get(best, {}).get("auroc") if best else None, gate["scorer"],
        "passed" if gate["passed"] else "FAILED", gate["reason"],
    )

if __name__ == "__main__":
    common.run(main, "validate")
