"""Readers that list a dataset's input rows without decoding them.

Each reader returns a :class:`Listing`: one :class:`Item` per input row, in a
deterministic order, plus the class names. Items that are already known to be
bad (a path escaping the root, an unknown label, a repeated manifest path, a
missing file) carry their reason code; the rest are decoded by
:func:`memclean.ingest.ingest`.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from memclean.errors import MemcleanError
from memclean.imaging import IMAGE_EXTENSIONS
from memclean.schema import Reason

log = logging.getLogger(__name__)

SOURCES = ("digits", "imagefolder", "manifest", "idx", "hf-parquet")
SPLIT_DIR_NAMES = frozenset({"train", "test", "val", "valid", "validation"})
DEFAULT_SPLIT = "train"


@dataclass
class Item:
    """One input row before decoding.

    Exactly one of ``read`` (encoded bytes) and ``array`` (decoded H×W or
    H×W×3 uint8) is set, unless ``reason`` is already known.
    """

    sample_id: str
    source: str
    split: str
    label: int | None
    read: Callable[[], bytes] | None = None
    array: np.ndarray | None = None
    reason: Reason | None = None
    detail: str | None = None


@dataclass
class Listing:
    """All input rows of a dataset and its class names."""

    items: list[Item]
    classes: list[str]
    notes: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def _file_reader(path: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        return path.read_bytes()

    return read


def _bytes_reader(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def _inside(root_real: str, candidate: str) -> bool:
    return candidate == root_real or candidate.startswith(root_real.rstrip(os.sep) + os.sep)


def _require_dir(root: str | os.PathLike[str] | None, source: str) -> Path:
    if root is None or str(root) == "":
        raise MemcleanError(f"ingest.root must be set for source '{source}'")
    path = Path(root)
    if not path.is_dir():
        raise MemcleanError(f"ingest.root {str(path)!r} is not a directory")
    return path


def _label_index(value: Any, classes: Sequence[str], numeric: bool) -> int | None:
    """Map a raw label to its class index, or None when it is not a known class."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if numeric:
        try:
            idx = int(value)
        except (TypeError, ValueError):
            return None
        if float(value) != idx:
            return None
        return idx if 0 <= idx < len(classes) else None
    text = str(value).strip()
    try:
        return list(classes).index(text)
    except ValueError:
        return None


def _is_int_like(values: Sequence[Any]) -> bool:
    seen = False
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        seen = True
        if isinstance(v, (bool, np.bool_)):
            return False
        if isinstance(v, (int, np.integer)):
            continue
        if isinstance(v, (float, np.floating)):
            if float(v).is_integer():
                continue
            return False
        try:
            int(str(v).strip())
        except ValueError:
            return False
    return seen


def _resolve_classes(raw_labels: Sequence[Any], classes: Sequence[str] | None) -> tuple[list[str], bool]:
    """Return (class names, labels-are-indices) for a column of raw labels."""
    numeric = _is_int_like(raw_labels)
    if classes:
        return [str(c) for c in classes], numeric
    if numeric:
        ints = [int(float(v)) for v in raw_labels if v is not None and not (isinstance(v, float) and np.isnan(v))]
        top = max(ints) if ints else -1
        if top >= 100_000:
            raise MemcleanError(f"integer label {top} is implausibly large; give ingest.classes explicitly")
        return [str(i) for i in range(top + 1)], True
    names = sorted({str(v).strip() for v in raw_labels if v is not None and str(v).strip() not in ("", "nan")})
    return names, False


# --------------------------------------------------------------------------- digits


