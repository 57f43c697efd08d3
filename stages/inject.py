"""DVC stage ``inject``: synthetic mislabels for validating the scorers.

The dataset already holds label errors of its own. Rows that ``score`` (run on the
original labels) flagged as label issues — ``confident_learning_issue == 1`` in
``data/interim/scores.parquet`` — are *suspected own errors*: they are never
flipped, and ``validate`` leaves them out of the gated measurement. When that column
is absent (confident learning did not run) no row is suspected: a warning is logged
and ``validate`` records that its figures count own errors as false positives.

``inject.kind: instance`` draws the flips from the score stage's subset ensemble
(``data/interim/ensemble.npy``): held-out probabilities choose confusable rows and
the class they are confused with.

Outputs ``data/interim/noisy_labels.parquet`` (``sample_id``, ``label``,
``noisy_label``, ``is_flipped``, ``suspected_own``) for the ``ok`` rows; its metadata
holds the params, ``suspected_by`` (``confident_learning`` or null) and the counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from memclean import project
from memclean.ensemble import load_ensemble
from memclean.errors import MemcleanError
from memclean.io import params_digest, read_parquet, write_parquet
from memclean.noise import inject, own_suspects
from memclean.schema import NOISY_LABELS_SCHEMA

#: The scores.parquet column that marks suspected own label errors, and who sets it.
ISSUE_COLUMN = "confident_learning_issue"
SUSPECTED_BY = "confident_learning"


def suspected_rows(ok: pd.DataFrame) -> tuple[np.ndarray, str | None]:
    """Rows suspected of own label errors (from ``scores.parquet``) and the scorer that flagged them."""
    scores = read_parquet(project.SCORES)
    if not scores["sample_id"].reset_index(drop=True).equals(ok["sample_id"].reset_index(drop=True)):
        raise MemcleanError("scores.parquet does not match samples.parquet: rerun the score stage")
    if ISSUE_COLUMN not in scores:
        project.log.warning(
            "%s has no %s column (confident learning did not run): no row is excluded as a suspected own "
            "error, so validate's AUROC counts real errors that score high as false positives",
            project.SCORES,
            ISSUE_COLUMN,
        )
        return own_suspects(None, len(ok)), None
    return own_suspects(scores[ISSUE_COLUMN].to_numpy(dtype=np.float64), len(ok)), SUSPECTED_BY


def reference_probabilities(labels: np.ndarray) -> np.ndarray:
    """Held-out N×C probabilities of the score stage's subset ensemble (for ``instance`` noise)."""
    ensemble = load_ensemble(project.ENSEMBLE, labels)
    if ensemble is None:
        raise MemcleanError(
            f"inject.kind instance needs the subset ensemble, but {project.ENSEMBLE} holds no member: "
            "enable an ensemble scorer (e.g. confident_learning) in score.scorers or choose another inject.kind"
        )
    return ensemble.out_of_sample_probabilities()


def main() -> None:
    params = project.params().inject
    ok, _, classes = project.load_dataset()
    labels = ok["label"].to_numpy(dtype="int64")
    suspected, suspected_by = suspected_rows(ok)
    probabilities = reference_probabilities(labels) if params.kind == "instance" else None
    noisy = inject(
        labels,
        len(classes),
        params.kind,
        params.rate,
        params.seed,
        params.pairs,
        eligible=~suspected,
        probabilities=probabilities,
    )
    flipped = noisy != labels
    frame = pd.DataFrame(
        {
            "sample_id": ok["sample_id"],
            "label": labels,
            "noisy_label": noisy,
            "is_flipped": flipped,
            "suspected_own": suspected,
        }
    )
    values = params.model_dump(mode="json")
    counts = {"suspected_by": suspected_by, "suspected_own": int(suspected.sum()), "flipped": int(flipped.sum())}
    write_parquet(
        frame,
        project.NOISY_LABELS,
        NOISY_LABELS_SCHEMA,
        metadata={"params_digest": params_digest(values), **values, **counts},
    )
    project.log.info(
        "flipped %d of %d labels (%s, rate %s); %d rows suspected of own errors (%s) excluded",
        int(flipped.sum()),
        len(labels),
        params.kind,
        params.rate,
        int(suspected.sum()),
        suspected_by or "none: no confident_learning_issue column",
    )


if __name__ == "__main__":
    project.run_stage(main, "inject")
