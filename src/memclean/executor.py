"""Where independent jobs run: in this process (``local``), in worker processes on this machine
(``processes``) or on a Dask cluster (``dask``).

Ensemble members are independent of each other, and so are blocks of images to hash, so
they can run anywhere. :func:`map_jobs` runs ``fn(job, **shared)`` for every job and
returns the results **in job order**, whichever executor ran them, so the caller's output
does not depend on where or in which order the jobs finished.

``processes`` starts a pool of worker processes (``spawn``: no state is inherited, which
torch and OpenMP need) for the call, one per usable core unless told otherwise. The
``shared`` values go to each worker once, when it starts; an array memory-mapped straight
from a ``.npy`` file (what ``np.load(..., mmap_mode="r")`` returns) travels as its file
name and offset and is mapped again in the worker, so a million images are not copied.

``dask`` uses :mod:`dask.distributed` (the ``dask`` extra: ``pip install
'memclean[dask]'``): with ``address`` null a :class:`~dask.distributed.LocalCluster`
of worker processes is started for the call and closed after it; otherwise the
scheduler at ``address`` (e.g. ``tcp://scheduler:8786``) is used, whose workers
must have memclean installed. The ``shared`` arrays (the dataset) are scattered
to the workers once, not sent with every job.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import multiprocessing
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from memclean.errors import MemcleanError
from memclean.progress import Progress, no_progress

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")

Executor = Literal["local", "processes", "dask"]
EXECUTORS: tuple[str, ...] = ("local", "processes", "dask")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def map_jobs(
    fn: Callable[..., R],
    jobs: Sequence[J],
    executor: Executor = "local",
    address: str | None = None,
    shared: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    desc: str = "jobs",
    workers: int | None = None,
) -> list[R]:
    """Run ``fn(job, **shared)`` for every job; return the results in job order.

    Parameters
    ----------
    fn
        A module-level function (Dask pickles it by reference).
    jobs
        The jobs (picklable for ``dask``).
    executor
        ``local``, ``processes`` or ``dask``.
    address
        Dask scheduler address; ``None`` starts a ``LocalCluster`` for this call.
    shared
        Keyword arguments every job gets (scattered once to the workers under ``dask``).
    progress
        Optional progress wrapper over the finished jobs.
    desc
        What the progress line calls the jobs.
    workers
        Worker processes of the pool (``processes``; ``None``: one per usable core, at most one
        per job) or of the ``LocalCluster`` (``dask``; ``None``: Dask's default for this machine).

    Returns
    -------
    list
        ``fn``'s results, in the order of ``jobs``.

    Raises
    ------
    MemcleanError
        When ``dask`` is asked for but not installed, the scheduler cannot be reached, or a
        worker process died.
    """
    shared = dict(shared or {})
    wrap = progress or no_progress
    if executor == "local":
        return [fn(job, **shared) for job in wrap(jobs, desc, len(jobs))]
    if executor not in EXECUTORS:
        raise MemcleanError(f"unknown executor {executor!r}: use {', '.join(EXECUTORS)}")
    if not jobs:
        return []
    if executor == "processes":
        return _map_processes(fn, jobs, shared, wrap, desc, workers)
    distributed = _import_distributed()
    with _client(distributed, address, workers) as client:
        # Arrays (the dataset) go to every worker once; small values travel with each job.
        scattered = {
            key: client.scatter(value, broadcast=True) if isinstance(value, np.ndarray) else value
            for key, value in shared.items()
        }
        futures = [client.submit(fn, job, **scattered, pure=False) for job in jobs]
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(jobs)
        finished = distributed.as_completed(futures)
        for future in wrap(finished, desc, len(jobs)):
            results[index[future.key]] = future.result()  # re-raises a job's exception here
        return results


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise MemcleanError(
            "executor: dask needs dask.distributed: pip install 'memclean[dask]' (or use executor: local)"
        ) from None
    return distributed


@contextlib.contextmanager
def _client(distributed: Any, address: str | None, workers: int | None) -> Iterator[Any]:
    if address is None:
        log.info("starting a Dask LocalCluster (%s workers)", workers or "default")
        with (
            distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = distributed.Client(address, timeout="30s")
    except OSError as exc:
        raise MemcleanError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    try:
        log.info("running on the Dask cluster at %s (%d workers)", address, len(client.scheduler_info()["workers"]))
        yield client
    finally:
        client.close()


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class _Mapped:
    """A read-only memory map of a ``.npy`` file, sent by reference to a worker process."""

    filename: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    fortran: bool

    def open(self) -> np.ndarray:
        order: Literal["C", "F"] = "F" if self.fortran else "C"
        return np.memmap(
            self.filename, np.dtype(self.dtype), mode="r", offset=self.offset, shape=self.shape, order=order
        )


def _by_reference(value: Any) -> Any:
    """A memory map over a whole file region becomes a :class:`_Mapped`; anything else is sent as is.

    Only a map whose buffer is the ``mmap`` itself qualifies (``np.load``'s result): a view
    of one (a slice) keeps its parent's stale ``offset`` and is sent by value.
    """
    if (
        isinstance(value, np.memmap)
        and isinstance(value.base, mmap.mmap)
        and value.filename
        and (value.flags.c_contiguous or value.flags.f_contiguous)
    ):
        fortran = bool(value.flags.f_contiguous and not value.flags.c_contiguous)
        return _Mapped(str(value.filename), value.dtype.str, tuple(value.shape), int(value.offset), fortran)
    return value


_WORKER_SHARED: dict[str, Any] = {}


def _init_worker(shared: dict[str, Any]) -> None:
    """Pool initializer: keep the shared arguments (memory maps opened again) for this worker's jobs."""
    _WORKER_SHARED.clear()
    _WORKER_SHARED.update({k: v.open() if isinstance(v, _Mapped) else v for k, v in shared.items()})


def _run_in_worker(fn: Callable[..., R], job: Any) -> R:
    return fn(job, **_WORKER_SHARED)


def _map_processes(
    fn: Callable[..., R],
    jobs: Sequence[J],
    shared: Mapping[str, Any],
    wrap: Progress,
    desc: str,
    workers: int | None,
) -> list[R]:
    n_workers = max(1, min(workers or usable_cores(), len(jobs)))
    log.info("running %d %s in %d worker process(es)", len(jobs), desc, n_workers)
    packed = {k: _by_reference(v) for k, v in shared.items()}
    results: list[Any] = [None] * len(jobs)
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(n_workers, mp_context=context, initializer=_init_worker, initargs=(packed,))
    try:
        futures = {pool.submit(_run_in_worker, fn, job): i for i, job in enumerate(jobs)}
        for future in wrap(as_completed(futures), desc, len(jobs)):
            results[futures[future]] = future.result()  # re-raises a job's exception here
    except BrokenProcessPool as exc:
        raise MemcleanError(
            f"a worker process died while running {desc} ({exc}): out of memory? retry with fewer workers "
            "or the local executor"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results
