"""Atomic writes and validated reads for every artifact memclean produces.

Each writer puts its bytes in a temporary file next to the target, fsyncs it and
renames it over the target with :func:`os.replace`, so a killed run leaves the
previous output intact and readers never see a half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from memclean.errors import MemcleanError
from memclean.schema import CONTRACT_VERSION

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(target: PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``target`` atomically.

    Parameters
    ----------
    target
        The final path. Its parent directory is created if missing.

    Yields
    ------
    pathlib.Path
        A fresh path in the same directory. Write it completely; it is fsynced
        and renamed over ``target`` when the block exits without an exception,
        and removed otherwise.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; published files get the usual mode
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def params_digest(params: Mapping[str, Any]) -> str:
    """Return a short, stable digest of a parameter mapping."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_parquet(
    frame: pd.DataFrame,
    path: PathLike,
    schema: pa.Schema,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Validate ``frame`` against ``schema`` and write it atomically.

    Parameters
    ----------
    frame
        The table. Extra columns not in ``schema`` are an error.
    path
        Target file.
    schema
        The contract; column order and types follow it.
    metadata
        JSON-serialisable values stored in the schema metadata under their key
        (``classes``, ``params_digest``...). ``memclean_version`` is added.
    """
    extra = set(frame.columns) - set(schema.names)
    if extra:
        raise ValueError(f"columns not in the schema: {sorted(extra)}")
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    meta = {b"memclean_contract": CONTRACT_VERSION.encode()}
    for key, value in (metadata or {}).items():
        meta[key.encode()] = json.dumps(value, default=str).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: PathLike, schema: pa.Schema | None = None) -> pd.DataFrame:
    """Read a memclean Parquet file, checking it against ``schema`` when given.

    Raises
    ------
    MemcleanError
        When the file is missing or lacks a column the schema requires.
    """
    path = Path(path)
    if not path.exists():
        raise MemcleanError(f"{path} does not exist: run the stage that writes it first")
    table = pq.read_table(path)
    if schema is not None:
        missing = [n for n in schema.names if n not in table.schema.names]
        if missing:
            raise MemcleanError(f"{path} lacks columns {missing}: was it written by memclean?")
        table = table.select(schema.names).cast(schema)
    return table.to_pandas()


def read_metadata(path: PathLike) -> dict[str, Any]:
    """Return the JSON metadata memclean stored in a Parquet file's schema."""
    raw = pq.read_schema(path).metadata or {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.decode()
        if name == "pandas":
            continue
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value.decode()
    return out


def write_json(obj: Any, path: PathLike) -> None:
    """Write ``obj`` as indented JSON atomically (NaN/inf are rejected)."""
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=str)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


class AtomicNpyWriter:
    """Fill a ``.npy`` file through a memory map and publish it atomically.

    Use as a context manager; the ``array`` attribute is a writable memmap of
    the requested shape. On clean exit the file is flushed, fsynced and renamed
    over the target; on error the temporary file is removed.
    """

    def __init__(self, target: PathLike, shape: tuple[int, ...], dtype: Any = np.uint8) -> None:
        self.target = Path(target)
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self._ctx = atomic_path(self.target)
        self.array: np.memmap | None = None

    def __enter__(self) -> AtomicNpyWriter:
        tmp = self._ctx.__enter__()
        self.array = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=self.shape)
        return self

    def __exit__(self, *exc: Any) -> bool | None:
        if self.array is not None:
            self.array.flush()
            del self.array
            self.array = None
        return self._ctx.__exit__(*exc)


def save_npy(array: np.ndarray, path: PathLike) -> None:
    """Save an array as ``.npy`` atomically."""
    with AtomicNpyWriter(path, array.shape, array.dtype) as w:
        assert w.array is not None
        w.array[...] = array


def load_pixels(path: PathLike) -> np.ndarray:
    """Memory-map the ``pixels.npy`` written by ingest (read-only)."""
    path = Path(path)
    if not path.exists():
        raise MemcleanError(f"{path} does not exist: run the ingest stage first")
    arr = np.load(path, mmap_mode="r")
    if arr.dtype != np.uint8 or arr.ndim != 4:
        raise MemcleanError(f"{path} is not a uint8 N×C×H×W array (got {arr.dtype} {arr.shape})")
    return arr
