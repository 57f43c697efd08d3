"""ManifestDataset and the memclean CLI's manifest commands."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_policy import make_tables
from typer.testing import CliRunner

from memclean.cli import app
from memclean.dataset import ManifestDataset
from memclean.errors import MemcleanError
from memclean.io import save_npy, write_parquet
from memclean.policy import CleanPolicy, decide
from memclean.schema import manifest_schema


@pytest.fixture
def artifact(tmp_path):
    samples, dups, scores = make_tables()
    for col, value in (
        ("label_name", None),
        ("width", 4),
        ("height", 4),
        ("channels", 1),
        ("orig_mode", "L"),
        ("detail", None),
    ):
        samples[col] = value
    res = decide(samples, dups, scores, CleanPolicy(max_drop_fraction=0.5), "x", 0.9, True, ["a", "b", "c"])
    manifest = tmp_path / "data/clean/manifest.parquet"
    write_parquet(res.manifest, manifest, manifest_schema(["x"]), metadata={"classes": ["a", "b", "c"]})
    pixels = np.arange(10 * 16, dtype=np.uint8).reshape(10, 1, 4, 4)
    save_npy(pixels, tmp_path / "data/interim/pixels.npy")
    return manifest, res.manifest, pixels


def test_manifest_dataset_is_imagefolder_like(artifact):
    manifest, frame, pixels = artifact
    ds = ManifestDataset(manifest)
    kept = frame[frame["keep"] & frame["row"].notna()]
    assert len(ds) == len(kept)
    assert ds.classes == ["a", "b", "c"] and ds.class_to_idx == {"a": 0, "b": 1, "c": 2}
    assert [s for s, _ in ds.samples] == kept["source"].tolist()
    img, target = ds[0]
    assert isinstance(img, Image.Image) and img.size == (4, 4)
    np.testing.assert_array_equal(np.asarray(img), pixels[int(kept["row"].iloc[0]), 0])
    assert target == int(kept["label"].iloc[0])
    tds = ManifestDataset(manifest, transform=lambda im: np.asarray(im).sum(), target_transform=str)
    assert tds[0] == (pixels[int(kept["row"].iloc[0])].sum(), str(target))
    assert len(ManifestDataset(manifest, include_dropped=True)) == int(frame["row"].notna().sum())
    assert len(ManifestDataset(manifest, split="test")) == int((kept["split"] == "test").sum())
    with pytest.raises(MemcleanError):
        ManifestDataset(manifest.parent / "none.parquet")


def test_cli_show_and_export(artifact, tmp_path):
    manifest, frame, _ = artifact
    runner = CliRunner()
    result = runner.invoke(app, ["show", str(manifest), "--top", "3"])
    assert result.exit_code == 0, result.output
    assert f"{len(frame)} rows, {int(frame['keep'].sum())} kept" in result.output
    assert "conflicting_duplicate" in result.output and "top 3 by x_score" in result.output
    out = tmp_path / "exported"
    result = runner.invoke(
        app,
        [
            "export",
            str(manifest),
            "--out",
            str(out),
            "--format",
            "parquet",
            "--pixels",
            str(tmp_path / "data/interim/pixels.npy"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (out / "EXPORT.json").exists() and list(out.glob("*.parquet"))
    assert runner.invoke(app, ["show", str(tmp_path / "missing.parquet")]).exit_code == 2
    result = runner.invoke(app, ["run", "--repo", str(tmp_path)])
    assert result.exit_code == 2 and "no dvc.yaml" in result.output


def test_cli_help_everywhere():
    runner = CliRunner()
    for args in ([], ["run"], ["set"], ["params"], ["summary"], ["report"], ["show"], ["export"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output
