"""Atomic writes and validated reads for every artifact memclean produces.

Every writer fills a *staged* temporary file or folder beside its target and
publishes it with one rename, so a killed run leaves the previous output intact
and readers never see a half-written one:

- :func:`atomic_path` / :func:`write_parquet` / :func:`write_json` / :func:`save_npy`
  publish one file (fsync, :func:`os.replace`).
- :func:`atomic_dir` publishes a folder as a whole (see its docstring for what a
  kill at each point leaves).
- :class:`StagedArray` fills a large ``.npy`` through a memory map, preallocated
  so a full disk fails up front instead of killing the process with SIGBUS.
- :func:`publish_pair` / :func:`load_pair` give ``samples.parquet`` and
  ``pixels.npy`` a shared identity (``pixels_digest``), so a reader never pairs
  rows with the images of another ingest run.

Every temporary name has one pattern, ``.<target>.memclean-<new|old>-<pid>-<token>.tmp``,
so :func:`clean_stale_temps` recognises ours (and never a user's file) and removes
those whose writing process is gone. Each writer cleans its own target's stale
temporaries when it starts, so a rerun after a kill recovers by itself.
A disk that fills during any of these writes is reported as a one-line
:class:`~memclean.errors.MemcleanError`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import json
import logging
import math
import mmap
import os
import re
import shutil
import struct
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from memclean.errors import MemcleanError
from memclean.schema import CONTRACT_VERSION, SAMPLES_SCHEMA

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: Schema-metadata key of samples.parquet naming the pixel array it belongs to.
PIXELS_DIGEST_KEY = "pixels_digest"

_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.memclean-(?P<kind>new|old)-(?P<pid>\d+)-(?P<token>[a-z0-9_]+)\.tmp$")
_DISK_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EIO: "I/O error (is the disk full or failing?)",
}
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mb(nbytes: int) -> str:
    return f"~{math.ceil(nbytes / 1e6):,} MB"


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


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _remove(path: Path) -> None:
    """Delete a file or a folder tree; a missing path is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _size_on_disk(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _owner_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


@functools.cache
def _renameat2() -> Any | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):  # not glibc/Linux
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swap the paths ``a`` and ``b`` in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns ``False``, changing nothing, where ``b`` does not exist or the
    platform or filesystem cannot exchange.
    """
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ENOENT or err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(b))


# --------------------------------------------------------------------------- temporaries


def _legacy_temp(entry: Path, target: str) -> str | None:
    """The kind (``new``/``old``) of a temporary that memclean 0.1 left for ``target``, else None.

    Those names carry no process id: files ``<target>.staging`` and
    ``.<target>[.staging].<8 random chars>.tmp``; folders ``.<target>.<8 random chars>``
    and ``.<target>.old``.
    """
    t = re.escape(target)
    if entry.is_dir() and not entry.is_symlink():
        if re.fullmatch(rf"\.{t}\.old", entry.name):
            return "old"
        return "new" if re.fullmatch(rf"\.{t}\.[a-z0-9_]{{8}}", entry.name) else None
    return "new" if re.fullmatch(rf"{t}\.staging|\.{t}(\.staging)?\.[a-z0-9_]{{8}}\.tmp", entry.name) else None


def _stale_beside(target: Path) -> list[tuple[Path, str]]:
    """Temporaries beside ``target`` for ``target`` whose writer is gone, with their kind."""
    if not target.parent.is_dir():
        return []
    out = []
    for entry in target.parent.iterdir():
        m = _TEMP_NAME.match(entry.name)
        if m and m["target"] == target.name:
            if not _owner_alive(int(m["pid"])):
                out.append((entry, m["kind"]))
        elif (kind := _legacy_temp(entry, target.name)) is not None:
            out.append((entry, kind))
    return out


def _clean_target(target: Path) -> list[Path]:
    """Remove ``target``'s stale temporaries; restore an interrupted swap's previous folder first."""
    stale = _stale_beside(target)
    removed = []
    olds = sorted((p for p, kind in stale if kind == "old"), key=lambda p: p.lstat().st_mtime_ns, reverse=True)
    if olds and not os.path.lexists(target):
        os.replace(olds[0], target)
        log.warning("restored %s from %s, left by an interrupted publish", target, olds[0].name)
        stale = [(p, k) for p, k in stale if p != olds[0]]
    for path, _ in stale:
        _remove(path)
        removed.append(path)
        log.info("removed stale temporary %s", path)
    return removed


def clean_stale_temps(*paths: PathLike) -> list[Path]:
    """Remove the temporaries memclean's atomic writers left behind when killed.

    Call it when a stage starts, with the stage's outputs (or their folders).
    Only names this module generates are touched (and the few that memclean
    0.1 left, which carry no process id), and only those whose writing process
    no longer runs on this machine: a concurrent writer's temporaries are kept.
    When a kill interrupted :func:`atomic_dir` between its two renames, the
    previous folder is renamed back to its target. Every writer also does this
    for its own target before it starts.

    Parameters
    ----------
    *paths
        Targets (files or folders): their temporaries beside them are cleaned.
        A path that is a folder also has the temporaries *inside* it cleaned,
        for whatever targets they belong to.

    Returns
    -------
    list of pathlib.Path
        What was removed.
    """
    removed: list[Path] = []
    for path in map(Path, paths):
        removed += _clean_target(path)
        if path.is_dir() and not path.is_symlink():
            targets = {m["target"] for e in path.iterdir() if (m := _TEMP_NAME.match(e.name))}
            for name in sorted(targets):
                removed += _clean_target(path / name)
    return removed


class _Staged:
    """A fresh temporary file or folder beside ``target`` that :meth:`commit` publishes.

    Creating it cleans ``target``'s stale temporaries and, given ``size``, checks
    the disk has that much free. Until committed, it is removed by
    :meth:`discard`, garbage collection or interpreter exit.
    """

    def __init__(self, target: PathLike, *, directory: bool = False, size: int | None = None, what: str = "") -> None:
        self.target = Path(target)
        self.size = size
        parent = self.target.parent
        parent.mkdir(parents=True, exist_ok=True)
        _clean_target(self.target)
        if size is not None:
            free = shutil.disk_usage(parent).free
            if size > free:
                detail = f" ({what})" if what else ""
                raise MemcleanError(
                    f"writing {self.target} needs {_mb(size)}{detail} but only {_mb(free)} are free on "
                    f"{parent}: free space or make it smaller"
                )
        prefix = f".{self.target.name}.memclean-new-{os.getpid()}-"
        if directory:
            name = tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent)
            os.chmod(name, 0o777 & ~_umask())  # mkdtemp makes 0700; outputs get the usual mode
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=parent)
            os.close(fd)
            os.chmod(name, 0o666 & ~_umask())  # mkstemp makes 0600
        self.path = Path(name)
        self._token = self.path.name[len(prefix) : -len(".tmp")]
        self._remover = weakref.finalize(self, _remove, self.path)

    @contextlib.contextmanager
    def disk_errors(self) -> Iterator[None]:
        """Turn a full or failing disk (ENOSPC, EDQUOT, EIO) into a one-line MemcleanError."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in _DISK_ERRORS:
                raise
            size = self.size if self.size is not None else _size_on_disk(self.path)
            raise MemcleanError(
                f"{_DISK_ERRORS[exc.errno]} while writing {self.target} (needs {_mb(size)}): free space and rerun"
            ) from exc

    def commit(self) -> None:
        """Make the staged file or folder durable and rename it to the target."""
        with self.disk_errors():
            if self.path.is_dir():
                os.sync()  # one call instead of an fsync per file of the tree
                self._swap_in()
            else:
                _fsync_file(self.path)
                os.replace(self.path, self.target)
                _fsync_dir(self.target.parent)
        self._remover.detach()

    def _swap_in(self) -> None:
        """Replace the target folder by the staged one.

        Where the filesystem can exchange two paths atomically (Linux), there is
        no moment without a target: a kill leaves either the old folder (and the
        staged one) or the new folder (and the old one under the temporary name).
        Elsewhere it takes two renames; a kill between them leaves no target but
        ``.<target>.memclean-old-…``, which :func:`clean_stale_temps` (run by the
        next writer) renames back.
        """
        parent = self.target.parent
        if _exchange(self.path, self.target):
            _fsync_dir(parent)
            _remove(self.path)  # the previous folder, now under the temporary name
            return
        if not os.path.lexists(self.target):
            os.replace(self.path, self.target)
            _fsync_dir(parent)
            return
        old = parent / f".{self.target.name}.memclean-old-{os.getpid()}-{self._token}.tmp"
        os.replace(self.target, old)
        os.replace(self.path, self.target)
        _fsync_dir(parent)
        _remove(old)

    def discard(self) -> None:
        """Remove the staged file or folder unless it was committed."""
        self._remover()


