"""End-to-end `dvc repro` on a CIFAR-10 subset: seconds per stage and the gate's AUROC, per configuration.

For each configuration (``--configs``; see :data:`CONFIGS`) the benchmark makes a fresh git
copy of the repository (as a user's checkout: no DVC outputs, no ``dvc.lock``), writes a
``params.yaml`` that is the repository's own with the configuration's overrides and an
``hf-parquet`` source holding a fixed-seed subset of the CIFAR-10 *train* split, and runs
the real ``dvc repro`` one stage at a time (``dvc repro --single-item <stage>`` in the DAG's
order), timing each. It then reads ``validation.json``: the gate's scorer, its AUROC on the
injected noise (10 % symmetric by default) and every scorer's AUROC.

The configurations run one after the other on the same machine; ``speedup`` is the
reference's total seconds over each configuration's. Prints one JSON object on stdout and
writes it to ``--out`` (default ``bench/results/pipeline.json``).

Usage (from the repository root)::

    .venv/bin/python bench/pipeline.py [--subset 10000] [--configs defaults,previous]
        [--reference previous] [--both-modes] [--keep-workdirs] [--out FILE]

``--both-modes`` then runs ``validate`` again in the other mode on the same ``score`` outputs
(``other_mode``), so that the gate's AUROC can be compared under one protocol.

``--baseline REV`` adds one more run, ``commit:REV``: that commit of this repository as a user
would have cloned it then, with its own code and its own ``params.yaml`` (only the data
source set), so that the defaults of today and of an earlier release are timed side by side,
e.g. ``--configs defaults --baseline 0b95021 --reference commit:0b95021``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # conftest.copy_repo: a user's checkout
from noisy_gate import write_source
from scoring import emit, load_subset, missing_reason, rnd

from conftest import copy_repo

log = logging.getLogger("bench.pipeline")
REPO = Path(__file__).resolve().parents[1]
STAGES = ("params", "ingest", "dedup", "score", "inject", "validate", "clean", "report")

#: name → params overrides (deep-merged over the repository's params.yaml).
CONFIGS: dict[str, dict[str, Any]] = {
    # The current defaults, untouched.
    "defaults": {},
    # The defaults before issue 12's CPU work: float32, evaluation in batches of 1,024, curvature
    # every 4th epoch, validate trains and scores again.
    "previous": {
        "score": {
            "trainer": {"bf16": False, "channels_last": False, "eval_batch_size": 1024},
            "scorers": {"curvature": {"every": 4}},
        },
        "validate": {"mode": "retrain"},
    },
    # The current trainer defaults, validated by training again (AUROC comparable with "previous").
    "defaults_retrain": {"validate": {"mode": "retrain"}},
    # A cheaper subset ensemble: members train half the epochs, K planned from a budget of 2 runs.
    "fast_ensemble": {"score": {"ensemble": {"epochs": 10, "budget": 2}}},
    # Members at 12 of the 20 epochs. K is planned from the budget (4 full runs on a CPU), so
    # this trains 9 members instead of 5 at the same cost: fewer epochs, more members.
    "ensemble_12": {"score": {"ensemble": {"epochs": 12}}},
    # The proxy CNN at 32/64/128 channels: the CPU default before it followed the device.
    "width_32": {"score": {"trainer": {"width": 32}}},
    # The proxy CNN at half the width (16/32/64 channels, ~1/4 of the FLOPs), main run and members.
    "width_16": {"score": {"trainer": {"width": 16}}},
    # The CPU default before channels-last became the rule there: N×C×H×W tensors and model.
    "contiguous": {"score": {"trainer": {"channels_last": False}}},
    # Half the width, trained 30 epochs instead of 20 (main run and members) to fit closer.
    "width_16_e30": {"score": {"trainer": {"width": 16, "epochs": 30}}},
}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def gate_figures(work: Path) -> dict[str, Any]:
    """The gate and every scorer's AUROC from a workdir's ``validation.json``."""
    validation = json.loads((work / "data/reports/validation.json").read_text(encoding="utf-8"))
    gate = validation["gate"]
    scorer = gate.get("scorer")
    return {
        "validate_mode": (validation.get("run") or {}).get("mode"),
        "gate": {"passed": gate.get("passed"), "scorer": scorer},
        "gate_auroc": rnd(validation["scorers"].get(scorer, {}).get("auroc")) if scorer else None,
        "auroc_by_scorer": {k: rnd(v.get("auroc")) for k, v in validation["scorers"].items()},
    }


def dvc_stage(work: Path, stage: str, env: dict[str, str], logf: Any) -> tuple[float, float]:
    """``dvc repro --single-item stage``: wall and CPU seconds (children)."""
    before = os.times()
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "--single-item", stage], cwd=work, env=env, stdout=logf, stderr=logf
    )
    after = os.times()
    wall = round(time.perf_counter() - start, 1)
    cpu = round((after.children_user - before.children_user) + (after.children_system - before.children_system), 1)
    if done.returncode != 0:
        raise RuntimeError(f"dvc repro -s {stage} failed in {work} (see repro.log)")
    return wall, cpu


def checkout_commit(rev: str, dest: Path) -> Path:
    """A git copy of the repository at ``rev`` (its sources only, as :func:`copy_repo`)."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    for rel in ("tests", "bench", "dvc.lock"):
        path = dest / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    (dest / "data/raw").mkdir(parents=True, exist_ok=True)
    git = ["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", f"copy of {rev}"], cwd=dest, check=True)
    return dest


