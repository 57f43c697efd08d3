"""Prefect 3 flow ``clean-dataset``: run the DVC pipeline stage by stage, publish artifacts.

The flow does not declare the DAG. It reads the stage graph from DVC
(``dvc.repo.Repo(repo_dir).index.graph``) and runs each pipeline stage as one Prefect
task, ``python -m dvc repro --single-item <stage>`` in ``repo_dir``, so ``dvc.lock`` and
the DVC cache stay the record of what was made from what, and an up-to-date stage is
skipped by DVC, not by Prefect (Prefect's task cache is off).

Scheduling of stages
    Each task waits for the tasks of the stages it depends on (``wait_for``), so the
    Prefect run graph is the DVC DAG. By default (``parallel=False``) the stages run
    one at a time in topological order, because:

    * ``dvc repro`` takes the repository lock while it checks and commits a stage and
      gives up after about 3 s when another DVC process holds it ("Unable to acquire
      lock"). Run one at a time, the flow itself never contends for the lock; contention
      with another DVC process makes an I/O stage fail and retry (see below).
    * ``score`` and ``validate`` each train a CNN with every core, so on a CPU machine
      running them side by side gains nothing.

    With ``parallel=True`` independent stages (``dedup`` and ``score``) run at
    the same time and ``dvc`` is called with ``--wait-for-lock``. That is safe: DVC
    releases the repository lock while a stage's command runs and guards each stage's
    deps and outs with its own read/write locks, so the processes only queue for the
    short check and commit steps. The price is that a DVC process that hangs while
    holding the lock blocks the flow instead of failing it.

    When a stage fails, the stages downstream of it are not run (state ``NotReady``);
    independent stages still run. The flow then fails, after publishing its artifacts.

Task options
    Tag ``dvc`` on every stage; ``io`` and 2 retries (2 s apart) on the stages that read
    or write data outside the pipeline's own files, where failures can be transient
    (a lock held by another DVC process, a network filesystem); ``gpu`` and no retries on
    the training stages, whose failures are not transient and whose retries are costly.
    Stages that appear later in ``dvc.yaml`` get the ``dvc`` tag and no retries.

Artifacts (keys are lowercase-dash)
    ``clean-dataset-summary`` (Markdown: stages, counts, gate, best scorer),
    ``clean-dataset-auroc`` (table: AUROC/AP/precision@k per scorer),
    ``clean-dataset-drop-reasons`` (table: rows dropped per reason, from ``clean.json``),
    ``clean-dataset-audit-report`` (link to ``data/reports/audit.html``). Each one is
    published only when the stage that writes its input finished in this run.

Command line (from the repository root)::

    python -m flows.clean_dataset [--repo .] [--set score.trainer.epochs=5 ...] [--target validate ...] [--parallel]
    python -m flows.clean_dataset serve --cron "0 2 * * *" [--name nightly] [same options]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from memclean import project
from memclean.errors import MemcleanError
from memclean.options import load_params
from memclean.paramsfile import apply_overrides
from memclean.summary import RunSummary, read_report

FLOW_NAME = "clean-dataset"

# Execution policy per stage (not the DAG: that comes from DVC).
IO_STAGES = frozenset({"params", "ingest", "clean", "report"})
GPU_STAGES = frozenset({"score", "validate"})
IO_RETRIES = 2
IO_RETRY_DELAY_S = 2
STDERR_TAIL = 25

ARTIFACT_SUMMARY = "clean-dataset-summary"
ARTIFACT_AUROC = "clean-dataset-auroc"
ARTIFACT_DROP_REASONS = "clean-dataset-drop-reasons"
ARTIFACT_AUDIT = "clean-dataset-audit-report"


class StageFailed(RuntimeError):
    """``dvc repro`` of one stage exited non-zero; the message ends with its stderr."""


@dataclass(frozen=True)
class Stage:
    """One pipeline stage as DVC declares it."""

    name: str
    target: str  # what `dvc repro` takes: the name, or `path/dvc.yaml:name`
    upstream: tuple[str, ...]  # targets of the stages it depends on
    outs: frozenset[str] = field(default_factory=frozenset)  # outs/metrics/plots, relative to the repo


#: How a stage says that the user's input or configuration is wrong (``memclean <stage>: error: ...``).
USER_ERROR = re.compile(r"^memclean [\w-]+: error: ", re.MULTILINE)


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry a failed stage unless it failed on a (deterministic) user error."""
    error = state.result(raise_on_failure=False)
    return not (isinstance(error, StageFailed) and USER_ERROR.search(str(error)))


