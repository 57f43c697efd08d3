"""DVC stage ``inject``: synthetic mislabels for validating the scorers.

Outputs ``data/interim/noisy_labels.parquet`` (``sample_id``, ``label``,
``noisy_label``, ``is_flipped``) for the ``ok`` rows.
"""

from __future__ import annotations

import pandas as pd

from memclean import project
from memclean.io import params_digest, write_parquet
from memclean.noise import inject
from memclean.schema import NOISY_LABELS_SCHEMA


def main() -> None:
    params = project.params().inject
    ok, _, classes = project.load_dataset()
    labels = ok["label"].to_numpy(dtype="int64")
    noisy = inject(labels, len(classes), params.kind, params.rate, params.seed, params.pairs)
    frame = pd.DataFrame(
        {"sample_id": ok["sample_id"], "label": labels, "noisy_label": noisy, "is_flipped": noisy != labels}
    )
    values = params.model_dump(mode="json")
    write_parquet(
        frame, project.NOISY_LABELS, NOISY_LABELS_SCHEMA, metadata={"params_digest": params_digest(values), **values}
    )
    project.log.info(
        "flipped %d of %d labels (%s, rate %s)", int((noisy != labels).sum()), len(labels), params.kind, params.rate
    )


if __name__ == "__main__":
    project.run_stage(main, "inject")
