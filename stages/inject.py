"""DVC stage ``inject``: synthetic mislabels for validating the scorers.

Outputs ``data/interim/noisy_labels.parquet`` (``sample_id``, ``label``,
``noisy_label``, ``is_flipped``) for the ``ok`` rows.
"""

from __future__ import annotations

import pandas as pd

from memclean.errors import MemcleanError
from memclean.io import params_digest, write_parquet
from memclean.noise import inject
from memclean.schema import NOISY_LABELS_SCHEMA
from stages import common
from stages.scoring import load_dataset

DEFAULTS = {"kind": "symmetric", "rate": 0.1, "seed": 0, "pairs": None}


def main() -> None:
    params = {**DEFAULTS, **common.load_params("inject")}
    common.check_keys("inject", params, DEFAULTS)
    ok, _, classes = load_dataset()
    labels = ok["label"].to_numpy(dtype="int64")
    pairs = params["pairs"]
    if pairs is not None and not isinstance(pairs, dict):
        raise MemcleanError("inject.pairs must map a class index to the class it is flipped to")
    noisy = inject(labels, len(classes), str(params["kind"]), float(params["rate"]), int(params["seed"]), pairs)
    frame = pd.DataFrame(
        {"sample_id": ok["sample_id"], "label": labels, "noisy_label": noisy, "is_flipped": noisy != labels}
    )
    write_parquet(frame, common.NOISY_LABELS, NOISY_LABELS_SCHEMA, metadata={"params_digest": params_digest(params), **params})
    common.log.info("flipped %d of %d labels (%s, rate %s)", int((noisy != labels).sum()), len(labels), params["kind"], params["rate"])


if __name__ == "__main__":
    common.run(main, "inject")
