"""The audit report: self-contained HTML, Markdown and metrics, and the ``report`` stage."""

from __future__ import annotations

import base64
import html
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from markupsafe import escape

from conftest import REPO
from memclean.artifacts import influence_frame, noise_matrix_report
from memclean.errors import MemcleanError
from memclean.io import PIXELS_DIGEST_KEY, array_digest, save_npy, write_json, write_parquet
from memclean.metrics import measured_on
from memclean.options import SECTIONS, parse_params
from memclean.policy import NoiseEstimate
from memclean.report import (
    GATE_FAILED_TEXT,
    INFLUENCE_ENABLE,
    INFLUENCE_OFF_TEXT,
    SECTION_IDS,
    Report,
    ReportInputs,
    ReportOptions,
    build_report,
    image_data_uri,
)
from memclean.schema import DUPLICATES_SCHEMA, INFLUENCE_SCHEMA, manifest_schema

CLASSES = ["zero", "one", "two"]
SCORERS = ["loss", "aum"]
EVIL = "cat/<script>alert('x')</script>.png"
THRESHOLD = 0.8
COMMIT = "0123456789abcdef0123456789abcdef01234567 + uncommitted changes"
PARAMS = {
    "ingest": {"source": "imagefolder", "root": "/data/pets", "classes": None, "allowed_formats": ["PNG", "JPEG"]},
    "score": {"device": "auto", "trainer": {"epochs": 20, "lr": 0.05}, "scorers": {"loss": {}, "el2n": {"early": 0.2}}},
    "inject": None,
    "report": {"top_suspects": 10, "duplicate_groups": 5},
}
#: Confident learning's joint, [given][true]: 4 of 24 labels estimated wrong.
JOINT = [[7, 1, 0], [0, 6, 2], [1, 0, 7]]
GHOST = "ghost/9"  # an influencer the manifest does not have
#: clean.json's advice when the gate failed (gate_advice's kind of lines).
ADVICE = [
    "aum reaches AUROC 0.95: set validate.scorer: best (or clean.scorer: aum)",
    "nothing was dropped by score; the 5 rows above the threshold are only flagged (suspected)",
]


def make_influence(ids: list[str]) -> pd.DataFrame:
    """Pairs by position over ``ids``: held-out rows 20..23 and their training influencers (rank 2 for row 20)."""
    table = pd.DataFrame(
        {
            "target": [20, 20, 21, 22, 23],
            "source": [3, 6, 5, 2, len(ids) - 1],
            "rank": [1, 2, 1, 1, 1],
            "influence": [0.9, 0.2, 0.45, 0.7, 0.1],
            "se": [0.05, 0.04, 0.1, 0.08, np.nan],
            "n_in": [10, 10, 9, 11, 8],
            "n_out": [6, 6, 7, 5, 8],
        }
    )
    return influence_frame(table, np.asarray(ids, dtype=object))


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
    m["suspected"] = suspected  # recorded whatever the gate says; only dropped when it passed
    m["suspicion"] = ["likely_mislabeled" if flag else None for flag in suspected]
    m["suggested_label"] = pd.array(np.where(is_ok, (labels.tolist() + [0] * 3), None), dtype="Int32")
    m["suggested_label"] = pd.array(
        [(int(v) + 1) % 3 if s else v for v, s in zip(m["suggested_label"], suspected, strict=True)], dtype="Int32"
    )
    m["suggested_confidence"] = np.where(suspected, 0.875, np.nan)

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
            "loss": {"auroc": gate["auroc"], "ap": 0.8, "precision_at_k": 0.67, "k": 3, "n": 21, "nonfinite": 0}
            | {"auroc_all_rows": 0.88},
            "aum": {"auroc": 0.6, "ap": 0.3, "precision_at_k": 0.33, "k": 3, "n": 21, "nonfinite": 0}
            | {"auroc_all_rows": 0.55},
        },
        "measured_on": measured_on("confident_learning", 21, 3, 3),
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
        "suspected": int(suspected.sum()),
        "likely_mislabeled": int(suspected.sum()),
        "atypical": 0,
        "decision_rule": "score_and_confident_learning",
        "drop_cap": 5 if gate_passed else None,
        "capped": 0,
        "heldout_flagged_not_dropped": 0,
        "drop_heldout_by_score": True,
        **NoiseEstimate(4, n_ok).to_dict(),
        "advice": [] if gate_passed else ADVICE,
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
        score={
            "device": "cpu",
            "train_seconds": 2.0,
            "scorer_seconds": {"loss": 0.1, "aum": 0.2},
            "params_digest": "ssss",
        },
        clean=clean,
        params_digests={"manifest": "mmmm"},
        source="imagefolder",
        root="/data/pets",
        commit=COMMIT,
        params=PARAMS,
        influence=make_influence([*m["sample_id"][:n_ok], GHOST]),
        noise_matrix=noise_matrix_report(pd.DataFrame(JOINT), CLASSES),
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
    section = html.unescape(section)  # compare text, whatever entity the escaper picks for a quote
    top = m[m.status == "ok"].sort_values("loss_score", ascending=False)
    ids = list(top.sample_id)
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


# --------------------------------------------------------------------------- golden output, escaping, descriptions

GOLDEN = Path(__file__).parent / "golden"
DESCRIPTIONS = {"loss": "mean cross-entropy of the given label over checkpoints", "curvature": "not validated here"}


