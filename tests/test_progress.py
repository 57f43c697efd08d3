"""Progress in non-interactive logs: a line with done/total, rate and ETA at a steady interval."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from sklearn.datasets import load_digits

from memclean import project
from memclean.ensemble import EnsembleConfig
from memclean.options import ScoreParams
from memclean.scores.base import defaults
from memclean.train import TrainConfig

LINE = re.compile(
    r"^(?P<desc>[\w ]+): (?P<done>\d+)/(?P<total>\d+) \((?P<pct>\d+)%\), "
    r"(?P<rate>rate n/a|\d+\.\d+ (?:it/s|s/it)), (?P<elapsed>\d+) s elapsed, ETA (?P<eta>n/a|\d+ s)$"
)
DONE = re.compile(r"^(?P<desc>[\w ]+): (?P<done>\d+)/(?P<total>\d+) done in \d+ s, \d+\.\d+ (?:it/s|s/it)$")


def _messages(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "memclean.stages"]


def _heartbeats() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("memclean-progress")]


def _slow(n: int, seconds: float) -> Iterator[int]:
    for i in range(n):
        time.sleep(seconds)
        yield i


def test_lines_come_at_a_steady_interval_even_inside_one_slow_item(caplog):
    caplog.set_level(logging.INFO, logger="memclean.stages")
    items = list(project._log_progress(_slow(3, 0.4), "slow items", 3, interval=0.1))
    assert items == [0, 1, 2]
    records = _messages(caplog)
    lines = [LINE.match(r.getMessage()) for r in records[:-1]]
    assert all(lines), [r.getMessage() for r in records]
    parsed = [m for m in lines if m is not None]
    # The first item alone spans several intervals: the log says so before it finishes.
    assert sum(m["done"] == "0" for m in parsed) >= 2
    assert all(m["eta"] == "n/a" and m["rate"] == "rate n/a" for m in parsed if m["done"] == "0")
    later = [m for m in parsed if m["done"] != "0"]
    assert later and all(m["total"] == "3" and m["eta"].endswith(" s") and m["rate"] != "rate n/a" for m in later)
    assert [int(m["done"]) for m in parsed] == sorted(int(m["done"]) for m in parsed)
    # About one line per interval over 1.2 s (generous bounds: the machine is shared).
    assert 5 <= len(parsed) <= 14, len(parsed)
    final = DONE.match(records[-1].getMessage())
    assert final and final["done"] == final["total"] == "3", records[-1].getMessage()
    assert not _heartbeats()


def test_the_heartbeat_stops_when_the_work_ends_early(caplog):
    caplog.set_level(logging.INFO, logger="memclean.stages")
    gen = project._log_progress(iter(range(10)), "abandoned", 10, interval=0.05)
    assert next(gen) == 0 and _heartbeats()
    gen.close()
    assert not _heartbeats()

    def failing() -> Iterator[int]:
        yield 1
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        list(project._log_progress(failing(), "failing", 2, interval=0.05))
    assert not _heartbeats()
    # Quick work logs nothing at all.
    assert list(project._log_progress(iter(range(3)), "quick", 3, interval=30)) == [0, 1, 2]
    assert not any("quick" in r.getMessage() for r in _messages(caplog))


def test_the_choice_between_bar_and_log_lines(monkeypatch):
    from tqdm.auto import tqdm

    monkeypatch.setenv("MEMCLEAN_PROGRESS", "1")
    assert isinstance(project.progress(range(2), "bar", 2), tqdm)
    monkeypatch.setenv("MEMCLEAN_PROGRESS", "0")
    wrapped = project.progress(range(2), "log", 2)
    assert not isinstance(wrapped, tqdm) and list(wrapped) == [0, 1]


@pytest.mark.slow
def test_training_epochs_and_ensemble_members_report_through_the_stage_progress(caplog, monkeypatch, tmp_path):
    """The score and validate stages' scoring run: every epoch loop and the member loop log progress."""
    monkeypatch.chdir(tmp_path)  # the member cache lives under data/cache
    monkeypatch.setenv("MEMCLEAN_PROGRESS", "0")
    monkeypatch.setattr(project, "PROGRESS_LOG_INTERVAL_S", 0.01)
    caplog.set_level(logging.INFO, logger="memclean.stages")
    digits = load_digits()
    pixels = (digits.images[:160] * (255 / 16)).astype(np.uint8)[:, None]
    labels = digits.target[:160].astype(np.int64)
    only = {**dict.fromkeys(defaults(), False), "combined": False, "fz_memorization": {}, "tdo": {"epochs": 2}}
    params = ScoreParams(
        device="cpu",
        trainer=TrainConfig(epochs=3, batch_size=32, width=8, seed=1),
        ensemble=EnsembleConfig(members=5, epochs=2),
        scorers=only,
    )
    outcome = project.run_scoring(labels, 10, pixels, params)
    assert outcome.ensemble is not None and outcome.ensemble.members == 5
    finals = {m["desc"]: m for r in _messages(caplog) if (m := DONE.match(r.getMessage()))}
    assert finals["train epochs"]["done"] == finals["train epochs"]["total"] == "3"
    assert finals["ensemble members"]["done"] == finals["ensemble members"]["total"] == "5"
    assert finals["tdo epochs"]["done"] == finals["tdo epochs"]["total"] == "2"  # the turn-over run's own loop


