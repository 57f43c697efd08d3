"""`memclean.paramsfile` and `memclean set`: section.key=value overrides written into params.yaml."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from memclean.errors import MemcleanError
from memclean.paramsfile import apply_overrides, parse_override


@pytest.fixture
def params(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    shutil.copy2(REPO / "params.yaml", path)
    return path


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize(
    ("item", "keys", "value"),
    [
        ("ingest.source=idx", ("ingest", "source"), "idx"),
        ("score.trainer.epochs=5", ("score", "trainer", "epochs"), 5),
        ("clean.export=parquet", ("clean", "export"), "parquet"),
        ("inject.rate=0.25", ("inject", "rate"), 0.25),
        ("ingest.root=null", ("ingest", "root"), None),
        ("ingest.root=", ("ingest", "root"), None),
        ("ingest.image_size=[28, 28]", ("ingest", "image_size"), [28, 28]),
        (
            "score.scorers.curvature={h: 0.01, n_probes: 4}",
            ("score", "scorers", "curvature"),
            {"h": 0.01, "n_probes": 4},
        ),
        ("clean.drop_split_leaks=false", ("clean", "drop_split_leaks"), False),
        ("ingest.root=/data/a=b", ("ingest", "root"), "/data/a=b"),
        (" score . device = cpu", ("score", "device"), "cpu"),
    ],
)
def test_parse_override(item, keys, value):
    assert parse_override(item) == (keys, value)


def test_apply_overrides_changes_only_the_given_keys_and_keeps_comments(params):
    before_text = params.read_text()
    before = load(params)
    out = apply_overrides(
        params,
        ["ingest.source=idx", "score.trainer.epochs=5", "clean.export=parquet", "inject.rate=0.2"],
    )
    after = load(params)
    assert out == after
    expected = yaml.safe_load(before_text)
    expected["ingest"]["source"] = "idx"
    expected["score"]["trainer"]["epochs"] = 5
    expected["clean"]["export"] = "parquet"
    expected["inject"]["rate"] = 0.2
    assert after == expected and after != before
    text = params.read_text()
    # Comments, order and flow style survive (ruamel.yaml round trip).
    assert "# memclean parameters: one section per DVC stage." in text
    assert "source: idx" in text and "# digits | imagefolder | manifest | idx | hf-parquet" in text
    assert "allowed_formats: [PNG, JPEG, BMP, GIF, TIFF, WEBP, PPM]" in text
    assert "rate: 0.2 " in text
    assert "root: null" in text  # nulls stay spelled `null`
    assert list(after) == list(before)
    # Only the changed lines differ.
    changed = [(a, b) for a, b in zip(before_text.splitlines(), text.splitlines(), strict=True) if a != b]
    assert len(changed) == 4, changed


def test_nested_keys_are_created_and_strings_that_look_like_other_types_are_quoted(params):
    out = apply_overrides(
        params,
        [
            "score.scorers.curvature.n_probes=4",
            "ingest.root='yes'",
            "ingest.manifest='0.5'",
            "score.combine=[loss, aum]",
        ],
    )
    assert out["score"]["scorers"]["curvature"] == {"n_probes": 4}
    assert out["ingest"]["root"] == "yes" and out["ingest"]["manifest"] == "0.5"
    assert out["score"]["combine"] == ["loss", "aum"]
    assert load(params) == out
    assert "combine: [loss, aum]" in params.read_text()


def test_later_items_win_and_no_items_writes_nothing(params):
    mtime = params.stat().st_mtime_ns
    assert apply_overrides(params, []) == load(params)
    assert params.stat().st_mtime_ns == mtime
    assert apply_overrides(params, ["inject.seed=1", "inject.seed=2"])["inject"]["seed"] == 2


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("nosuch.key=1", "unknown params section 'nosuch'"),
        ("clean.exprot=parquet", "clean.exprot: unknown key"),
        ("score.trainer.epochs=ten", "score.trainer.epochs: Input should be a valid integer"),
        ("score.scorers.aum.new_key=1", "score.scorers.aum.new_key: unknown key"),
        ("validate.scorer=nope", "validate.scorer 'nope' is not run by score.scorers"),
        ("ingest", "expected section.key=value"),
        ("ingest=1", "dotted path"),
        ("ingest..root=1", "dotted path"),
        ("=1", "dotted path"),
        (".root=1", "dotted path"),
        ("ingest.root=[unclosed", "not valid YAML"),
        ("ingest.source.sub=1", "ingest.source is str 'digits', not a mapping"),
    ],
)
def test_bad_overrides_are_rejected_and_the_file_is_untouched(params, item, message):
    before = params.read_bytes()
    with pytest.raises(MemcleanError, match=message.replace("[", r"\[").replace(".", r"\.")):
        apply_overrides(params, ["inject.seed=7", item])
    assert params.read_bytes() == before
    assert not list(params.parent.glob(".params.yaml.*"))  # no temporary file left behind


def test_missing_file_is_a_memclean_error(tmp_path):
    with pytest.raises(MemcleanError, match="not found"):
        apply_overrides(tmp_path / "params.yaml", ["ingest.source=idx"])


def test_write_is_atomic_and_keeps_the_file_mode(params, monkeypatch):
    os.chmod(params, 0o644)
    before = params.read_bytes()

    def boom(*_args, **_kwargs):
        raise OSError("disk full")

    # A failure before the rename leaves the old file whole and no temporary behind.
    monkeypatch.setattr("memclean.io.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        apply_overrides(params, ["inject.seed=3"])
    assert params.read_bytes() == before
    assert not list(params.parent.glob(".params.yaml.*"))
    monkeypatch.undo()

    apply_overrides(params, ["inject.seed=3"])
    assert stat.S_IMODE(params.stat().st_mode) == 0o644
    assert load(params)["inject"]["seed"] == 3


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    (cwd / "dvc.yaml").touch()
    return subprocess.run(
        [sys.executable, "-m", "memclean.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_cli_sets_values_and_prints_one_line_errors(params):
    ok = run_cli("set", "score.trainer.epochs=7", "ingest.source=idx", cwd=params.parent)
    assert ok.returncode == 0, ok.stderr
    assert "score.trainer.epochs: 20 -> 7" in ok.stdout and "ingest.source: 'digits' -> 'idx'" in ok.stdout
    assert load(params)["score"]["trainer"]["epochs"] == 7

    before = params.read_bytes()
    for item, message in [
        ("bogus.key=1", "unknown params section 'bogus'"),
        ("clean.exprot=parquet", "clean.exprot: unknown key"),
    ]:
        bad = run_cli("set", item, cwd=params.parent)
        assert bad.returncode == 2
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("memclean: error: ") and message in lines[0], bad.stderr
        assert "Traceback" not in bad.stderr
    assert params.read_bytes() == before