class _VisibleText(HTMLParser):
    """Text nodes of a page outside <style>/<script>, each with its whitespace collapsed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._hidden += tag in ("style", "script")

    def handle_endtag(self, tag: str) -> None:
        self._hidden -= tag in ("style", "script")

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        if text and not self._hidden:
            self.lines.append(text)


def visible_text(page: str) -> list[str]:
    parser = _VisibleText()
    parser.feed(page)
    parser.close()
    return parser.lines


def section_of(page: str, sid: str) -> str:
    return page.split(f'<section id="{sid}">')[1].split("</section>")[0]


@pytest.fixture(scope="module")
def described() -> tuple[ReportInputs, Report]:
    inputs = replace(make_inputs(True), scorer_descriptions=DESCRIPTIONS)
    return inputs, build_report(inputs, ReportOptions(top_suspects=10, duplicate_groups=5))


def test_golden_output(described: tuple[ReportInputs, Report]) -> None:
    """Visible text of the page and the metrics match tests/golden/ (not the images: their bytes
    depend on library versions). After a deliberate change, rewrite the files with
    ``MEMCLEAN_UPDATE_GOLDEN=1 pytest tests/test_report.py -k golden`` and review their diff."""
    _, report = described
    text = "\n".join(visible_text(report.html)) + "\n"
    metrics = json.dumps(report.metrics, indent=2, sort_keys=True, allow_nan=False) + "\n"
    text_file, metrics_file = GOLDEN / "report_text.txt", GOLDEN / "report_metrics.json"
    if os.environ.get("MEMCLEAN_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        text_file.write_text(text, encoding="utf-8")
        metrics_file.write_text(metrics, encoding="utf-8")
    assert text == text_file.read_text(encoding="utf-8")
    assert json.loads(metrics) == json.loads(metrics_file.read_text(encoding="utf-8"))


def test_every_data_string_is_escaped() -> None:
    inputs = make_inputs(True)
    m = inputs.manifest.copy()
    sample = '<script>x</script>&"'  # row 5: the top suspect
    member = "dup/<i>1</i>'.png"  # row 1: a duplicate-group member
    quarantined = "bad/<b>q</b>.png"  # row 24: quarantined
    klass = "<b>zero</b>"
    detail = "<img src=x onerror=alert(1)>"
    m.loc[5, "sample_id"], m.loc[1, "sample_id"], m.loc[24, "sample_id"] = sample, member, quarantined
    m.loc[24, "detail"] = detail
    classes = [klass, *CLASSES[1:]]
    m["label_name"] = [classes[int(v)] if pd.notna(v) else None for v in m["label"]]
    dups = inputs.duplicates.assign(sample_id=inputs.duplicates["sample_id"].replace({"train/1": member}))
    failure, method, reason, description = "<svg onload=1>", "<u>phash</u>", "<em>why</em>", "<i>loss</i> & a|b"
    matrix_class, ghost = "t|<wo>&", "ghost/<i>9</i>|"  # a class name of the noise matrix, an influencer's id
    advice, rule, where = "try <b>`x|y`</b> & <script>z</script>", "<i>new_rule</i>", "rows <u>not</u> | flagged"
    validation = {**inputs.validation, "run": {**inputs.validation["run"], "failures": {"aum": failure}}}
    validation["gate"] = {**validation["gate"], "reason": reason}
    validation["measured_on"] = {**validation["measured_on"], "description": where}
    evil_inputs = replace(
        inputs,
        manifest=m,
        classes=classes,
        duplicates=dups,
        validation=validation,
        dedup={**inputs.dedup, "method": method},
        clean={**inputs.clean, "gate": {"passed": True}, "advice": [advice], "decision_rule": rule},
        scorer_descriptions={"loss": description},
        influence=make_influence([*m["sample_id"][:24], ghost]),
        noise_matrix=noise_matrix_report(pd.DataFrame(JOINT), [klass, "one", matrix_class]),
    )
    report = build_report(evil_inputs, ReportOptions(top_suspects=10, duplicate_groups=5))
    page, text = report.html, "\n".join(visible_text(report.html))
    strings: tuple[str, ...] = (sample, member, quarantined, klass, detail, failure, method, reason, description)
    strings += (matrix_class, ghost, advice, rule, where)
    for value in strings:
        assert value not in page, value
        assert str(escape(value)) in page, value
        assert value in text, value
    assert f'title="{escape(sample)}"' in page and f'title="{escape(member)}"' in page
    assert f'title="{escape(ghost)}"' in section_of(page, "influence-pairs")
    matrix = section_of(page, "noise-matrix")
    assert f"<th>{escape(klass)}</th>" in matrix and f"<th>{escape(matrix_class)}</th>" in matrix
    assert sample in html.unescape(section_of(page, "influence-pairs"))  # the rank-1 influencer of train/21
    shown = (sample, member, quarantined, klass, detail, reason, description, matrix_class, ghost, advice, rule, where)
    for value in shown:  # what the Markdown shows
        md = html.escape(value, quote=False).replace("|", "\\|")
        assert md in report.markdown, value
        assert "<" not in value or value not in report.markdown, value


def test_scorer_descriptions_show_in_the_validation_table(
    passed: tuple[ReportInputs, Report], described: tuple[ReportInputs, Report]
) -> None:
    _, report = described
    section = section_of(report.html, "validation")
    rows = re.findall(r"<tr>(.*?)</tr>", section.split("<table>")[1].split("</table>")[0], re.S)
    cells = [re.findall(r"<t[hd]>(.*?)</t[hd]>", row, re.S) for row in rows]
    assert cells[0][-1] == "what it measures"
    assert cells[1][0] == "<b>loss</b>" and cells[1][-1] == DESCRIPTIONS["loss"]
    assert cells[2][0] == "aum" and cells[2][-1] == ""  # no description: an empty cell
    assert "not validated here" not in report.html  # a description of a scorer not in the table
    md = report.markdown
    assert re.search(r"^\| scorer \| AUROC \| AUROC \(all rows\) \| AP \| P@k \| k \| what it measures \|$", md, re.M)
    assert re.search(rf"^\| loss \(best\) \| .* \| {DESCRIPTIONS['loss']} \|$", md, re.M)
    assert re.search(r"^\| aum \| 0\.6000 \| 0\.5500 \| 0\.3000 \| 0\.3300 \| 3 \|  \|$", md, re.M)
    # Without descriptions the column is left out.
    _, plain = passed
    assert "what it measures" not in plain.html and "what it measures" not in plain.markdown


# --------------------------------------------------------------------------- suspicion, gate advice, AUROC columns


def older(inputs: ReportInputs) -> ReportInputs:
    """The inputs as a run from before suspicion classes, gate advice and ``measured_on`` existed."""
    new = {"likely_mislabeled", "atypical", "decision_rule", "drop_cap", "capped", "heldout_flagged_not_dropped"}
    new |= {"advice", "drop_heldout_by_score", "suspected"}
    clean = {k: v for k, v in without_estimate(inputs.clean).items() if k not in new}
    scorers = {
        n: {k: v for k, v in r.items() if k != "auroc_all_rows"} for n, r in inputs.validation["scorers"].items()
    }
    validation = {k: v for k, v in inputs.validation.items() if k != "measured_on"} | {"scorers": scorers}
    return replace(inputs, manifest=inputs.manifest.drop(columns=["suspicion"]), clean=clean, validation=validation)


def test_gate_failed_shows_why_and_what_to_try(
    passed: tuple[ReportInputs, Report], failed: tuple[ReportInputs, Report]
) -> None:
    _, report = failed
    summary = section_of(report.html, "summary")
    box = summary.split('<div class="gate fail advice">')[1].split("</ul>")[0]
    assert "Why: AUROC 0.71 is below validate.min_auroc 0.9" in box
    assert re.findall(r"<li>(.*?)</li>", box) == [str(escape(a)) for a in ADVICE]
    assert summary.index("gate fail advice") < summary.index('class="cards"')  # before everything else
    rows = dict(table_rows(summary, "Suspected by score")[1:])
    assert rows["likely mislabeled (dropped when the gate passes)"] == "5"
    assert rows["dropped by score"].startswith("0 (the gate failed")
    md = report.markdown.split("## Summary")[1].split("\n## ")[0]
    assert "Why: AUROC 0.71 is below validate.min_auroc 0.9" in md
    assert "What to try:\n\n" + "".join(f"- {a}\n" for a in ADVICE) in md
    # The gate passed: no advice, no "why".
    for page in (passed[1].html, passed[1].markdown):
        assert "What to try" not in page and "Why:" not in page


def test_cleaning_summary_shows_the_classes_rule_and_noise_rate(passed: tuple[ReportInputs, Report]) -> None:
    inputs, report = passed
    rows = dict(table_rows(section_of(report.html, "summary"), "Suspected by score")[1:])
    lo, hi = inputs.clean["noise_rate_ci95"]
    assert rows["likely mislabeled (dropped when the gate passes)"] == "5"
    assert rows["atypical (kept, flagged)"] == "0"
    assert rows["decision rule"].startswith("likely mislabeled = score at or above the threshold and confident")
    assert rows["estimated noise rate (confident learning)"] == f"16.7% (95% interval {lo:.1%}–{hi:.1%})"
    assert rows["estimated label errors"] == "4"
    md = report.markdown.split("### Suspected by score")[1].split("\n## ")[0]
    assert "| atypical (kept, flagged) | 0 |" in md
    assert f"| estimated noise rate (confident learning) | 16.7% (95% interval {lo:.1%}–{hi:.1%}) |" in md
    assert report.metrics["likely_mislabeled"] == 5 and report.metrics["atypical"] == 0
    assert "estimated_noise_rate" not in report.metrics  # the same number as noise_rate
    # Confident learning did not run: the rule in words, no interval.
    plain = replace(inputs, clean={**inputs.clean, "decision_rule": "score_only", "noise_rate_ci95": None})
    page = build_report(plain).html
    rows = dict(table_rows(section_of(page, "summary"), "Suspected by score")[1:])
    assert "threshold alone" in rows["decision rule"]
    assert rows["estimated noise rate (confident learning)"] == "16.7%"


def test_top_suspects_carry_a_suspicion_badge() -> None:
    inputs = make_inputs(True)
    m = inputs.manifest.copy()
    m.loc[23, ["suspicion", "drop_reason", "keep"]] = ["atypical", None, True]  # suspected, kept
    report = build_report(replace(inputs, manifest=m), ReportOptions(top_suspects=10, duplicate_groups=5))
    section = html.unescape(section_of(report.html, "top-suspects"))
    tiles = section.split('<figure class="tile')[1:]
    by_id = {}
    for tile in tiles:
        found = re.search(r'title="([^"]*)"', tile)
        assert found
        by_id[found.group(1)] = tile
    assert '<span class="badge suspicion">atypical, kept</span>' in by_id["train/23"]
    assert '<span class="badge suspicion">likely mislabeled</span>' in by_id["train/7"]
    assert section.count('class="badge suspicion"') == 5  # the 5 suspected rows; the others have none
    assert report.metrics["likely_mislabeled"] == 4 and report.metrics["atypical"] == 1
    md = report.markdown.split("## Top suspects")[1].split("\n## ")[0]
    assert "| sample_id | given | suggested | score | status | suspicion |" in md
    assert re.search(r"^\| train/23 \| .* \| kept, flagged \| atypical, kept \|$", md, re.M)
    assert re.search(r"^\| train/7 \| .* \| likely mislabeled \|$", md, re.M)


def test_validation_table_has_both_auroc_columns(passed: tuple[ReportInputs, Report]) -> None:
    _, report = passed
    section = section_of(report.html, "validation")
    table = section.split("<table>")[1].split("</table>")[0]
    cells = [re.findall(r"<t[hd]>(.*?)</t[hd]>", row, re.S) for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)]
    assert cells[0][:4] == ["scorer", "AUROC", "AUROC (all rows)", "AP"]
    assert cells[1][:3] == ["<b>loss</b>", "0.9500", "0.8800"] and cells[2][:3] == ["aum", "0.6000", "0.5500"]
    sentence = "AUROC, AP and P@k are measured on 21 rows (3 injected flips, 3 suspected own label errors left out): "
    after = section.split("</table>")[1]
    assert f'<p class="note">{sentence}injected flips vs rows that confident_learning did not flag' in after
    md = report.markdown.split("## Validation")[1].split("\n## ")[0]
    assert "| scorer | AUROC | AUROC (all rows) | AP | P@k | k |" in md
    assert re.search(r"^\| loss \(best\) \| 0\.9500 \| 0\.8800 \| 0\.8000 \|", md, re.M)
    assert sentence in md


def test_older_inputs_without_the_new_keys_still_render(
    passed: tuple[ReportInputs, Report], failed: tuple[ReportInputs, Report]
) -> None:
    report = build_report(older(passed[0]), ReportOptions(top_suspects=10, duplicate_groups=5))
    for page in (report.html, report.markdown):
        assert "Suspected by score" not in page and "What to try" not in page
        assert "AUROC (all rows)" not in page and "are measured on" not in page
        assert "likely mislabeled" not in page and "atypical" not in page
    assert report.metrics["likely_mislabeled"] is None and report.metrics["atypical"] is None
    assert "| sample_id | given | suggested | score | status |" in report.markdown
    json.dumps(report.metrics, allow_nan=False)
    # An older failed run: the reason still shows, n/a where the new counts would be, no advice list.
    old_failed = build_report(older(failed[0]))
    summary = section_of(old_failed.html, "summary")
    assert "Why: AUROC 0.71 is below validate.min_auroc 0.9" in summary and "<li>" not in summary
    assert dict(table_rows(summary, "Suspected by score")[1:])["atypical (kept, flagged)"] == "n/a"
    assert "What to try" not in old_failed.markdown
    # Odd values (not a list, not two numbers) show as n/a rather than crash.
    odd = {**failed[0].clean, "advice": "not a list", "noise_rate_ci95": ["a"], "decision_rule": 3}
    rows = dict(
        table_rows(section_of(build_report(replace(failed[0], clean=odd)).html, "summary"), "Suspected by score")
    )
    assert rows["decision rule"] == "n/a"


# --------------------------------------------------------------------------- full ids, provenance, splits, params


def table_rows(fragment: str, title: str) -> list[list[str]]:
    """The cells of the HTML table that follows ``<h3>{title}</h3>`` (header row first)."""
    table = fragment.split(f"<h3>{title}</h3>")[1].split("</table>")[0]
    return [re.findall(r"<t[hd]>(.*?)</t[hd]>", row, re.S) for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)]


def test_sample_ids_are_shown_in_full() -> None:
    inputs = make_inputs(True)
    m = inputs.manifest.copy()
    long_id = "train/" + "/".join(f"folder_{i:02d}" for i in range(12)) + "/a-very-long-file-name_000001.png"
    m.loc[5, "sample_id"] = long_id  # the top suspect
    report = build_report(replace(inputs, manifest=m), ReportOptions(top_suspects=10, duplicate_groups=5))
    page = report.html
    assert f'<div class="sid" title="{long_id}">{long_id}</div>' in page
    css = page.split("<style>")[1].split("</style>")[0]
    assert "ellipsis" not in css and "text-overflow" not in css and "nowrap" not in css
    sid_rule = re.search(r"\.tile \.sid \{([^}]*)\}", css)
    assert sid_rule and "overflow-wrap: anywhere" in sid_rule.group(1) and "overflow: hidden" not in sid_rule.group(1)
    assert f"| {long_id} |" in report.markdown


def test_provenance_shows_source_root_and_commit(passed: tuple[ReportInputs, Report]) -> None:
    inputs, report = passed
    expected = [["source", "imagefolder"], ["root", "/data/pets"], ["commit", COMMIT]]
    assert table_rows(section_of(report.html, "summary"), "Provenance")[1:] == expected
    for label, value in expected:
        assert f"| {label} | {value} |" in report.markdown
    bare = build_report(replace(inputs, source=None, root=None, commit=None))
    assert table_rows(section_of(bare.html, "summary"), "Provenance")[1:] == [
        ["source", "n/a"],
        ["root", "n/a"],
        ["commit", "n/a"],
    ]
    assert "| commit | n/a |" in bare.markdown


def expected_split_rows(m: pd.DataFrame) -> dict[str, list[str]]:
    """Rows, ok, quarantined, kept and dropped per split, counted straight from the manifest."""
    out = {}
    for split, part in [*m.groupby("split"), ("total", m)]:
        keep = part["keep"].astype(bool)
        counts = [len(part), (part["status"] == "ok").sum(), (part["status"] == "quarantined").sum()]
        out[str(split)] = [str(int(c)) for c in [*counts, keep.sum(), (~keep).sum()]]
    return out


def test_per_split_counts_match_the_manifest(passed: tuple[ReportInputs, Report]) -> None:
    inputs, report = passed
    expected = expected_split_rows(inputs.manifest)
    assert set(expected) == {"train", "test", "total"}
    rows = table_rows(section_of(report.html, "summary"), "Rows by split")
    assert rows[0] == ["split", "rows", "ok", "quarantined", "kept", "dropped"]
    assert [r[0] for r in rows[1:]] == ["train", "test", "total"]  # training splits first, the total last
    assert {r[0]: r[1:] for r in rows[1:]} == expected
    md = report.markdown.split("### Rows by split")[1].split("###")[0]
    assert "| split | rows | ok | quarantined | kept | dropped |" in md
    for split, counts in expected.items():
        assert f"| {split} | {' | '.join(counts)} |" in md, split
    assert expected["total"] == [
        str(report.metrics[k]) for k in ("rows", "ok", "quarantined", "kept", "dropped")
    ]  # the total agrees with the headline numbers
    # Without a split column every row counts under n/a.
    nosplit = build_report(ReportInputs(manifest=inputs.manifest.drop(columns=["split"]), classes=CLASSES))
    rows = table_rows(section_of(nosplit.html, "summary"), "Rows by split")
    assert [r[0] for r in rows[1:]] == ["n/a", "total"] and rows[1][1:] == rows[2][1:]


def test_param_values_show_as_dotted_keys(passed: tuple[ReportInputs, Report]) -> None:
    _, report = passed
    section = section_of(report.html, "params")
    assert section.index("<h3>Digests</h3>") < section.index("<h3>Values</h3>")
    assert '<span class="mono">iiii</span>' in section  # the digests are still there
    cells = {
        name: table_rows(section.replace("<h4>", "<h3>").replace("</h4>", "</h3>"), name)
        for name in ("ingest", "score", "report")
    }
    assert cells["score"][1:] == [
        ['<span class="mono">score.device</span>', "auto"],
        ['<span class="mono">score.trainer.epochs</span>', "20"],
        ['<span class="mono">score.trainer.lr</span>', "0.05"],
        ['<span class="mono">score.scorers.loss</span>', "{}"],
        ['<span class="mono">score.scorers.el2n.early</span>', "0.2"],
    ]
    assert cells["ingest"][1:] == [
        ['<span class="mono">ingest.source</span>', "imagefolder"],
        ['<span class="mono">ingest.root</span>', "/data/pets"],
        ['<span class="mono">ingest.classes</span>', "null"],
        ['<span class="mono">ingest.allowed_formats</span>', "[&#34;PNG&#34;, &#34;JPEG&#34;]"],
    ]
    assert "<h4>inject</h4>\n<p>n/a</p>" in section
    md = report.markdown.split("## Parameters")[1]
    assert md.index("### Digests") < md.index("### Values")
    for line in (
        "| score.trainer.epochs | 20 |",
        "| score.scorers.loss | {} |",
        "| ingest.classes | null |",
        '| ingest.allowed_formats | ["PNG", "JPEG"] |',
        "| report.top_suspects | 10 |",
    ):
        assert line in md, line
    assert "#### inject\n\nn/a\n" in md
    bare = build_report(replace(make_inputs(True), params={}))
    assert "<h3>Values</h3>\n<p>n/a</p>" in section_of(bare.html, "params")
    assert "### Values\n\nn/a\n" in bare.markdown


def test_new_strings_are_escaped() -> None:
    source, root, commit = "<b>src</b>", "/data/<script>x</script>|y", "abc<i>1</i> + uncommitted changes"
    key, value = "<u>k</u>", "<img src=x onerror=alert(1)>|&"
    params = {"score": {"trainer": {key: value}}, "<s>sec</s>": {"a": 1}}
    inputs = replace(make_inputs(True), source=source, root=root, commit=commit, params=params)
    report = build_report(inputs, ReportOptions(top_suspects=10, duplicate_groups=5))
    page, text = report.html, "\n".join(visible_text(report.html))
    for raw in (source, root, commit, f"score.trainer.{key}", value, "<s>sec</s>"):
        assert raw not in page, raw
        assert str(escape(raw)) in page, raw
        assert raw in text, raw
        md = html.escape(raw, quote=False).replace("|", "\\|")
        assert md in report.markdown, raw
        assert "<" not in raw or raw not in report.markdown, raw


# --------------------------------------------------------------------------- influence pairs, noise matrix

#: The rank-1 pairs of make_influence, strongest first: (target, source, source split, source label, influence ± se).
PAIRS = [
    ("train/20", "train/3", "train", "zero", "0.9000 ± 0.0500"),
    ("train/22", "train/2", "train", "two", "0.7000 ± 0.0800"),
    ("train/21", EVIL, "train", "two", "0.4500 ± 0.1000"),
    ("train/23", GHOST, "n/a", "n/a", "0.1000 ± n/a"),
]


def test_influence_pairs_are_shown_side_by_side(passed: tuple[ReportInputs, Report]) -> None:
    inputs, report = passed
    section = html.unescape(section_of(report.html, "influence-pairs"))
    assert "<h2>Strongest train → held-out influence pairs</h2>" in section
    pairs = section.split('<div class="pair">')[1:]
    assert len(pairs) == len(PAIRS)  # one pair per held-out target: its rank-1 influencer only
    label = dict(zip(inputs.manifest["sample_id"], inputs.manifest["label_name"], strict=True))
    for i, (pair, (target, source, split, source_label, value)) in enumerate(zip(pairs, PAIRS, strict=True)):
        assert f"<h3>#{i + 1} · influence {value}</h3>" in pair
        tiles = pair.split('<figure class="tile')[1:]
        assert len(tiles) == 2
        assert f">{target}<" in tiles[0] and "held-out (target)" in tiles[0] and "split test" in tiles[0]
        assert f"label <b>{label[target]}</b>" in tiles[0]
        assert f">{source}<" in tiles[1] and "influencer (source)" in tiles[1] and f"split {split}" in tiles[1]
        assert f"label <b>{source_label}</b>" in tiles[1]
    assert section.count('src="data:image/png;base64,') == 2 * len(PAIRS) - 1  # the ghost has no image
    assert 'class="noimg"' in pairs[3].split('<figure class="tile')[2]
    assert "models with / without the influencer: 10 / 6" in pairs[0]
    assert ">train/6<" not in section  # a rank-2 influencer
    assert "dropped: split" in pairs[1].replace("<wbr>", "")  # train/22 leaked from train/2: both dropped
    md = report.markdown.split("## Strongest train → held-out influence pairs")[1].split("\n## ")[0]
    header = "| # | held-out (target) | split | label | influencer (source) | split | label | influence ± se |"
    assert header in md
    for i, (target, source, split, source_label, value) in enumerate(PAIRS):
        cells = [str(i + 1), target, "test", label[target], source, split, source_label, value]
        line = "| " + " | ".join(html.escape(c, quote=False) for c in cells) + " |"
        assert line in md, line
    assert "train/6" not in md


def test_noise_matrix_is_shown(passed: tuple[ReportInputs, Report]) -> None:
    _, report = passed
    section = section_of(report.html, "noise-matrix")
    assert "scorer <b>confident_learning</b>, on out-of-sample probabilities" in section
    assert "estimates <b>4</b>" in section and "among 24 labels" in section and "<b>0.1667</b> (16.7%)" in section
    rows = re.findall(r"<tr>(.*?)</tr>", section, re.S)
    cells = [re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S) for row in rows]
    assert cells[0] == ["given ↓ / true →", *CLASSES, "rows", "noise rate"]
    for given, counts, row in zip(CLASSES, JOINT, cells[1:], strict=True):
        off = sum(counts) - counts[CLASSES.index(given)]
        assert row == [given, *map(str, counts), str(sum(counts)), f"{100 * off / sum(counts):.1f}%"]
    # Off-diagonal non-zero counts are highlighted, the diagonal and zeros are not.
    assert len(re.findall(r'<td class="num off">', section)) == 3  # 1 + 2 + 1 estimated errors
    assert len(re.findall(r'<td class="num diag">', section)) == 3
    md = report.markdown.split("## Estimated noise matrix")[1].split("\n## ")[0]
    assert "estimates 4 label errors among 24 labels: noise rate 0.1667 (16.7%)" in md
    assert "| given ↓ / true → | zero | one | two | rows | noise rate |" in md
    for line in (
        "| zero | 7 | **1** | 0 | 8 | 12.5% |",
        "| one | 0 | 6 | **2** | 8 | 25.0% |",
        "| two | **1** | 0 | 7 | 8 | 12.5% |",
    ):
        assert line in md, line
    assert report.metrics["estimated_label_errors"] == 4
    assert report.metrics["noise_rate"] == pytest.approx(4 / 24, abs=1e-6)


def without_estimate(clean: Mapping[str, Any]) -> dict[str, Any]:
    """clean.json without confident learning's noise estimate (noise_matrix.json missing or unavailable)."""
    drop = {"estimated_label_errors", "estimated_noise_rate", "noise_rate_ci95", "noise_estimate"}
    return {k: v for k, v in clean.items() if k not in drop}


