"""Issue 10: the dataset's own label errors must not confound the validation gate.

``inject`` flips only rows the first scoring run considers clean and records the rest
as ``suspected_own``; ``validate`` measures among the rows not suspected beforehand
(the figure the gate uses) and reports the confounded all-rows figure beside it.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO
from memclean import project
from memclean.ensemble import Ensemble, save_ensemble
from memclean.errors import MemcleanError
from memclean.io import read_metadata, read_parquet, write_json, write_parquet
from memclean.metrics import measured_metrics, measured_on
from memclean.noise import inject, own_suspects
from memclean.schema import NOISY_LABELS_SCHEMA, scores_schema


def planted(n: int = 1000, own_rate: float = 0.08, rate: float = 0.1, seed: int = 0):
    """A dataset with errors of its own: own errors and injected flips score high, clean rows low."""
    rng = np.random.default_rng(seed)
    own = rng.random(n) < own_rate
    issue = own.astype(np.float64)  # confident learning on the original labels finds the own errors
    suspected = own_suspects(issue, n)
    y = rng.integers(0, 10, n)
    flipped = inject(y, 10, "symmetric", rate, seed=seed, eligible=~suspected) != y
    scores = np.where(own | flipped, rng.normal(3.0, 0.5, n), rng.normal(0.0, 0.5, n))
    return flipped, scores, suspected


def test_all_rows_auroc_is_confounded_and_the_measured_one_is_not():
    flipped, scores, suspected = planted()
    assert not (flipped & suspected).any()
    m = measured_metrics(flipped, scores, suspected)
    assert m["auroc"] > 0.999 and m["precision_at_k"] > 0.97
    # Over every row, the own errors (high scores, "not flipped") look like false positives.
    assert m["auroc_all_rows"] < m["auroc"] - 0.03
    assert m["ap_all_rows"] < m["ap"] - 0.2
    assert m["n"] == (~suspected).sum() and m["n_all_rows"] == len(flipped) and m["k"] == flipped.sum()


def test_without_suspects_both_figures_agree():
    flipped, scores, _ = planted(own_rate=0.0)
    m = measured_metrics(flipped, scores, np.zeros(len(flipped), bool))
    assert m["auroc"] == m["auroc_all_rows"] and m["ap"] == m["ap_all_rows"]


def test_measured_on_says_what_the_number_means():
    with_cl = measured_on("confident_learning", rows=920, flipped=100, excluded=80)
    assert with_cl["rows"] == 920 and with_cl["own_suspected_excluded"] == 80 and with_cl["flipped"] == 100
    assert "80 rows" in with_cl["description"] and "excluded" in with_cl["description"]
    fallback = measured_on(None, rows=1000, flipped=100, excluded=0)
    assert fallback["suspected_by"] is None and "false positive" in fallback["description"]


# -- the stages, in-process, on a tiny ingested folder (scoring replaced by planted scores) --


@pytest.fixture
def work(tmp_path, messy_folder, monkeypatch):
    """A project folder with an ingest of 20 ok rows (3 classes) and params.yaml."""
    root = tmp_path / "work"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(REPO))
    ingest = {"source": "imagefolder", "root": str(messy_folder), "max_quarantine_fraction": 0.5}
    (root / "params.yaml").write_text(yaml.safe_dump({"ingest": ingest}))
    from stages import ingest as ingest_stage

    ingest_stage.main()
    return root


def set_params(root, **sections):
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump({**params, **sections}))


def write_scores(ok: pd.DataFrame, issue: np.ndarray | None) -> None:
    n = len(ok)
    frame = pd.DataFrame({"sample_id": ok["sample_id"], "aum_score": np.zeros(n), "suggested_label": np.zeros(n)})
    extra = []
    if issue is not None:
        frame["confident_learning_issue"] = issue
        extra = ["confident_learning_issue"]
    write_parquet(frame, project.SCORES, scores_schema(["aum"], extra))
    write_json({"device": "cpu", "scorers": ["aum"]}, project.SCORE_METRICS)  # the score stage's report


def test_inject_and_validate_stages_measure_among_unsuspected_rows(work, monkeypatch):
    from stages import inject as inject_stage
    from stages import validate as validate_stage

    ok, _, classes = project.load_dataset()
    n = len(ok)
    labels = ok["label"].to_numpy()
    issue = (np.arange(n) < 3).astype(float)  # rows 0-2: own errors found on the original labels
    write_scores(ok, issue)
    save_ensemble(None, project.ENSEMBLE, n, len(classes))
    set_params(work, inject={"kind": "symmetric", "rate": 0.2, "seed": 0})
    inject_stage.main()
    noisy = read_parquet(project.NOISY_LABELS, NOISY_LABELS_SCHEMA)
    assert noisy["suspected_own"].tolist() == [True] * 3 + [False] * (n - 3)
    assert noisy["is_flipped"].sum() == round(0.2 * n) and not noisy["is_flipped"][:3].any()
    meta = read_metadata(project.NOISY_LABELS)
    assert meta["suspected_by"] == "confident_learning" and meta["suspected_own"] == 3

    # Scoring on the noisy labels: the flips and the own errors score high, every other row low.
    flipped = noisy["is_flipped"].to_numpy()
    high = flipped | noisy["suspected_own"].to_numpy()
    rng = np.random.default_rng(0)
    fake = SimpleNamespace(
        scores=pd.DataFrame({"aum_score": np.where(high, 5.0, 0.0) + rng.random(n), "suggested_label": labels}),
        scorer_names=["aum"],
        nonfinite={},
        failures={},
        summary=lambda: {"scorers": ["aum"]},
        timings=lambda: {},
    )
    monkeypatch.setattr(project, "run_scoring", lambda *a, **k: fake)
    validate_stage.main()
    report = json.loads(project.VALIDATION.read_text())
    aum = report["scorers"]["aum"]
    assert aum["auroc"] == 1.0 and aum["auroc_all_rows"] < 0.99  # own errors count as false positives there
    assert report["gate"]["auroc"] == 1.0 and report["gate"]["passed"]
    assert report["measured_on"]["rows"] == n - 3 and report["measured_on"]["own_suspected_excluded"] == 3
    assert report["measured_on"]["suspected_by"] == "confident_learning"
    assert {"noise", "scorers", "best", "gate", "run", "params_digest"} <= set(report)
    vscores = read_parquet(project.VALIDATION_SCORES)
    assert vscores["suspected_own"].sum() == 3


def test_inject_without_the_issue_column_excludes_nothing(work):
    from stages import inject as inject_stage

    ok, _, _ = project.load_dataset()
    write_scores(ok, None)
    set_params(work, inject={"kind": "symmetric", "rate": 0.2, "seed": 0})
    inject_stage.main()
    noisy = read_parquet(project.NOISY_LABELS, NOISY_LABELS_SCHEMA)
    assert not noisy["suspected_own"].any() and noisy["is_flipped"].sum() == 4
    assert read_metadata(project.NOISY_LABELS)["suspected_by"] is None


def test_instance_noise_stage_uses_the_ensemble_or_says_what_to_do(work):
    from stages import inject as inject_stage

    ok, _, classes = project.load_dataset()
    n, c = len(ok), len(classes)
    labels = ok["label"].to_numpy(dtype=np.int64)
    write_scores(ok, np.zeros(n))
    set_params(work, inject={"kind": "instance", "rate": 0.2, "seed": 0})
    save_ensemble(None, project.ENSEMBLE, n, c)
    with pytest.raises(MemcleanError, match="enable an ensemble scorer"):
        inject_stage.main()

    # Two members, each sample held out by one: member logits favour class (y+1) % C for rows 0-9.
    in_mask = np.stack([np.arange(n) % 2 == 0, np.arange(n) % 2 == 1])
    logits = np.zeros((2, n, c), dtype=np.float16)
    logits[:, np.arange(n), labels] = 4.0
    confused = np.arange(n) < 10
    logits[:, np.flatnonzero(confused), (labels[confused] + 1) % c] = 6.0
    save_ensemble(Ensemble(in_mask, logits, labels), project.ENSEMBLE, n, c)
    inject_stage.main()
    noisy = read_parquet(project.NOISY_LABELS, NOISY_LABELS_SCHEMA)
    flipped = noisy["is_flipped"].to_numpy()
    assert flipped.sum() == round(0.2 * n)
    assert (noisy["noisy_label"].to_numpy()[flipped & confused] == (labels[flipped & confused] + 1) % c).all()
    assert (flipped & confused).sum() >= 3
