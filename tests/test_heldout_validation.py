"""``validate.mode: heldout``: the out-of-sample scorers rescored from score's ensemble, without training."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_honest_validation import set_params, work, write_scores  # noqa: F401  (work is a fixture)

from memclean import project
from memclean.ensemble import Ensemble, save_ensemble
from memclean.errors import MemcleanError
from memclean.io import params_digest, read_parquet, write_parquet
from memclean.options import parse_params
from memclean.schema import NOISY_LABELS_SCHEMA, scores_schema
from memclean.scores import create, heldout_scorers, rescore_heldout


def knowing_ensemble(labels: np.ndarray, c: int, seed: int = 0) -> Ensemble:
    """Four members; each row is held out by two of them, whose logits favour its true class."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    in_mask = np.stack([np.arange(n) % 2 == 0, np.arange(n) % 2 == 1, np.arange(n) % 2 == 0, np.arange(n) % 2 == 1])
    logits = rng.normal(0.0, 0.3, (4, n, c)).astype(np.float16)
    logits[:, np.arange(n), labels] += 3.0
    return Ensemble(in_mask, logits, labels)


def test_only_out_of_sample_scorers_qualify():
    assert heldout_scorers(["curvature", "aum", "cscore", "fz_memorization", "confident_learning", "combined"]) == [
        "cscore",
        "confident_learning",
    ]


def test_rescoring_reads_the_members_against_the_new_labels():
    labels = np.arange(60) % 3
    ens = knowing_ensemble(labels, 3)
    noisy = labels.copy()
    noisy[:6] = (noisy[:6] + 1) % 3
    scorers = {"cscore": {}, "confident_learning": {}, "combined": {}}
    outcome = rescore_heldout(Ensemble(ens.in_mask, ens.logits, noisy), scorers)
    assert outcome.train is None and outcome.summary()["mode"] == "heldout"
    assert outcome.scorer_names == ["cscore", "confident_learning", "combined"]
    direct = create("cscore").from_ensemble(Ensemble(ens.in_mask, ens.logits, noisy)).scores
    assert np.array_equal(outcome.scores["cscore_score"].to_numpy(), direct)
    cs = outcome.scores["cscore_score"].to_numpy()
    assert cs[:6].min() > cs[6:].max()  # the flipped rows are the least confident ones
    assert (outcome.scores["suggested_label"].to_numpy()[:6] == labels[:6]).all()  # and the true class is suggested
    with pytest.raises(MemcleanError, match="out-of-sample ensemble scorer"):
        rescore_heldout(ens, {"aum": {}, "fz_memorization": {}})


def test_params_refuse_heldout_without_an_out_of_sample_scorer():
    with pytest.raises(MemcleanError, match="validate.mode: heldout"):
        parse_params(
            {"validate": {"mode": "heldout"}, "score": {"scorers": {"cscore": False, "confident_learning": False}}}
        )
    with pytest.raises(MemcleanError, match="not validated in validate.mode: heldout"):
        parse_params({"validate": {"mode": "heldout", "scorer": "aum"}})
    ok = parse_params({"validate": {"mode": "heldout", "scorer": "cscore"}})
    assert ok.validate_.mode == "heldout"


def test_validate_stage_in_heldout_mode_trains_nothing(work, monkeypatch):  # noqa: F811
    from stages import inject as inject_stage
    from stages import validate as validate_stage

    ok, _, classes = project.load_dataset()
    n, c = len(ok), len(classes)
    labels = ok["label"].to_numpy(dtype=np.int64)
    write_scores(ok, np.zeros(n))
    set_params(work, inject={"kind": "symmetric", "rate": 0.2, "seed": 0}, validate={"mode": "heldout"})
    save_ensemble(None, project.ENSEMBLE, n, c)
    inject_stage.main()

    def no_training(*args, **kwargs):
        raise AssertionError("validate.mode heldout must not train")

    monkeypatch.setattr(project, "run_scoring", no_training)
    with pytest.raises(MemcleanError, match="holds no member"):
        validate_stage.main()
    save_ensemble(knowing_ensemble(labels, c), project.ENSEMBLE, n, c)
    validate_stage.main()
    report = json.loads(project.VALIDATION.read_text())
    assert report["run"]["mode"] == "heldout" and report["run"]["ensemble_members"] == 4
    assert set(report["scorers"]) == {"cscore", "confident_learning", "combined"}
    assert report["scorers"]["cscore"]["auroc"] == 1.0 and report["gate"]["passed"]
    noisy = read_parquet(project.NOISY_LABELS, NOISY_LABELS_SCHEMA)
    assert report["noise"]["flipped"] == int(noisy["is_flipped"].sum()) > 0


