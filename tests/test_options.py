"""Typed params: every key validated with a one-line error, defaults in one place, README in sync."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from memclean.errors import MemcleanError
from memclean.options import (
    SECTIONS,
    DedupParams,
    PipelineParams,
    _rows,
    load_params,
    params_markdown,
    parse_params,
)
from memclean.scores import available, default_scorers, defaults


def _leaf_keys() -> list[str]:
    keys = []
    for name in SECTIONS:
        model = PipelineParams.model_fields["validate_" if name == "validate" else name].annotation
        keys += [key for key, _default, _text in _rows(name, model)]
    return keys


def _set(tree: dict, dotted: str, value: object) -> dict:
    tree = copy.deepcopy(tree)
    node = tree
    *path, last = dotted.split(".")
    for part in path:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value
    return tree


def test_shipped_params_file_holds_the_defaults():
    assert load_params(REPO / "params.yaml") == PipelineParams()


def test_dedup_defaults_are_those_of_find_duplicates():
    """The params section and the library function agree on every default they share."""
    import inspect

    from memclean.dedup import find_duplicates

    library = {k: p.default for k, p in inspect.signature(find_duplicates).parameters.items()}
    section = DedupParams()
    aliases = {"hash": "method"}
    shared = [k for k in DedupParams.model_fields if aliases.get(k, k) in library]
    assert len(shared) >= 12
    for key in shared:
        assert getattr(section, key) == library[aliases.get(key, key)], key


def test_every_key_is_documented():
    for key, _default, text in _rows("score", PipelineParams.model_fields["score"].annotation):
        assert text, f"{key} has no description"
    assert len(_leaf_keys()) > 40


@pytest.mark.parametrize("key", _leaf_keys())
def test_every_key_rejects_a_wrong_type_in_one_line(key):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    bad: list[object] = [["a", "list"]]
    if key.endswith((".classes", ".allowed_formats", ".combine")):
        bad = [{"a": "mapping"}, "a string"]
    for value in bad:
        with pytest.raises(MemcleanError) as info:
            parse_params(_set(raw, key, value))
        message = str(info.value)
        assert "\n" not in message and message.startswith("params.yaml: ")
        shown = key.rsplit(".", 1)[0] if key.startswith("score.scorers.") and key.count(".") == 3 else key
        assert shown.split(".")[0] in message and key.split(".")[-1] in message, message


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ({"score": {"trainer": {"epochs": "ten"}}}, None, "score.trainer.epochs: Input should be a valid integer"),
        ({"score": {"device": "tpu"}}, None, "score.device: must be auto, cpu, cuda, cuda:N or mps"),
        ({"inject": {"seed": "abc"}}, None, "inject.seed"),
        ({"validate": {"min_auroc": "high"}}, None, "validate.min_auroc"),
        ({"ingest": {"classes": "cat"}}, None, "ingest.classes: must be a list"),
        ({"ingest": {"allowed_formats": "PNG"}}, None, "ingest.allowed_formats: must be a list"),
        ({"score": {"combine": ["nope"]}}, None, "score.combine names scorers that score.scorers does not run"),
        ({"ingest": {"alpha_background": 999}}, None, "ingest.alpha_background"),
        ({"ingest": {"max_quarantine_fraction": -1}}, None, "ingest.max_quarantine_fraction"),
        ({"ingest": {"image_size": [100000, 100000]}}, None, "ingest.image_size"),
        ({"clean": {"exprot": "parquet"}}, None, "clean.exprot: unknown key"),
        ({"score": {"scorers": {"curvature": {"n_probes": 0}}}}, None, "score.scorers.curvature.n_probes"),
        ({"score": {"scorers": {"nope": {}}}}, None, "unknown scorer 'nope'"),
        (
            {"validate": {"scorer": "curvature"}, "score": {"scorers": {"curvature": False}}},
            None,
            "validate.scorer 'curvature'",
        ),
        ({"clean": {"scorer": "gone"}}, None, "clean.scorer 'gone'"),
        (
            {
                "inject": {"kind": "instance"},
                "score": {"scorers": {"fz_memorization": False, "cscore": False, "confident_learning": False}},
            },
            None,
            "inject.kind: instance follows the subset ensemble",
        ),
        ({"clean": {"drop_exact_duplicates": "maybe"}}, None, "clean.drop_exact_duplicates"),
        ({"ingest": {"channels": 2}}, None, "ingest.channels"),
        ({"bogus": {}}, None, "bogus: unknown key"),
    ],
)
def test_reported_bad_params(section, value, message):
    with pytest.raises(MemcleanError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_params(section)


def test_instance_noise_is_accepted_when_an_ensemble_scorer_runs():
    assert parse_params({"inject": {"kind": "instance"}}).inject.kind == "instance"  # the defaults run cscore
    only = {"fz_memorization": False, "confident_learning": False}
    assert parse_params({"inject": {"kind": "instance"}, "score": {"scorers": only}}).inject.kind == "instance"


def test_quoted_booleans_keep_their_meaning():
    assert parse_params({"clean": {"drop_exact_duplicates": "no"}}).clean.drop_exact_duplicates is False


def test_scorers_default_to_the_registry_and_can_be_skipped_or_tuned():
    assert list(PipelineParams().score.scorers) == list(default_scorers())
    assert list(default_scorers())[:-1] == defaults() and set(defaults()) < set(available())
    tuned = parse_params({"score": {"scorers": {"forgetting": False, "curvature": {"n_probes": 4}}}}).score.scorers
    assert "forgetting" not in tuned and tuned["curvature"]["n_probes"] == 4 and tuned["curvature"]["h"] == 1e-3


def test_invalid_yaml_and_missing_file_are_one_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("score:\n  trainer: [unclosed\n")
    with pytest.raises(MemcleanError, match=r"invalid YAML at line \d+"):
        load_params(bad)
    with pytest.raises(MemcleanError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_readme_parameter_tables_match_the_models():
    readme = (REPO / "README.md").read_text()
    begin, end = "<!-- params:begin -->\n", "<!-- params:end -->"
    assert begin in readme and end in readme, "README.md lacks the params markers"
    block = readme.split(begin, 1)[1].split(end, 1)[0]
    assert block.strip() == params_markdown().strip(), "run `memclean params > /tmp/p.md` and paste it into README.md"


def test_params_stage_stops_a_bad_file_with_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("score:\n  trainer:\n    epochs: ten\n")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'src'}"}
    proc = subprocess.run(
        [sys.executable, "-m", "stages.params"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("memclean params: error: params.yaml: score.trainer.epochs"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()

    (tmp_path / "params.yaml").write_text("score:\n  trainer:\n    epochs: 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "stages.params"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    written = Path(tmp_path / "data/interim/params/score.json").read_text()
    assert '"epochs": 3' in written