def _publish(staged: _Staged) -> Iterator[Path]:
    """Yield the staging path; commit it when the block succeeds; never leave it behind."""
    try:
        with staged.disk_errors():
            yield staged.path
        staged.commit()
    finally:
        staged.discard()


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

    Raises
    ------
    MemcleanError
        When the disk fills.
    """
    yield from _publish(_Staged(target))


@contextlib.contextmanager
def atomic_dir(target: PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it replaces the folder ``target`` as a whole.

    The folder is a sibling of ``target`` (same filesystem), created with the
    usual mode (``0777`` less the umask). On failure it is removed and
    ``target`` is untouched.

    What a kill leaves, at each point:

    - while the block runs: the previous ``target`` and a stale
      ``.<target>.memclean-new-<pid>-….tmp`` folder;
    - on Linux, the swap is one ``renameat2(RENAME_EXCHANGE)``: before it, as
      above; after it, the new ``target`` and the previous contents under the
      temporary name;
    - elsewhere, the swap is two renames: between them there is no ``target``
      but ``.<target>.memclean-old-….tmp`` holds the previous one; after them,
      the new ``target`` and that old folder.

    The next :func:`atomic_dir` on the same target (or :func:`clean_stale_temps`)
    renames an orphaned previous folder back to ``target`` when ``target`` is
    missing and deletes the rest, so a rerun recovers.

    Parameters
    ----------
    target
        The folder to publish. Its parent is created if missing.

    Yields
    ------
    pathlib.Path
        The empty staging folder to fill.

    Raises
    ------
    MemcleanError
        When the disk fills while the folder is written or published.
    """
    yield from _publish(_Staged(target, directory=True))


