"""The ``memclean`` command: run the pipeline, build the report, inspect a manifest.

``run`` and ``report`` drive the DVC pipeline of the project folder they are
given (``--repo``, default the current folder) through ``python -m dvc``, so
``dvc.lock`` stays the record; the params file is validated (and ``--set``
overrides applied) before any stage runs. ``show`` and ``export`` work on the
artifacts; ``params`` documents every parameter. Only the library is imported:
the command works from an installed package.
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

from memclean import project
from memclean.errors import MemcleanError
from memclean.options import load_params, params_markdown
from memclean.paramsfile import apply_overrides, parse_override
from memclean.summary import CleanCounts, RunSummary

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


def _fail(message: str) -> typer.Exit:
    typer.echo(f"memclean: error: {message}", err=True)
    return typer.Exit(2)


def _check_repo(repo: Path) -> Path:
    """The project folder, with its params file validated (one-line error otherwise)."""
    repo = repo.resolve()
    if not (repo / "dvc.yaml").exists() or not (repo / "params.yaml").exists():
        raise _fail(f"{repo} has no dvc.yaml/params.yaml; pass --repo with the project folder")
    try:
        load_params(repo / "params.yaml")
    except MemcleanError as exc:
        raise _fail(f"{exc} (nothing was run)") from None
    return repo


def _apply(repo: Path, sets: list[str]) -> None:
    """Apply ``--set`` overrides to the project's params.yaml (validated first; nothing written on error)."""
    path = repo / "params.yaml"
    try:
        before = load_params(path)
        apply_overrides(path, sets)
        after = load_params(path)
    except MemcleanError as exc:
        raise _fail(f"{exc} (params.yaml unchanged, nothing was run)") from None
    for item in sets:
        keys = parse_override(item)[0]
        typer.echo(f"{'.'.join(keys)}: {_lookup(before, keys)!r} -> {_lookup(after, keys)!r}")


def _lookup(params: object, keys: tuple[str, ...]) -> object:
    node: object = {k: params.section(k) for k in keys[:1]}  # type: ignore[attr-defined]
    for part in keys:
        if not isinstance(node, dict) or part not in node:
            return "<default>"
        node = node[part]
    return node


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
        _apply(repo, set_)
    _run([sys.executable, "-m", "dvc", "repro", *(["--force"] if force else [])], repo)
    typer.echo(RunSummary.from_dir(repo / project.REPORTS).text())
    typer.echo(f"\nmanifest: {repo / project.MANIFEST}\nreport:   {repo / project.AUDIT_HTML}")


@app.command("set")
def set_params(
    items: Annotated[list[str], typer.Argument(help="overrides section.key=value, e.g. score.trainer.epochs=5")],
    repo: Repo = Path("."),
) -> None:
    """Change params.yaml values (validated; comments and layout kept) without running anything."""
    _apply(_check_repo(repo), items)


@app.command()
def params(
    check: Annotated[
        Path | None, typer.Option(help="validate this params file instead of listing the defaults")
    ] = None,
) -> None:
    """List every parameter with its default and meaning, or validate a params file."""
    if check is not None:
        try:
            load_params(check)
        except MemcleanError as exc:
            raise _fail(str(exc)) from None
        typer.echo(f"{check}: valid")
        return
    typer.echo(params_markdown())


@app.command()
def summary(repo: Repo = Path(".")) -> None:
    """Print the summary of the last run (counts, validation, gate, drops)."""
    typer.echo(RunSummary.from_dir(repo.resolve() / project.REPORTS).text())


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
        raise _fail(f"{manifest} not found (run `memclean run` first)")
    m = pd.read_parquet(manifest)
    reports = manifest.resolve().parents[1] / "reports"
    summary = RunSummary.from_dir(reports) if (reports / "clean.json").is_file() else RunSummary()
    if summary.clean is None or summary.clean.rows != len(m):  # a manifest away from its reports
        summary = RunSummary(clean=CleanCounts.from_manifest(m))
    typer.echo(f"{manifest}:")
    typer.echo(summary.text())
    score_cols = [c for c in m.columns if c.endswith("_score")]
    if score_cols and top > 0:
        col = "combined_score" if "combined_score" in score_cols else score_cols[0]
        cols = ["sample_id", "label_name", "suggested_label", col, "keep", "drop_reason"]
        cols += [c for c in ("suspicion",) if c in m]  # likely_mislabeled / atypical (older manifests lack it)
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
        classes = list(read_metadata(manifest).get("classes") or [])
        info = export_kept(m, load_pixels(pixels), classes, out, fmt, progress=project.progress)
    except (MemcleanError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"exported {info['samples']} samples ({fmt}) to {out}")


def main() -> None:  # pragma: no cover - console entry point
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