def test_missing_or_empty_influence_and_noise_matrix(passed: tuple[ReportInputs, Report]) -> None:
    inputs, _ = passed
    # No files (a run from before the score stage wrote them): not available, no crash.
    old = build_report(replace(inputs, influence=None, noise_matrix=None, clean=without_estimate(inputs.clean)))
    for page in (old.html, old.markdown):
        assert "Influence pairs: not available (no influence.parquet" in page
        assert "Noise matrix: not available (no noise_matrix.json" in page
    assert old.metrics["estimated_label_errors"] is None and old.metrics["noise_rate"] is None
    # clean.json's estimate is the same quantity: it fills in for a missing noise_matrix.json.
    filled = build_report(replace(inputs, noise_matrix=None)).metrics
    assert filled["estimated_label_errors"] == 4 and filled["noise_rate"] == pytest.approx(4 / 24, abs=1e-6)
    # The scorers did not run: an empty table, and available: false with the reason.
    empty = influence_frame(None, np.asarray([], dtype=object))
    assert list(empty.columns) == INFLUENCE_SCHEMA.names and empty.empty
    off_inputs = replace(inputs, influence=empty, noise_matrix=noise_matrix_report(None, CLASSES))
    off = build_report(replace(off_inputs, clean=without_estimate(inputs.clean)))
    section = section_of(off.html, "influence-pairs")
    assert f"<p>{escape(INFLUENCE_OFF_TEXT)} <code>{escape(INFLUENCE_ENABLE)}</code>.</p>" in section
    assert 'class="pair"' not in section
    assert f"{INFLUENCE_OFF_TEXT} `score.scorers: {{fz_influence: {{}}}}`." in off.markdown
    assert "<p>Noise matrix: not available: confident_learning did not run.</p>" in section_of(off.html, "noise-matrix")
    assert "Noise matrix: not available: confident_learning did not run." in off.markdown
    assert off.metrics["estimated_label_errors"] is None and off.metrics["noise_rate"] is None
    json.dumps(off.metrics, allow_nan=False)
    # A matrix that is not k×k counts is not shown (and does not crash the report).
    unusable = {"available": True, "joint": [[1, 2]], "classes": ["a"]}
    bad = build_report(replace(inputs, noise_matrix=unusable, clean=without_estimate(inputs.clean)))
    assert "Noise matrix: not available: the file holds no given × true matrix" in bad.markdown
    assert bad.metrics["noise_rate"] is None


