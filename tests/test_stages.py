"""The stage scripts as DVC runs them: real subprocesses, real params.yaml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from conftest import REPO
from memclean.io import read_metadata


def run_stage(name: str, cwd: Path, params: dict) -> subprocess.CompletedProcess:
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO), "MEMCLEAN_PROGRESS": "0"}
    return subprocess.run(
        [sys.executable, "-m", f"stages.{name}"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_ingest_and_dedup_stages_on_a_folder(tmp_path, messy_folder):
    work = tmp_path / "work"
    work.mkdir()
    params = {"ingest": {"source": "imagefolder", "root": str(messy_folder), "max_quarantine_fraction": 0.5}}
    proc = run_stage("ingest", work, params)
    assert proc.returncode == 0, proc.stderr
    samples = pd.read_parquet(work / "data/interim/samples.parquet")
    assert len(samples) == 28 and (samples["status"] == "quarantined").sum() == 8
    meta = read_metadata(work / "data/interim/samples.parquet")
    assert meta["classes"] == ["bird", "cat", "dog"] and meta["image_size"] == [16, 16]
    metrics = json.loads((work / "data/reports/ingest.json").read_text())
    assert metrics["quarantine_reasons"]["truncated"] == 2 and metrics["ok"] == 20
    proc = run_stage("dedup", work, {**params, "dedup": {"max_distance": 6}})
    assert proc.returncode == 0, proc.stderr
    dups = pd.read_parquet(work / "data/interim/duplicates.parquet")
    assert set(dups.columns) >= {"group_id", "sample_id", "kind", "distance", "label_conflict", "cross_split"}


def test_quarantine_limit_fails_the_stage_with_one_line(tmp_path, messy_folder):
    work = tmp_path / "work"
    work.mkdir()
    proc = run_stage("ingest", work, {"ingest": {"source": "imagefolder", "root": str(messy_folder)}})
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "8/28 rows (28.6%) quarantined" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not (work / "data/interim/samples.parquet").exists()


def test_bad_params_are_one_line_errors(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    cases = [
        ({"ingest": {"source": "imagefolder", "root": str(tmp_path / "nope")}}, "is not a directory"),
        ({"ingest": {"source": "digits", "image_size": "huge"}}, "ingest.image_size: must be"),
        ({"ingest": {"source": "digits", "chanels": 3}}, "ingest.chanels: unknown key"),
    ]
    for params, message in cases:
        proc = run_stage("ingest", work, params)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    proc = run_stage("dedup", work, {"dedup": {"hash": "md5"}})
    assert proc.returncode == 1 and "dedup.hash: Input should be 'phash', 'dhash'" in proc.stderr


def test_a_failed_ingest_keeps_the_previous_pair_and_stages_refuse_a_mixed_pair(tmp_path, messy_folder):
    work = tmp_path / "work"
    work.mkdir()
    ok = {"ingest": {"source": "imagefolder", "root": str(messy_folder), "max_quarantine_fraction": 0.5}}
    assert run_stage("ingest", work, ok).returncode == 0
    interim = work / "data/interim"
    before = {p.name: p.read_bytes() for p in interim.iterdir()}
    failed = run_stage("ingest", work, {"ingest": {**ok["ingest"], "max_quarantine_fraction": 0.01}})
    assert failed.returncode == 1 and "quarantined" in failed.stderr
    assert {p.name: p.read_bytes() for p in interim.iterdir()} == before  # same pair, no temporaries

    import numpy as np

    pixels = np.load(interim / "pixels.npy")
    np.save(interim / "pixels.npy", pixels[::-1].copy())  # same shape, other images: not this ingest's pixels
    mixed = run_stage("dedup", work, ok)
    assert mixed.returncode == 1 and "Traceback" not in mixed.stderr
    assert "samples.parquet and pixels.npy are from different ingest runs" in mixed.stderr.strip().splitlines()[-1]