def stage_options(name: str, target: str | None = None) -> dict[str, Any]:
    """Prefect task options for a stage: names (the stage's DVC target), tags and retries."""
    target = target or name
    tags = ["dvc"]
    options: dict[str, Any] = {"name": target, "task_run_name": target, "retries": 0}
    if name in IO_STAGES:
        tags.append("io")
        options.update(
            retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAY_S, retry_condition_fn=retry_unless_user_error
        )
    if name in GPU_STAGES:
        tags.append("gpu")
    options["tags"] = tags
    return options


def _target(stage: Any) -> str:
    """How ``dvc repro`` names ``stage`` from the repository root (``Stage.addressing`` is relative to the cwd)."""
    from dvc.stage import PipelineStage

    if isinstance(stage, PipelineStage):
        return stage.name if stage.path_in_repo == "dvc.yaml" else f"{stage.path_in_repo}:{stage.name}"
    return stage.path_in_repo


def read_pipeline(repo_dir: str | os.PathLike[str], targets: list[str] | None = None) -> list[Stage]:
    """The pipeline stages of ``repo_dir`` in topological order, read from DVC.

    DVC's graph (``Repo.index.graph``, a networkx DiGraph) has an edge from each stage to
    every stage it depends on, so a stage's dependencies are its *successors*, and the
    run order is a topological order of the reversed graph. Ties keep the ``dvc.yaml``
    order. ``.dvc`` files from ``dvc add`` (data sources, nothing to run) are left out.
    With ``targets``, only those stages and everything upstream of them are returned.
    """
    import networkx as nx
    from dvc.repo import Repo

    repo = Repo(os.fspath(repo_dir))
    try:
        graph = repo.index.graph
        root = Path(repo.root_dir)
        position = {stage: i for i, stage in enumerate(repo.index.stages)}
        runnable = [s for s in graph.nodes if not s.is_data_source]
        target_of = {s: _target(s) for s in runnable}
        by_target = {target_of[s]: s for s in runnable}
        by_name = collections.defaultdict(list)
        for s in runnable:
            by_name[s.name].append(s)
        if targets:
            wanted = set()
            for t in targets:
                found = [by_target[t]] if t in by_target else by_name.get(t, [])
                if len(found) != 1:
                    known = ", ".join(sorted(by_target))
                    why = "is ambiguous" if found else "is not a stage"
                    raise MemcleanError(f"target {t!r} {why} in {root / 'dvc.yaml'} (stages: {known})")
                wanted.add(found[0])
                wanted.update(nx.descendants(graph, found[0]))  # descendants = what it depends on
            runnable = [s for s in runnable if s in wanted]
        sub = graph.subgraph(runnable).reverse(copy=True)
        order = nx.lexicographical_topological_sort(sub, key=lambda s: position.get(s, len(position)))
        stages = []
        for s in order:
            outs = frozenset(Path(os.path.relpath(o.fs_path, root)).as_posix() for o in s.outs)
            upstream = tuple(target_of[d] for d in graph.successors(s) if d in sub)
            stages.append(Stage(name=s.name, target=target_of[s], upstream=upstream, outs=outs))
        return stages
    finally:
        repo.close()


