"""DVC stage ``dedup``: verified duplicate pairs and chain-free groups over the ingested pixels.

Reads the ``dedup`` section of params.yaml. Outputs ``data/interim/duplicate_pairs.parquet``
(every verified pair: exact, near, similar), ``data/interim/duplicates.parquet`` (exact and
near groups), the metrics file ``data/reports/dedup.json`` and the wall-clock phases in
``data/reports/timings/dedup.json`` (on which nothing depends).
"""

from __future__ import annotations

from memclean import project
from memclean.dedup import find_duplicates
from memclean.io import params_digest, write_json, write_parquet
from memclean.schema import DUPLICATE_PAIRS_SCHEMA, DUPLICATES_SCHEMA
from memclean.train import select_device


def main() -> None:
    params = project.params().dedup
    samples, pixels, _ = project.load_samples()
    result = find_duplicates(
        samples,
        pixels,
        params.hash,
        params.max_distance,
        params.min_pixel_std,
        knn_k=params.knn_k,
        knn_shifts=params.knn_shifts,
        knn_per_variant=params.knn_per_variant,
        embedding=params.embedding,
        embedding_epochs=params.embedding_epochs,
        near_threshold=params.near_threshold,
        similar_threshold=params.similar_threshold,
        max_group_size=params.max_group_size,
        min_hash_side=params.min_hash_side,
        small_near_threshold=params.small_near_threshold,
        colour_tolerance=params.colour_tolerance,
        recoloured_near_threshold=params.recoloured_near_threshold,
        local_threshold=params.local_threshold,
        device=str(select_device(params.device)),
        executor=params.executor,
        dask_address=params.dask_address,
        progress=project.progress,
    )
    digest = params_digest(params.model_dump(mode="json"))
    meta = {"params_digest": digest}
    write_parquet(result.pairs, project.DUPLICATE_PAIRS, DUPLICATE_PAIRS_SCHEMA, metadata=meta)
    write_parquet(result.duplicates, project.DUPLICATES, DUPLICATES_SCHEMA, metadata=meta)
    write_json({**result.stats, "params_digest": digest}, project.DEDUP_METRICS)
    write_json(result.timings, project.TIMINGS / "dedup.json")
    project.log.info(
        "wrote %s: %d groups; %s: %d pairs",
        project.DUPLICATES,
        result.stats["groups"],
        project.DUPLICATE_PAIRS,
        len(result.pairs),
    )


if __name__ == "__main__":
    project.run_stage(main, "dedup")