def run_config(name: str, overrides: dict[str, Any], source: Path, root: Path, both_modes: bool) -> dict[str, Any]:
    rev = name.removeprefix("commit:") if name.startswith("commit:") else None
    # What a user clones: no DVC outputs, no dvc.lock.
    work = checkout_commit(rev, root / rev) if rev else copy_repo(root / name)
    params = yaml.safe_load((work / "params.yaml").read_text(encoding="utf-8"))
    params = merge(params, {"ingest": {"source": "hf-parquet", "root": str(source)}, **overrides})
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": f"{work}{os.pathsep}{work / 'src'}",
        "MEMCLEAN_PROGRESS_INTERVAL": "60",
    }
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    with (work / "repro.log").open("w", encoding="utf-8") as logf:
        for stage in STAGES:
            seconds[stage], cpu[stage] = dvc_stage(work, stage, env, logf)
            log.info("%s: %s in %.0f s (CPU %.0f s)", name, stage, seconds[stage], cpu[stage])
        out: dict[str, Any] = {
            "overrides": overrides,
            "stage_seconds": seconds,
            "stage_cpu_seconds": cpu,
            "total_seconds": round(sum(seconds.values()), 1),
            "total_cpu_seconds": round(sum(cpu.values()), 1),
            **gate_figures(work),
            "workdir": str(work),
        }
        if both_modes:  # the gate measured the other way too, on the same score outputs
            other = "heldout" if out["validate_mode"] == "retrain" else "retrain"
            params["validate"] = {**params["validate"], "mode": other}
            (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
            dvc_stage(work, "params", env, logf)
            wall, cpu_s = dvc_stage(work, "validate", env, logf)
            out["other_mode"] = {"validate_seconds": wall, "validate_cpu_seconds": cpu_s, **gate_figures(work)}
            log.info("%s: validate in %s mode in %.0f s", name, other, wall)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--subset", type=int, default=10_000)
    p.add_argument("--configs", default="defaults,previous")
    p.add_argument("--reference", default="previous", help="the configuration the speedups are measured against")
    p.add_argument("--baseline", metavar="REV", help="also run this commit's code and params as 'commit:REV'")
    p.add_argument("--keep-workdirs", action="store_true")
    p.add_argument(
        "--both-modes", action="store_true", help="also run validate in the other mode (retrain <-> heldout)"
    )
    p.add_argument("--out", type=Path, default=REPO / "bench/results/pipeline.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    reason = missing_reason("cifar10")
    if reason:
        print(f"bench/pipeline.py: {reason}", file=sys.stderr)
        return 1
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configuration(s) {unknown}; choose from {', '.join(CONFIGS)}")
    configs = {name: CONFIGS[name] for name in names}
    if args.baseline:
        found = subprocess.run(
            ["git", "rev-parse", "--verify", "--short", f"{args.baseline}^{{commit}}"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        if found.returncode != 0:
            p.error(f"--baseline: {args.baseline!r} is not a commit of this repository")
        configs = {f"commit:{args.baseline}": {}, **configs}
    pixels, labels, info = load_subset("cifar10", args.subset)
    root = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    try:
        source = root / "train-00000.parquet"
        write_source(source, pixels, labels)
        runs = {name: run_config(name, over, source, root, args.both_modes) for name, over in configs.items()}
    finally:
        if not args.keep_workdirs:
            shutil.rmtree(root, ignore_errors=True)
    ref = runs.get(args.reference)
    for run in runs.values():
        run["speedup_vs_reference"] = rnd(ref["total_seconds"] / run["total_seconds"], 3) if ref else None
    report = {
        "benchmark": "memclean pipeline (dvc repro)",
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        },
        "dataset": {"name": "cifar10", "images": len(labels), **info},
        "reference": args.reference,
        "runs": runs,
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
