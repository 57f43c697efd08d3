"""Readers that list a dataset's input rows without decoding them.

Each reader returns a :class:`Listing`: one :class:`Item` per input row, in a
deterministic order, plus the class names. Items that are already known to be
bad (a path escaping the root, an unknown label, a repeated manifest path, a
missing file, a FIFO or other non-regular file) carry their reason code; the
rest are decoded by :func:`memclean.ingest.ingest`. Every source turns its raw
labels into class indices with :func:`parse_labels`.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import stat
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

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
#: Label cells (case-insensitive, stripped) that mean "no label", as pandas reads them.
MISSING_LABELS = frozenset({"", "nan", "-nan", "na", "n/a", "#n/a", "null", "<na>"})
#: Inferred integer labels at or above this are refused: give ``ingest.classes``.
MAX_INFERRED_CLASSES = 100_000
IDX_IMAGES = "-images-idx3-ubyte"
IDX_LABELS = "-labels-idx1-ubyte"


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
    """All input rows of a dataset and its class names.

    ``root`` is the absolute folder that the items' ``source`` values are
    relative to when rows are files (imagefolder, manifest); ``None`` when the
    rows live inside one file or in memory (digits, idx, hf-parquet).
    """

    items: list[Item]
    classes: list[str]
    notes: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None


@dataclass(frozen=True)
class Labels:
    """Class names and, per raw label, its class index or why it has none.

    Attributes
    ----------
    classes
        Class names in index order.
    indices
        One class index per raw label; ``None`` for a missing or unknown label.
    details
        ``None`` where ``indices`` has an index, else a one-line reason.
    """

    classes: list[str]
    indices: list[int | None]
    details: list[str | None]


class _Cell(NamedTuple):
    """One raw label: its stripped text, its value when numeric, and whether it means "no label"."""

    text: str
    number: int | float | None
    missing: bool


# --------------------------------------------------------------------------- labels


def _parse_cell(value: Any) -> _Cell:
    """Normalise one raw label cell (int, float, string, bytes, None or NaN)."""
    if value is None:
        return _Cell("", None, True)
    if isinstance(value, (bool, np.bool_)):
        return _Cell(str(value), None, False)
    if isinstance(value, (int, np.integer)):
        return _Cell(str(int(value)), int(value), False)
    if isinstance(value, (float, np.floating)):
        x = float(value)
        if math.isnan(x):
            return _Cell("", None, True)
        return _Cell(str(x), int(x) if x.is_integer() else x, False)
    text = (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)).strip()
    if text.lower() in MISSING_LABELS:
        return _Cell(text, None, True)
    try:
        return _Cell(text, int(text), False)
    except ValueError:
        pass
    try:
        x = float(text)
    except ValueError:
        return _Cell(text, None, False)
    if math.isnan(x):
        return _Cell(text, None, True)
    return _Cell(text, int(x) if x.is_integer() else x, False)


def _parse_cells(values: Sequence[Any]) -> list[_Cell]:
    """:func:`_parse_cell` for a column; each distinct string is parsed once (label columns repeat a few)."""
    memo: dict[str, _Cell] = {}
    cells: list[_Cell] = []
    for v in values:
        if isinstance(v, str):
            if v not in memo:
                memo[v] = _parse_cell(v)
            cells.append(memo[v])
        else:
            cells.append(_parse_cell(v))
    return cells


def parse_labels(
    raw: Sequence[Any] | np.ndarray, classes: Sequence[str] | None = None, names_only: bool = False
) -> Labels:
    """Map a column of raw labels to class indices; the one label parser every source uses.

    A cell is missing when it is ``None``, NaN or one of :data:`MISSING_LABELS`
    (``NaN``, ``NA``, ``null``, empty, ...), unless that text is one of the
    given ``classes``. The column is read as integer class indices when more
    than half of its non-missing cells are numbers (``3``, ``3.0``, ``"3"``)
    and fewer of them spell a given class name; integral floats are integers.
    In that case a non-integral number (``1.5``), text or an index outside the
    classes is an unknown label of its own row: the other labels keep their
    integer values. Otherwise every cell's stripped text is a class name.

    Parameters
    ----------
    raw
        One label per input row.
    classes
        Class names in index order; ``None`` or empty to infer them: ``0..max``
        for integer labels, the sorted distinct names for string labels.
    names_only
        Every non-``None`` value is a class name as it is (folder names): no
        stripping, no number parsing, no missing-value spellings.

    Returns
    -------
    Labels
        The class names and one index (or the reason for none) per raw label.

    Raises
    ------
    MemcleanError
        When inferred integer labels reach :data:`MAX_INFERRED_CLASSES`.
    """
    values = raw.tolist() if isinstance(raw, np.ndarray) else list(raw)
    given = [str(c) for c in classes] if classes else None
    if names_only:
        cells = [_Cell("", None, True) if v is None else _Cell(str(v), None, False) for v in values]
    else:
        cells = _parse_cells(values)
    lookup = {name: i for i, name in enumerate(given or [])}
    present = [c for c in cells if not c.missing or c.text in lookup]
    numeric = sum(c.number is not None for c in present)
    spelled = sum(c.text in lookup for c in present)
    if 2 * numeric > len(present) and numeric > spelled:
        return _index_labels(cells, given)
    if given is None:
        given = sorted({c.text for c in present})
        lookup = {name: i for i, name in enumerate(given)}
    indices: list[int | None] = []
    details: list[str | None] = []
    for c in cells:
        idx = lookup.get(c.text)
        indices.append(idx)
        if idx is not None:
            details.append(None)
        elif c.missing:
            details.append(_missing_detail(c))
        else:
            details.append(f"label {c.text!r} is not in ingest.classes")
    _warn_unknown(indices, details)
    return Labels(given, indices, details)


def _index_labels(cells: Sequence[_Cell], given: list[str] | None) -> Labels:
    """:func:`parse_labels` for a column of integer class indices."""
    if given is None:
        top = max((c.number for c in cells if isinstance(c.number, int)), default=-1)
        if top >= MAX_INFERRED_CLASSES:
            raise MemcleanError(f"integer label {top} is implausibly large; give ingest.classes explicitly")
        given = [str(i) for i in range(top + 1)]
    indices: list[int | None] = []
    details: list[str | None] = []
    for c in cells:
        n = c.number
        if c.missing:
            indices.append(None)
            details.append(_missing_detail(c))
        elif not isinstance(n, int):
            indices.append(None)
            details.append(f"label {c.text!r} is not an integer class index (the label column holds integers)")
        elif not 0 <= n < len(given):
            indices.append(None)
            details.append(f"label {n} is not one of the {len(given)} class indices")
        else:
            indices.append(n)
            details.append(None)
    _warn_unknown(indices, details)
    return Labels(given, indices, details)


def _missing_detail(cell: _Cell) -> str:
    """Detail of a missing label, with its spelling when it had one (``'NA'``)."""
    return f"missing label ({cell.text!r})" if cell.text else "missing label"


def _warn_unknown(indices: Sequence[int | None], details: Sequence[str | None]) -> None:
    """Log how many labels of a column have no class, with the first reason."""
    bad = [d for i, d in zip(indices, details, strict=True) if i is None]
    if bad:
        log.warning("%d of %d labels have no class and are quarantined (first: %s)", len(bad), len(indices), bad[0])


# --------------------------------------------------------------------------- files


_SPECIAL_FILES: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


def _special_kind(mode: int) -> str | None:
    """Describe a non-regular file mode (FIFO, socket, device, folder); ``None`` for a regular file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _SPECIAL_FILES if test(mode)), "a special file")


