"""DVC stage ``validate``: do the scorers find injected mislabels on *this* dataset?

With ``validate.mode: retrain`` it runs the same scoring as ``score`` on
the noisy labels; with ``heldout`` it trains nothing (``auto``, the default: ``heldout`` when
the score stage trained on a CPU, as ``data/reports/score.json`` records, and the
out-of-sample ensemble scorers run, else ``retrain``; see
:meth:`memclean.options.PipelineParams.validate_mode`) and rescores the out-of-sample
ensemble scorers (``cscore``, ``confident_learning``) from ``score``'s ensemble
(``data/interim/ensemble.npy``) against the noisy labels. It measures, per
scorer, AUROC, average precision and precision@k (k = number flipped) **among the
rows not suspected beforehand**: injected flips against rows the first scoring run
considered clean. Rows ``inject`` marked ``suspected_own`` (label errors of the
dataset's own, by confident learning on the original labels) are left out, so a
real error that scores high is not counted as a false positive. These are the
figures the gate uses (``auroc``); the same figures over every row sit beside them
(``auroc_all_rows``, ``ap_all_rows``, ``precision_at_k_all_rows``), and
``measured_on`` says what was measured (description and counts).

Writes ``data/reports/validation.json`` (metrics, the noise settings, ``measured_on``
and the gate of :mod:`memclean.gate`), ``data/reports/roc.csv`` (``scorer``, ``fpr``,
``tpr``, finite, on the measured rows; a DVC plot that overlays the curves),
``data/interim/validation_scores.parquet`` (the scores on the noisy labels with
``is_flipped`` and ``suspected_own``, from which ``clean`` sets its score threshold)
and the timings ``data/reports/timings/validate.json``.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from memclean import project
from memclean.ensemble import load_ensemble
from memclean.errors import MemcleanError
from memclean.gate import best_scorer, decide_gate
from memclean.io import atomic_path, params_digest, read_metadata, read_parquet, write_json, write_parquet
from memclean.metrics import measured_metrics, measured_on, roc_points
from memclean.options import ScoreParams
from memclean.schema import NOISY_LABELS_SCHEMA, validation_scores_schema
from memclean.scores import ranks_label_errors, rescore_heldout

#: ``retrain`` loads them (and torch) when it starts; ``heldout`` never does. Named so that dvc.yaml's
#: deps cover them (see project.TRAINER_MODULES).
LOADS_WHEN_TRAINING = project.TRAINER_MODULES


def score_device_type() -> str:
    """The type of the device the score stage trained on (``cpu``, ``cuda``, ``mps``), from its report."""
    try:
        return str(json.loads(project.SCORE_METRICS.read_text(encoding="utf-8"))["device"]).split(":")[0]
    except (OSError, ValueError, KeyError, TypeError):
        raise MemcleanError(f"{project.SCORE_METRICS} is missing or names no device: rerun the score stage") from None


def comparability(sparams: ScoreParams) -> dict[str, Any]:
    """Check that the injected run scores like the real one: the same ``score`` params, trainer and scorers.

    ``score`` stamps ``scores.parquet`` with the digest of the params it ran with; a
    different digest here means the two runs are not comparable (one line, stop). A file
    without the stamp (written by something else) is reported as ``unknown``.
    """
    digest = params_digest(sparams.model_dump(mode="json"))
    stamped = read_metadata(project.SCORES).get("params_digest") if project.SCORES.exists() else None
    if stamped is not None and stamped != digest:
        raise MemcleanError(
            f"{project.SCORES} was scored with other score params than validate would use "
            "(trainer, scorers or ensemble differ): rerun the score stage (dvc repro)"
        )
    return {
        "score_params": "same" if stamped is not None else "unknown",
        "score_params_digest": digest,
        "description": "validate scores with the score stage's trainer, scorers and ensemble settings "
        "on the same rows; only the labels differ",
    }


def main() -> None:
    all_params = project.params()
    params, sparams = all_params.validate_, all_params.score
    ok, pixels, classes = project.load_dataset()
    noisy = read_parquet(project.NOISY_LABELS, NOISY_LABELS_SCHEMA)
    if not noisy["sample_id"].equals(ok["sample_id"]):
        raise MemcleanError("noisy_labels.parquet does not match samples.parquet: rerun the inject stage")
    flipped = noisy["is_flipped"].to_numpy(dtype=bool)
    suspected = noisy["suspected_own"].to_numpy(dtype=bool)
    measured = ~suspected
    noisy_labels = noisy["noisy_label"].to_numpy(dtype="int64")
    comparable = comparability(sparams)
    mode = all_params.validate_mode(score_device_type())
    ensemble = load_ensemble(project.ENSEMBLE, noisy_labels) if mode == "heldout" else None
    if mode == "heldout" and ensemble is None:
        if params.mode != "auto":
            raise MemcleanError(
                f"validate.mode heldout needs the subset ensemble, but {project.ENSEMBLE} holds no member: "
                "rerun the score stage with an ensemble scorer, or use validate.mode: retrain"
            )
        project.log.warning(
            "validate.mode auto: %s holds no ensemble member, so validate trains again", project.ENSEMBLE
        )
    if ensemble is not None:  # heldout: no training, the score stage's members rescored against the noisy labels
        outcome = rescore_heldout(ensemble, sparams.scorers, sparams.combine)
    else:
        outcome = project.run_scoring(noisy_labels, len(classes), pixels, sparams, project.heldout_rows(ok))

    results, curves = {}, []
    for name in outcome.scorer_names:
        scores = outcome.scores[f"{name}_score"].to_numpy()
        results[name] = {
            **measured_metrics(flipped, scores, suspected),
            "nonfinite": outcome.nonfinite.get(name, 0),
            "ranks_label_errors": ranks_label_errors(name),
        }
        curves.append(roc_points(flipped[measured], scores[measured]).assign(scorer=name)[["scorer", "fpr", "tpr"]])
    with atomic_path(project.ROC) as tmp:  # one file: the curves are published together or not at all
        pd.concat(curves, ignore_index=True).to_csv(tmp, index=False)

    gate = decide_gate(results, params.scorer, params.min_auroc, outcome.failures)
    vscores = outcome.scores.drop(columns=["suggested_label"])
    vscores.insert(0, "sample_id", ok["sample_id"].to_numpy())
    vscores.insert(1, "is_flipped", flipped)
    vscores.insert(2, "suspected_own", suspected)
    write_parquet(vscores, project.VALIDATION_SCORES, validation_scores_schema(outcome.scorer_names))
    noise_meta = read_metadata(project.NOISY_LABELS)
    best = best_scorer(results)
    report = {
        "noise": {k: noise_meta.get(k) for k in ("kind", "rate", "seed")}
        | {"flipped": int(flipped.sum()), "n": len(flipped)},
        "measured_on": measured_on(
            noise_meta.get("suspected_by"), int(measured.sum()), int(flipped[measured].sum()), int(suspected.sum())
        ),
        "comparable": comparable,
        "scorers": results,
        "best": best,
        "gate": gate.to_dict(),
        "run": outcome.summary() | {"mode_asked": params.mode},
        "params_digest": params_digest(
            {"validate": params.model_dump(mode="json"), "score": sparams.model_dump(mode="json")}
        ),
    }
    write_json(report, project.VALIDATION)
    write_json(outcome.timings(), project.TIMINGS / "validate.json")
    project.log.info(
        "measured on %d rows (%d suspected own errors excluded); best scorer %s (AUROC %s); gate on %s %s: %s",
        int(measured.sum()),
        int(suspected.sum()),
        best,
        results.get(best, {}).get("auroc") if best else None,
        gate.scorer,
        "passed" if gate.passed else "FAILED",
        gate.reason,
    )


if __name__ == "__main__":
    project.run_stage(main, "validate")
