"""The audit report: self-contained HTML, Markdown and metrics, and the ``report`` stage."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

from memclean.errors import MemcleanError
from memclean.io import save_npy, write_json, write_parquet
from memclean.report import GATE_FAILED_TEXT, SECTION_IDS, ReportInputs, ReportOptions, build_report, image_data_uri
from memclean.schema import DUPLICATES_SCHEMA, manifest_schema

CLASSES = ["zero", "one", "two"]
SCORERS = ["loss", "aum"]
EVIL = "cat/<script>alert('x')</script>.png"
THRESHOLD = 0.8


def make_inputs(gate_passed: bool = True) -> ReportInputs:
    """A tiny but complete cleaning run: 24 ok rows, 3 quarantined, drops of several kinds."""
    rng = np.random.default_rng(0)
    n_ok = 24
    pixels = rng.integers(0, 256, size=(n_ok, 1, 8, 8), dtype=np.uint8)
    labels = np.arange(n_ok) % 3
    ok = pd.DataFrame(
        {
            "sample_id": [f"train/{i}" for i in range(n_ok)],
            "split": ["test" if i >= 20 else "train" for i in range(n_ok)],
            "label": labels,
            "status": "ok",
            "reason": None,
            "detail": None,
            "row": np.arange(n_ok),
        }
    )
    ok.loc[5, "sample_id"] = EVIL
    quarantined = pd.DataFrame(
        {
            "sample_id": ["bad/empty.png", "bad/<b>trunc</b>.png", "bad/notes.txt"],
            "split": "train",
            "label": [0, 1, None],
            "status": "quarantined",
            "reason": ["not_an_image", "truncated", "format_not_allowed"],
            "detail": ["zero-byte file", "decoder ran out of data <EOF>", "extension .txt"],
            "row": None,
        }
    )
    m = pd.concat([ok, quarantined], ignore_index=True)
    n = len(m)
    m["source"] = "test"
    m["label"] = pd.array(m["label"], dtype="Int32")
    m["label_name"] = [CLASSES[int(v)] if pd.notna(v) else None for v in m["label"]]
    m["width"] = 8
    m["height"] = 8
    m["channels"] = 1
    m["orig_mode"] = "L"
    m["pixel_sha256"] = [f"sha{i}" for i in range(n)]
    m["row"] = pd.array(m["row"], dtype="Int64")
    is_ok = (m["status"] == "ok").to_numpy()
    loss = np.where(is_ok, np.linspace(0.0, 1.0, n), np.nan)
    loss[5] = 0.995  # the sample id with <script> is the top suspect, so it is rendered
    loss[7] = 0.99
    m["loss_score"] = loss
    m["aum_score"] = np.where(is_ok, rng.normal(size=n), np.nan)
    # duplicates: group 0 = rows 1, 4 (label conflict), group 1 = rows 2, 22 (train/test leak)
    m["dup_group"] = pd.array([0 if i in (1, 4) else 1 if i in (2, 22) else None for i in range(n)], dtype="Int64")
    drop = pd.Series([None] * n, dtype=object)
    drop[~is_ok] = m.loc[~is_ok, "reason"]
    drop[[1, 4]] = "conflicting_duplicate"
    drop[2] = "split_leak"
    suspected = is_ok & (m["loss_score"].fillna(-1).to_numpy() >= THRESHOLD)
    if gate_passed:
        drop[suspected & drop.isna().to_numpy()] = "suspected_label_error"
    m["drop_reason"] = drop
    m["keep"] = drop.isna().to_numpy()
    m["suspected"] = suspected if gate_passed else np.zeros(n, bool)
    m["suggested_label"] = pd.array(np.where(is_ok, (labels.tolist() + [0] * 3), None), dtype="Int32")
    m["suggested_label"] = pd.array([(int(v) + 1) % 3 if s else v for v, s in zip(m["suggested_label"], suspected, strict=True)], dtype="Int32")

    dups = pd.DataFrame(
        {
            "group_id": [0, 0, 1, 1],
            "sample_id": [m.sample_id[1], m.sample_id[4], m.sample_id[2], m.sample_id[22]],
            "kind": ["exact", "exact", "near", "near"],
            "distance": np.array([0, 0, 0, 3], dtype=np.int16),
            "is_representative": [True, False, True, False],
            "pixel_sha256": ["a", "a", "b", "c"],
            "label": np.array([1, 2, 2, 1], dtype=np.int32),
            "split": ["train", "train", "train", "test"],
            "label_conflict": [True, True, True, True],
            "cross_split": [False, False, True, True],
        }
    )
    dups.loc[2:, "label_conflict"] = False
    roc = {
        "loss": pd.DataFrame({"fpr": [0, 0.1, 1], "tpr": [0, 0.9, 1]}),
        "aum": pd.DataFrame({"fpr": [0, 0.3, 1], "tpr": [0, 0.6, 1]}),
    }
    gate = {
        "scorer": "loss",
        "passed": gate_passed,
        "auroc": 0.95 if gate_passed else 0.71,
        "min_auroc": 0.9,
        "reason": "AUROC reaches the minimum" if gate_passed else "AUROC 0.71 is below validate.min_auroc 0.9",
    }
    validation = {
        "noise": {"kind": "symmetric", "rate": 0.1, "seed": 0, "flipped": 3, "n": n_ok},
        "scorers": {
            "loss": {"auroc": gate["auroc"], "ap": 0.8, "precision_at_k": 0.67, "k": 3, "n": n_ok, "nonfinite": 0},
            "aum": {"auroc": 0.6, "ap": 0.3, "precision_at_k": 0.33, "k": 3, "n": n_ok, "nonfinite": 0},
        },
        "best": "loss",
        "gate": gate,
        "run": {"device": "cpu", "train_seconds": 1.5, "scorer_seconds": {"loss": 0.1, "train": 1.5}, "failures": {}},
        "params_digest": "vvvv1111",
    }
    keep = m["keep"].to_numpy()
    clean = {
        "rows": n,
        "kept": int(keep.sum()),
        "dropped": int((~keep).sum()),
        "scorer": "loss",
        "threshold": THRESHOLD,
        "target_precision": 0.9,
        "score_action": "drop",
        "gate": {"passed": gate_passed, "reason": gate["reason"]},
        "params_digest": "cccc2222",
    }
    return ReportInputs(
        manifest=m[manifest_schema(SCORERS).names],
        classes=CLASSES,
        pixels=pixels,
        duplicates=dups,
        validation=validation,
        roc=roc,
        ingest={"rows": n, "ok": n_ok, "quarantined": 3, "image_size": [8, 8], "channels": 1, "params_digest": "iiii"},
        dedup={"groups": 2, "method": "phash", "max_distance": 4, "params_digest": "dddd"},
        score={"device": "cpu", "train_seconds": 2.0, "scorer_seconds": {"loss": 0.1, "aum": 0.2}, "params_digest": "ssss"},
        clean=clean,
        params_digests={"manifest": "mmmm"},
    )


@pytest.fixture(scope="module")
def passed():
    inputs = make_inputs(True)
    return inputs, build_report(inputs, ReportOptions(top_suspects=10, duplicate_groups=5))


@pytest.fixture(scope="module")
def failed():
    inputs = make_inputs(False)
    return inputs, build_report(inputs, ReportOptions(top_suspects=10, duplicate_groups=5))


def test_every_section_is_present(passed):
    _, report = passed
    for sid in SECTION_IDS:
        assert f'<section id="{sid}">' in report.html


def test_html_is_self_contained(passed, failed):
    for _, report in (passed, failed):
        page = report.html
        lower = page.lower()
        for needle in ("http://", "https://", "//cdn", 'src="http', "<link", "@import", "url("):
            assert needle not in lower, needle
        srcs = re.findall(r'src="([^"]*)"', page)
        assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
        # figures (class balance, ROC, histograms) + top-suspect tiles + duplicate members
        assert len(srcs) >= 3 + 10 + 4
        png = base64.b64decode(srcs[0].split(",", 1)[1])
        assert png.startswith(b"\x89PNG")
        assert len(page) < 3_000_000


def test_user_strings_are_escaped(passed):
    _, report = passed
    assert "<script>" not in report.html
    assert "&lt;script&gt;alert(" in report.html
    assert "<b>trunc</b>" not in report.html and "&lt;b&gt;trunc&lt;/b&gt;" in report.html
    assert "<script>" not in report.markdown and "&lt;script&gt;" in report.markdown


def test_gate_text_only_when_the_gate_failed(passed, failed):
    assert GATE_FAILED_TEXT not in passed[1].html and GATE_FAILED_TEXT not in passed[1].markdown
    assert "Validation gate passed" in passed[1].html
    assert GATE_FAILED_TEXT in failed[1].html and GATE_FAILED_TEXT in failed[1].markdown
    assert "AUROC 0.71 is below validate.min_auroc 0.9" in failed[1].html
    assert failed[1].metrics["gate_passed"] is False and passed[1].metrics["gate_passed"] is True
    assert failed[1].metrics["dropped_by_score"] == 0


def test_metrics_match_the_manifest(passed):
    inputs, report = passed
    m = inputs.manifest
    dropped = m[~m["keep"]]
    expected_reasons = dropped["drop_reason"].value_counts().to_dict()
    metrics = report.metrics
    assert metrics["rows"] == len(m)
    assert metrics["kept"] == int(m["keep"].sum())
    assert metrics["dropped"] == len(dropped)
    assert metrics["quarantined"] == int((m["status"] == "quarantined").sum())
    assert metrics["dropped_by_reason"] == expected_reasons
    assert metrics["dropped_by_score"] == expected_reasons.get("suspected_label_error", 0) > 0
    assert metrics["best_scorer"] == "loss" and metrics["best_auroc"] == inputs.validation["scorers"]["loss"]["auroc"]
    dups = inputs.duplicates
    assert metrics["duplicate_groups"] == dups["group_id"].nunique()
    assert metrics["label_conflict_groups"] == dups.loc[dups.label_conflict, "group_id"].nunique()
    assert metrics["cross_split_groups"] == dups.loc[dups.cross_split, "group_id"].nunique()
    assert metrics["split_leaks_dropped"] == expected_reasons.get("split_leak", 0)
    json.dumps(metrics, allow_nan=False)


def test_markdown_has_the_counts(passed):
    inputs, report = passed
    m, md = inputs.manifest, report.markdown
    assert f"| rows in | {len(m)} |" in md
    assert f"| kept | {int(m['keep'].sum())} |" in md
    assert f"| dropped | {int((~m['keep']).sum())} |" in md
    for code, count in m.loc[~m["keep"], "drop_reason"].value_counts().items():
        assert re.search(rf"^\| {code} \| .* \| {count} \|$", md, re.M), code
    ok = m[m.status == "ok"]
    for i, name in enumerate(CLASSES):
        before = int((ok.label == i).sum())
        after = int(((ok.label == i) & ok.keep).sum())
        assert f"| {name} | {before} | {after} | {before - after} |" in md
    assert "http" not in md


def test_top_suspects_are_the_highest_scores(passed):
    inputs, report = passed
    m = inputs.manifest
    section = report.html.split('<section id="top-suspects">')[1].split("</section>")[0].replace("<wbr>", "")
    top = m[m.status == "ok"].sort_values("loss_score", ascending=False)
    ids = [html.escape(s) for s in top.sample_id]
    assert section.count('class="tile') == 10
    assert section.index(f">{ids[0]}<") < section.index(f">{ids[1]}<") < section.index(f">{ids[9]}<")
    assert f">{ids[10]}<" not in section
    assert "dropped: suspected_label_error" in section


def test_duplicate_conflicts_come_first_and_quarantine_table(passed):
    _, report = passed
    section = report.html.split('<section id="duplicate-groups">')[1].split("</section>")[0].replace("<wbr>", "")
    assert "label conflict" in section and "cross-split" in section
    assert "dropped: conflicting_duplicate" in section and "dropped: split_leak" in section
    assert section.index("group 0") < section.index("group 1")
    q = report.html.split('<section id="quarantined">')[1].split("</section>")[0]
    assert "3 rows were quarantined" in q and "decoder ran out of data &lt;EOF&gt;" in q


def test_missing_manifest_columns_and_bad_rows_are_errors():
    inputs = make_inputs()
    with pytest.raises(MemcleanError, match="lacks columns"):
        build_report(ReportInputs(manifest=inputs.manifest.drop(columns=["keep"])))
    short = ReportInputs(manifest=inputs.manifest, classes=CLASSES, pixels=inputs.pixels[:3])
    with pytest.raises(MemcleanError, match="outside pixels.npy"):
        build_report(short)


def test_options_are_checked():
    for bad in (-1, 2.5, True, "48"):
        with pytest.raises(MemcleanError, match="report.top_suspects must be"):
            ReportOptions(top_suspects=bad)


def test_missing_reports_show_na():
    inputs = make_inputs()
    bare = ReportInputs(manifest=inputs.manifest, classes=CLASSES, pixels=inputs.pixels, duplicates=inputs.duplicates)
    report = build_report(bare)
    for sid in SECTION_IDS:
        assert f'id="{sid}"' in report.html
    assert "n/a" in report.html and report.metrics["gate_passed"] is None


def test_thumbnails_upscale_small_images_with_nearest_neighbour():
    from io import BytesIO

    from PIL import Image

    digit = np.arange(64, dtype=np.uint8).reshape(1, 8, 8)
    img = Image.open(BytesIO(base64.b64decode(image_data_uri(digit).split(",", 1)[1])))
    assert img.size == (72, 72)
    assert np.array_equal(np.asarray(img)[::9, ::9], digit[0])
    rgb = np.zeros((3, 300, 200), np.uint8)
    img = Image.open(BytesIO(base64.b64decode(image_data_uri(rgb).split(",", 1)[1])))
    assert max(img.size) == 72 and img.mode == "RGB"


# --------------------------------------------------------------------------- the stage


def write_stage_inputs(work: Path, inputs: ReportInputs) -> None:
    data = work / "data"
    write_parquet(
        inputs.manifest,
        data / "clean/manifest.parquet",
        manifest_schema(SCORERS),
        {"classes": CLASSES, "params_digest": "mmmm"},
    )
    save_npy(np.asarray(inputs.pixels), data / "interim/pixels.npy")
    write_parquet(inputs.duplicates, data / "interim/duplicates.parquet", DUPLICATES_SCHEMA)
    write_json(inputs.validation, data / "reports/validation.json")
    for name, frame in inputs.roc.items():
        (data / "reports/roc").mkdir(parents=True, exist_ok=True)
        frame.to_csv(data / f"reports/roc/{name}.csv", index=False)
    write_json(dict(inputs.ingest), data / "reports/ingest.json")
    write_json(dict(inputs.dedup), data / "reports/dedup.json")
    write_json(dict(inputs.score), data / "reports/score.json")
    write_json(dict(inputs.clean), data / "reports/clean.json")


def run_report(work: Path, params: dict) -> subprocess.CompletedProcess:
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}", "MEMCLEAN_PROGRESS": "0"}
    env.pop("MEMCLEAN_PARAMS", None)
    return subprocess.run(
        [sys.executable, "-m", "stages.report"], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )


def test_report_stage_writes_the_outputs(tmp_path):
    inputs = make_inputs()
    write_stage_inputs(tmp_path, inputs)
    proc = run_report(tmp_path, {"report": {"top_suspects": 6, "duplicate_groups": 2}})
    assert proc.returncode == 0, proc.stderr
    reports = tmp_path / "data/reports"
    page = (reports / "audit.html").read_text(encoding="utf-8")
    assert all(f'id="{sid}"' in page for sid in SECTION_IDS)
    assert "https://" not in page and "http://" not in page
    md = (reports / "audit.md").read_text(encoding="utf-8")
    assert f"| rows in | {len(inputs.manifest)} |" in md
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["rows"] == len(inputs.manifest) and metrics["kept"] == int(inputs.manifest["keep"].sum())
    assert metrics["params_digest"]
    assert not [p for p in reports.iterdir() if p.name.endswith(".tmp")]


def test_report_stage_errors_are_one_line(tmp_path):
    inputs = make_inputs()
    write_stage_inputs(tmp_path, inputs)
    (tmp_path / "data/clean/manifest.parquet").unlink()
    proc = run_report(tmp_path, {"report": {"top_suspects": 6}})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("memclean report: error:")]
    assert len(errors) == 1 and "manifest.parquet does not exist" in errors[0], proc.stderr
    assert not (tmp_path / "data/reports/audit.html").exists()

    write_stage_inputs(tmp_path, inputs)
    proc = run_report(tmp_path, {"report": {"top_suspect": 6}})
    assert proc.returncode == 1 and "unknown report params" in proc.stderr and "Traceback" not in proc.stderr
