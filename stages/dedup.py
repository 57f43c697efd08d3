"""DVC stage ``dedup``: exact and near-duplicate groups over the ingested pixels.

Reads the ``dedup`` section of params.yaml. Outputs
``data/interim/duplicates.parquet`` and the metrics file ``data/reports/dedup.json``.
"""

from __future__ import annotations

from memclean import project
from memclean.dedup import find_duplicates
from memclean.io import params_digest, write_json, write_parquet
from memclean.schema import DUPLICATES_SCHEMA


def main() -> None:
    params = project.params().dedup
    samples, pixels, _ = project.load_samples()
    result = find_duplicates(
        samples, pixels, params.hash, params.max_distance, params.min_pixel_std, progress=project.progress
    )
    digest = params_digest(params.model_dump(mode="json"))
    write_parquet(result.duplicates, project.DUPLICATES, DUPLICATES_SCHEMA, metadata={"params_digest": digest})
    write_json({**result.stats, "params_digest": digest}, project.DEDUP_METRICS)
    project.log.info("wrote %s: %d groups", project.DUPLICATES, result.stats["groups"])


if __name__ == "__main__":
    project.run_stage(main, "dedup")
