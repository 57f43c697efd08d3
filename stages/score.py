"""DVC stage ``score``: memorization scores on the dataset's own labels.

Outputs ``data/interim/scores.parquet`` (``sample_id``, ``<scorer>_score``
columns, higher = more suspicious, and ``suggested_label``) and the metrics
file ``data/reports/score.json``.
"""

from __future__ import annotations

from memclean.io import params_digest, write_json, write_parquet
from memclean.schema import scores_schema
from stages import common
from stages.scoring import load_dataset, outcome_summary, run_scoring, score_params


def main() -> None:
    params = score_params()
    ok, pixels, classes = load_dataset()
    labels = ok["label"].to_numpy(dtype="int64")
    outcome = run_scoring(labels, len(classes), pixels, params)
    frame = outcome.scores.copy()
    frame.insert(0, "sample_id", ok["sample_id"].to_numpy())
    digest = params_digest(params)
    write_parquet(frame, common.SCORES, scores_schema(outcome.scorer_names), metadata={"params_digest": digest})
    write_json({**outcome_summary(outcome), "samples": len(ok), "params_digest": digest}, common.SCORE_METRICS)
    common.log.info("wrote %s (%s)", common.SCORES, ", ".join(outcome.scorer_names))


if __name__ == "__main__":
    common.run(main, "score")