def test_noise_matrix_class_names_are_escaped(passed: tuple[ReportInputs, Report]) -> None:
    inputs, _ = passed
    names = ["<script>alert(1)</script>", 'a"|b&c', "<td>x</td>"]
    report = build_report(replace(inputs, noise_matrix=noise_matrix_report(pd.DataFrame(JOINT), names)))
    section = section_of(report.html, "noise-matrix")
    text = "\n".join(visible_text(section))
    for name in names:
        assert name not in section, name
        assert f"<th>{escape(name)}</th>" in section, name
        assert name in text, name
    md = report.markdown.split("## Estimated noise matrix")[1].split("\n## ")[0]
    escaped = [html.escape(n, quote=False).replace("|", "\\|") for n in names]
    assert "| given ↓ / true → | " + " | ".join(escaped) + " | rows | noise rate |" in md
    assert f"| {escaped[1]} | 0 | 6 | **2** | 8 | 25.0% |" in md
    assert "<script>" not in md and "<td>" not in md


# --------------------------------------------------------------------------- the stage


def write_stage_inputs(work: Path, inputs: ReportInputs) -> None:
    """What the earlier stages leave for the report (the manifest's metadata names the dataset)."""
    data = work / "data"
    pixels_digest = array_digest(np.asarray(inputs.pixels))
    write_parquet(
        inputs.manifest,
        data / "clean/manifest.parquet",
        manifest_schema(SCORERS),
        {
            "classes": CLASSES,
            "params_digest": "mmmm",
            PIXELS_DIGEST_KEY: pixels_digest,
            "source": "imagefolder",
            "root": "/data/pets",
        },
    )
    defaults = parse_params({})
    for name in SECTIONS:
        write_json(defaults.section(name), data / f"interim/params/{name}.json")
    save_npy(np.asarray(inputs.pixels), data / "interim/pixels.npy")
    write_parquet(inputs.duplicates, data / "interim/duplicates.parquet", DUPLICATES_SCHEMA)
    write_json(inputs.validation, data / "reports/validation.json")
    curves = [frame.assign(scorer=name)[["scorer", "fpr", "tpr"]] for name, frame in inputs.roc.items()]
    if curves:
        pd.concat(curves, ignore_index=True).to_csv(data / "reports/roc.csv", index=False)
    write_json(dict(inputs.ingest), data / "reports/ingest.json")
    write_json(dict(inputs.dedup), data / "reports/dedup.json")
    write_json(dict(inputs.score), data / "reports/score.json")
    write_json(dict(inputs.clean), data / "reports/clean.json")
    if inputs.influence is not None:
        write_parquet(inputs.influence, data / "reports/influence.parquet", INFLUENCE_SCHEMA)
    if inputs.noise_matrix is not None:
        write_json(dict(inputs.noise_matrix), data / "reports/noise_matrix.json")


