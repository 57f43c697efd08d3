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


def dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": f"{repo}{os.pathsep}{repo / 'src'}",
        "MEMCLEAN_PROGRESS": "0",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_dvc_repro_on_digits_then_nothing_reruns(repo_copy):
    first = dvc(repo_copy, "repro")
    for stage in ("ingest", "dedup", "score", "inject", "validate", "clean", "report"):
        assert f"Running stage '{stage}'" in first.stdout
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
    for name in validation["scorers"]:
        roc = pd.read_csv(repo_copy / f"data/reports/roc/{name}.csv")
        assert list(roc.columns) == ["fpr", "tpr"] and roc.notna().all().all()

    # The cleaned manifest accounts for every input row; the report is self-contained.
    manifest = pd.read_parquet(repo_copy / "data/clean/manifest.parquet")
    assert manifest["sample_id"].tolist() == samples["sample_id"].tolist()
    clean = json.loads((repo_copy / "data/reports/clean.json").read_text())
    assert clean["kept"] + clean["dropped"] == 1797 == int(manifest["keep"].sum()) + clean["dropped"]
    html = (repo_copy / "data/reports/audit.html").read_text()
    assert "https://" not in html and "http://" not in html

    second = dvc(repo_copy, "repro")
    assert "Running stage" not in second.stdout
    status = dvc(repo_copy, "status")
    assert "up to date" in status.stdout
    shown = dvc(repo_copy, "metrics", "show", "--json")
    for name in ("ingest.json", "dedup.json", "score.json", "validation.json"):
        assert name in shown.stdout
    plots = json.loads(dvc(repo_copy, "plots", "show", "--json").stdout)
    assert any("roc/aum.csv" in key for key in plots["data"])


def test_cli_run_override_reruns_only_what_depends_on_it(repo_copy):
    dvc(repo_copy, "repro")
    params = (repo_copy / "params.yaml").read_text()
    try:
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": f"{repo_copy}{os.pathsep}{repo_copy / 'src'}",
            "MEMCLEAN_PROGRESS": "0",
        }
        proc = subprocess.run(
            [sys.executable, "-m", "memclean.cli", "run", "--repo", str(repo_copy), "--set", "dedup.max_distance=2"],
            cwd=repo_copy, env=env, capture_output=True, text=True, timeout=600,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "max_distance: 2" in (repo_copy / "params.yaml").read_text()
        for stage in ("dedup", "clean", "report"):
            assert f"Running stage '{stage}'" in proc.stdout
        for stage in ("ingest", "score", "inject", "validate"):
            assert f"Running stage '{stage}'" not in proc.stdout
        assert "gate:" in proc.stdout  # the summary printed at the end
        assert "max_distance: 2" in (repo_copy / "dvc.lock").read_text()
    finally:
        (repo_copy / "params.yaml").write_text(params)