def test_validate_refuses_scores_from_other_score_params(work, monkeypatch):  # noqa: F811
    from stages import inject as inject_stage
    from stages import validate as validate_stage

    ok, _, classes = project.load_dataset()
    n, c = len(ok), len(classes)
    labels = ok["label"].to_numpy(dtype=np.int64)
    set_params(work, inject={"kind": "symmetric", "rate": 0.2, "seed": 0}, validate={"mode": "heldout"})
    write_scores(ok, np.zeros(n))
    save_ensemble(knowing_ensemble(labels, c), project.ENSEMBLE, n, c)
    inject_stage.main()
    validate_stage.main()
    assert json.loads(project.VALIDATION.read_text())["comparable"]["score_params"] == "unknown"  # no stamp

    def stamp(digest: str) -> None:
        frame = read_parquet(project.SCORES)
        write_parquet(
            frame, project.SCORES, scores_schema(["aum"], ["confident_learning_issue"]), {"params_digest": digest}
        )

    stamp(params_digest(project.params().score.model_dump(mode="json")))
    validate_stage.main()
    assert json.loads(project.VALIDATION.read_text())["comparable"]["score_params"] == "same"
    stamp("0123456789abcdef")  # scored with another trainer or other scorers
    with pytest.raises(MemcleanError, match="other score params"):
        validate_stage.main()


def test_auto_mode_is_heldout_on_a_cpu_and_retrain_on_cuda():
    """validate.mode auto: no second training run on a CPU when the out-of-sample scorers can be measured."""
    cpu, cuda = "cpu", "cuda"
    default = parse_params({})
    assert default.validate_.mode == "auto"
    assert default.validate_mode(cpu) == "heldout" and default.validate_mode(cuda) == "retrain"
    # A named scorer that heldout cannot measure, or no out-of-sample scorer at all: retrain.
    assert parse_params({"validate": {"scorer": "aum"}}).validate_mode(cpu) == "retrain"
    assert parse_params({"clean": {"scorer": "aum"}}).validate_mode(cpu) == "retrain"
    assert parse_params({"validate": {"scorer": "cscore"}}).validate_mode(cpu) == "heldout"
    off = {"cscore": False, "confident_learning": False}
    assert parse_params({"score": {"scorers": off}}).validate_mode(cpu) == "retrain"
    # Explicit modes are taken as they are.
    assert parse_params({"validate": {"mode": "retrain"}}).validate_mode(cpu) == "retrain"
    assert parse_params({"validate": {"mode": "heldout"}}).validate_mode(cuda) == "heldout"


def test_validate_reads_the_device_score_trained_on(work):  # noqa: F811  (work is a fixture)
    """``auto`` is resolved for score's device, read from its report (validate never imports torch for it)."""
    from stages import validate as validate_stage

    project.SCORE_METRICS.parent.mkdir(parents=True, exist_ok=True)
    project.SCORE_METRICS.unlink(missing_ok=True)
    with pytest.raises(MemcleanError, match="score.json is missing or names no device"):
        validate_stage.score_device_type()
    for recorded, expected in (("cuda:0", "cuda"), ("cpu", "cpu"), ("mps", "mps")):
        project.SCORE_METRICS.write_text(json.dumps({"device": recorded}))
        assert validate_stage.score_device_type() == expected
    project.SCORE_METRICS.write_text(json.dumps({"scorers": []}))
    with pytest.raises(MemcleanError, match="names no device"):
        validate_stage.score_device_type()
