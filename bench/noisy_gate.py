"""Benchmark of validation and cleaning on data that already holds label errors of its own (issue 10).

For each dataset (MNIST, Fashion-MNIST when the Debian package
``dataset-fashion-mnist`` is installed, CIFAR-10; the fixed-seed subset of the
*train* split that ``bench/scoring.py`` draws), it:

1. **Plants the dataset's "own" errors**: ``--own-rate`` (8 %) instance-dependent
   flips (:func:`memclean.noise.instance_flips`: rows drawn ∝ 1 − p(given label),
   each moved to the class it is most confused with). The reference
   probabilities are 5-fold out-of-fold ``predict_proba`` of a scikit-learn
   logistic regression on 14×14 grey thumbnails, a model of another family than
   the proxy CNN, so the planted errors do not favour the detector. These flips
   are the ground truth the cleaning is judged against.
2. **Runs the product** on those labels exactly as ``dvc repro`` would: the
   dataset is written as a Hugging Face-style Parquet file, a ``params.yaml``
   with the defaults (``--epochs``/``--width`` override the trainer,
   ``--inject-kind`` and ``--inject-rate`` the validation noise) is written to a
   work folder, and the stages ``params → ingest → dedup → score → inject →
   validate → clean`` run as ``python -m stages.<name>`` subprocesses there.
3. **Reads the outputs** (``validation.json``, ``clean.json``,
   ``data/clean/manifest.parquet``) and reports the gate decision, the AUROC of
   the gate measurement (among the rows not suspected before injection) and the
   confounded all-rows figure beside it, and, against the planted own errors:
   precision and recall of the rows dropped by score, of the rows marked
   ``likely_mislabeled``, of confident learning's issue column, the fraction of
   truly clean rows dropped, and how often ``suggested_label`` restores the
   true label of a planted error. Stage wall times are recorded.

Note: the source datasets contain a few label errors of their own (MNIST very
few, CIFAR-10 some); they count here as "clean", so the precision figures are
slightly pessimistic.

Prints one JSON object on stdout and writes it to ``bench/results/noisy_gate.json``
(stage logs go to the work folder, progress lines to stderr).

Usage (from the repository root)::

    .venv/bin/python bench/noisy_gate.py [--datasets mnist,fashion,cifar10] [--subset N]
        [--own-rate R] [--inject-kind instance] [--inject-rate R] [--epochs E] [--width W]
        [--validate-mode retrain|heldout] [--no-validate-heldout] [--reuse] [--workdir DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scoring import DATASETS, load_subset, missing_reason, rnd

from memclean.noise import instance_flips

log = logging.getLogger("bench.noisy_gate")
REPO = Path(__file__).resolve().parents[1]
STAGES = ("params", "ingest", "dedup", "score", "inject", "validate", "clean")
SOURCE_FILE = "train-00000.parquet"
THUMB = 14


def thumbnails(pixels: np.ndarray, side: int = THUMB) -> np.ndarray:
    """N×C×H×W uint8 → N×side² float grey thumbnails (PIL area resampling)."""
    grey = pixels.mean(axis=1).astype(np.uint8)
    return np.stack(
        [np.asarray(Image.fromarray(im).resize((side, side), Image.Resampling.BOX), dtype=np.float32) for im in grey]
    ).reshape(len(pixels), -1)


def reference_probabilities(pixels: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """5-fold out-of-fold class probabilities of a logistic regression on grey thumbnails."""
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=300))
    return np.asarray(
        cross_val_predict(model, thumbnails(pixels), labels, cv=5, method="predict_proba"), dtype=np.float64
    )


def write_source(path: Path, pixels: np.ndarray, labels: np.ndarray) -> None:
    """Write the images (PNG bytes) and labels as a Hugging Face-style Parquet file."""
    cells = []
    for im in pixels:
        buf = io.BytesIO()
        array = im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0)
        Image.fromarray(np.ascontiguousarray(array)).save(buf, format="PNG")
        cells.append({"bytes": buf.getvalue(), "path": None})
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({"img": pa.array(cells, type=image_type), "label": pa.array(labels.astype(np.int64))})
    pq.write_table(table, path)


def write_params(path: Path, source: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The params file of the run: product defaults, plus the trainer and noise overrides asked for."""
    params: dict[str, Any] = {
        "ingest": {"source": "hf-parquet", "root": str(source)},
        "inject": {"kind": args.inject_kind, "rate": args.inject_rate, "seed": 0},
        "validate": {"mode": args.validate_mode},
    }
    trainer = {k: v for k, v in (("epochs", args.epochs), ("width", args.width)) if v is not None}
    if trainer:
        params["score"] = {"trainer": trainer}
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return params


