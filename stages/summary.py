"""Print a short summary of the pipeline's outputs (``make run`` calls this)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from stages import common


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    out = []
    ingest = _load(common.INGEST_METRICS)
    if ingest:
        reasons = ", ".join(f"{k}={v}" for k, v in ingest["quarantine_reasons"].items()) or "none"
        out.append(f"ingest:   {ingest['rows']} rows, {ingest['ok']} ok, {ingest['quarantined']} quarantined ({reasons})")
    dedup = _load(common.DEDUP_METRICS)
    if dedup:
        out.append(
            f"dedup:    {dedup['groups']} groups ({dedup['exact_groups']} exact, {dedup['near_groups']} near), "
            f"{dedup['label_conflict_groups']} with conflicting labels, {dedup['cross_split_groups']} across splits"
        )
    val = _load(common.VALIDATION)
    if val:
        noise = val["noise"]
        out.append(f"validate: {noise['flipped']}/{noise['n']} labels flipped ({noise['kind']}, rate {noise['rate']}, seed {noise['seed']})")
        out.append(f"  {'scorer':<16}{'AUROC':>8}{'AP':>8}{'P@k':>8}")
        for name, r in sorted(val["scorers"].items(), key=lambda kv: -(kv[1]["auroc"] or 0)):
            cells = "".join(f"{v:>8.4f}" if v is not None else f"{'n/a':>8}" for v in (r["auroc"], r["ap"], r["precision_at_k"]))
            out.append(f"  {name:<16}{cells}")
        gate = val["gate"]
        out.append(f"  gate: {gate['scorer']} {'passed' if gate['passed'] else 'FAILED'}: {gate['reason']}")
    print("\n".join(out) if out else "no outputs yet: run `dvc repro`", file=sys.stdout)


if __name__ == "__main__":
    common.run(main, "summary")
