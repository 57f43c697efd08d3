"""Benchmark of the proxy trainer's CPU/GPU throughput options, side by side in one process.

Prints one JSON object on stdout (progress goes to stderr). On a fixed-seed subset of a
dataset's train split (CIFAR-10 10,000 images by default) it trains the default
:class:`memclean.train.TrainConfig` network for a few epochs under each variant:

- ``reference``: float32, contiguous (NCHW) tensors, evaluation in batches of 1,024 — the CPU
  default before bf16 autocast and smaller evaluation batches;
- ``channels_last``: channels-last model and batches (oneDNN's preferred layout);
- ``bf16``: bfloat16 autocast of the forward passes;
- ``bf16_channels_last``: both;
- ``batch_256``: the reference with twice the batch size (and ``lr`` scaled by 2);
- ``eval_batch_256``: the reference with evaluation passes in batches of 256, not 1,024;
- ``current``: today's defaults for the device (width 16 on a CPU, 32 on CUDA); ``width_32`` /
  ``width_24`` / ``width_16``: the same at a fixed first block (channels 32/64/128, 24/48/96,
  16/32/64), e.g. ``--variants width_32,width_24,width_16 --reference width_32``;
  ``width_32_channels_last`` / ``width_16_channels_last`` / ``width_16_contiguous``: a fixed
  width and memory format, e.g. ``--variants width_16_contiguous,width_16_channels_last
  --reference width_16_contiguous``.

The variants run interleaved (round-robin, ``--repeats`` rounds) so that load on a shared
machine hits each alike; per variant the JSON gives the median training images/s (the
trainer's own clock), the median seconds of one evaluation pass over every image, the
final train accuracy, and the ratio of its median images/s to the reference's.

Usage (from the repository root)::

    .venv/bin/python bench/trainer.py [--dataset cifar10] [--subset 10000] [--epochs 2]
        [--repeats 3] [--threads T] [--device auto] [--out FILE]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scoring import emit, load_subset, missing_reason

from memclean.train import ProxyCNN, TrainConfig, evaluate, select_device, to_device, train

log = logging.getLogger("bench.trainer")

_REF: dict[str, Any] = {"bf16": False, "channels_last": False, "eval_batch_size": 1024}
VARIANTS: dict[str, dict[str, Any]] = {
    "reference": _REF,
    "channels_last": {**_REF, "channels_last": True},
    "bf16": {**_REF, "bf16": True},
    "bf16_channels_last": {**_REF, "bf16": True, "channels_last": True},
    "batch_256": {**_REF, "batch_size": 256, "lr": 0.1},
    "eval_batch_256": {**_REF, "eval_batch_size": 256},
    # The current defaults (bf16 where the CPU has it, evaluation in batches of 256), and the
    # same at fixed widths: what a smaller network saves.
    "current": {},
    "width_32": {"width": 32},
    "width_24": {"width": 24},
    "width_16": {"width": 16},
    # The same widths with channels-last tensors (oneDNN's blocked layout): the CPU default now.
    "width_32_channels_last": {"width": 32, "channels_last": True},
    "width_16_channels_last": {"width": 16, "channels_last": True},
    "width_16_contiguous": {"width": 16, "channels_last": False},
}


def run_variant(pixels: Any, labels: Any, config: TrainConfig, device: torch.device) -> dict[str, float]:
    """Train ``config`` once; time its training (trainer clock) and one more evaluation pass."""
    result = train(pixels, labels, 10, config, device)
    data = to_device(pixels, labels, device, config.uses_channels_last(device))
    # A fresh network of the same shape: an evaluation pass costs the same as with trained weights.
    model = ProxyCNN(pixels.shape[1], 10, tuple(pixels.shape[2:]), config.resolved_width(device)).to(device)
    if config.uses_channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    t0 = time.perf_counter()
    evaluate(model, data, config, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {
        "train_images_per_s": result.train_images_per_s,
        "eval_seconds": time.perf_counter() - t0,
        "final_train_accuracy": result.final_train_accuracy,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--subset", type=int, default=10_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants")
    p.add_argument("--reference", default="reference", help="the variant speed ratios are measured against")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    reason = missing_reason(args.dataset)
    if reason:
        print(f"bench/trainer.py: {reason}", file=sys.stderr)
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    pixels, labels, info = load_subset(args.dataset, args.subset)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    base = TrainConfig(epochs=args.epochs, eval_every=args.epochs)
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in names}
    for r in range(args.repeats):
        for name in names:
            cfg = replace(base, **VARIANTS[name])
            runs[name].append(run_variant(pixels, labels, cfg, device))
            log.info("round %d %s: %s", r + 1, name, runs[name][-1])
    med = {v: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for v, rs in runs.items()}
    ref = med.get(args.reference)
    report = {
        "benchmark": "memclean.train throughput",
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        },
        "dataset": {"name": args.dataset, "images": len(labels), **info},
        "epochs_per_run": args.epochs,
        "repeats": args.repeats,
        "reference": args.reference,
        "variants": {
            v: {
                "train_images_per_s_median": round(m["train_images_per_s"], 1),
                "eval_seconds_median": round(m["eval_seconds"], 3),
                "final_train_accuracy_median": round(m["final_train_accuracy"], 4),
                "speed_ratio_vs_reference": round(m["train_images_per_s"] / ref["train_images_per_s"], 3)
                if ref
                else None,
                "train_images_per_s_all": [round(x["train_images_per_s"], 1) for x in runs[v]],
            }
            for v, m in med.items()
        },
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
