"""The Prefect flow `clean-dataset` on digits, in temporary copies of the repository.

* end to end under `prefect_test_harness` (one temporary Prefect server for the session):
  the whole DVC DAG through Prefect tasks, DVC outputs, `dvc status`, the override in
  `dvc.lock`, task names/tags, artifacts; then a parallel rerun;
* a real retry: another process holds DVC's repository lock, the first `dvc repro` of
  `params` (the first stage) fails with DVC's lock error, Prefect retries it and the retry succeeds;
* a real `prefect server start`: `python -m flows.clean_dataset serve --cron ...` registers
  a deployment with that schedule, a run of it executes, and `prefect deploy` accepts
  prefect.yaml.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from conftest import REPO, copy_repo

pytestmark = pytest.mark.slow

if str(REPO) not in sys.path:  # `flows` and `stages` are imported from the repository root
    sys.path.insert(0, str(REPO))

PREFECT_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
}
FAST = ["score.trainer.epochs=3"]


# --------------------------------------------------------------------------- helpers


def sub_env(repo: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **PREFECT_ENV,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": f"{repo}{os.pathsep}{repo / 'src'}",
        "MEMCLEAN_PROGRESS": "0",
        **extra,
    }


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=sub_env(repo), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def runnable_stages(repo: Path) -> list[str]:
    """Stages whose inputs outside the pipeline (code, data/raw) exist: the DAG available now.

    A stage whose module has not been written yet (its `deps` name a file that no stage
    makes and that is missing) is left out, with everything downstream of it.
    """
    from dvc.repo import Repo

    from flows.clean_dataset import read_pipeline

    dvc_repo = Repo(str(repo))
    try:
        produced = {o.fs_path for s in dvc_repo.index.stages for o in s.outs}
        missing = {
            s.name
            for s in dvc_repo.index.stages
            if any(d.fs_path not in produced and not os.path.exists(d.fs_path) for d in s.deps)
        }
    finally:
        dvc_repo.close()
    keep: list[str] = []
    for stage in read_pipeline(repo):
        if stage.name not in missing and all(u in keep for u in stage.upstream):
            keep.append(stage.target)
    return keep


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def task_runs(flow_run_id, expected: int) -> dict[str, Any]:
    """Task runs of a flow run by name. Prefect 3 records them from events: wait for all of them."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    def read():
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        by_name = {r.name: r for r in runs}
        settled = [r.state and (r.state.is_final() or r.state.name == "NotReady") for r in runs]
        done = len(by_name) == expected and all(settled)
        return by_name if done else None

    return wait_until(read, 60, f"{expected} finished task runs of flow run {flow_run_id}")


def artifacts(flow_run_id) -> dict[str, Any]:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], log: Path, **kwargs: Any) -> subprocess.Popen:
    """Start a background process in its own session, its output going to ``log`` (a pipe could fill up)."""
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kwargs)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def stop(proc: subprocess.Popen) -> str:
    """Stop a process started by :func:`start` (and its children); return the end of its output."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
    return proc.log.read_text(errors="replace")[-4000:]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server (SQLite in a temp dir) for every flow test of the session."""
    for key, value in PREFECT_ENV.items():
        os.environ.setdefault(key, value)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):  # None: PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS
        yield


@pytest.fixture(scope="module")
def flow_repo(tmp_path_factory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("flowrepo"))


# --------------------------------------------------------------------------- tests