def run_report(work: Path, params: dict) -> subprocess.CompletedProcess:
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}", "MEMCLEAN_PROGRESS": "0"}
    env["GIT_CEILING_DIRECTORIES"] = str(work.parent)  # `work` is no git checkout, whatever holds it
    env.pop("MEMCLEAN_PARAMS", None)
    return subprocess.run(
        [sys.executable, "-m", "stages.report"], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )


def test_report_stage_writes_the_outputs(tmp_path):
    inputs = make_inputs()
    write_stage_inputs(tmp_path, inputs)
    (tmp_path / "data/interim/params/inject.json").unlink()
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

    # Source and root from the manifest; no git checkout: commit n/a.
    summary = section_of(page, "summary")
    for label, value in (("source", "imagefolder"), ("root", "/data/pets"), ("commit", "n/a")):
        assert f"<tr><td>{label}</td><td>{value}</td></tr>" in summary, label
        assert f"| {label} | {value} |" in md, label
    # Every params section from data/interim/params/; the missing one shows n/a, with a warning.
    params = section_of(page, "params")
    epochs = parse_params({}).score.trainer.epochs
    assert f'<span class="mono">score.trainer.epochs</span></td><td>{epochs}</td>' in params
    assert f"| score.trainer.epochs | {epochs} |" in md
    assert "<h4>inject</h4>\n<p>n/a</p>" in params and "#### inject\n\nn/a\n" in md
    assert re.search(r"WARNING .*params/inject\.json not found", proc.stderr), proc.stderr
    assert all(f"<h4>{name}</h4>" in params for name in SECTIONS)

    # Same inputs, same bytes: no timestamp or wall-clock figure in the page or the Markdown.
    first = {name: (reports / name).read_bytes() for name in ("audit.html", "audit.md", "metrics.json")}
    again = run_report(tmp_path, {"report": {"top_suspects": 6, "duplicate_groups": 2}})
    assert again.returncode == 0, again.stderr
    assert {name: (reports / name).read_bytes() for name in first} == first

    # The score stage's influence pairs and noise matrix are in the page, the Markdown and the metrics.
    assert ">train/3<" in section_of(page, "influence-pairs") and "| 1 | train/20 | test |" in md
    assert '<td class="num off">2</td>' in section_of(page, "noise-matrix") and "| one | 0 | 6 | **2** |" in md
    assert metrics["estimated_label_errors"] == 4 and metrics["noise_rate"] == pytest.approx(4 / 24, abs=1e-6)
    # A run from before the score stage wrote them: not available, with a warning each.
    (reports / "influence.parquet").unlink()
    (reports / "noise_matrix.json").unlink()
    write_json(without_estimate(inputs.clean), reports / "clean.json")
    old = run_report(tmp_path, {"report": {"top_suspects": 6, "duplicate_groups": 2}})
    assert old.returncode == 0, old.stderr
    assert re.search(r"WARNING .*influence\.parquet not found", old.stderr), old.stderr
    assert re.search(r"WARNING .*noise_matrix\.json not found", old.stderr), old.stderr
    page = (reports / "audit.html").read_text(encoding="utf-8")
    assert "Influence pairs: not available" in page and "Noise matrix: not available" in page
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["estimated_label_errors"] is None and metrics["noise_rate"] is None


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
    assert proc.returncode == 1 and "report.top_suspect: unknown key" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture
