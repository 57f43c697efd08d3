"""Export the kept samples as an ImageFolder tree or Hugging Face-style Parquet.

Images are written from the ingested pixel array (the common size), as PNG.
The export folder is built beside its target and published as a whole by
:func:`memclean.io.atomic_dir`, so a killed run leaves the previous export or
the new one, never a mix or nothing. It always holds ``EXPORT.json`` (format,
counts, classes, where each split went), even when the format is ``none``.

Names on disk come from class, split and sample names but stay distinct and
reversible: characters outside ``A-Za-z0-9._`` become ``_``, and a name that
would collide with an earlier one (``cat!`` and ``cat?`` both give ``cat``; also
ignoring case) gets ``_2``, ``_3``… An ImageFolder tree has a folder for every
class in every split, named so that sorting them (what torchvision's
``ImageFolder`` does) gives the class index order; when the names alone do not
sort that way, each folder is prefixed with its zero-padded index.
``classes.json`` lists index, name and folder. Parquet files store the class
names as a JSON list (schema metadata ``classes``) and as Hugging Face
``ClassLabel`` features.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from memclean.errors import MemcleanError
from memclean.io import atomic_dir
from memclean.progress import Progress, no_progress

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("none", "imagefolder", "parquet")
_UNSAFE = re.compile(r"[^A-Za-z0-9._]+")
_IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _png(image: np.ndarray) -> bytes:
    arr = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def _safe(name: str, fallback: str) -> str:
    return _UNSAFE.sub("_", name.replace("/", "__")).strip("._") or fallback


def _unique_names(names: Sequence[str], fallback: str) -> list[str]:
    """Safe file names for ``names``, in order, distinct even on case-insensitive filesystems."""
    taken: set[str] = set()
    out = []
    for name in names:
        base = candidate = _safe(name, fallback)
        k = 1
        while candidate.lower() in taken:
            k += 1
            candidate = f"{base}_{k}"
        taken.add(candidate.lower())
        out.append(candidate)
    return out


def _class_folders(classes: Sequence[str]) -> list[str]:
    """Distinct folder names whose sorted order is the class index order."""
    folders = _unique_names(classes, "class")
    if folders != sorted(folders):
        width = len(str(len(folders) - 1))
        folders = [f"{i:0{width}d}_{f}" for i, f in enumerate(folders)]
    return folders


def _image_name(row: int, sample_id: str) -> str:
    return f"{row:07d}_{_safe(os.path.splitext(sample_id)[0], 'sample')}.png"


def _write_imagefolder(
    kept: pd.DataFrame,
    pixels: np.ndarray,
    classes: Sequence[str],
    splits: dict[str, str],
    out: Path,
    progress: Progress,
) -> None:
    folders = _class_folders(classes)
    for split, part in kept.groupby("split", sort=True):
        for folder in folders:
            (out / splits[str(split)] / folder).mkdir(parents=True)
        rows = zip(part["sample_id"], part["row"], part["label"])
        for sid, row, label in progress(rows, f"export {split}", len(part)):
            path = out / splits[str(split)] / folders[int(label)] / _image_name(int(row), str(sid))
            path.write_bytes(_png(pixels[int(row)]))
    index = [{"index": i, "name": name, "folder": folder} for i, (name, folder) in enumerate(zip(classes, folders))]
    (out / "classes.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


def _write_parquet(
    kept: pd.DataFrame,
    pixels: np.ndarray,
    classes: Sequence[str],
    splits: dict[str, str],
    out: Path,
    progress: Progress,
) -> None:
    features = {
        "img": {"_type": "Image"},
        "label": {"names": list(classes), "_type": "ClassLabel"},
        "sample_id": {"dtype": "string", "_type": "Value"},
    }
    metadata = {"classes": json.dumps(list(classes)), "huggingface": json.dumps({"info": {"features": features}})}
    for split, part in kept.groupby("split", sort=True):
        rows = zip(part["sample_id"], part["row"])
        images = [
            {"bytes": _png(pixels[int(r)]), "path": str(s)} for s, r in progress(rows, f"export {split}", len(part))
        ]
        table = pa.table(
            {
                "img": pa.array(images, type=_IMAGE_STRUCT),
                "label": pa.array(part["label"].astype("int64").to_numpy(), type=pa.int64()),
                "sample_id": pa.array(part["sample_id"].astype(str).tolist(), type=pa.string()),
            }
        ).replace_schema_metadata(metadata)
        pq.write_table(table, out / splits[str(split)])


def export_kept(
    manifest: pd.DataFrame,
    pixels: np.ndarray,
    classes: list[str],
    out_dir: str | os.PathLike[str],
    fmt: str = "imagefolder",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write the ``keep`` rows of ``manifest`` to ``out_dir`` in ``fmt``, replacing it as a whole.

    Parameters
    ----------
    manifest
        The clean manifest (``keep``, ``row``, ``label``, ``split``, ``sample_id``).
    pixels
        The ingest pixel array.
    classes
        Class names, in class index order.
    out_dir
        Target folder (published atomically; the previous one is replaced).
    fmt
        ``imagefolder`` (``<split>/<class folder>/<row>_<sample>.png`` and
        ``classes.json``), ``parquet`` (``<split>.parquet``) or ``none``.
    progress
        Optional wrapper ``progress(iterable, description, total)`` over each split's images.

    Returns
    -------
    dict
        What ``EXPORT.json`` holds: ``format``, ``samples``, ``by_split``,
        ``splits`` (split → its folder or file) and ``classes``.

    Raises
    ------
    MemcleanError
        For an unknown format, or when the disk fills.
    """
    if fmt not in EXPORT_FORMATS:
        raise MemcleanError(f"clean.export must be one of {', '.join(EXPORT_FORMATS)}; got {fmt!r}")
    kept = manifest[manifest["keep"] & manifest["row"].notna()] if fmt != "none" else manifest.iloc[:0]
    names = sorted(str(s) for s in kept["split"].unique())
    suffix = ".parquet" if fmt == "parquet" else ""
    splits = {split: f"{name}{suffix}" for split, name in zip(names, _unique_names(names, "split"))}
    with atomic_dir(out_dir) as staging:
        if fmt == "imagefolder":
            _write_imagefolder(kept, pixels, classes, splits, staging, progress or no_progress)
        elif fmt == "parquet":
            _write_parquet(kept, pixels, classes, splits, staging, progress or no_progress)
        by_split = {str(split): len(part) for split, part in kept.groupby("split", sort=True)}
        info = {
            "format": fmt,
            "samples": len(kept),
            "by_split": by_split,
            "splits": splits,
            "classes": list(classes),
        }
        (staging / "EXPORT.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.info("exported %d kept samples as %s to %s", info["samples"], fmt, out_dir)
    return info
