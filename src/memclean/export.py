"""Export the kept samples as an ImageFolder tree or Hugging Face-style Parquet.

Images are written from the ingested pixel array (the common size), as PNG.
The export folder is built next to its target and swapped in with
:func:`os.replace`, so a killed run leaves the previous export intact. It always
holds ``EXPORT.json`` (format, counts, classes), even when the format is ``none``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from memclean.errors import MemcleanError

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("none", "imagefolder", "parquet")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _png(image: np.ndarray) -> bytes:
    arr = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name.replace("/", "__")).strip("._") or "sample"


def export_kept(
    manifest: pd.DataFrame,
    pixels: np.ndarray,
    classes: list[str],
    out_dir: str | os.PathLike[str],
    fmt: str = "imagefolder",
) -> dict[str, Any]:
    """Write the ``keep`` rows of ``manifest`` to ``out_dir`` in ``fmt``.

    Parameters
    ----------
    manifest
        The clean manifest (``keep``, ``row``, ``label``, ``split``, ``sample_id``).
    pixels
        The ingest pixel array.
    classes
        Class names (folder names for ImageFolder, metadata for Parquet).
    out_dir
        Target folder (replaced as a whole).
    fmt
        ``imagefolder``, ``parquet`` or ``none``.

    Returns
    -------
    dict
        What ``EXPORT.json`` holds.
    """
    if fmt not in EXPORT_FORMATS:
        raise MemcleanError(f"clean.export must be one of {', '.join(EXPORT_FORMATS)}; got {fmt!r}")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = manifest[manifest["keep"] & manifest["row"].notna()]
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        per_split: dict[str, int] = {}
        if fmt == "imagefolder":
            for split, part in kept.groupby("split", sort=True):
                for sid, row, label in zip(part["sample_id"], part["row"], part["label"]):
                    folder = staging / _safe(str(split)) / _safe(classes[int(label)])
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / f"{int(row):07d}_{_safe(str(sid))}.png").write_bytes(_png(pixels[int(row)]))
                per_split[str(split)] = len(part)
        elif fmt == "parquet":
            struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
            for split, part in kept.groupby("split", sort=True):
                images = [{"bytes": _png(pixels[int(r)]), "path": str(s)} for s, r in zip(part["sample_id"], part["row"])]
                table = pa.table(
                    {
                        "img": pa.array(images, type=struct),
                        "label": pa.array(part["label"].astype("int64").to_numpy(), type=pa.int64()),
                        "sample_id": pa.array(part["sample_id"].astype(str).tolist(), type=pa.string()),
                    }
                ).replace_schema_metadata({"classes": ",".join(classes)})
                pq.write_table(table, staging / f"{_safe(str(split))}.parquet")
                per_split[str(split)] = len(part)
        info = {"format": fmt, "samples": int(sum(per_split.values())), "by_split": per_split, "classes": classes}
        (staging / "EXPORT.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(out, old)
        os.replace(staging, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("exported %d kept samples as %s to %s", info["samples"], fmt, out)
    return info