def stage_env(repo: Path) -> dict[str, str]:
    """Environment for ``dvc repro``: this interpreter first on PATH, the repo's code first on PYTHONPATH.

    The stage commands are ``python -m stages.<name>``; DVC hashes ``repo/src/memclean``
    as their dependencies, so they must import that code, not another checkout's.
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(repo), str(repo / "src"), env.get("PYTHONPATH", "")] if p)
    env.setdefault("MEMCLEAN_PROGRESS", "0")
    return env


@task(name="dvc-stage", cache_policy=NO_CACHE, tags=["dvc"])
def run_stage(repo_dir: str, target: str, wait_for_lock: bool = False) -> dict[str, Any]:
    """Run ``python -m dvc repro --single-item <target>`` in ``repo_dir``.

    Output is forwarded to the task's log line by line. Raises :class:`StageFailed`
    with the last lines of stderr when ``dvc`` exits non-zero.
    """
    logger = get_run_logger()
    repo = Path(repo_dir)
    cmd = [sys.executable, "-m", "dvc"]
    if wait_for_lock:
        cmd.append("--wait-for-lock")
    cmd += ["repro", "--single-item", target]
    logger.info("$ python %s  (in %s)", " ".join(cmd[1:]), repo)
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=repo,
        env=stage_env(repo),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
    stdout_lines: list[str] = []

    def pump_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            stderr_tail.append(line.rstrip())
            logger.info("%s", line.rstrip())

    reader = threading.Thread(target=pump_stderr, daemon=True)
    reader.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        stdout_lines.append(line.rstrip())
        logger.info("%s", line.rstrip())
    code = proc.wait()
    reader.join()
    seconds = round(time.monotonic() - start, 2)
    if code != 0:
        tail = "\n".join(stderr_tail) or "\n".join(stdout_lines[-STDERR_TAIL:])
        raise StageFailed(f"dvc repro --single-item {target} exited with {code} after {seconds} s:\n{tail}")
    name = target.rpartition(":")[2]
    ran = any(f"Running stage '{name}'" in line or f"Running stage '{target}'" in line for line in stdout_lines)
    return {"stage": target, "status": "ran" if ran else "up to date", "seconds": seconds}


@flow(name=FLOW_NAME, task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)  # type: ignore[arg-type]
def clean_dataset(
    repo_dir: str = ".",
    overrides: list[str] | None = None,
    targets: list[str] | None = None,
    parallel: bool = False,
) -> dict[str, dict[str, Any]]:
    """Run the memclean DVC pipeline in ``repo_dir`` and publish a summary.

    Args:
        repo_dir: the repository (holding ``dvc.yaml`` and ``params.yaml``).
        overrides: ``section.key=value`` items written into ``params.yaml`` first, so
            DVC sees them as param changes and records them in ``dvc.lock``.
        targets: stages to bring up to date, with everything upstream of them
            (default: the whole pipeline).
        parallel: run independent stages at the same time (see the module docstring).

    Returns:
        ``{stage: {"status": "ran" | "up to date" | "failed" | "not run", "seconds": ...}}``
    """
    logger = get_run_logger()
    repo = Path(repo_dir).resolve()
    load_params(repo / "params.yaml")  # a bad params file fails the flow before any stage runs
    if overrides:
        apply_overrides(repo / "params.yaml", overrides)
        logger.info("params.yaml overrides: %s", ", ".join(overrides))
    stages = read_pipeline(repo, targets)
    logger.info("DVC pipeline: %s", " -> ".join(s.target for s in stages))

    futures: dict[str, PrefectFuture] = {}
    for stage in stages:
        futures[stage.target] = run_stage.with_options(**stage_options(stage.name, stage.target)).submit(  # type: ignore[call-overload]
            str(repo),
            stage.target,
            wait_for_lock=parallel,
            wait_for=[futures[u] for u in stage.upstream],
        )
        if not parallel:
            futures[stage.target].wait()

    results: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for stage in stages:
        future = futures[stage.target]
        future.wait()
        state = future.state
        if state.is_completed():
            results[stage.target] = future.result()
        elif state.is_failed() or state.is_crashed():
            error = future.result(raise_on_failure=False)
            results[stage.target] = {"stage": stage.target, "status": "failed", "error": str(error)}
            failures.append(f"{stage.target}: {error}")
        else:  # NotReady: an upstream stage failed
            results[stage.target] = {"stage": stage.target, "status": "not run", "state": state.name}

    publish_artifacts(repo, stages, results, overrides or [])
    if failures:
        raise StageFailed(f"{len(failures)} stage(s) failed:\n" + "\n".join(failures))
    return results


# --------------------------------------------------------------------------- artifacts


def publish_artifacts(
    repo: Path, stages: list[Stage], results: dict[str, dict[str, Any]], overrides: list[str]
) -> list[str]:
    """Create the flow's artifacts from the reports of the stages that finished; return their keys."""
    ok_stages = [s for s in stages if results.get(s.target, {}).get("status") in ("ran", "up to date")]
    fresh = set().union(*(s.outs for s in ok_stages)) if ok_stages else set()

    def report(rel: Path) -> dict[str, Any] | None:
        return read_report(repo / rel) if rel.as_posix() in fresh else None

    summary = RunSummary.from_reports(
        report(project.INGEST_METRICS),
        report(project.DEDUP_METRICS),
        report(project.VALIDATION),
        report(project.CLEAN_METRICS),
    )
    keys: list[str] = []

    md = [f"# memclean pipeline: `{repo}`", ""]
    if overrides:
        md += ["Params overrides: " + ", ".join(f"`{o}`" for o in overrides), ""]
    md += ["| stage | status | seconds |", "|---|---|---|"]
    for s in stages:
        seconds = results[s.target].get("seconds")
        md.append(f"| {s.target} | {results[s.target]['status']} | {'' if seconds is None else f'{seconds:.1f}'} |")
    md += ["", "## Summary", "", summary.markdown()]
    audit = repo / project.AUDIT_HTML
    if project.AUDIT_HTML.as_posix() in fresh and audit.is_file():
        md += [f"Audit report: [{audit}]({audit.as_uri()})", ""]
    create_markdown_artifact("\n".join(md), key=ARTIFACT_SUMMARY, description="memclean pipeline run summary")
    keys.append(ARTIFACT_SUMMARY)

    if summary.validation and summary.validation.scorers:
        rows = summary.validation.table().astype(object).where(lambda t: t.notna(), None).to_dict("records")
        create_table_artifact(rows, key=ARTIFACT_AUROC, description="Detection of injected mislabels per scorer")
        keys.append(ARTIFACT_AUROC)

    if summary.clean and summary.clean.by_reason:
        rows = summary.clean.reason_table().to_dict("records")
        create_table_artifact(rows, key=ARTIFACT_DROP_REASONS, description="Samples dropped, by reason")
        keys.append(ARTIFACT_DROP_REASONS)

    if project.AUDIT_HTML.as_posix() in fresh and audit.is_file():
        create_link_artifact(
            audit.as_uri(),
            link_text="memclean audit report",
            key=ARTIFACT_AUDIT,
            description="Self-contained HTML audit report",
        )
        keys.append(ARTIFACT_AUDIT)
    return keys