def run_stages(workdir: Path, stages: tuple[str, ...] = STAGES) -> dict[str, float]:
    """Run the pipeline's ``stages`` in ``workdir`` as ``dvc repro`` would; wall seconds per stage."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "MEMCLEAN_PARAMS": str(workdir / "params.yaml"),
        "MEMCLEAN_PROGRESS_INTERVAL": "60",
    }
    seconds: dict[str, float] = {}
    with (workdir / "stages.log").open("a", encoding="utf-8") as logf:
        for stage in stages:
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", f"stages.{stage}"], cwd=workdir, env=env, stdout=logf, stderr=logf
            )
            seconds[stage] = round(time.perf_counter() - start, 1)
            log.info("%s: stage %s in %.0f s (rc %d)", workdir.name, stage, seconds[stage], done.returncode)
            if done.returncode != 0:
                raise RuntimeError(f"stage {stage} failed in {workdir} (see stages.log)")
    return seconds


def judged(predicted: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Precision and recall of the ``predicted`` rows against the ``truth`` rows, with the counts."""
    hits = int((predicted & truth).sum())
    flagged = int(predicted.sum())
    return {
        "rows": flagged,
        "true": hits,
        "precision": rnd(hits / flagged) if flagged else None,
        "recall": rnd(hits / int(truth.sum())) if truth.any() else None,
    }


def judge(workdir: Path, true_labels: np.ndarray, own: np.ndarray) -> dict[str, Any]:
    """Compare the run's outputs with the planted own errors."""
    reports = workdir / "data" / "reports"
    validation = json.loads((reports / "validation.json").read_text(encoding="utf-8"))
    clean = json.loads((reports / "clean.json").read_text(encoding="utf-8"))
    manifest = pd.read_parquet(workdir / "data" / "clean" / "manifest.parquet")
    row = manifest["source"].str.rsplit("#", n=1).str[1].astype(int).to_numpy()
    is_own = own[row]
    truth = true_labels[row]
    dropped = ~manifest["keep"].to_numpy(dtype=bool)
    by_score = dropped & (manifest["drop_reason"] == "suspected_label_error").to_numpy()
    likely = (manifest["suspicion"] == "likely_mislabeled").to_numpy()
    atypical = (manifest["suspicion"] == "atypical").to_numpy()
    suggested = manifest["suggested_label"].to_numpy()
    gate = validation["gate"]
    scorer = gate.get("scorer")
    gated = validation["scorers"].get(scorer, {}) if scorer else {}
    result: dict[str, Any] = {
        "gate": {"passed": gate["passed"], "scorer": scorer, "reason": gate.get("reason")},
        "auroc_gate_measurement": rnd(gated.get("auroc")),
        "auroc_all_rows": rnd(gated.get("auroc_all_rows")),
        "measured_on": validation.get("measured_on"),
        "best": validation.get("best"),
        "auroc_by_scorer": {k: rnd(v.get("auroc")) for k, v in validation["scorers"].items()},
        "own_errors": int(is_own.sum()),
        "dropped_by_score": judged(by_score, is_own),
        "dropped_any_reason": judged(dropped, is_own),
        "likely_mislabeled": judged(likely, is_own),
        "atypical_flagged": {"rows": int(atypical.sum()), "own_errors_among_them": int((atypical & is_own).sum())},
        "clean_rows_dropped_by_score_fraction": rnd(float((by_score & ~is_own).sum()) / max(int((~is_own).sum()), 1)),
        "suggested_label_restores_truth": rnd(float((suggested[is_own & likely] == truth[is_own & likely]).mean()))
        if (is_own & likely).any()
        else None,
        "clean_json": {
            k: clean.get(k)
            for k in (
                "estimated_noise_rate",
                "estimated_label_errors",
                "decision_rule",
                "threshold",
                "estimated_precision",
                "precision_on_injected",
                "threshold_decided_by",
                "drop_cap",
                "by_reason",
                "advice",
            )
        },
    }
    scores = pd.read_parquet(workdir / "data" / "interim" / "scores.parquet")
    if "confident_learning_issue" in scores:
        issue = scores["confident_learning_issue"].to_numpy(dtype=np.float64) > 0
        result["confident_learning_issue"] = judged(issue[: len(own)], own)
    return result