def _file_problem(path: str | os.PathLike[str]) -> tuple[Reason, str] | None:
    """Why ``path`` cannot be read as a regular file, without opening it; ``None`` when it can."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return Reason.MISSING, "file not found"
    except OSError as exc:
        return Reason.UNREADABLE, f"stat: {exc.strerror or exc}"
    kind = _special_kind(mode)
    return (Reason.UNREADABLE, f"{kind}, not a regular file") if kind else None


def _read_regular(path: Path) -> bytes:
    """Read a regular file; raise :class:`OSError` for anything else without blocking on it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        kind = _special_kind(os.fstat(fh.fileno()).st_mode)
        if kind:
            raise OSError(f"{path.name} is {kind}, not a regular file")
        return fh.read()


def _file_reader(path: Path) -> Callable[[], bytes]:
    return lambda: _read_regular(path)


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


def _require_file(path: Path) -> None:
    """Refuse a whole-dataset file (IDX, Parquet) that is missing or not a regular file."""
    problem = _file_problem(path)
    if problem is not None:
        raise MemcleanError(f"cannot read {path.name}: {problem[1]}")


# --------------------------------------------------------------------------- digits


def list_digits() -> Listing:
    """scikit-learn's bundled 8×8 digits (1,797 rows), scaled from 0–16 to 0–255.

    Returns
    -------
    Listing
        One in-memory item per image, split ``train``, classes ``0``–``9``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = parse_labels(bunch.target, [str(c) for c in bunch.target_names])
    items = [
        Item(f"{DEFAULT_SPLIT}/{i}", f"sklearn:digits/{i}", DEFAULT_SPLIT, y, array=images[i])
        for i, y in enumerate(labels.indices)
    ]
    return Listing(items, labels.classes)


# --------------------------------------------------------------------------- imagefolder


def list_imagefolder(root: str | os.PathLike[str], classes: Sequence[str] | None = None) -> Listing:
    """A folder with one sub-folder per class, optionally under split folders.

    ``root/<class>/**/<file>`` or ``root/<split>/<class>/**/<file>`` where every
    top-level folder is one of train/test/val/valid/validation. Hidden files
    (name starting with ``.``) are not input rows and are counted in
    ``notes['hidden_skipped']``. Every other entry is a row: files outside any
    class folder get reason ``unknown_label``; files with a non-image extension
    ``format_not_allowed``; symlinks resolving outside the root ``path_escape``;
    FIFOs, sockets and devices ``unreadable`` (they are never opened).

    Parameters
    ----------
    root
        The dataset folder.
    classes
        Class names in index order; ``None`` for the sorted class folder names.

    Returns
    -------
    Listing
        One item per entry, in sorted path order, with ``root`` set.
    """
    root_path = _require_dir(root, "imagefolder")
    root_real = os.path.realpath(root_path)
    top = sorted(p for p in root_path.iterdir() if not p.name.startswith("."))
    top_dirs = [p for p in top if p.is_dir() and not p.is_symlink()]
    split_mode = bool(top_dirs) and all(p.name.lower() in SPLIT_DIR_NAMES for p in top_dirs)
    depth = 2 if split_mode else 1

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

    folders = [
        parts[depth - 1] if len(parts) > depth else None for parts in (PurePosixPath(rel).parts for rel, _ in files)
    ]
    # Class folders that hold no files at all (in any split).
    all_class_dirs: set[str] = set()
    for parent in top_dirs if split_mode else [root_path]:
        for p in parent.iterdir():
            if p.is_dir() and not p.name.startswith("."):
                all_class_dirs.add(p.name)
    empty = sorted(all_class_dirs - {f for f in folders if f is not None})
    if empty:
        log.warning("empty class folders left out of the class list: %s", ", ".join(empty))
    labels = parse_labels(folders, classes, names_only=True)

    items: list[Item] = []
    for (rel, full), cls, label in zip(files, folders, labels.indices, strict=True):
        split = PurePosixPath(rel).parts[0] if split_mode else DEFAULT_SPLIT
        item = Item(rel, rel, split, label, read=_file_reader(full))
        if not _inside(root_real, os.path.realpath(full)):
            item.reason, item.detail = Reason.PATH_ESCAPE, "symlink resolves outside the root"
        elif Path(rel).suffix.lower() not in IMAGE_EXTENSIONS:
            item.reason = Reason.FORMAT_NOT_ALLOWED
            item.detail = f"extension {Path(rel).suffix or '(none)'} is not an image type"
        elif (problem := _file_problem(full)) is not None:
            item.reason, item.detail = problem
        elif label is None:
            item.reason = Reason.UNKNOWN_LABEL
            item.detail = "not inside a class folder" if cls is None else f"class folder {cls!r} not in ingest.classes"
        if item.reason is not None:
            item.read = None
        items.append(item)
    for rel in dir_links:
        split = PurePosixPath(rel).parts[0] if split_mode else DEFAULT_SPLIT
        items.append(Item(rel, rel, split, None, reason=Reason.PATH_ESCAPE, detail="symlinked folder is not followed"))
    notes = {"hidden_skipped": hidden, "empty_classes": empty, "split_folders": split_mode}
    if hidden:
        log.info("skipped %d hidden files/folders under %s", hidden, root_path)
    return Listing(items, labels.classes, notes, Path(root_real))


# --------------------------------------------------------------------------- manifest


def list_manifest(
    manifest: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    classes: Sequence[str] | None = None,
) -> Listing:
    """A CSV or Parquet table with columns ``path``, ``label`` and optionally ``split``.

    Paths are relative to ``root`` (default: the manifest's folder); absolute
    paths are accepted only when they lie inside it. A repeated path keeps its
    first row; later rows get ``duplicate_path``. A path naming a FIFO, socket,
    device or folder gets ``unreadable`` and is never opened. Labels are read by
    :func:`parse_labels`.

    Parameters
    ----------
    manifest
        The CSV (``.csv``) or Parquet (``.parquet``, ``.pq``) file.
    root
        Folder the paths are relative to; ``None`` for the manifest's folder.
    classes
        Class names in index order; ``None`` to infer them from the labels.

    Returns
    -------
    Listing
        One item per manifest row, in row order, with ``root`` set.
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
    except Exception as exc:
        raise MemcleanError(f"cannot read manifest {str(mpath)!r}: {exc}") from None
    for col in ("path", "label"):
        if col not in frame.columns:
            raise MemcleanError(f"manifest {str(mpath)!r} has no '{col}' column (columns: {list(frame.columns)})")
    labels = parse_labels(frame["label"].astype(object).where(frame["label"].notna(), None).tolist(), classes)
    splits = (
        frame["split"].astype(object).where(frame["split"].notna(), None).tolist()
        if "split" in frame.columns
        else [None] * len(frame)
    )

    items: list[Item] = []
    seen: dict[str, str] = {}
    used_ids: set[str] = set()
    rows = zip(frame["path"].tolist(), labels.indices, labels.details, splits, strict=True)
    for i, (raw_path, label, label_detail, raw_split) in enumerate(rows):
        text = "" if raw_path is None or (isinstance(raw_path, float) and np.isnan(raw_path)) else str(raw_path)
        split = str(raw_split).strip() if raw_split not in (None, "") else DEFAULT_SPLIT
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
            item.reason, item.detail = Reason.MISSING, f"manifest row {i} has an empty path"
        elif not _inside(root_real, real):
            item.reason, item.detail = Reason.PATH_ESCAPE, f"resolves outside the root: {text}"
        elif real in seen:
            item.reason, item.detail = Reason.DUPLICATE_PATH, f"same file as {seen[real]}"
        elif label is None:
            item.reason, item.detail = Reason.UNKNOWN_LABEL, label_detail
        else:
            problem = _file_problem(real)
            if problem is not None:
                item.reason, item.detail = problem
        if item.reason is not None:
            item.read = None
        if item.reason in (None, Reason.UNKNOWN_LABEL, Reason.MISSING, Reason.UNREADABLE):
            seen.setdefault(real, sid)
        items.append(item)
    return Listing(items, labels.classes, {"manifest": str(mpath)}, Path(root_real))


# --------------------------------------------------------------------------- idx


def _read_idx(path: Path) -> np.ndarray:
    """Read an unsigned-byte IDX file (raw or gzip); any defect is a one-line :class:`MemcleanError`."""
    _require_file(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise MemcleanError(f"cannot read IDX file {path.name}: {exc}") from None
    if len(data) < 4:
        raise MemcleanError(f"IDX file {path.name} is too short ({len(data)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise MemcleanError(f"IDX file {path.name}: unsupported magic (only unsigned-byte IDX is read)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise MemcleanError(f"IDX file {path.name} is too short ({len(data)} bytes) for its {ndim}-dimension header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    body = np.frombuffer(data, np.uint8, offset=header)
    if body.size != math.prod(dims):
        raise MemcleanError(f"IDX file {path.name}: header says {dims} but holds {body.size} values (truncated?)")
    return body.reshape(dims)


def _idx_file(root: Path, name: str, ignored: list[str]) -> Path | None:
    """``root/name``, else ``root/name.gz``; when both exist the uncompressed one wins and the other is logged."""
    raw, packed = root / name, root / f"{name}.gz"
    if os.path.lexists(raw) and os.path.lexists(packed):
        log.warning("%s and %s both exist: reading %s, ignoring %s", raw.name, packed.name, raw.name, packed.name)
        ignored.append(packed.name)
    if os.path.lexists(raw):
        return raw
    return packed if os.path.lexists(packed) else None


def list_idx(root: str | os.PathLike[str], classes: Sequence[str] | None = None) -> Listing:
    """MNIST-family IDX files: ``<prefix>-images-idx3-ubyte[.gz]`` + ``<prefix>-labels-idx1-ubyte[.gz]``.

    The prefix ``train`` gives split ``train``; ``t10k`` or ``test`` give
    ``test``; any other prefix is its own split. When a file exists both
    uncompressed and as ``.gz`` (torchvision's ``raw`` folder keeps both), the
    uncompressed one is read and the other is logged and listed in
    ``notes['ignored_files']``.

    Parameters
    ----------
    root
        Folder holding the IDX files.
    classes
        Class names in label order; ``None`` for ``0..max label``.

    Returns
    -------
    Listing
        One in-memory item per image, ``train`` first.

    Raises
    ------
    MemcleanError
        For missing, truncated, empty or unpaired files, or two prefixes giving the same split.
    """
    root_path = _require_dir(root, "idx")
    prefixes = sorted(
        {
            p.name.removesuffix(".gz").removesuffix(IDX_IMAGES)
            for p in root_path.iterdir()
            if not p.name.startswith(".") and p.name.removesuffix(".gz").endswith(IDX_IMAGES)
        }
    )
    if not prefixes:
        raise MemcleanError(f"no *{IDX_IMAGES}[.gz] files in {str(root_path)!r}")
    ignored: list[str] = []
    blocks: dict[str, tuple[Path, np.ndarray, np.ndarray]] = {}
    for prefix in prefixes:
        img_file = _idx_file(root_path, prefix + IDX_IMAGES, ignored)
        lab_file = _idx_file(root_path, prefix + IDX_LABELS, ignored)
        assert img_file is not None  # the prefix came from an images file
        if lab_file is None:
            raise MemcleanError(f"{img_file.name} has no labels file {prefix}{IDX_LABELS}[.gz]")
        images = _read_idx(img_file)
        raw_labels = _read_idx(lab_file)
        if images.ndim != 3 or raw_labels.ndim != 1 or len(images) != len(raw_labels):
            raise MemcleanError(f"{img_file.name}/{lab_file.name}: {images.shape} images vs {raw_labels.shape} labels")
        if images.size == 0:
            raise MemcleanError(f"IDX file {img_file.name} holds no images (shape {images.shape})")
        split = "test" if prefix in ("t10k", "test") else prefix
        if split in blocks:
            raise MemcleanError(f"{blocks[split][0].name} and {img_file.name} are both split {split!r}; keep one")
        blocks[split] = (img_file, images, raw_labels)
    order = sorted(blocks, key=lambda s: (s != "train", s))
    labels = parse_labels(np.concatenate([blocks[s][2] for s in order]), classes)
    items: list[Item] = []
    for split in order:
        img_file, images, _ = blocks[split]
        for i in range(len(images)):
            label, detail = labels.indices[len(items)], labels.details[len(items)]
            item = Item(f"{split}/{i}", f"{img_file.name}#{i}", split, label, array=images[i])
            if label is None:
                item.array, item.reason, item.detail = None, Reason.UNKNOWN_LABEL, detail
            items.append(item)
    return Listing(items, labels.classes, {"ignored_files": ignored} if ignored else {})


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
    or the ``huggingface`` features block), else the labels of every file
    (integers or strings, read by :func:`parse_labels`).

    Parameters
    ----------
    root
        A Parquet file or a folder of ``*.parquet`` files.
    classes
        Class names in index order; ``None`` for the metadata or the labels.
    image_column
        Image column; ``None`` for ``img`` or else ``image``.
    label_column
        Label column.

    Returns
    -------
    Listing
        One in-memory item per row; ``source`` is ``<file>#<row in that file>``.
    """
    root_path = Path(root) if root else None
    if root_path is None or not root_path.exists():
        raise MemcleanError(f"ingest.root {str(root)!r} does not exist")
    files = [root_path] if not root_path.is_dir() else sorted(root_path.glob("*.parquet"))
    if not files:
        raise MemcleanError(f"no .parquet files in {str(root_path)!r}")
    order = {"train": 0, "validation": 1, "val": 1, "test": 2}
    files.sort(key=lambda p: (order.get(p.stem.split("-")[0], 9), p.name))
    meta_names: list[str] | None = None
    blocks: list[tuple[str, str, list[Any]]] = []  # (split, file name, image cells)
    raw_labels: list[Any] = []
    for f in files:
        _require_file(f)
        try:
            pf = pq.ParquetFile(f)
        except Exception as exc:
            raise MemcleanError(f"cannot read {f.name}: {exc}") from None
        cols = pf.schema_arrow.names
        col = image_column or next((c for c in ("img", "image") if c in cols), None)
        if col is None or col not in cols:
            raise MemcleanError(f"{f.name} has no image column ('img' or 'image'; columns: {cols})")
        if label_column not in cols:
            raise MemcleanError(f"{f.name} has no label column {label_column!r} (columns: {cols})")
        if meta_names is None:
            meta_names = _hf_class_names(pf.schema_arrow.metadata, label_column)
        table = pf.read(columns=[col, label_column])
        blocks.append((f.stem.split("-")[0], f.name, table.column(col).to_pylist()))
        raw_labels.extend(table.column(label_column).to_pylist())
    labels = parse_labels(raw_labels, classes or meta_names)
    items: list[Item] = []
    counters: dict[str, int] = {}
    for split, name, images in blocks:
        for row, image in enumerate(images):
            i = counters.get(split, 0)
            counters[split] = i + 1
            label, detail = labels.indices[len(items)], labels.details[len(items)]
            data = image.get("bytes") if isinstance(image, dict) else image
            item = Item(f"{split}/{i}", f"{name}#{row}", split, label)
            if label is None:
                item.reason, item.detail = Reason.UNKNOWN_LABEL, detail
            elif not data:
                item.reason, item.detail = Reason.NOT_AN_IMAGE, "no image bytes in the row"
            else:
                item.read = _bytes_reader(bytes(data))
            items.append(item)
    return Listing(items, labels.classes)


def list_source(
    source: str,
    root: str | os.PathLike[str] | None = None,
    manifest: str | os.PathLike[str] | None = None,
    classes: Sequence[str] | None = None,
    image_column: str | None = None,
    label_column: str = "label",
) -> Listing:
    """Dispatch to the reader for ``source`` (one of :data:`SOURCES`).

    Parameters
    ----------
    source
        One of :data:`SOURCES`.
    root, manifest, classes, image_column, label_column
        The ``ingest`` params; each reader uses the ones it needs.

    Returns
    -------
    Listing
        The reader's listing.
    """
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