def test_export_and_verification_loops_report_progress(tmp_path):
    """Exporting kept images and verifying duplicate candidates go through the progress wrapper."""
    import pandas as pd

    from memclean import nearcopy
    from memclean.export import export_kept

    seen: dict[str, tuple[int, int]] = {}

    def recording(iterable, desc, total):
        items = list(iterable)
        seen[desc] = (len(items), total)
        return items

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (7, 3, 32, 32), dtype=np.uint8)
    manifest = pd.DataFrame(
        {
            "sample_id": [f"s{i}" for i in range(7)],
            "row": np.arange(7),
            "label": [0, 1, 0, 1, 0, 1, 0],
            "split": ["train"] * 5 + ["test"] * 2,
            "keep": [True, True, False, True, True, True, True],
        }
    )
    export_kept(manifest, pixels, ["a", "b"], tmp_path / "export", "parquet", progress=recording)
    assert seen["export train"] == (4, 4) and seen["export test"] == (2, 2)
    geo = nearcopy.Geometry.for_images(32, 32)
    dev = __import__("torch").device("cpu")
    index = np.arange(7)
    feats = nearcopy.pixel_features(pixels, index, geo, dev)
    pairs = np.array([[0, 1], [2, 5], [3, 6]])
    nearcopy.verify_pairs(pixels, index, feats.centre, pairs, geo, dev, block=2, progress=recording)
    # One job per block of source rows [0, 2), [2, 4), ... holding edges, per direction:
    # sources 0 | 2, 3 one way, then 1 | 5 | 6 the other.
    assert seen["verify pairs"] == (5, 5)


@pytest.mark.slow
def test_the_score_stage_logs_progress_and_times_each_phase_apart_from_its_outputs(tmp_path, messy_folder, monkeypatch):
    """The real stage in a subprocess (no terminal): progress lines in its log, per-phase seconds in
    ``timings/score.json``, none in ``score.json``; a rerun rewrites every DVC output byte for byte."""
    from test_stages import run_stage

    monkeypatch.setenv("MEMCLEAN_PROGRESS_INTERVAL", "0.01")
    work = tmp_path / "work"
    work.mkdir()
    scorers = {**dict.fromkeys(defaults(), False), "combined": False, "fz_memorization": {}, "aum": {}}
    params = {
        "ingest": {"source": "imagefolder", "root": str(messy_folder), "max_quarantine_fraction": 0.5},
        "score": {
            "device": "cpu",
            "trainer": {"epochs": 2, "batch_size": 8, "width": 4},
            "ensemble": {"members": 5, "epochs": 1},
            "scorers": scorers,
        },
    }
    assert run_stage("ingest", work, params).returncode == 0
    first = run_stage("score", work, params)
    assert first.returncode == 0, first.stderr
    lines = [line.split("memclean.stages: ", 1)[-1] for line in first.stderr.splitlines()]
    assert any(DONE.match(line) and line.startswith("train epochs: 2/2") for line in lines), first.stderr
    assert any(DONE.match(line) and line.startswith("ensemble members: 5/5") for line in lines), first.stderr

    reports = work / "data/reports"
    timings = json.loads((reports / "timings/score.json").read_text())
    assert set(timings["stage_seconds"]) == {"load", "score", "write", "total"}
    assert set(timings["scorer_seconds"]) == {"train", "ensemble", "fz_memorization", "aum"}
    stage = timings["stage_seconds"]
    assert all(v >= 0 for v in stage.values())
    assert stage["total"] >= stage["load"] + stage["score"] + stage["write"] - 0.01
    assert stage["score"] >= timings["scorer_seconds"]["train"] > 0
    assert timings["device"] == "cpu" and timings["train_images_per_s"] > 0
    summary = (reports / "score.json").read_text()
    assert "seconds" not in summary and "per_s" not in summary

    def outputs() -> dict[str, bytes]:
        files = [p for p in sorted((work / "data").rglob("*")) if p.is_file()]
        return {p.name: p.read_bytes() for p in files if not {"timings", "cache"} & set(p.parts)}

    before = outputs()
    assert {"score.json", "scores.parquet", "ensemble.npy", "influence.parquet", "noise_matrix.json"} <= set(before)
    second = run_stage("score", work, params)
    assert second.returncode == 0, second.stderr
    assert outputs() == before
    assert json.loads((reports / "timings/score.json").read_text())["stage_seconds"] != stage  # a fresh measurement
