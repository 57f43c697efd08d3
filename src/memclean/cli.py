"""The ``memclean`` command: run the pipeline, build the report, inspect a manifest.

``run`` and ``report`` drive the DVC pipeline of the project folder they are
given (``--repo``, default the current folder) through ``python -m dvc``, so
``dvc.lock`` stays the record; ``show`` and ``export`` work on the artifacts.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from memclean.errors import MemcleanError

app = typer.Typer(
    help="memclean: find mislabeled, atypical and duplicated images and hand training a cleaned dataset.",
    no_args_is_help=True,
    add_completion=False,
)

Repo = Annotated[Path, typer.Option("--repo", help="project folder holding dvc.yaml and params.yaml")]


def _run(args: list[str], repo: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(args, cwd=repo, env=env)
    if proc.returncode != 0:
        raise typer.Exit(proc.returncode)


def _check_repo(repo: Path) -> Path:
    repo = repo.resolve()
    if not (repo / "dvc.yaml").exists() or not (repo / "params.yaml").exists():
        typer.echo(f"error: {repo} has no dvc.yaml/params.yaml; pass --repo with the project folder", err=True)
        raise typer.Exit(2)
    return repo


@app.command()
def run(
    repo: Repo = Path("."),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="params override section.key=value (repeatable), written to params.yaml"),
    ] = None,
    force: Annotated[bool, typer.Option(help="rerun every stage even when up to date")] = False,
) -> None:
    """Run the whole pipeline (dvc repro) and print the summary."""
    repo = _check_repo(repo)
    if set_:
        args = [sys.executable, "-m", "stages.params"]
        for item in set_:
            args += ["--set", item]
        _run(args, repo)
    _run([sys.executable, "-m", "dvc", "repro", *(["--force"] if force else [])], repo)
    _run([sys.executable, "-m", "stages.summary"], repo)


@app.command()
def report(repo: Repo = Path(".")) -> None:
    """Bring the audit report up to date and print where it is."""
    repo = _check_repo(repo)
    _run([sys.executable, "-m", "dvc", "repro", "report"], repo)
    typer.echo(f"report: {repo / 'data/reports/audit.html'}")


@app.command()
def show(
    manifest: Annotated[Path, typer.Argument(help="a clean manifest")] = Path("data/clean/manifest.parquet"),
    top: Annotated[int, typer.Option(help="how many top suspects to list")] = 10,
) -> None:
    """Summarise a clean manifest: counts by decision and reason, top suspects."""
    if not manifest.exists():
        typer.echo(f"error: {manifest} not found (run `memclean run` first)", err=True)
        raise typer.Exit(2)
    m = pd.read_parquet(manifest)
    typer.echo(f"{manifest}: {len(m)} rows, {int(m['keep'].sum())} kept, {int((~m['keep']).sum())} dropped")
    reasons = m.loc[~m["keep"], "drop_reason"].value_counts()
    for reason, count in reasons.items():
        typer.echo(f"  {reason:<24}{count:>8}")
    if "suspected" in m:
        typer.echo(f"  suspected (score above threshold): {int(m['suspected'].sum())}")
    score_cols = [c for c in m.columns if c.endswith("_score")]
    if score_cols and top > 0:
        col = "combined_score" if "combined_score" in score_cols else score_cols[0]
        cols = ["sample_id", "label_name", "suggested_label", col, "keep", "drop_reason"]
        typer.echo(f"top {top} by {col}:")
        typer.echo(m.nlargest(top, col)[cols].to_string(index=False))


@app.command()
def export(
    manifest: Annotated[Path, typer.Argument(help="a clean manifest")] = Path("data/clean/manifest.parquet"),
    out: Annotated[Path, typer.Option(help="output folder (replaced)")] = Path("data/clean/export"),
    fmt: Annotated[str, typer.Option("--format", help="imagefolder or parquet")] = "imagefolder",
    pixels: Annotated[Path, typer.Option(help="the ingest pixel array")] = Path("data/interim/pixels.npy"),
) -> None:
    """Export the kept samples as an ImageFolder tree or Hugging Face-style Parquet."""
    from memclean.export import export_kept
    from memclean.io import load_pixels, read_metadata

    try:
        m = pd.read_parquet(manifest)
        info = export_kept(m, load_pixels(pixels), list(read_metadata(manifest).get("classes") or []), out, fmt)
    except (MemcleanError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"exported {info['samples']} samples ({fmt}) to {out}")


def main() -> None:  # pragma: no cover - console entry point
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
