"""Fault injection: SIGKILL a writer at each publish point; the outputs survive and a rerun recovers.

Each writer runs in a subprocess whose renames (``os.replace`` and the atomic
folder exchange) are wrapped: at point ``("before", i)`` the process kills
itself with SIGKILL just before its i-th rename, at ``("after", i)`` just after
it. The parent then checks what a reader sees, runs :func:`clean_stale_temps`
as a stage would at start, reruns the writer, and checks no temporary is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from conftest import encode, pattern
from memclean.errors import MemcleanError
from memclean.ingest import check_quarantine, ingest
from memclean.io import (
    atomic_dir,
    clean_stale_temps,
    load_pair,
    read_parquet,
    write_json,
    write_parquet,
)
from memclean.sources import list_imagefolder

pytestmark = pytest.mark.slow

CHILD = """
import os, signal, sys
from pathlib import Path
import test_atomic_faults as t
from memclean import io as mio

writer, work, version, mode, k, exchange = sys.argv[1:]
k = int(k)
calls = 0

def hooked(real):
    def inner(*args, **kwargs):
        global calls
        if mode == "before" and calls == k:
            os.kill(os.getpid(), signal.SIGKILL)
        out = real(*args, **kwargs)
        calls += 1
        if mode == "after" and calls == k + 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    return inner

os.replace = hooked(os.replace)
mio._exchange = hooked(mio._exchange) if exchange == "1" else (lambda a, b: False)
t.WRITERS[writer](Path(work), version)
print(calls)
"""


def write_json_version(work: Path, version: str) -> None:
    write_json({"v": version}, work / "m.json")


def write_parquet_version(work: Path, version: str) -> None:
    write_parquet(pd.DataFrame({"v": [version]}), work / "t.parquet", pa.schema([("v", pa.string())]))


def write_dir_version(work: Path, version: str) -> None:
    with atomic_dir(work / "roc") as tmp:
        for name in ("a", "b"):
            (tmp / f"{version}_{name}.csv").write_text(version)


def ingest_version(work: Path, version: str) -> None:
    with ingest(list_imagefolder(work.parent / f"src_{version}"), work / "pixels.npy") as result:
        check_quarantine(result, 0.0)
        result.publish(work / "samples.parquet")


WRITERS: dict[str, Callable[[Path, str], None]] = {
    "json": write_json_version,
    "parquet": write_parquet_version,
    "dir": write_dir_version,
    "ingest": ingest_version,
}
OUTPUTS = {"json": ["m.json"], "parquet": ["t.parquet"], "dir": ["roc"], "ingest": ["pixels.npy", "samples.parquet"]}


def state(writer: str, work: Path) -> object:
    """What a reader sees: the version written, ``None`` when missing, ``"mismatch"`` for a torn pair."""
    if not all((work / name).exists() for name in OUTPUTS[writer]):
        return None
    if writer == "json":
        return json.loads((work / "m.json").read_text())["v"]
    if writer == "parquet":
        return read_parquet(work / "t.parquet")["v"].item()
    if writer == "dir":
        return sorted(f"{p.name}={p.read_text()}" for p in (work / "roc").iterdir())
    try:
        samples, _, meta = load_pair(work / "samples.parquet", work / "pixels.npy")
    except MemcleanError as exc:
        assert "different ingest runs" in str(exc)
        return "mismatch"
    return (tuple(samples["sample_id"]), meta["pixels_digest"])


def run_child(writer: str, work: Path, version: str, mode: str, k: int, exchange: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-c", CHILD, writer, str(work), version, mode, str(k), "1" if exchange else "0"]
    return subprocess.run(args, check=False, env=env, capture_output=True, text=True, timeout=120)


# (writer, exchange, renames, {middle point: (state before cleaning, state after cleaning)})
CASES = [
    ("json", True, 1, {}),
    ("parquet", True, 1, {}),
    ("dir", True, 1, {}),  # one renameat2 exchange: never a moment without the folder
    ("dir", False, 2, {("before", 1): (None, "old")}),  # between the two renames; cleaning restores the old folder
    ("ingest", True, 2, {("before", 1): ("mismatch", "mismatch")}),  # pixels renamed, samples not: refused
]


@pytest.mark.parametrize(
    ("writer", "exchange", "renames", "middle"), CASES, ids=lambda v: str(v) if isinstance(v, str | bool) else None
)
def test_sigkill_at_each_publish_point(tmp_path, writer, exchange, renames, middle):
    for version, seed in (("old", 0), ("new", 100)):
        for i in range(3 + (version == "new")):
            path = tmp_path / f"src_{version}" / "ab"[i % 2] / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode(pattern(8, 8, seed=seed + i)))
    write = WRITERS[writer]

    reference = tmp_path / "reference"
    write(reference, "old")
    states = {"old": state(writer, reference)}
    proc = run_child(writer, reference, "new", "none", -1, exchange)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == renames  # the points below are every publish point there is
    states["new"] = state(writer, reference)
    assert states["old"] not in (None, states["new"])

    points = [("before", i) for i in range(renames)] + [("after", renames - 1)]
    for n, point in enumerate(points):
        work = tmp_path / f"w{n}"
        write(work, "old")
        proc = run_child(writer, work, "new", *point, exchange)
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        first, last = point == ("before", 0), point == points[-1]
        seen, cleaned = ("old", "old") if first else ("new", "new") if last else middle[point]
        assert state(writer, work) == states.get(seen, seen), point
        clean_stale_temps(*(work / name for name in OUTPUTS[writer]))
        assert state(writer, work) == states.get(cleaned, cleaned), point
        assert sorted(os.listdir(work)) == OUTPUTS[writer], point  # no temporary left
        write(work, "new")
        assert state(writer, work) == states["new"], point
        assert sorted(os.listdir(work)) == OUTPUTS[writer], point