def bench_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Plant own errors in one dataset, run the pipeline on it and judge the cleaning."""
    pixels, labels, info = load_subset(name, args.subset)
    k = round(args.own_rate * len(labels))
    start = time.perf_counter()
    probs = reference_probabilities(pixels, labels)
    noisy = instance_flips(labels, probs, k, seed=args.seed)
    own = noisy != labels
    log.info(
        "%s: %d images, %d own errors planted (reference accuracy %.3f, %.0f s)",
        name,
        len(labels),
        int(own.sum()),
        float((probs.argmax(1) == labels).mean()),
        time.perf_counter() - start,
    )
    workdir = Path(args.workdir) / name
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / SOURCE_FILE
    write_source(source, pixels, noisy)
    params = write_params(workdir / "params.yaml", source, args)
    done = workdir / "data" / "reports" / "clean.json"
    if args.reuse and done.exists():
        log.info("%s: reusing the outputs in %s", name, workdir)
        seconds = json.loads((workdir / "stage_seconds.json").read_text(encoding="utf-8"))
    else:
        seconds = run_stages(workdir)
        (workdir / "stage_seconds.json").write_text(json.dumps(seconds), encoding="utf-8")
    heldout: dict[str, Any] | None = None
    if args.validate_heldout:
        # Side by side: the same score outputs and injected noise, validate.mode heldout (no training).
        other = workdir.with_name(f"{name}-heldout")
        if other.exists():
            shutil.rmtree(other)
        shutil.copytree(workdir, other, ignore=shutil.ignore_patterns("cache"))
        params_h = yaml.safe_load((other / "params.yaml").read_text(encoding="utf-8"))
        params_h["validate"] = {"mode": "heldout"}
        (other / "params.yaml").write_text(yaml.safe_dump(params_h, sort_keys=False), encoding="utf-8")
        heldout = {"stage_seconds": run_stages(other, ("params", "validate", "clean")), **judge(other, labels, own)}
    return {
        "dataset": info,
        "params": params,
        "own_noise": {
            "kind": "instance",
            "rate": args.own_rate,
            "reference": f"5-fold logistic regression on {THUMB}x{THUMB} grey thumbnails",
            "reference_accuracy": rnd(float((probs.argmax(1) == labels).mean())),
        },
        "stage_seconds": seconds,
        **judge(workdir, labels, own),
        "validate_heldout": heldout,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", default="mnist,fashion,cifar10", help="comma-separated keys of bench/scoring.py")
    p.add_argument("--subset", type=int, default=2000, help="images per dataset (default 2000)")
    p.add_argument("--own-rate", type=float, default=0.08, help="fraction of planted own errors (default 0.08)")
    p.add_argument("--seed", type=int, default=1, help="seed of the planted errors")
    p.add_argument("--inject-kind", default="instance", choices=["symmetric", "asymmetric", "instance"])
    p.add_argument("--inject-rate", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=None, help="score.trainer.epochs (default: the product's)")
    p.add_argument("--width", type=int, default=None, help="score.trainer.width (default: the product's)")
    p.add_argument("--validate-mode", default="retrain", choices=["retrain", "heldout"], help="validate.mode")
    p.add_argument(
        "--validate-heldout",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run validate+clean with validate.mode heldout on the same outputs (default on)",
    )
    p.add_argument("--reuse", action="store_true", help="reuse a finished run in the work folder")
    p.add_argument("--workdir", default="bench/results/noisy_gate", help="one work folder per dataset")
    p.add_argument("--out", default="bench/results/noisy_gate.json")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print and write the JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    out: dict[str, Any] = {
        "benchmark": "noisy_gate",
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "args": vars(args),
        "results": {},
        "skipped": {},
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in [d for d in args.datasets.split(",") if d]:
        if name not in DATASETS:
            out["skipped"][name] = "unknown dataset"
            continue
        reason = missing_reason(name)
        if reason:
            out["skipped"][name] = reason
            log.info("%s: skipped (%s)", name, reason)
            continue
        out["results"][name] = bench_dataset(name, args)
        path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    text = json.dumps(out, indent=2)
    path.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
