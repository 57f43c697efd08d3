"""DVC stage ``ingest``: list the dataset, decode every row, write samples + pixels.

Reads the ``ingest`` section of params.yaml. Outputs
``data/interim/samples.parquet``, ``data/interim/pixels.npy`` and the metrics file
``data/reports/ingest.json``.
"""

from __future__ import annotations

from memclean import project
from memclean.ingest import check_quarantine, ingest
from memclean.io import params_digest, write_json
from memclean.sources import list_source


def main() -> None:
    params = project.params().ingest
    listing = list_source(
        params.source,
        root=params.root,
        manifest=params.manifest,
        classes=params.classes,
        image_column=params.image_column,
        label_column=params.label_column,
    )
    digest = params_digest(params.model_dump(mode="json"))
    with ingest(listing, project.PIXELS, params.options(), progress=project.progress) as result:
        check_quarantine(result, params.max_quarantine_fraction)
        root = str(listing.root) if listing.root else None
        result.publish(project.SAMPLES, metadata={"params_digest": digest, "source": params.source, "root": root})
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
        project.INGEST_METRICS,
    )
    project.log.info("wrote %s and %s", project.SAMPLES, project.PIXELS)


if __name__ == "__main__":
    project.run_stage(main, "ingest")