def list_digits() -> Listing:
    """scikit-learn's bundled 8×8 digits (1,797 rows), scaled from 0–16 to 0–255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    items = [
        Item(f"{DEFAULT_SPLIT}/{i}", f"sklearn:digits/{i}", DEFAULT_SPLIT, int(y), array=images[i])
        for i, y in enumerate(bunch.target)
    ]
    return Listing(items, [str(c) for c in bunch.target_names])


# --------------------------------------------------------------------------- imagefolder


def list_imagefolder(root: str | os.PathLike[str], classes: Sequence[str] | None = None) -> Listing:
    """A folder with one sub-folder per class, optionally under split folders.

    ``root/<class>/**/<file>`` or ``root/<split>/<class>/**/<file>`` where every
    top-level folder is one of train/test/val/valid/validation. Hidden files
    (name starting with ``.``) are not input rows and are counted in
    ``notes['hidden_skipped']``. Files outside any class folder are rows with
    reason ``unknown_label``; files with a non-image extension are rows with
    ``format_not_allowed``; symlinks resolving outside the root are
    ``path_escape``.
    """
    root_path = _require_dir(root, "imagefolder")
    root_real = os.path.realpath(root_path)
    top = sorted(p for p in root_path.iterdir() if not p.name.startswith("."))
    top_dirs = [p for p in top if p.is_dir() and not p.is_symlink()]
    split_mode = bool(top_dirs) and all(p.name.lower() in SPLIT_DIR_NAMES for p in top_dirs)

    files: list[tuple[str, Path]] = []  # (relative posix path, path)
    hidden = 0
    dir_links: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root_path, followlinks=False):
        dirnames.sort()
        for d in list(dirnames):
            full = Path(dirpath) / d
            if d.startswith("."):
                dirnames.remove(d)
                hidden += 1
            elif full.is_symlink():
                dirnames.remove(d)
                dir_links.append(full.relative_to(root_path).as_posix())
        for name in sorted(filenames):
            if name.startswith("."):
                hidden += 1
                continue
            full = Path(dirpath) / name
            files.append((full.relative_to(root_path).as_posix(), full))

    class_dirs: dict[str, int] = {}
    for rel, _ in files:
        parts = PurePosixPath(rel).parts
        depth = 2 if split_mode else 1
        if len(parts) > depth:
            class_dirs[parts[depth - 1]] = class_dirs.get(parts[depth - 1], 0) + 1
    # Class folders that hold no files at all (in any split).
    all_class_dirs: set[str] = set()
    for parent in top_dirs if split_mode else [root_path]:
        for p in parent.iterdir():
            if p.is_dir() and not p.name.startswith("."):
                all_class_dirs.add(p.name)
    empty = sorted(all_class_dirs - set(class_dirs))
    if empty:
        log.warning("empty class folders left out of the class list: %s", ", ".join(empty))
    names = [str(c) for c in classes] if classes else sorted(class_dirs)

    items: list[Item] = []
    for rel, full in files:
        parts = PurePosixPath(rel).parts
        split = parts[0] if split_mode else DEFAULT_SPLIT
        depth = 2 if split_mode else 1
        cls = parts[depth - 1] if len(parts) > depth else None
        label = names.index(cls) if cls in names else None
        item = Item(rel, rel, split, label, read=_file_reader(full))
        real = os.path.realpath(full)
        if not _inside(root_real, real):
            item.read, item.reason, item.detail = None, Reason.PATH_ESCAPE, "symlink resolves outside the root"
        elif Path(rel).suffix.lower() not in IMAGE_EXTENSIONS:
            item.read, item.reason = None, Reason.FORMAT_NOT_ALLOWED
            item.detail = f"extension {Path(rel).suffix or '(none)'} is not an image type"
        elif label is None:
            item.read, item.reason = None, Reason.UNKNOWN_LABEL
            item.detail = "not inside a class folder" if cls is None else f"class folder {cls!r} not in ingest.classes"
        items.append(item)
    for rel in dir_links:
        split = PurePosixPath(rel).parts[0] if split_mode else DEFAULT_SPLIT
        items.append(
            Item(rel, rel, split, None, reason=Reason.PATH_ESCAPE, detail="symlinked folder is not followed")
        )
    notes = {"hidden_skipped": hidden, "empty_classes": empty, "split_folders": split_mode}
    if hidden:
        log.info("skipped %d hidden files/folders under %s", hidden, root_path)
    return Listing(items, names, notes)


# --------------------------------------------------------------------------- manifest


def list_manifest(
    manifest: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    classes: Sequence[str] | None = None,
) -> Listing:
    """A CSV or Parquet table with columns ``path``, ``label`` and optionally ``split``.

    Paths are relative to ``root`` (default: the manifest's folder); absolute
    paths are accepted only when they lie inside it. A repeated path keeps its
    first row; later rows get ``duplicate_path``.
    """
    mpath = Path(manifest)
    if not mpath.is_file():
        raise MemcleanError(f"manifest {str(mpath)!r} not found")
    root_path = Path(root) if root else mpath.parent
    if not root_path.is_dir():
        raise MemcleanError(f"ingest.root {str(root_path)!r} is not a directory")
    root_real = os.path.realpath(root_path)
    try:
        if mpath.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(mpath)
        else:
            frame = pd.read_csv(mpath, dtype=str, keep_default_na=False, na_values=[""])
    except Exception as exc:  # noqa: BLE001
        raise MemcleanError(f"cannot read manifest {str(mpath)!r}: {exc}") from None
    for col in ("path", "label"):
        if col not in frame.columns:
            raise MemcleanError(f"manifest {str(mpath)!r} has no '{col}' column (columns: {list(frame.columns)})")
    raw_labels = frame["label"].astype(object).where(frame["label"].notna(), None).tolist()
    names, numeric = _resolve_classes(raw_labels, classes)
    splits = (
        frame["split"].astype(object).where(frame["split"].notna(), None).tolist()
        if "split" in frame.columns
        else [None] * len(frame)
    )

    items: list[Item] = []
    seen: dict[str, str] = {}
    used_ids: set[str] = set()
    for i, (raw_path, raw_label, raw_split) in enumerate(zip(frame["path"].tolist(), raw_labels, splits)):
        text = "" if raw_path is None or (isinstance(raw_path, float) and np.isnan(raw_path)) else str(raw_path)
        split = str(raw_split).strip() if raw_split not in (None, "") else DEFAULT_SPLIT
        label = _label_index(raw_label, names, numeric)
        candidate = Path(text) if os.path.isabs(text) else root_path / text
        real = os.path.realpath(candidate)
        rel = Path(os.path.relpath(real, root_real)).as_posix() if text and _inside(root_real, real) else text
        rel = rel or f"<row {i}>"
        sid = rel
        k = 1
        while sid in used_ids:
            k += 1
            sid = f"{rel}#{k}"
        used_ids.add(sid)
        item = Item(sid, rel, split, label, read=_file_reader(Path(real)))
        if not text:
            item.read, item.reason, item.detail = None, Reason.MISSING, f"manifest row {i} has an empty path"
        elif not _inside(root_real, real):
            item.read, item.reason, item.detail = None, Reason.PATH_ESCAPE, f"resolves outside the root: {text}"
        elif real in seen:
            item.read, item.reason, item.detail = None, Reason.DUPLICATE_PATH, f"same file as {seen[real]}"
        elif label is None:
            item.read, item.reason, item.detail = None, Reason.UNKNOWN_LABEL, f"label {raw_label!r} not in the classes"
        elif not os.path.isfile(real):
            item.read, item.reason, item.detail = None, Reason.MISSING, "file not found"
        if item.reason is None or item.reason in (Reason.UNKNOWN_LABEL, Reason.MISSING):
            seen.setdefault(real, sid)
        items.append(item)
    return Listing(items, names, {"manifest": str(mpath)})


# --------------------------------------------------------------------------- idx


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise MemcleanError(f"cannot read IDX file {path.name}: {exc}") from None
    if len(data) < 4:
        raise MemcleanError(f"IDX file {path.name} is too short")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise MemcleanError(f"IDX file {path.name}: unsupported magic (only unsigned-byte IDX is read)")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    count = int(np.prod(dims))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != count:
        raise MemcleanError(f"IDX file {path.name}: header says {dims} but holds {body.size} values (truncated?)")
    return body.reshape(dims)


def list_idx(root: str | os.PathLike[str], classes: Sequence[str] | None = None) -> Listing:
    """MNIST-family IDX files: ``<prefix>-images-idx3-ubyte[.gz]`` + ``<prefix>-labels-idx1-ubyte[.gz]``.

    The prefix ``train`` gives split ``train``; ``t10k`` or ``test`` give ``test``.
    """
    root_path = _require_dir(root, "idx")
    image_files = sorted(p for p in root_path.iterdir() if "-images-idx3-ubyte" in p.name)
    if not image_files:
        raise MemcleanError(f"no *-images-idx3-ubyte[.gz] files in {str(root_path)!r}")
    blocks: list[tuple[str, Path, np.ndarray, np.ndarray]] = []
    for img_file in image_files:
        prefix = img_file.name.split("-images-idx3-ubyte")[0]
        lab_name = img_file.name.replace("-images-idx3-ubyte", "-labels-idx1-ubyte")
        lab_file = root_path / lab_name
        if not lab_file.exists():
            raise MemcleanError(f"{img_file.name} has no labels file {lab_name}")
        images = _read_idx(img_file)
        labels = _read_idx(lab_file)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise MemcleanError(f"{img_file.name}/{lab_name}: {images.shape} images vs {labels.shape} labels")
        split = "test" if prefix in ("t10k", "test") else prefix
        blocks.append((split, img_file, images, labels))
    all_labels = np.concatenate([b[3] for b in blocks])
    names = [str(c) for c in classes] if classes else [str(i) for i in range(int(all_labels.max()) + 1)]
    items: list[Item] = []
    for split, img_file, images, labels in sorted(blocks, key=lambda b: (b[0] != "train", b[0])):
        for i in range(len(images)):
            y = int(labels[i])
            item = Item(f"{split}/{i}", f"{img_file.name}#{i}", split, y if y < len(names) else None, array=images[i])
            if item.label is None:
                item.array, item.reason, item.detail = None, Reason.UNKNOWN_LABEL, f"label {y} not in the classes"
            items.append(item)
    return Listing(items, names)


# --------------------------------------------------------------------------- hf-parquet


def _hf_class_names(metadata: dict[bytes, bytes] | None, label_column: str) -> list[str] | None:
    if not metadata:
        return None
    if b"classes" in metadata:
        raw = metadata[b"classes"].decode()
        try:
            value = json.loads(raw)
            if isinstance(value, list):
                return [str(v) for v in value]
        except ValueError:
            pass
        return [c.strip() for c in raw.split(",")]
    if b"huggingface" in metadata:
        try:
            info = json.loads(metadata[b"huggingface"])
            feature = info.get("info", {}).get("features", {}).get(label_column, {})
            names = feature.get("names")
            if names:
                return [str(n) for n in names]
        except (ValueError, AttributeError):
            return None
    return None


def list_hf_parquet(
    root: str | os.PathLike[str],
    classes: Sequence[str] | None = None,
    image_column: str | None = None,
    label_column: str = "label",
) -> Listing:
    """Hugging Face-style Parquet: an image column (``img`` or ``image``) of ``{bytes, path}`` and a label.

    ``root`` is a Parquet file or a folder of them; the split is the file-name
    stem up to the first ``-`` (``train-00000-of-00002.parquet`` → ``train``).
    Class names come from ``classes``, else the schema metadata (``classes``,
    or the ``huggingface`` features block), else the integer labels.
    """
    root_path = Path(root) if root else None
    if root_path is None or not root_path.exists():
        raise MemcleanError(f"ingest.root {str(root)!r} does not exist")
    files = [root_path] if root_path.is_file() else sorted(root_path.glob("*.parquet"))
    if not files:
        raise MemcleanError(f"no .parquet files in {str(root_path)!r}")
    order = {"train": 0, "validation": 1, "val": 1, "test": 2}
    files.sort(key=lambda p: (order.get(p.stem.split("-")[0], 9), p.name))
    names: list[str] | None = [str(c) for c in classes] if classes else None
    items: list[Item] = []
    counters: dict[str, int] = {}
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except Exception as exc:  # noqa: BLE001
            raise MemcleanError(f"cannot read {f.name}: {exc}") from None
        cols = pf.schema_arrow.names
        col = image_column or next((c for c in ("img", "image") if c in cols), None)
        if col is None or col not in cols:
            raise MemcleanError(f"{f.name} has no image column ('img' or 'image'; columns: {cols})")
        if label_column not in cols:
            raise MemcleanError(f"{f.name} has no label column {label_column!r} (columns: {cols})")
        if names is None:
            names = _hf_class_names(pf.schema_arrow.metadata, label_column)
        table = pf.read(columns=[col, label_column])
        split = f.stem.split("-")[0]
        images = table.column(col).to_pylist()
        labels = table.column(label_column).to_pylist()
        if names is None:
            names, _ = _resolve_classes(labels, None)
        for image, raw_label in zip(images, labels):
            i = counters.get(split, 0)
            counters[split] = i + 1
            data = image.get("bytes") if isinstance(image, dict) else image
            label = _label_index(raw_label, names, True)
            item = Item(f"{split}/{i}", f"{f.name}#{i}", split, label)
            if label is None:
                item.reason, item.detail = Reason.UNKNOWN_LABEL, f"label {raw_label!r} not in the classes"
            elif not data:
                item.reason, item.detail = Reason.NOT_AN_IMAGE, "no image bytes in the row"
            else:
                item.read = _bytes_reader(bytes(data))
            items.append(item)
    return Listing(items, names or [])


def list_source(
    source: str,
    root: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    classes: Sequence[str] | None = None,
    image_column: str | None = None,
    label_column: str = "label",
) -> Listing:
    """Dispatch to the reader for ``source`` (one of :data:`SOURCES`)."""
    if source == "digits":
        return list_digits()
    if source == "imagefolder":
        return list_imagefolder(root, classes)  # type: ignore[arg-type]
    if source == "manifest":
        if not manifest:
            raise MemcleanError("ingest.manifest must name a CSV or Parquet file for source 'manifest'")
        return list_manifest(manifest, root, classes)
    if source == "idx":
        return list_idx(root, classes)  # type: ignore[arg-type]
    if source == "hf-parquet":
        return list_hf_parquet(root, classes, image_column, label_column)  # type: ignore[arg-type]
    raise MemcleanError(f"unknown ingest.source {source!r}; choose one of {', '.join(SOURCES)}")
