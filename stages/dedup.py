"""DVC stage ``dedup``: exact and near-duplicate groups over the ingested pixels.

Reads the ``dedup`` section of params.yaml. Outputs
``data/interim/duplicates.parquet`` and the metrics file ``data/reports/dedup.json``.
"""

from __future__ import annotations

from memclean.dedup import HASH_METHODS, find_duplicates
from memclean.errors import MemcleanError
from memclean.io import load_pixels, params_digest, read_parquet, write_json, write_parquet
from memclean.schema import DUPLICATES_SCHEMA, SAMPLES_SCHEMA
from stages import common

DEFAULTS = {"hash": "phash", "max_distance": 4, "min_pixel_std": 2.0}


def main() -> None:
    params = {**DEFAULTS, **common.load_params("dedup")}
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise MemcleanError(f"unknown dedup params: {sorted(unknown)} (known: {sorted(DEFAULTS)})")
    if params["hash"] not in HASH_METHODS:
        raise MemcleanError(f"dedup.hash must be one of {', '.join(HASH_METHODS)}; got {params['hash']!r}")
    radius = int(params["max_distance"])
    if not 0 <= radius <= 32:
        raise MemcleanError(f"dedup.max_distance must be between 0 and 32; got {radius}")
    samples = read_parquet(common.SAMPLES, SAMPLES_SCHEMA)
    pixels = load_pixels(common.PIXELS)
    result = find_duplicates(
        samples, pixels, params["hash"], radius, float(params["min_pixel_std"]), progress=common.progress
    )
    digest = params_digest(params)
    write_parquet(result.duplicates, common.DUPLICATES, DUPLICATES_SCHEMA, metadata={"params_digest": digest})
    write_json({**result.stats, "params_digest": digest}, common.DEDUP_METRICS)
    common.log.info("wrote %s: %d groups", common.DUPLICATES, result.stats["groups"])


if __name__ == "__main__":
    common.run(main, "dedup")
