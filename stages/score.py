"""DVC stage ``score``: memorization scores on the dataset's own labels.

Outputs ``data/interim/scores.parquet`` (``sample_id``, ``<scorer>_score``
columns, higher = more suspicious, and ``suggested_label``), the subset
ensemble's in-mask and logits ``data/interim/ensemble.npy`` (no member when no
enabled scorer needs one), the report ``data/reports/score.json`` and the
timings ``data/reports/timings/score.json``.
"""

from __future__ import annotations

from memclean import project
from memclean.ensemble import save_ensemble
from memclean.io import params_digest, write_json, write_parquet
from memclean.schema import scores_schema


def main() -> None:
    params = project.params().score
    ok, pixels, classes = project.load_dataset()
    outcome = project.run_scoring(ok["label"].to_numpy(dtype="int64"), len(classes), pixels, params)
    frame = outcome.scores.copy()
    frame.insert(0, "sample_id", ok["sample_id"].to_numpy())
    digest = params_digest(params.model_dump(mode="json"))
    write_parquet(frame, project.SCORES, scores_schema(outcome.scorer_names), metadata={"params_digest": digest})
    write_json({**outcome.summary(), "samples": len(ok), "params_digest": digest}, project.SCORE_METRICS)
    write_json(outcome.timings(), project.TIMINGS / "score.json")
    save_ensemble(outcome.ensemble, project.ENSEMBLE, len(ok), len(classes))
    project.log.info("wrote %s (%s)", project.SCORES, ", ".join(outcome.scorer_names))


if __name__ == "__main__":
    project.run_stage(main, "score")