def test_stage_graph_comes_from_dvc(flow_repo):
    from flows.clean_dataset import read_pipeline, stage_options

    stages = read_pipeline(flow_repo)
    order = [s.target for s in stages]
    # Every stage of dvc.yaml, dependencies first (DVC's edges point from a stage to its deps).
    declared = list(yaml.safe_load((flow_repo / "dvc.yaml").read_text())["stages"])
    assert sorted(order) == sorted(declared) and order[0] == "params"
    for stage in stages:
        assert all(order.index(u) < order.index(stage.target) for u in stage.upstream), stage
    upstream = {s.target: set(s.upstream) for s in stages}
    assert upstream["params"] == set() and upstream["ingest"] == {"params"}
    assert upstream["dedup"] == {"params", "ingest"}
    assert upstream["inject"] == {"params", "ingest", "score"}  # inject reads the first scoring run
    assert upstream["validate"] == {"params", "ingest", "score", "inject"}  # mode heldout reads its ensemble
    assert "data/interim/samples.parquet" in next(s.outs for s in stages if s.name == "ingest")
    # targets: the stage and everything upstream of it.
    want = ["params", "ingest", "score", "inject", "validate"]
    assert [s.target for s in read_pipeline(flow_repo, ["validate"])] == want
    from memclean.errors import MemcleanError

    with pytest.raises(MemcleanError, match="'nosuch' is not a stage"):
        read_pipeline(flow_repo, ["nosuch"])
    # Execution policy.
    assert stage_options("ingest")["retries"] == 2 and set(stage_options("ingest")["tags"]) == {"dvc", "io"}
    assert stage_options("score")["retries"] == 0 and set(stage_options("score")["tags"]) == {"dvc", "gpu"}
    assert set(stage_options("dedup")["tags"]) == {"dvc"}


def test_flow_runs_the_dvc_dag_end_to_end(prefect_harness, flow_repo):
    from flows.clean_dataset import (
        ARTIFACT_AUDIT,
        ARTIFACT_AUROC,
        ARTIFACT_DROP_REASONS,
        ARTIFACT_SUMMARY,
        clean_dataset,
        read_pipeline,
    )

    available = runnable_stages(flow_repo)
    everything = [s.target for s in read_pipeline(flow_repo)]
    targets = None if available == everything else available
    state = clean_dataset(repo_dir=str(flow_repo), overrides=FAST, targets=targets, return_state=True)
    assert state.is_completed(), state
    results = state.result()
    assert list(results) == available
    assert all(r["status"] == "ran" for r in results.values()), results
    flow_run_id = state.state_details.flow_run_id

    # DVC outputs exist, nothing is out of date, and dvc.lock records the override.
    stages = {s.target: s for s in read_pipeline(flow_repo)}
    for name in available:
        for out in stages[name].outs:
            assert (flow_repo / out).exists(), out
    assert "up to date" in dvc(flow_repo, "status").stdout
    lock = yaml.safe_load((flow_repo / "dvc.lock").read_text())
    assert lock["stages"]["score"]["params"]["params.yaml"]["score"]["trainer"]["epochs"] == 3
    assert lock["stages"]["validate"]["params"]["params.yaml"]["score"]["trainer"]["epochs"] == 3
    assert "epochs: 3" in (flow_repo / "params.yaml").read_text()
    assert "# memclean parameters" in (flow_repo / "params.yaml").read_text()  # comments kept

    # One task run per stage, named after it, with the stage's tags; no retries were needed.
    runs = task_runs(flow_run_id, len(available))
    assert set(runs) == set(available)
    assert set(runs["ingest"].tags) == {"dvc", "io"} and set(runs["score"].tags) == {"dvc", "gpu"}
    assert set(runs["validate"].tags) == {"dvc", "gpu"} and set(runs["dedup"].tags) == {"dvc"}
    assert all(r.state.is_completed() and r.run_count == 1 for r in runs.values())
    # Sequential by default: each task started after the previous one ended, in DAG order.
    for before, after in itertools.pairwise(available):
        assert runs[before].end_time <= runs[after].start_time, (before, after)

    # Artifacts.
    found = wait_until(lambda: artifacts(flow_run_id), 30, "artifacts")
    validation = json.loads((flow_repo / "data/reports/validation.json").read_text())
    summary = found[ARTIFACT_SUMMARY]
    assert summary.type == "markdown"
    assert f"best scorer {validation['best']} (AUROC" in summary.data
    assert "gate: passed on" in summary.data and "ingest: 1797 rows" in summary.data
    assert "score.trainer.epochs=3" in summary.data
    table = found[ARTIFACT_AUROC]
    assert table.type == "table"
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert {r["scorer"] for r in rows} == set(validation["scorers"])
    assert rows[0]["scorer"] == validation["best"]
    assert rows[0]["auroc"] == pytest.approx(validation["scorers"][validation["best"]]["auroc"])
    if "clean" in available:
        clean = json.loads((flow_repo / "data/reports/clean.json").read_text())
        if clean.get("by_reason"):
            reasons = found[ARTIFACT_DROP_REASONS]
            rows = json.loads(reasons.data) if isinstance(reasons.data, str) else reasons.data
            assert {r["reason"]: r["count"] for r in rows} == clean["by_reason"]
    else:
        assert ARTIFACT_DROP_REASONS not in found
    if "report" in available:
        link = found[ARTIFACT_AUDIT]
        assert link.type == "markdown" or link.type == "link"
        assert (flow_repo / "data/reports/audit.html").resolve().as_uri() in link.data
    else:
        assert ARTIFACT_AUDIT not in found
    assert all(key == key.lower() and "_" not in key for key in found)


