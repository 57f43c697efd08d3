"""The scorers' tables as the files the score stage publishes.

* ``influence.parquet`` — ``fz_influence``'s strongest influencers of each
  held-out row, by sample id (:data:`memclean.schema.INFLUENCE_SCHEMA`).
* ``noise_matrix.json`` — confident learning's calibrated confident joint
  (given × true label counts) with the estimated noise rate.

Both files exist after every score run (DVC outputs): empty / ``available:
false`` when the scorer that fills them did not run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from memclean.schema import INFLUENCE_SCHEMA


def influence_frame(table: pd.DataFrame | None, sample_ids: np.ndarray) -> pd.DataFrame:
    """``fz_influence``'s pairs (row positions ``target``, ``source``) with sample ids instead of positions.

    Parameters
    ----------
    table
        Columns ``target``, ``source``, ``rank``, ``influence``, ``se``, ``n_in``, ``n_out``; or ``None``.
    sample_ids
        The sample id of every scored row, by position.

    Returns
    -------
    pandas.DataFrame
        The columns of :data:`~memclean.schema.INFLUENCE_SCHEMA`, sorted by target, then rank.
    """
    if table is None or table.empty:
        return pd.DataFrame({f.name: pd.Series(dtype=f.type.to_pandas_dtype()) for f in INFLUENCE_SCHEMA})
    ids = np.asarray(sample_ids)
    out = pd.DataFrame(
        {
            "target_id": ids[table["target"].to_numpy(dtype=np.int64)],
            "source_id": ids[table["source"].to_numpy(dtype=np.int64)],
            "rank": table["rank"].to_numpy(dtype=np.int32),
            "influence": table["influence"].to_numpy(dtype=np.float64),
            "se": table["se"].to_numpy(dtype=np.float64),
            "n_in": table["n_in"].to_numpy(dtype=np.int32),
            "n_out": table["n_out"].to_numpy(dtype=np.int32),
        }
    )
    return out.sort_values(["target_id", "rank"], kind="stable").reset_index(drop=True)


def noise_matrix_report(joint: pd.DataFrame | None, classes: list[str]) -> dict[str, Any]:
    """JSON-ready noise matrix: counts ``[given][true]``, the off-diagonal total and the noise rate.

    Parameters
    ----------
    joint
        The calibrated confident joint (rows: given label, columns: true label; counts), or ``None``.
    classes
        Class names, by label index.

    Returns
    -------
    dict
        ``available``, ``classes``, ``joint`` (``[given][true]`` counts), ``estimated_label_errors``
        (off-diagonal sum), ``noise_rate`` (that over the total), ``per_class_noise_rate``
        (off-diagonal share of each given class).
    """
    if joint is None:
        return {"available": False, "reason": "confident_learning did not run"}
    m = joint.to_numpy(dtype=np.int64)
    total = int(m.sum())
    errors = total - int(np.trace(m))
    rows = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(rows > 0, 1.0 - np.diag(m) / np.maximum(rows, 1), 0.0)
    return {
        "available": True,
        "classes": list(classes),
        "joint": m.tolist(),
        "estimated_label_errors": errors,
        "noise_rate": round(errors / total, 6) if total else 0.0,
        "per_class_noise_rate": {c: round(float(r), 6) for c, r in zip(classes, per_class, strict=False)},
    }
