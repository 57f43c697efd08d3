"""Fault injection for whole stages: SIGKILL each stage at every atomic publish point.

Every stage entry point runs in a subprocess whose renames (``os.replace`` and
the atomic folder exchange) are wrapped: at point ``k`` the process kills itself
with SIGKILL just before its k-th rename. After each kill the outputs of the
previous, complete run must be intact (the pipeline is deterministic, so they
are byte-identical to a fresh run's), and the next normal run of the stage
removes every temporary file the killed one left and publishes the same bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, encode, pattern

pytestmark = pytest.mark.slow

STAGES = ("params", "ingest", "dedup", "score", "inject", "validate", "clean", "report")

# A "zygote": imports the pipeline once (torch included, ~4 s), then forks one child per
# command read from stdin (``<stage> <k>``). The child wraps the renames, runs the stage
# and kills itself before its k-th rename (k < 0: never). The zygote answers
# ``<exit status or -signal> <renames>`` per command.
ZYGOTE = """
import importlib, os, signal, sys, tempfile
from memclean import io as mio, project
for name in STAGES:
    importlib.import_module(f"stages.{name}")

def child(name, k, report):
    calls = 0
    def hooked(real):
        def inner(*args, **kwargs):
            nonlocal calls
            if calls == k:
                os.kill(os.getpid(), signal.SIGKILL)
            calls += 1
            with open(report, "w") as fh:
                fh.write(str(calls))
            return real(*args, **kwargs)
        return inner
    os.replace = hooked(os.replace)
    mio._exchange = hooked(mio._exchange)
    project.run_stage(importlib.import_module(f"stages.{name}").main, name)

for line in sys.stdin:
    name, k = line.split()
    report = tempfile.mktemp(prefix="renames-")
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            child(name, int(k), report)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            code = 70
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    renames = open(report).read() if os.path.exists(report) else "0"
    if os.path.exists(report):
        os.remove(report)
    print(code, renames, flush=True)
""".replace("STAGES", repr(("params", "ingest", "dedup", "score", "inject", "validate", "clean", "report")))


PARAMS = {
    "ingest": {"source": "imagefolder", "root": "raw"},
    "score": {"trainer": {"epochs": 2, "batch_size": 16, "width": 4}, "scorers": {"curvature": {"every": 1}}},
    "inject": {"rate": 0.2},
    "validate": {"min_auroc": 0.0},
    "clean": {"export": "imagefolder"},
    "report": {"top_suspects": 4, "duplicate_groups": 2},
}


class Zygote:
    """Runs stages in forked children of one process that imported the pipeline once."""

    def __init__(self, work: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "MEMCLEAN_PROGRESS": "0"}
        env.pop("MEMCLEAN_PARAMS", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE],
            cwd=work,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def run(self, name: str, k: int = -1) -> tuple[int, int]:
        """Run stage ``name`` killed before rename ``k`` (never when ``k < 0``): (exit status, renames done)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{name} {k}\n")
        self.proc.stdin.flush()
        code, renames = self.proc.stdout.readline().split()
        return int(code), int(renames)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def snapshot(work: Path) -> dict[str, bytes]:
    """Every output file under data/: timings aside (wall-clock figures differ run to run), and the
    temporary files a killed writer leaves (the next run removes them; checked at the end)."""
    return {
        p.relative_to(work).as_posix(): p.read_bytes()
        for p in sorted((work / "data").rglob("*"))
        if p.is_file() and "timings" not in p.parts and not any(".memclean-" in part for part in p.parts)
    }


def test_every_stage_survives_sigkill_at_every_publish_point(tmp_path):
    work = tmp_path / "project"
    for i in range(24):
        path = work / "raw" / "abc"[i % 3] / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(pattern(16, 16, seed=i)))
    (work / "params.yaml").write_text(yaml.safe_dump(PARAMS))

    zygote = Zygote(work)
    try:
        for name in STAGES:  # a first, complete run
            assert zygote.run(name)[0] == 0, name
        complete = snapshot(work)
        renames = {}  # publish points of a rerun over existing outputs (a first run may publish differently)
        for name in STAGES:
            code, renames[name] = zygote.run(name)
            assert code == 0 and renames[name] >= 1, name
        assert snapshot(work) == complete, "a rerun with the same inputs is not byte-identical"

        for name in STAGES:
            for k in range(renames[name]):
                code, _ = zygote.run(name, k)
                assert code == -9, (name, k, code)
                # The previous run's outputs are whole: every file present, every byte the same.
                assert snapshot(work) == complete, f"stage {name} killed before rename {k} changed the outputs"
            assert zygote.run(name)[0] == 0, name
            assert snapshot(work) == complete, f"rerun of {name} is not byte-identical"
    finally:
        zygote.close()
    leftovers = [p for p in work.rglob("*") if ".memclean-" in p.name or p.name.endswith((".tmp", ".staging"))]
    assert not leftovers, leftovers