def test_parallel_rerun_runs_independent_stages_together(prefect_harness, flow_repo):
    """dedup and score both depend only on ingest: with parallel=True their `dvc repro`s overlap."""
    from flows.clean_dataset import clean_dataset

    if not (flow_repo / "dvc.lock").exists():
        pytest.skip("needs the end-to-end run first")
    state = clean_dataset(
        repo_dir=str(flow_repo),
        overrides=["dedup.max_distance=2", "score.trainer.seed=1"],
        targets=["dedup", "score"],
        parallel=True,
        return_state=True,
    )
    assert state.is_completed(), state
    results = state.result()
    assert results["ingest"]["status"] == "up to date"
    assert results["dedup"]["status"] == "ran" and results["score"]["status"] == "ran"
    runs = task_runs(state.state_details.flow_run_id, 4)
    dedup, score = runs["dedup"], runs["score"]
    assert dedup.start_time < score.end_time and score.start_time < dedup.end_time  # they overlapped
    # Both `dvc repro`s updated dvc.lock (DVC serialises that under its repository lock): nothing was lost.
    status = dvc(flow_repo, "status", "ingest", "dedup", "score").stdout
    assert "up to date" in status, status
    lock = yaml.safe_load((flow_repo / "dvc.lock").read_text())
    assert lock["stages"]["dedup"]["params"]["params.yaml"]["dedup"]["max_distance"] == 2
    assert lock["stages"]["score"]["params"]["params.yaml"]["score"]["trainer"]["seed"] == 1
    assert lock["stages"]["score"]["params"]["params.yaml"]["score"]["trainer"]["epochs"] == 3


def test_a_failing_stage_fails_the_flow_and_skips_what_depends_on_it(prefect_harness, tmp_path):
    from flows.clean_dataset import ARTIFACT_SUMMARY, StageFailed, clean_dataset

    repo = copy_repo(tmp_path / "repo")
    state = clean_dataset(
        repo_dir=str(repo),
        overrides=["ingest.source=imagefolder", f"ingest.root={tmp_path / 'nosuch'}"],
        targets=["dedup"],
        return_state=True,
    )
    assert state.is_failed(), state
    error = state.result(raise_on_failure=False)
    assert isinstance(error, StageFailed)
    # The stage's own one-line error reaches the flow's message.
    assert "ingest" in str(error) and "memclean ingest: error:" in str(error), error
    runs = task_runs(state.state_details.flow_run_id, 3)
    # A user error is deterministic: the I/O stage's retries (for transient failures) are not spent on it.
    assert runs["ingest"].state.is_failed() and runs["ingest"].run_count == 1
    assert runs["dedup"].state.name == "NotReady" and runs["dedup"].run_count == 0
    summary = wait_until(lambda: artifacts(state.state_details.flow_run_id), 30, "artifacts")[ARTIFACT_SUMMARY]
    assert "| ingest | failed |" in summary.data and "| dedup | not run |" in summary.data
    lock = yaml.safe_load((repo / "dvc.lock").read_text())  # only the params stage completed
    assert set(lock["stages"]) == {"params"}