def report_stage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """``stages.report`` imported in this process, run from ``tmp_path`` (no git checkout above it)."""
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    return importlib.import_module("stages.report")


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_commit_of_the_project_folder(report_stage, tmp_path: Path) -> None:
    assert report_stage.git_commit() is None  # not a repository
    git = ["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True)
    assert report_stage.git_commit() is None  # no commit yet
    (tmp_path / "src").mkdir()
    (tmp_path / "src/code.py").write_text("x = 1\n")
    (tmp_path / "dvc.lock").write_text("a\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert report_stage.git_commit() == head
    (tmp_path / "dvc.lock").write_text("b\n")  # rewritten by dvc repro: not a source change
    (tmp_path / "src/new.py").write_text("")  # untracked
    assert report_stage.git_commit() == head
    (tmp_path / "src/code.py").write_text("x = 2\n")
    assert report_stage.git_commit() == f"{head} + uncommitted changes"


def test_git_commit_without_git(report_stage, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with caplog.at_level("WARNING"):
        assert report_stage.git_commit() is None
    assert "the report's commit shows n/a" in caplog.text


def test_dataset_origin_takes_each_key_from_the_first_record_that_has_it(report_stage) -> None:
    origin = report_stage.dataset_origin
    assert origin({"root": "/a"}, {"source": "idx", "root": "/b"}) == {"source": "idx", "root": "/a"}
    assert origin({"source": "digits", "root": None}, {}) == {"source": "digits", "root": None}
    assert origin() == {"source": None, "root": None}


def test_duplicate_tiers_are_shown_separately() -> None:
    """dedup.json's pairs per tier (exact/near/similar, across splits) get a table of their own."""
    inputs = make_inputs(True)
    stats = {
        "exact_pairs": 3,
        "near_pairs": 17,
        "similar_pairs": 250,
        "cross_split_pairs": {"exact": 1, "near": 5, "similar": 40},
        "thresholds": {"near": 0.7, "similar": 0.5},
    }
    report = build_report(replace(inputs, dedup={**inputs.dedup, **stats}), ReportOptions())
    section = section_of(report.html, "duplicate-groups")
    rows = re.findall(
        r"<tr><td>(exact|near|similar)</td><td class=\"num\">(\d+)</td><td class=\"num\">(\d+)</td>", section
    )
    assert rows == [("exact", "3", "1"), ("near", "17", "5"), ("similar", "250", "40")]
    assert "similarity ≥ 0.7" in section and "0.5 ≤ similarity &lt; 0.7" in section
    assert "| similar | 250 | 40 |" in report.markdown
    # An older dedup.json without tiers shows no table.
    assert 'class="tiers"' not in section_of(build_report(inputs, ReportOptions()).html, "duplicate-groups")
