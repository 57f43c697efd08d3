"""DVC stage ``score``: memorization scores on the dataset's own labels.

Outputs ``data/interim/scores.parquet`` (``sample_id``, ``<scorer>_score``
columns, higher = more suspicious, ``suggested_label``, and the scorers' extra
columns such as ``fz_memorization_se``), the subset ensemble
``data/interim/ensemble.npy`` (no member when no enabled scorer needs one), the
strongest influence pairs ``data/reports/influence.parquet`` (empty unless
``fz_influence`` runs), confident learning's estimated noise matrix
``data/reports/noise_matrix.json``, the report ``data/reports/score.json`` and
the timings ``data/reports/timings/score.json``.

The timings hold the wall-clock seconds of each phase: ``stage_seconds``
(``load`` the dataset, ``score`` it, ``write`` the outputs, ``total``) and, within
scoring, ``scorer_seconds`` (``train``, ``ensemble`` and each scorer's hooks and
result), with the device and the training throughput. They stay out of
``score.json``, which the ``clean`` and ``report`` stages depend on, and out of
``dvc.yaml``: a rerun leaves every DVC output and ``dvc.lock`` byte-identical.
"""

from __future__ import annotations

import time

from memclean import project
from memclean.artifacts import influence_frame, noise_matrix_report
from memclean.ensemble import save_ensemble
from memclean.io import params_digest, write_json, write_parquet
from memclean.schema import INFLUENCE_SCHEMA, scores_schema

#: Loaded when the run starts; named so that dvc.yaml's deps cover them (see project.TRAINER_MODULES).
LOADS_WHEN_TRAINING = project.TRAINER_MODULES


def main() -> None:
    start = time.perf_counter()
    params = project.params().score
    ok, pixels, classes = project.load_dataset()
    heldout = project.heldout_rows(ok)
    loaded = time.perf_counter()
    outcome = project.run_scoring(ok["label"].to_numpy(dtype="int64"), len(classes), pixels, params, heldout)
    scored = time.perf_counter()
    ids = ok["sample_id"].to_numpy()
    frame = outcome.scores.copy()
    frame.insert(0, "sample_id", ids)
    extra = []
    for name, columns in outcome.columns.items():
        for key, values in columns.items():
            frame[f"{name}_{key}"] = values
            extra.append(f"{name}_{key}")
    digest = params_digest(params.model_dump(mode="json"))
    meta = {"params_digest": digest}
    write_parquet(frame, project.SCORES, scores_schema(outcome.scorer_names, extra), metadata=meta)
    write_parquet(influence_frame(outcome.tables.get("influence"), ids), project.INFLUENCE, INFLUENCE_SCHEMA, meta)
    write_json(noise_matrix_report(outcome.tables.get("noise_matrix"), classes), project.NOISE_MATRIX)
    write_json({**outcome.summary(), "samples": len(ok), "params_digest": digest}, project.SCORE_METRICS)
    save_ensemble(outcome.ensemble, project.ENSEMBLE, len(ok), len(classes))
    end = time.perf_counter()
    phases = {"load": loaded - start, "score": scored - loaded, "write": end - scored, "total": end - start}
    stage_seconds = {name: round(seconds, 3) for name, seconds in phases.items()}
    write_json({**outcome.timings(), "stage_seconds": stage_seconds}, project.TIMINGS / "score.json")
    project.log.info("wrote %s (%s)", project.SCORES, ", ".join(outcome.scorer_names))


if __name__ == "__main__":
    project.run_stage(main, "score")
