"""Cleaning policy: each drop reason, the cap, last-of-class, gate off, flag mode, export.

The safe decision (confident learning, held-out splits, gate advice): tests/test_safe_cleaning.py.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from memclean.errors import MemcleanError
from memclean.export import export_kept
from memclean.options import parse_params
from memclean.policy import CL_ISSUE, CleanPolicy, decide


def make_tables():
    """12 rows: 10 ok (classes a/b/c), 2 quarantined; one conflict, one leak, one exact copy."""
    sid = [f"s{i}" for i in range(12)]
    samples = pd.DataFrame(
        {
            "sample_id": sid,
            "source": sid,
            "split": ["train"] * 9 + ["test"] + ["train"] * 2,
            "label": pd.array([0, 1, 0, 1, 1, 1, 2, 0, 1, 0, None, 1], dtype="Int32"),
            "status": ["ok"] * 10 + ["quarantined", "quarantined"],
            "reason": [None] * 10 + ["truncated", "unknown_label"],
            "pixel_sha256": ["d0", "d1", "d0", "d3", "d4", "d5", "d6", "d7", "d8", "d9", None, None],
            "row": pd.array([*list(range(10)), None, None], dtype="Int64"),
        }
    )
    duplicates = pd.DataFrame(
        {
            "group_id": [0, 0, 1, 1, 2, 2],
            "sample_id": ["s0", "s2", "s3", "s7", "s8", "s9"],
            "label_conflict": [False, False, True, True, True, True],
            "cross_split": [False, False, False, False, True, True],
        }
    )
    # s8 and s9 differ in label *and* split: conflict wins (rule order).
    scores = pd.DataFrame(
        {
            "sample_id": sid[:10],
            "x_score": [0.1, 0.2, 0.3, 0.1, 0.95, 0.9, 0.99, 0.2, 0.1, 0.1],
            "suggested_label": pd.array([1] * 10, dtype="Int32"),
        }
    )
    return samples, duplicates, scores


def reasons(result):
    return dict(zip(result.manifest["sample_id"], result.manifest["drop_reason"]))


def test_every_rule_and_row_accounting():
    samples, dups, scores = make_tables()
    res = decide(samples, dups, scores, CleanPolicy(max_drop_fraction=0.5), "x", 0.9, True, ["a", "b", "c"])
    r = reasons(res)
    assert len(res.manifest) == len(samples)
    assert r["s10"] == "truncated" and r["s11"] == "unknown_label"
    assert r["s3"] == r["s7"] == "conflicting_duplicate"
    assert r["s8"] == r["s9"] == "conflicting_duplicate"
    assert r["s2"] == "exact_duplicate" and r["s0"] is None
    assert r["s4"] == r["s5"] == "suspected_label_error"
    # s6 scores highest but is the only sample of class c: kept.
    assert r["s6"] is None and res.manifest.set_index("sample_id").loc["s6", "suspected"]
    assert res.summary["restored_last_of_class"] == 1
    assert res.summary["kept"] + res.summary["dropped"] == len(samples)
    assert res.summary["by_reason"]["suspected_label_error"] == 2
    assert res.manifest["dup_group"].notna().sum() == 6


def test_split_leak_drops_the_train_side():
    samples, dups, scores = make_tables()
    dups.loc[dups["group_id"] == 2, "label_conflict"] = False
    samples.loc[samples["sample_id"] == "s9", "label"] = 1  # same label as s8
    res = decide(samples, dups, scores, CleanPolicy(), None, None, True)
    r = reasons(res)
    assert r["s8"] == "split_leak" and r["s9"] is None


def test_cap_keeps_highest_scores():
    samples, dups, scores = make_tables()
    res = decide(samples, dups.iloc[:0], scores, CleanPolicy(max_drop_fraction=0.1), "x", 0.5, True)
    r = reasons(res)
    # 10 ok rows * 0.1 = 1 drop by score: the highest score (s6) is the last of
    # class c, so the cap picked s6 and the class rule then kept it.
    assert sum(v == "suspected_label_error" for v in r.values()) == 0
    res = decide(samples, dups.iloc[:0], scores, CleanPolicy(max_drop_fraction=0.2), "x", 0.5, True)
    assert sorted(k for k, v in reasons(res).items() if v == "suspected_label_error") == ["s4"]


def test_gate_failed_or_no_threshold_drops_nothing_by_score():
    samples, dups, scores = make_tables()
    for gate, thr in ((False, 0.5), (True, None)):
        res = decide(samples, dups, scores, CleanPolicy(max_drop_fraction=1.0), "x", thr, gate)
        assert "suspected_label_error" not in res.summary["by_reason"]
        assert res.summary["dropped_by_score"] == 0
    assert not decide(samples, dups, scores, CleanPolicy(), "x", None, True).manifest["suspected"].any()
    policy = CleanPolicy(max_drop_fraction=0.5)
    failed = decide(samples, dups, scores, policy, "x", 0.5, False)
    passed = decide(samples, dups, scores, policy, "x", 0.5, True)
    assert "gate failed" in failed.summary["score_rule"]
    # `suspected` (score at or above the threshold) means the same whether the gate passed or not.
    assert failed.manifest["suspected"].tolist() == passed.manifest["suspected"].tolist()
    assert failed.manifest["suspected"].sum() == 3 and failed.manifest["keep"].sum() > passed.manifest["keep"].sum()


def test_flag_mode_keeps_suspects():
    samples, dups, scores = make_tables()
    res = decide(
        samples, dups.iloc[:0], scores, CleanPolicy(score_action="flag", max_drop_fraction=1.0), "x", 0.9, True
    )
    m = res.manifest.set_index("sample_id")
    assert m.loc[["s4", "s5", "s6"], "suspected"].all() and m.loc[["s4", "s5", "s6"], "keep"].all()
    assert res.summary["dropped_by_score"] == 0


def test_nonfinite_scores_are_dropped_with_their_code():
    samples, dups, scores = make_tables()
    scores.loc[1, "x_score"] = np.nan
    r = reasons(decide(samples, dups.iloc[:0], scores, CleanPolicy(), "x", None, True))
    assert r["s1"] == "nonfinite_score"


def test_policy_validation_and_missing_scorer():
    with pytest.raises(MemcleanError, match="clean.score_action"):
        parse_params({"clean": {"score_action": "delete"}})
    with pytest.raises(MemcleanError, match="clean.max_drop_fraction"):
        parse_params({"clean": {"max_drop_fraction": 2}})
    samples, dups, scores = make_tables()
    with pytest.raises(MemcleanError, match="no column 'y_score'"):
        decide(samples, dups, scores, CleanPolicy(), "y", 0.5, True)


@pytest.mark.parametrize("fmt", ["imagefolder", "parquet", "none"])
def test_export_kept(tmp_path, fmt):
    samples, dups, scores = make_tables()
    res = decide(samples, dups, scores, CleanPolicy(max_drop_fraction=0.5), "x", 0.9, True)
    pixels = np.random.default_rng(0).integers(0, 256, (10, 1, 4, 4), dtype=np.uint8)
    out = tmp_path / "export"
    (out / "stale").mkdir(parents=True)
    info = export_kept(res.manifest, pixels, ["a", "b", "c"], out, fmt)
    kept_ok = int((res.manifest["keep"] & res.manifest["row"].notna()).sum())
    assert json.loads((out / "EXPORT.json").read_text())["format"] == fmt
    assert not (out / "stale").exists()
    if fmt == "imagefolder":
        assert len(list(out.rglob("*.png"))) == kept_ok == info["samples"]
        assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(
            res.manifest.loc[res.manifest["keep"] & res.manifest["row"].notna(), "split"].unique()
        )
    elif fmt == "parquet":
        tables = [pq.read_table(p) for p in out.glob("*.parquet")]
        assert sum(t.num_rows for t in tables) == kept_ok
        assert json.loads(tables[0].schema.metadata[b"classes"]) == ["a", "b", "c"]
    else:
        assert info["samples"] == 0
    with pytest.raises(MemcleanError):
        export_kept(res.manifest, pixels, ["a", "b", "c"], out, "zip")


def test_a_failed_gate_drops_nothing_by_score_not_even_nonfinite_rows():
    samples, dups, scores = make_tables()
    scores["x_score"] = np.nan  # e.g. a scorer that produced nothing usable
    policy = CleanPolicy()
    failed = decide(samples, dups, scores, policy, "x", 0.5, gate_passed=False)
    assert not failed.manifest["drop_reason"].isin(["nonfinite_score", "suspected_label_error"]).any()
    assert failed.summary["nonfinite_scores"] == 10 and failed.summary["dropped_by_score"] == 0
    passed = decide(samples, dups, scores, policy, "x", 0.5, gate_passed=True)
    assert (passed.manifest["drop_reason"] == "nonfinite_score").any()


def test_manifest_integers_read_back_as_integers(tmp_path):
    samples, dups, scores = make_tables()
    result = decide(samples, dups, scores, CleanPolicy(), "x", 0.5, True)
    from memclean.io import write_parquet
    from memclean.schema import manifest_schema

    path = tmp_path / "manifest.parquet"
    extra = {c: pd.NA for c in manifest_schema(["x"]).names if c not in result.manifest}
    write_parquet(result.manifest.assign(**extra), path, manifest_schema(["x"]))
    m = pd.read_parquet(path)  # plain pandas, as a user reads it
    for column in ("row", "label", "width", "height", "channels"):
        assert str(m[column].dtype).startswith("Int"), (column, m[column].dtype)
    kept = m[m["keep"] & m["row"].notna()]
    assert isinstance(int(kept["row"].iloc[0]), int)


def test_threshold_by_estimated_precision_is_calibrated_on_a_mixture():
    from memclean.policy import threshold_by_estimated_precision

    rng = np.random.default_rng(0)
    correct, wrong = rng.normal(0.0, 1.0, 9000), rng.normal(3.0, 1.0, 1000)
    scores = np.concatenate([correct, wrong])
    is_wrong = np.r_[np.zeros(9000, bool), np.ones(1000, bool)]
    null = rng.normal(0.0, 1.0, 5000)  # correct rows of another run
    for target in (0.8, 0.9, 0.95):
        cut = threshold_by_estimated_precision(scores, null, 9000, target)
        above = scores >= cut.value
        assert cut.estimated_precision >= target and cut.rows_above == above.sum()
        assert abs(is_wrong[above].mean() - target) < 0.04  # the estimate is close to the truth
    # Correct-label rows above every wrong one: no threshold reaches the target.
    assert threshold_by_estimated_precision(np.r_[correct, wrong], np.full(10, 99.0), 9000, 0.9).value is None
    assert threshold_by_estimated_precision(np.array([]), null, 0, 0.9).value is None
    # Unknown own errors left among the null rows make the estimate conservative, never optimistic.
    contaminated = np.r_[null, rng.normal(3.0, 1.0, 300)]
    strict = threshold_by_estimated_precision(scores, contaminated, 9000, 0.9)
    assert strict.value > threshold_by_estimated_precision(scores, null, 9000, 0.9).value
    assert is_wrong[scores >= strict.value].mean() >= 0.9


def test_the_injected_estimate_decides_when_the_data_estimate_cannot():
    from memclean.policy import threshold_by_estimated_precision

    rng = np.random.default_rng(1)
    correct, wrong = rng.normal(0.0, 1.0, 900), rng.normal(4.0, 1.0, 100)
    # Many own errors left among the null rows: the estimate from the data reaches no target...
    null = np.r_[rng.normal(0.0, 1.0, 800), rng.normal(4.0, 1.0, 80)]
    assert threshold_by_estimated_precision(np.r_[correct, wrong], null, 990, 0.9).value is None
    # ...while 200 injected flips stand out against them: that precision decides.
    cut = threshold_by_estimated_precision(
        np.r_[correct, wrong], null, 990, 0.9, injected_scores=rng.normal(6.0, 0.5, 200)
    )
    assert cut.value is not None and cut.decided_by == "injected" and cut.precision_on_injected >= 0.9


def test_likely_rule_prefers_disagreement_and_falls_back():
    from memclean.policy import CL_DISAGREES, likely_rule

    a, b = np.array([True, False]), np.array([False, True])
    assert likely_rule("disagreement", {CL_ISSUE: a, CL_DISAGREES: b})[0] == "score_and_disagreement"
    assert likely_rule("confident_learning", {CL_ISSUE: a, CL_DISAGREES: b})[1] is a
    assert likely_rule("disagreement", {CL_ISSUE: a}) == ("score_and_confident_learning", a)
    assert likely_rule("disagreement", {}) == ("score_only", None)


def test_near_duplicates_keep_one_per_group_and_split():
    samples, dups, scores = make_tables()
    samples.loc[samples["sample_id"] == "s1", "split"] = "test"
    near = pd.DataFrame(
        {
            "group_id": [3, 3, 3],
            "sample_id": ["s4", "s5", "s1"],  # two train copies of one photo, one in test
            "label_conflict": [False] * 3,
            "cross_split": [False] * 3,
        }
    )
    dups = pd.concat([dups, near], ignore_index=True)
    res = decide(samples, dups, scores, CleanPolicy(drop_split_leaks=False, drop_near_duplicates=True), "x", None, True)
    r = reasons(res)
    assert r["s4"] is None and r["s1"] is None  # the first train copy and the test one stay
    assert r["s5"] == "near_duplicate"
    assert res.summary["by_reason"]["near_duplicate"] == 1
    off = decide(
        samples, dups, scores, CleanPolicy(drop_split_leaks=False, drop_near_duplicates=False), "x", None, True
    )
    assert "near_duplicate" not in off.summary["by_reason"]
    # auto (the default) follows dedup's verdict on the images: photos (hash candidates ran) or not.
    auto = CleanPolicy(drop_split_leaks=False)
    assert auto.drop_near_duplicates == "auto"
    photos = decide(samples, dups, scores, auto, "x", None, True, dedup={"hash_candidates": True})
    assert reasons(photos)["s5"] == "near_duplicate" and photos.summary["near_duplicate_rule"].startswith("auto: on")
    for small in ({"hash_candidates": False}, None):  # 8×8 digits, or no dedup.json at hand
        kept = decide(samples, dups, scores, auto, "x", None, True, dedup=small)
        assert "near_duplicate" not in kept.summary["by_reason"], small
        assert kept.summary["near_duplicate_rule"].startswith("auto: off")
    forced = decide(
        samples,
        dups,
        scores,
        CleanPolicy(drop_split_leaks=False, drop_near_duplicates=True),
        "x",
        None,
        True,
        dedup={"hash_candidates": False},
    )
    assert reasons(forced)["s5"] == "near_duplicate"