def dvc_repro_pids(repo: Path, stage: str) -> list[int]:
    """Processes running `dvc repro --single-item <stage>` in ``repo`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"repro" in argv and b"--single-item" in argv and stage.encode() in argv and Path(cwd) == repo:
            pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_io_stage_is_retried_when_another_process_holds_the_dvc_lock(prefect_harness, tmp_path):
    """A genuine transient failure: another DVC process holds the repository lock.

    The holder keeps DVC's own lock (`Repo.lock`, `.dvc/tmp/lock`) until the flow's first
    `dvc repro --single-item params` (the first stage) has started and exited (DVC gives up
    after ~3 s with "Unable to acquire lock"), then releases it; Prefect retries `params` 2 s
    later, and `ingest` then runs as usual.
    """
    from prefect import get_client

    from flows.clean_dataset import clean_dataset

    repo = copy_repo(tmp_path / "repo")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from dvc.repo import Repo\n"
            "repo = Repo(sys.argv[1])\n"
            "with repo.lock:\n"
            "    print('locked', flush=True)\n"
            "    sys.stdin.readline()\n"
            "print('released', flush=True)\n",
            str(repo),
        ],
        cwd=repo,
        env=sub_env(repo),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        seen: dict[str, Any] = {}

        def release_after_first_attempt() -> None:
            try:
                pids = wait_until(lambda: dvc_repro_pids(repo, "params"), 120, "the first dvc repro", every=0.05)
                seen["first_attempt_pids"] = pids
                wait_until(lambda: not dvc_repro_pids(repo, "params"), 60, "the first dvc repro to exit", every=0.05)
            finally:
                holder.stdin.write("\n")
                holder.stdin.flush()

        watcher = threading.Thread(target=release_after_first_attempt, daemon=True)
        watcher.start()
        state = clean_dataset(repo_dir=str(repo), targets=["ingest"], return_state=True)
        watcher.join(timeout=30)
        assert holder.stdout.readline().strip() == "released"
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=30)

    assert seen.get("first_attempt_pids"), "the first attempt was never seen"
    assert state.is_completed(), state
    assert state.result()["ingest"]["status"] == "ran"
    assert (repo / "data/interim/samples.parquet").exists()
    run = task_runs(state.state_details.flow_run_id, 2)["params"]
    assert run.run_count == 2, run.run_count  # first attempt failed, the retry succeeded
    with get_client(sync_client=True) as client:
        history = client.read_task_run_states(run.id)
    names = [s.name for s in history]
    assert "AwaitingRetry" in names and "Retrying" in names and names[-1] == "Completed", names
    # The first attempt failed on DVC's lock (the task log holds DVC's error and the retry notice).
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId

    def logs() -> str | None:
        with get_client(sync_client=True) as client:
            found = client.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[run.id])))
        text = "\n".join(log.message for log in found)
        return text if "Retry 1/2" in text else None

    text = wait_until(logs, 30, "the task run's logs")
    assert "ERROR: Unable to acquire lock" in text and "StageFailed" in text


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> Iterator[tuple[str, dict[str, str]]]:
    """A real `prefect server start` on a free loopback port, its data in a temporary folder."""
    tmp_path = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {
        **os.environ,
        **PREFECT_ENV,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
    }
    env.pop("PREFECT_API_URL", None)
    server = start(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        tmp_path / "server.log",
        env=env,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:

        def healthy() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"prefect server exited: {stop(server)}")
            return httpx.get(f"{api}/health", timeout=2).status_code == 200

        deadline = time.monotonic() + 120
        while True:
            try:
                if healthy():
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prefect server did not become healthy in 120 s"
            time.sleep(0.5)
        yield api, {**env, "PREFECT_API_URL": api}
    finally:
        stop(server)


def test_serve_registers_a_cron_deployment_on_a_real_server(prefect_server, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api, env = prefect_server
    repo = copy_repo(tmp_path / "repo")
    serve = start(
        [
            sys.executable,
            "-m",
            "flows.clean_dataset",
            "serve",
            "--cron",
            "0 2 * * *",
            "--name",
            "test-nightly",
            "--repo",
            str(repo),
            "--set",
            "score.trainer.epochs=3",
        ],
        tmp_path / "serve.log",
        cwd=repo,
        env={**sub_env(repo), **env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
    )
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:

            def deployment():
                if serve.poll() is not None:
                    raise AssertionError(f"serve exited early:\n{stop(serve)}")
                return client.read_deployment_by_name("clean-dataset/test-nightly")

            dep = wait_until(deployment, 120, "deployment clean-dataset/test-nightly", every=1)
            assert len(dep.schedules) == 1
            schedule = dep.schedules[0]
            assert isinstance(schedule.schedule, CronSchedule) and schedule.schedule.cron == "0 2 * * *"
            assert schedule.active
            assert dep.parameters["repo_dir"] == str(repo)
            assert dep.parameters["overrides"] == ["score.trainer.epochs=3"]
            assert dep.entrypoint.endswith("flows/clean_dataset.py:clean_dataset")
            # The scheduler has queued the next nightly run.
            upcoming = wait_until(
                lambda: [r for r in client.read_flow_runs() if r.deployment_id == dep.id], 60, "a scheduled run"
            )
            tz = ZoneInfo(schedule.schedule.timezone or "UTC")
            starts = [r.expected_start_time.astimezone(tz) for r in upcoming]
            assert all((t.hour, t.minute) == (2, 0) for t in starts), starts

            # The served process runs a flow run of the deployment (here: ingest only).
            run = client.create_flow_run_from_deployment(dep.id, parameters={"targets": ["ingest"]})

            def finished():
                state = client.read_flow_run(run.id).state
                return state if state and state.is_final() else None

            final = wait_until(finished, 180, "the served flow run", every=1)
            assert final.is_completed(), (final, stop(serve))
        assert (repo / "data/interim/samples.parquet").exists()
    finally:
        stop(serve)


def test_prefect_yaml_deploys_the_flow_with_a_nightly_schedule(prefect_server, tmp_path):
    from prefect.cli.deploy._models import PrefectYamlModel

    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    model = PrefectYamlModel.model_validate(config)  # the schema `prefect deploy` reads it with
    (dep,) = model.deployments
    assert dep.entrypoint == "flows/clean_dataset.py:clean_dataset"
    assert (REPO / dep.entrypoint.split(":")[0]).is_file()
    crons = [s.cron for s in dep.schedules]
    assert crons == ["0 2 * * *"]
    assert dep.work_pool and dep.work_pool.name

    # And Prefect accepts it: `prefect deploy --all` against the real server.
    api, env = prefect_server
    repo = copy_repo(tmp_path / "repo")
    prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
    full_env = {**sub_env(repo), **env}
    pool = subprocess.run(
        [*prefect, "work-pool", "create", dep.work_pool.name, "--type", "process"],
        cwd=repo,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pool.returncode == 0, pool.stdout + pool.stderr
    deploy = subprocess.run(
        [*prefect, "deploy", "--all"], cwd=repo, env=full_env, capture_output=True, text=True, timeout=180
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr

    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        created = client.read_deployment_by_name(f"clean-dataset/{dep.name}")
    assert created.entrypoint == "flows/clean_dataset.py:clean_dataset"
    assert [s.schedule.cron for s in created.schedules] == ["0 2 * * *"]
    assert created.work_pool_name == dep.work_pool.name
    assert created.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(repo.resolve())}}
    ]