# --------------------------------------------------------------------------- command line


def _parser(serve: bool) -> argparse.ArgumentParser:
    prog = "python -m flows.clean_dataset" + (" serve" if serve else "")
    desc = "Serve the flow on a cron schedule (needs a Prefect server)." if serve else "Run the pipeline once."
    p = argparse.ArgumentParser(prog=prog, description=desc)
    p.add_argument("--repo", default=".", help="repository with dvc.yaml (default: the current folder)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="params.yaml override, e.g. score.trainer.epochs=5 (repeatable)",
    )
    p.add_argument(
        "--target",
        dest="targets",
        action="append",
        default=[],
        metavar="STAGE",
        help="run only this stage and its upstream stages (repeatable)",
    )
    p.add_argument("--parallel", action="store_true", help="run independent stages at the same time")
    if serve:
        p.add_argument("--cron", required=True, help='cron schedule, e.g. "0 2 * * *"')
        p.add_argument("--name", default="nightly", help="deployment name (default: %(default)s)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    serve = bool(argv) and argv[0] == "serve"
    args = _parser(serve).parse_args(argv[1:] if serve else argv)
    parameters = {
        "repo_dir": str(Path(args.repo).resolve()),
        "overrides": args.overrides or None,
        "targets": args.targets or None,
        "parallel": args.parallel,
    }
    if serve:
        from prefect.settings import get_current_settings

        if not get_current_settings().api.url:
            print(
                "memclean flow: error: no Prefect API configured; start `prefect server start` and set "
                "PREFECT_API_URL=http://127.0.0.1:4200/api (the temporary server does not run schedules)",
                file=sys.stderr,
            )
            return 1
        clean_dataset.serve(name=args.name, cron=args.cron, parameters=parameters, tags=["memclean"], limit=1)
        return 0
    try:
        results = clean_dataset(**parameters)
    except (MemcleanError, StageFailed) as exc:
        print(f"memclean flow: error: {exc}", file=sys.stderr)
        return 1
    for name, r in results.items():
        print(f"{name:<10} {r['status']:<11} {r.get('seconds', 0):7.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
