"""The gate rule (one home: memclean.gate) and the run summary every view renders."""

from __future__ import annotations

import json

from memclean.gate import Gate, best_scorer, cleaning_gate, decide_gate
from memclean.summary import CleanCounts, RunSummary

RESULTS = {"aum": {"auroc": 0.95}, "loss": {"auroc": 0.97}, "forgetting": {"auroc": 0.7}}


def test_gate_on_best_and_named_scorers():
    assert best_scorer(RESULTS) == "loss" and best_scorer({}) is None
    gate = decide_gate(RESULTS, "best", 0.9)
    assert gate == Gate("loss", True, 0.97, 0.9, "AUROC reaches the minimum")
    low = decide_gate(RESULTS, "forgetting", 0.9)
    assert not low.passed and low.reason == "AUROC 0.7000 is below validate.min_auroc 0.9"
    failed = decide_gate(RESULTS, "curvature", 0.9, {"curvature": "no finite score for any sample"})
    assert not failed.passed and "no finite score" in failed.reason
    assert not decide_gate({"aum": {"auroc": None}}, "aum", 0.5).passed


def test_cleaning_gate_reuses_the_recorded_gate_or_applies_the_same_bar():
    validation = {"scorers": RESULTS, "gate": decide_gate(RESULTS, "best", 0.9).to_dict()}
    assert cleaning_gate(validation, "gate") == Gate.from_dict(validation["gate"])
    assert cleaning_gate(validation, "aum").passed
    assert not cleaning_gate(validation, "forgetting").passed
    gone = cleaning_gate(validation, "curvature")
    assert gone.scorer == "curvature" and not gone.passed
    assert not Gate.from_dict({}).passed


def test_summary_renders_one_model_everywhere(tmp_path):
    reports = {
        "ingest": {"rows": 10, "ok": 9, "quarantined": 1, "quarantine_reasons": {"truncated": 1}},
        "dedup": {
            "groups": 2,
            "exact_groups": 1,
            "near_groups": 1,
            "label_conflict_groups": 0,
            "cross_split_groups": 1,
        },
        "validation": {
            "noise": {"kind": "symmetric", "rate": 0.1, "seed": 0, "flipped": 1, "n": 9},
            "scorers": RESULTS,
            "best": "loss",
            "gate": decide_gate(RESULTS, "best", 0.9).to_dict(),
        },
        "clean": {
            "rows": 10,
            "kept": 7,
            "dropped": 3,
            "dropped_by_score": 1,
            "suspected": 1,
            "by_reason": {"truncated": 1, "exact_duplicate": 1, "suspected_label_error": 1},
        },
    }
    for name, data in reports.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    summary = RunSummary.from_dir(tmp_path)
    text, md = summary.text(), summary.markdown()
    for view in (text, md):
        assert "ingest: 10 rows, 9 ok, 1 quarantined (truncated 1)" in view
        assert "gate: passed on loss (AUROC 0.9700, minimum 0.9000)" in view
        assert "clean: 10 rows, 7 kept, 3 dropped" in view
    assert "| loss " in md and "| reason " in md  # tables rendered by pandas
    assert text.index("loss") < text.index("forgetting")  # best AUROC first
    assert RunSummary.from_dir(tmp_path / "nothing").text().startswith("no outputs yet")


def test_clean_counts_from_a_manifest():
    import pandas as pd

    m = pd.DataFrame(
        {
            "keep": [True, False, False],
            "drop_reason": [None, "split_leak", "suspected_label_error"],
            "suspected": [False, False, True],
        }
    )
    counts = CleanCounts.from_manifest(m)
    assert (counts.rows, counts.kept, counts.dropped, counts.dropped_by_score, counts.suspected) == (3, 1, 2, 1, 1)


def test_auroc_table_puts_the_best_scorer_first_even_on_ties():
    """cscore, confident_learning and combined of them often tie in heldout validation: the table's
    first row is still the scorer best_scorer (and so the gate) picks."""
    from memclean.summary import Validation

    tied = {"combined": {"auroc": 0.93}, "cscore": {"auroc": 0.93}, "confident_learning": {"auroc": 0.93}, "aum": {}}
    table = Validation({}, tied, best_scorer(tied), decide_gate(tied, "best", 0.9)).table()
    assert table["scorer"].tolist()[0] == best_scorer(tied) == "cscore"
    assert table["scorer"].tolist()[-1] == "aum"  # no AUROC: last