# --------------------------------------------------------------------------- arrays


def _shrink_npy(path: Path, rows: int) -> None:
    """Rewrite a ``.npy`` header in place to its first ``rows`` rows and cut the file there."""
    with open(path, "r+b") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran, "shape": (rows, *shape[1:])}
        body = repr(header).encode("latin1")
        magic = np.lib.format.magic(*version)
        length = "<H" if version == (1, 0) else "<I"
        space = offset - len(magic) - struct.calcsize(length)  # keep the data where it is
        fh.seek(0)
        fh.write(magic + struct.pack(length, space) + body + b" " * (space - len(body) - 1) + b"\n")
        fh.truncate(offset + rows * math.prod(shape[1:]) * dtype.itemsize)


def _preallocate(path: Path) -> None:
    """Reserve the blocks of a (sparse) file so a full disk fails now, not as SIGBUS later."""
    if not hasattr(os, "posix_fallocate"):  # pragma: no cover - macOS: the free-space check must do
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
        log.debug("cannot preallocate %s: %s", path, exc)
    finally:
        os.close(fd)


def array_digest(array: np.ndarray) -> str:
    """A short content digest of an array (at least 1-d): dtype, shape and bytes (BLAKE2b, 128 bits)."""
    h = hashlib.blake2b(f"{array.dtype.str}{array.shape}".encode(), digest_size=16)
    rows = np.ascontiguousarray(array).reshape(array.shape[0], math.prod(array.shape[1:]))
    step = max(1, (64 << 20) // max(1, rows.shape[1] * array.dtype.itemsize))
    for start in range(0, len(rows), step):
        h.update(rows[start : start + step].data)
    return h.hexdigest()


class StagedArray:
    """A ``.npy`` array filled through a memory map beside ``target``, published by :meth:`commit`.

    The staging file is checked against the free disk space and preallocated,
    so a full disk fails when it is created (a one-line
    :class:`~memclean.errors.MemcleanError`) instead of killing the process with
    SIGBUS while pages are written. Use it as a context manager: leaving the
    block removes the staging file unless :meth:`commit` ran.

    Parameters
    ----------
    target
        The final ``.npy`` path.
    shape, dtype
        Of the array.

    Attributes
    ----------
    array : numpy.memmap
        The writable array. It stays valid after :meth:`commit` (same file).
    """

    def __init__(self, target: PathLike, shape: tuple[int, ...], dtype: Any = np.uint8) -> None:
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        what = f"a {'×'.join(map(str, shape))} {dtype} array"
        self._staged = _Staged(target, size=nbytes, what=what)
        try:
            with self._staged.disk_errors():
                self.array: np.memmap = np.lib.format.open_memmap(
                    self._staged.path, mode="w+", dtype=dtype, shape=shape
                )
                _preallocate(self._staged.path)
        except BaseException:
            self._staged.discard()
            raise

    @property
    def target(self) -> Path:
        return self._staged.target

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def truncate(self, rows: int) -> None:
        """Keep only the first ``rows`` rows (in place: no copy, no extra disk)."""
        self.array.flush()
        del self.array  # no mapping may outlive the cut
        with self._staged.disk_errors():
            _shrink_npy(self._staged.path, rows)
            self.array = np.load(self._staged.path, mmap_mode="r+")

    def digest(self) -> str:
        """Flush the array and return its :func:`array_digest`."""
        self.array.flush()
        return array_digest(self.array)

    def commit(self) -> None:
        """Flush, fsync and rename the array over its target."""
        with self._staged.disk_errors():
            self.array.flush()
        self._staged.commit()

    def discard(self) -> None:
        """Remove the staging file unless it was committed."""
        self._staged.discard()


def save_npy(array: np.ndarray, path: PathLike) -> None:
    """Save an array as ``.npy`` atomically."""
    with StagedArray(path, array.shape, array.dtype) as staged:
        staged.array[...] = array
        staged.commit()


def load_pixels(path: PathLike) -> np.ndarray:
    """Memory-map the ``pixels.npy`` written by ingest (read-only)."""
    path = Path(path)
    if not path.exists():
        raise MemcleanError(f"{path} does not exist: run the ingest stage first")
    arr = np.load(path, mmap_mode="r")
    if arr.dtype != np.uint8 or arr.ndim != 4:
        raise MemcleanError(f"{path} is not a uint8 N×C×H×W array (got {arr.dtype} {arr.shape})")
    return arr


def release_pages(arr: np.ndarray) -> None:
    """Drop the pages of a memory-mapped array from this process's resident set.

    Reading a memory map leaves every page read resident (and counted in RSS) until the
    kernel needs the memory. A pass over a million images' ``pixels.npy`` would hold the whole
    file; calling this after each block keeps the resident set to what is being worked on.
    The pages stay in the page cache (reading them again is a minor fault) and a read-only
    mapping loses nothing. A no-op for arrays that are not memory maps.
    """
    mm = getattr(arr, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    with contextlib.suppress(OSError, ValueError):
        mm.madvise(mmap.MADV_DONTNEED)


# --------------------------------------------------------------------------- tables and JSON


def params_digest(params: Mapping[str, Any]) -> str:
    """Return a short, stable digest of a parameter mapping."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _table(frame: pd.DataFrame, schema: pa.Schema, metadata: Mapping[str, Any] | None) -> pa.Table:
    extra = set(frame.columns) - set(schema.names)
    if extra:
        raise ValueError(f"columns not in the schema: {sorted(extra)}")
    # Integer columns are stored as pandas' nullable integers, so pandas reads them back as
    # integers (Int64...) even when some rows are null, never as float64.
    ints = {f.name: f"Int{f.type.bit_width}" for f in schema if pa.types.is_integer(f.type) and f.name in frame}
    frame = frame.astype({name: dtype for name, dtype in ints.items() if str(frame[name].dtype) != dtype})
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    meta = {b"memclean_contract": CONTRACT_VERSION.encode()}
    for key, value in (metadata or {}).items():
        meta[key.encode()] = json.dumps(value, default=str).encode()
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})


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
        (``classes``, ``params_digest``...). ``memclean_contract`` is added.
    """
    table = _table(frame, schema, metadata)
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


# --------------------------------------------------------------------------- the samples + pixels pair


def publish_pair(
    samples: pd.DataFrame,
    samples_path: PathLike,
    pixels: StagedArray,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """Publish ingest's samples table and staged pixel array together.

    ``samples.parquet`` records the pixel array's digest (schema metadata
    ``pixels_digest``), which :func:`load_pair` checks. Both files are written
    completely before either is renamed; the pixels are renamed first and the
    samples table, which names them, last. A kill between the two renames
    leaves a pair that :func:`load_pair` refuses.

    Parameters
    ----------
    samples
        The samples table (:data:`~memclean.schema.SAMPLES_SCHEMA`).
    samples_path
        Where it goes.
    pixels
        The staged pixel array; it is published to its own target.
    metadata
        More schema metadata for the samples table.

    Returns
    -------
    str
        The pixel digest.
    """
    digest = pixels.digest()
    table = _table(samples, SAMPLES_SCHEMA, {**(metadata or {}), PIXELS_DIGEST_KEY: digest})
    with atomic_path(samples_path) as tmp:
        pq.write_table(table, tmp)
        pixels.commit()
    return digest


def load_pair(
    samples_path: PathLike, pixels_path: PathLike, schema: pa.Schema | None = SAMPLES_SCHEMA
) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """Read ``samples.parquet`` and memory-map ``pixels.npy``, checking they come from one ingest run.

    Parameters
    ----------
    samples_path, pixels_path
        The two files ingest published with :func:`publish_pair`. Any table
        that carries the samples table's ``pixels_digest`` in its metadata (the
        clean manifest does) pairs the same way.
    schema
        Checked as :func:`read_parquet` does; ``None`` for any table.

    Returns
    -------
    samples : pandas.DataFrame
        The table, e.g. every input row.
    pixels : numpy.ndarray
        The read-only ``N×C×H×W`` uint8 memory map.
    metadata : dict
        The table's schema metadata (``classes``, ``image_size``, ``pixels_digest``...).

    Raises
    ------
    MemcleanError
        When a file is missing or the two are not from the same ingest run.
    """
    samples = read_parquet(samples_path, schema)
    metadata = read_metadata(samples_path)
    pixels = load_pixels(pixels_path)
    expected = metadata.get(PIXELS_DIGEST_KEY)
    if expected is None:
        raise MemcleanError(f"{samples_path} has no {PIXELS_DIGEST_KEY} (an older memclean wrote it): rerun ingest")
    if array_digest(pixels) != expected:
        raise MemcleanError(
            f"{Path(samples_path).name} and {Path(pixels_path).name} are from different ingest runs: "
            "rerun ingest or `dvc checkout`"
        )
    return samples, pixels, metadata
