"""Where independent jobs run: in this process (``local``) or on a Dask cluster (``dask``).

Ensemble members are independent of each other, so they can train anywhere.
:func:`map_jobs` runs ``fn(job, **shared)`` for every job and returns the
results **in job order**, whichever executor ran them, so the caller's output
does not depend on where or in which order the jobs finished.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar

import numpy as np

from memclean.errors import MemcleanError
from memclean.progress import Progress, no_progress

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")

Executor = Literal["local", "dask"]


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
        ``local`` or ``dask``.
    address
        Dask scheduler address; ``None`` starts a ``LocalCluster`` for this call.
    shared
        Keyword arguments every job gets (scattered once to the workers under ``dask``).
    progress
        Optional progress wrapper over the finished jobs.
    desc
        What the progress line calls the jobs.
    workers
        Worker processes of the ``LocalCluster`` (``None``: Dask's default for this machine).

    Returns
    -------
    list
        ``fn``'s results, in the order of ``jobs``.

    Raises
    ------
    MemcleanError
        When ``dask`` is asked for but not installed, or the scheduler cannot be reached.
    """
    shared = dict(shared or {})
    wrap = progress or no_progress
    if executor == "local":
        return [fn(job, **shared) for job in wrap(jobs, desc, len(jobs))]
    if executor != "dask":
        raise MemcleanError(f"unknown executor {executor!r}: use local or dask")
    if not jobs:
        return []
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
