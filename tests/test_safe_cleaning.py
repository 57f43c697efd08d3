"""The safe decision by score: likely mislabeled vs atypical, the caps, held-out splits, gate advice."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from memclean.gate import Gate
from memclean.options import parse_params
from memclean.policy import (
    ATYPICAL,
    CL_ISSUE,
    CL_SUGGESTED_P,
    LIKELY_MISLABELED,
    CleanPolicy,
    NoiseEstimate,
    decide,
    gate_advice,
    wilson_interval,
)
from memclean.summary import CleanCounts, RunSummary

#: 20 ok rows, classes 0/1; rows 16–19 are the test split.
N = 20
HIGH = {0: 0.99, 1: 0.98, 2: 0.97, 3: 0.96, 4: 0.95, 5: 0.94, 16: 0.93, 17: 0.92}
#: Rows confident learning marks as label issues (the others above the threshold: atypical).
ISSUES = {0, 1, 2, 16}


def tables(with_cl: bool = True):
    sid = [f"s{i}" for i in range(N)]
    samples = pd.DataFrame(
        {
            "sample_id": sid,
            "source": sid,
            "split": ["train"] * 16 + ["test"] * 4,
            "label": pd.array([i % 2 for i in range(N)], dtype="Int32"),
            "status": ["ok"] * N,
            "reason": [None] * N,
            "pixel_sha256": [f"d{i}" for i in range(N)],
            "row": pd.array(range(N), dtype="Int64"),
        }
    )
    dups = pd.DataFrame(
        {"group_id": [], "sample_id": [], "label_conflict": [], "cross_split": []},
    ).astype({"group_id": "int64", "sample_id": "string", "label_conflict": bool, "cross_split": bool})
    scores = pd.DataFrame(
        {
            "sample_id": sid,
            "x_score": [HIGH.get(i, 0.1) for i in range(N)],
            "suggested_label": pd.array([1 - i % 2 for i in range(N)], dtype="Int32"),
        }
    )
    if with_cl:
        scores[CL_ISSUE] = [1.0 if i in ISSUES else 0.0 for i in range(N)]
    return samples, dups, scores


def by_id(result):
    return result.manifest.set_index("sample_id")


def test_atypical_but_correct_rows_are_kept_and_flagged():
    samples, dups, scores = tables()
    res = decide(samples, dups, scores, CleanPolicy(max_drop_fraction=1.0), "x", 0.9, True)
    m = by_id(res)
    assert len(res.manifest) == N and CL_ISSUE not in res.manifest
    likely, atypical = ["s0", "s1", "s2"], ["s3", "s4", "s5", "s17"]
    assert (m.loc[likely, "drop_reason"] == "suspected_label_error").all() and not m.loc[likely, "keep"].any()
    assert (m.loc[likely, "suspicion"] == LIKELY_MISLABELED).all()
    assert m.loc[atypical, "keep"].all() and m.loc[atypical, "drop_reason"].isna().all()
    assert (m.loc[atypical, "suspicion"] == ATYPICAL).all()
    assert m.loc[likely + atypical + ["s16"], "suspected"].all()  # suspected = above the threshold, either kind
    assert m.loc[~m["suspected"], "suspicion"].isna().all()
    s = res.summary
    assert (s["suspected"], s["likely_mislabeled"], s["atypical"], s["dropped_by_score"]) == (8, 4, 4, 3)
    assert s["decision_rule"] == "score_and_confident_learning"
    assert "confident learning marks a label issue" in s["score_rule"]


def test_suggested_label_comes_with_its_out_of_sample_confidence():
    samples, dups, scores = tables()
    scores[CL_SUGGESTED_P] = np.linspace(0.05, 0.95, N)
    m = by_id(decide(samples, dups, scores, CleanPolicy(max_drop_fraction=1.0), "x", 0.9, True))
    assert CL_SUGGESTED_P not in m
    assert m["suggested_confidence"].to_numpy() == pytest.approx(np.linspace(0.05, 0.95, N), abs=1e-6)
    # Without confident learning's column the confidence is unknown, not invented.
    samples, dups, scores = tables(with_cl=False)
    m = by_id(decide(samples, dups, scores, CleanPolicy(max_drop_fraction=1.0), "x", 0.9, True))
    assert m["suggested_confidence"].isna().all()


def test_a_missing_cl_verdict_counts_as_not_marked():
    samples, dups, scores = tables()
    scores.loc[0, CL_ISSUE] = np.nan
    m = by_id(decide(samples, dups, scores, CleanPolicy(max_drop_fraction=1.0), "x", 0.9, True))
    assert m.loc["s0", "keep"] and m.loc["s0", "suspicion"] == ATYPICAL


def test_cap_by_estimated_label_errors_and_by_fraction():
    samples, dups, scores = tables()
    noise = {"available": True, "estimated_label_errors": 2, "joint": [[9, 1], [1, 9]], "noise_rate": 0.1}
    res = decide(samples, dups, scores, CleanPolicy(max_drop_fraction=1.0), "x", 0.9, True, noise=noise)
    dropped = sorted(res.manifest.loc[~res.manifest["keep"], "sample_id"])
    assert dropped == ["s0", "s1"]  # highest scores first
    s = res.summary
    assert (s["drop_cap"], s["capped"], s["estimated_label_errors"]) == (2, 1, 2)
    assert "estimated label errors: 2" in s["score_rule"]
    assert s["estimated_noise_rate"] == pytest.approx(0.1)
    low, high = s["noise_rate_ci95"]
    assert low < 0.1 < high and (low, high) == pytest.approx(wilson_interval(2, 20), abs=1e-6)
    # max_drop_fraction is the tighter cap here: 20 * 0.05 = 1 row.
    res = decide(samples, dups, scores, CleanPolicy(max_drop_fraction=0.05), "x", 0.9, True, noise=noise)
    assert res.summary["drop_cap"] == 1 and res.summary["dropped_by_score"] == 1
    # No noise estimate: no such cap, the rate is unknown.
    res = decide(samples, dups, scores, CleanPolicy(max_drop_fraction=1.0), "x", 0.9, True)
    assert res.summary["estimated_noise_rate"] is None and res.summary["noise_rate_ci95"] is None
    assert res.summary["drop_cap"] == 20


def test_wilson_interval_and_noise_estimate():
    assert wilson_interval(0, 0) is None
    interval = wilson_interval(0, 100)
    assert interval is not None
    low, high = interval
    assert low == 0.0 and 0.03 < high < 0.04  # 3.7 %: the "rule of three" neighbourhood
    low, high = wilson_interval(50, 100) or (0.0, 1.0)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)
    assert NoiseEstimate.from_report({"available": False}, 10).to_dict()["estimated_noise_rate"] is None
    est = NoiseEstimate.from_report({"available": True, "estimated_label_errors": 5}, 50)  # no joint: n = rows
    assert est.n == 50 and est.rate == pytest.approx(0.1)


def test_heldout_rows_are_flagged_not_dropped_unless_asked():
    samples, dups, scores = tables()
    res = decide(samples, dups, scores, CleanPolicy(max_drop_fraction=1.0), "x", 0.9, True)
    m = by_id(res)
    assert m.loc["s16", "keep"] and m.loc["s16", "suspected"] and m.loc["s16", "suspicion"] == LIKELY_MISLABELED
    assert res.summary["heldout_flagged_not_dropped"] == 1 and "held-out" in res.summary["score_rule"]
    on = decide(samples, dups, scores, CleanPolicy(max_drop_fraction=1.0, drop_heldout_by_score=True), "x", 0.9, True)
    assert by_id(on).loc["s16", "drop_reason"] == "suspected_label_error"
    assert on.summary["heldout_flagged_not_dropped"] == 0


def test_heldout_rows_with_nonfinite_scores_are_not_dropped_by_default():
    samples, dups, scores = tables()
    scores.loc[[7, 18], "x_score"] = np.nan
    r = by_id(decide(samples, dups, scores, CleanPolicy(), "x", 0.9, True))["drop_reason"]
    assert r["s7"] == "nonfinite_score" and r["s18"] is None
    r = by_id(decide(samples, dups, scores, CleanPolicy(drop_heldout_by_score=True), "x", 0.9, True))["drop_reason"]
    assert r["s18"] == "nonfinite_score"


def test_duplicates_still_drop_heldout_rows():
    samples, dups, scores = tables()
    samples.loc[19, "pixel_sha256"] = "d18"  # an exact copy inside the test split
    r = by_id(decide(samples, dups, scores, CleanPolicy(), "x", 0.9, True))["drop_reason"]
    assert r["s19"] == "exact_duplicate"


def test_without_the_cl_column_the_threshold_alone_decides():
    samples, dups, scores = tables(with_cl=False)
    res = decide(samples, dups, scores, CleanPolicy(max_drop_fraction=1.0), "x", 0.9, True)
    m = by_id(res)
    train_high = ["s0", "s1", "s2", "s3", "s4", "s5"]
    assert (m.loc[train_high, "drop_reason"] == "suspected_label_error").all()
    assert (m.loc[m["suspected"], "suspicion"] == LIKELY_MISLABELED).all()
    assert res.summary["decision_rule"] == "score_only" and res.summary["atypical"] == 0
    assert "threshold alone decides" in res.summary["score_rule"]


def test_flag_mode_and_failed_gate_keep_the_same_suspicion():
    samples, dups, scores = tables()
    policy = CleanPolicy(max_drop_fraction=1.0)
    passed = decide(samples, dups, scores, policy, "x", 0.9, True)
    failed = decide(samples, dups, scores, policy, "x", 0.9, False)
    flagged = decide(samples, dups, scores, CleanPolicy(max_drop_fraction=1.0, score_action="flag"), "x", 0.9, True)
    for other in (failed, flagged):
        assert other.manifest["keep"].all()
        assert other.manifest["suspected"].equals(passed.manifest["suspected"])
        assert other.manifest["suspicion"].equals(passed.manifest["suspicion"])


def test_the_option_is_validated():
    assert parse_params({"clean": {"drop_heldout_by_score": True}}).clean.drop_heldout_by_score
    assert not parse_params({}).clean.drop_heldout_by_score


SCORERS: dict[str, dict[str, Any]] = {
    "aum": {"auroc": 0.7},
    "loss": {"auroc": 0.72},
    "fz_influence": {"auroc": 0.99, "ranks_label_errors": False},
}
VALIDATION: dict[str, Any] = {"noise": {"flipped": 10, "n": 100}, "scorers": SCORERS}


def test_gate_advice_follows_the_measured_train_accuracy():
    failed = Gate("aum", False, 0.7, 0.9, "AUROC 0.7000 is below validate.min_auroc 0.9")
    assert gate_advice(Gate("aum", True, 0.95, 0.9, "ok"), VALIDATION, {"final_train_accuracy": 0.5}) == []
    low = gate_advice(failed, VALIDATION, {"final_train_accuracy": 0.62}, suspected=7)
    assert "62.0%" in low[0] and "score.trainer.epochs" in low[0] and "score.trainer.width" in low[0]
    assert "7 rows" in low[-1] and "clean.score_action: flag" in low[-1]
    fit = gate_advice(failed, VALIDATION, {"final_train_accuracy": 0.999, "scorers": ["aum", "loss"]})
    assert "ensemble scorers" in fit[0] and "fz_memorization" in fit[0]
    better = {**VALIDATION, "scorers": {**SCORERS, "cscore": {"auroc": 0.93}}}
    hint = gate_advice(failed, better, {"final_train_accuracy": 0.999})
    assert "cscore reaches AUROC 0.9300" in hint[0] and "validate.scorer: best" in hint[0]
    none = gate_advice(Gate("aum", False, None, 0.9, "no AUROC"), {"noise": {"flipped": 0}}, None)
    assert "inject.rate" in none[0]


def test_summary_prints_the_advice_and_the_noise_estimate(tmp_path):
    clean = {
        "rows": 20,
        "kept": 20,
        "dropped": 0,
        "dropped_by_score": 0,
        "suspected": 8,
        "likely_mislabeled": 4,
        "atypical": 4,
        "by_reason": {},
        "estimated_noise_rate": 0.1,
        "noise_rate_ci95": [0.0279, 0.301],
        "score_rule": "validation gate failed: nothing dropped by score",
        "advice": ["raise score.trainer.epochs"],
    }
    (tmp_path / "clean.json").write_text(json.dumps(clean))
    summary = RunSummary.from_dir(tmp_path)
    for view in (summary.text(), summary.markdown()):
        assert "advice: raise score.trainer.epochs" in view
        assert "4 likely mislabeled, 4 atypical" in view
        assert "estimated noise rate: 0.1000 (95% CI 0.0279–0.3010)" in view
    m = pd.DataFrame(
        {
            "keep": [True, True, False],
            "drop_reason": [None, None, "suspected_label_error"],
            "suspected": [False, True, True],
            "suspicion": [None, ATYPICAL, LIKELY_MISLABELED],
        }
    )
    counts = CleanCounts.from_manifest(m)
    assert (counts.likely_mislabeled, counts.atypical, counts.advice) == (1, 1, ())


def test_a_proxy_that_cannot_learn_fails_the_gate_and_the_advice_says_train_longer():
    """A real (tiny, one-epoch) training run: its scores do not separate the noise; the advice names the fix."""
    import torch
    from sklearn.datasets import load_digits

    from memclean.gate import decide_gate
    from memclean.metrics import detection_metrics
    from memclean.noise import inject
    from memclean.scores import score_dataset
    from memclean.train import TrainConfig

    digits = load_digits()
    pixels = (digits.images[:400] * (255 / 16)).astype(np.uint8)[:, None]
    noisy = inject(digits.target[:400].astype(np.int64), 10, "symmetric", 0.1, seed=0)
    flipped = noisy != digits.target[:400]
    weak = TrainConfig(epochs=1, width=1, lr=1e-4, seed=0)
    out = score_dataset(pixels, noisy, 10, {"aum": {}}, weak, torch.device("cpu"))
    results = {"aum": detection_metrics(flipped, out.scores["aum_score"].to_numpy())}
    gate = decide_gate(results, "best", 0.9, out.failures)
    assert not gate.passed and "below" in gate.reason, gate
    accuracy = out.summary()["final_train_accuracy"]
    assert accuracy < 0.5
    advice = gate_advice(gate, {"scorers": results}, {"final_train_accuracy": accuracy, "scorers": ["aum"]}, 3)
    assert "score.trainer.epochs" in advice[0] and f"{accuracy:.1%}" in advice[0]
