"""DVC stage ``ingest``: list the dataset, decode every row, write samples + pixels.

Reads the ``ingest`` section of params.yaml. Outputs
``data/interim/samples.parquet``, ``data/interim/pixels.npy`` and the metrics file
``data/reports/ingest.json``.
"""

from __future__ import annotations

from memclean.errors import MemcleanError
from memclean.imaging import DEFAULT_ALLOWED_FORMATS
from memclean.ingest import IngestOptions, check_quarantine, ingest, parse_image_size
from memclean.io import params_digest, write_json, write_parquet
from memclean.schema import SAMPLES_SCHEMA
from memclean.sources import list_source
from stages import common

DEFAULTS = {
    "source": "digits",
    "root": None,
    "manifest": None,
    "classes": None,
    "image_column": None,
    "label_column": "label",
    "image_size": "auto",
    "channels": "auto",
    "max_image_pixels": 40_000_000,
    "allowed_formats": list(DEFAULT_ALLOWED_FORMATS),
    "alpha_background": 255,
    "max_quarantine_fraction": 0.05,
}


def main() -> None:
    params = {**DEFAULTS, **common.load_params("ingest")}
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise MemcleanError(f"unknown ingest params: {sorted(unknown)} (known: {sorted(DEFAULTS)})")
    channels = params["channels"]
    if channels not in ("auto", None, 1, 3):
        raise MemcleanError(f"ingest.channels must be auto, 1 or 3; got {channels!r}")
    options = IngestOptions(
        image_size=parse_image_size(params["image_size"]),
        channels=None if channels in ("auto", None) else int(channels),
        max_image_pixels=int(params["max_image_pixels"]),
        allowed_formats=frozenset(str(f).upper() for f in params["allowed_formats"]),
        alpha_background=int(params["alpha_background"]),
    )
    listing = list_source(
        params["source"],
        root=params["root"],
        manifest=params["manifest"],
        classes=params["classes"],
        image_column=params["image_column"],
        label_column=params["label_column"],
    )
    result = ingest(listing, common.PIXELS, options, progress=common.progress)
    check_quarantine(result, float(params["max_quarantine_fraction"]))
    digest = params_digest(params)
    write_parquet(
        result.samples,
        common.SAMPLES,
        SAMPLES_SCHEMA,
        metadata={
            "classes": result.classes,
            "params_digest": digest,
            "image_size": list(result.image_size),
            "channels": result.channels,
            "source": params["source"],
        },
    )
    by_split = result.samples.groupby("split")["status"].value_counts().unstack(fill_value=0)
    write_json(
        {
            "rows": len(result.samples),
            "ok": len(result.samples) - result.quarantined,
            "quarantined": result.quarantined,
            "quarantine_reasons": result.reason_counts(),
            "by_split": {s: {k: int(v) for k, v in row.items()} for s, row in by_split.iterrows()},
            "classes": len(result.classes),
            "image_size": list(result.image_size),
            "channels": result.channels,
            "resized": result.resized,
            "notes": result.notes,
            "params_digest": digest,
        },
        common.INGEST_METRICS,
    )
    common.log.info("wrote %s and %s", common.SAMPLES, common.PIXELS)


if __name__ == "__main__":
    common.run(main, "ingest")
