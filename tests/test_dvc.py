"""The real `dvc repro` on the digits default, in a temporary copy of the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import copy_repo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("repo"))


def _env(repo: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": f"{repo}{os.pathsep}{repo / 'src'}",
        "MEMCLEAN_PROGRESS": "0",
    }


def memclean_cli(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "memclean.cli", *args],
        cwd=repo,
        env=_env(repo),
        capture_output=True,
        text=True,
        timeout=600,
    )


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=_env(repo), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_dvc_repro_on_digits_then_nothing_reruns(repo_copy):
    first = dvc(repo_copy, "repro")
    for stage in ("params", "ingest", "dedup", "score", "inject", "validate", "clean", "report"):
        assert f"Running stage '{stage}'" in first.stdout
    assert first.stdout.index("Running stage 'params'") < first.stdout.index("Running stage 'ingest'")
    samples = pd.read_parquet(repo_copy / "data/interim/samples.parquet")
    assert len(samples) == 1797 and (samples["status"] == "ok").all()
    dups = pd.read_parquet(repo_copy / "data/interim/duplicates.parquet")
    assert dups["sample_id"].isin(samples["sample_id"]).all()
    metrics = json.loads((repo_copy / "data/reports/dedup.json").read_text())
    assert metrics["images"] == 1797 and metrics["groups"] == dups["group_id"].nunique()

    # Scores cover every ok row; validation finds the injected mislabels.
    scores = pd.read_parquet(repo_copy / "data/interim/scores.parquet")
    assert scores["sample_id"].tolist() == samples["sample_id"].tolist()
    noisy = pd.read_parquet(repo_copy / "data/interim/noisy_labels.parquet")
    assert noisy["is_flipped"].sum() == round(0.1 * 1797)
    validation = json.loads((repo_copy / "data/reports/validation.json").read_text())
    best = validation["best"]
    assert validation["scorers"][best]["auroc"] >= 0.95, validation["scorers"]
    assert validation["gate"]["passed"] and validation["noise"]["kind"] == "symmetric"
    roc = pd.read_csv(repo_copy / "data/reports/roc.csv")
    assert list(roc.columns) == ["scorer", "fpr", "tpr"] and roc.notna().all().all()
    assert set(roc["scorer"]) == set(validation["scorers"])

    # The cleaned manifest accounts for every input row; the report is self-contained.
    manifest = pd.read_parquet(repo_copy / "data/clean/manifest.parquet")
    assert manifest["sample_id"].tolist() == samples["sample_id"].tolist()
    clean = json.loads((repo_copy / "data/reports/clean.json").read_text())
    assert clean["kept"] + clean["dropped"] == 1797 == int(manifest["keep"].sum()) + clean["dropped"]
    # 8×8 digits are too small for the photo checks: near groups (different writers' look-alike
    # digits) are reported, not thinned (clean.drop_near_duplicates: auto, through dedup.json).
    assert metrics["near_groups"] > 0 and "auto: off (images under" in clean["near_duplicate_rule"]
    assert "near_duplicate" not in clean["by_reason"]
    html = (repo_copy / "data/reports/audit.html").read_text()
    assert "https://" not in html and "http://" not in html

    second = dvc(repo_copy, "repro")
    assert "Running stage" not in second.stdout
    status = dvc(repo_copy, "status")
    assert "up to date" in status.stdout
    # One headline metrics file (the stages' detailed reports are plain outputs).
    shown = json.loads(dvc(repo_copy, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    assert list(files) == ["data/reports/metrics.json"], list(files)
    assert len(files["data/reports/metrics.json"]["data"]) < 30
    # One ROC plot, every scorer's curve overlaid by the shipped template (.dvc/plots/roc.json).
    plots = json.loads(dvc(repo_copy, "plots", "show", "--json").stdout)
    (roc_plot,) = plots["data"]["data/reports/roc.csv"]
    assert roc_plot["type"] == "vega"
    assert roc_plot["content"]["layer"][0]["encoding"]["color"]["field"] == "scorer"


def test_cli_run_override_reruns_only_what_depends_on_it(repo_copy):
    dvc(repo_copy, "repro")
    params = (repo_copy / "params.yaml").read_text()
    try:
        proc = memclean_cli(repo_copy, "run", "--repo", str(repo_copy), "--set", "dedup.max_distance=2")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "max_distance: 2" in (repo_copy / "params.yaml").read_text()
        for stage in ("params", "dedup", "clean", "report"):
            assert f"Running stage '{stage}'" in proc.stdout
        for stage in ("ingest", "score", "inject", "validate"):
            assert f"Running stage '{stage}'" not in proc.stdout
        assert "gate:" in proc.stdout  # the summary printed at the end
        assert "max_distance: 2" in (repo_copy / "dvc.lock").read_text()
    finally:
        (repo_copy / "params.yaml").write_text(params)


def test_a_params_typo_keeps_the_previous_outputs(repo_copy):
    dvc(repo_copy, "repro")
    manifest = repo_copy / "data/clean/manifest.parquet"
    before = manifest.read_bytes()
    params = (repo_copy / "params.yaml").read_text()
    try:
        # memclean run refuses the override before anything runs: params.yaml is unchanged.
        proc = memclean_cli(repo_copy, "run", "--repo", str(repo_copy), "--set", "clean.exprot=parquet")
        assert proc.returncode == 2 and "clean.exprot: unknown key" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and (repo_copy / "params.yaml").read_text() == params
        # A typo written by hand: `dvc repro` stops at the params stage, before clean deletes its outputs.
        (repo_copy / "params.yaml").write_text(params.replace("  export: none", "  exprot: none"))
        failed = subprocess.run(
            [sys.executable, "-m", "dvc", "repro"],
            cwd=repo_copy,
            env=_env(repo_copy),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert failed.returncode != 0
        assert "params.yaml: clean.exprot: unknown key" in failed.stderr
        assert "Running stage 'clean'" not in failed.stdout
        assert manifest.read_bytes() == before
    finally:
        (repo_copy / "params.yaml").write_text(params)
