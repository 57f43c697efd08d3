"""Consumers get the cleaned dataset through DVC: ``dvc push``, then ``dvc import``/``dvc get`` elsewhere.

A temporary copy of the repository runs the pipeline on the digits dataset (with
a small proxy network and three scorers: what travels matters here, not the
scores) up to the ``clean`` stage, pushes its outputs to a local-directory remote (the
default remote, recorded in the committed ``.dvc/config``) and publishes its
git history as a bare repository. Everything a consumer then gets comes from
that git repository and the remote: the producer's workspace and cache are
out of reach. A second git repository imports ``data/clean/manifest.parquet``,
then follows the producer's next commit with ``dvc update``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from test_dvc import dvc

from conftest import copy_repo
from memclean.dataset import ManifestDataset
from memclean.scores.base import defaults

pytestmark = pytest.mark.slow

MANIFEST = "data/clean/manifest.parquet"
PIXELS = "data/interim/pixels.npy"
GIT = ("git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci")
#: A quick score section: three scorers (confident learning trains the subset ensemble), a small network.
QUICK_SCORE = {
    "trainer": {"epochs": 4, "width": 8},
    "ensemble": {"members": 5, "epochs": 4},
    "scorers": {"loss": {}, "aum": {}, "confident_learning": {}},
}


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo``; its stdout."""
    return subprocess.run([*GIT, *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def set_params(repo: Path, section: str, values: dict[str, Any]) -> None:
    """Merge ``values`` into one section of ``repo``'s params.yaml."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section] = {**params[section], **values}
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@dataclass
class Producer:
    """The project that ran the pipeline, its DVC remote and the bare git repository it publishes to."""

    repo: Path
    remote: Path
    upstream: Path

    def publish(self, message: str) -> str:
        """Commit ``dvc.lock`` (and what else changed), push data and git; the new commit."""
        dvc(self.repo, "push")
        git(self.repo, "add", "-A", "--", ".", ":(exclude)data/reports/timings")  # wall-clock figures stay local
        git(self.repo, "commit", "-qm", message)
        git(self.repo, "push", "-q", str(self.upstream), "HEAD:main")
        return git(self.repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def producer(tmp_path_factory) -> Producer:
    """The pipeline run up to ``clean`` (the report is not needed downstream), pushed and published."""
    root = tmp_path_factory.mktemp("dvc_remote")
    repo = copy_repo(root / "producer")
    remote, upstream = root / "remote", root / "upstream.git"
    remote.mkdir()
    git(root, "init", "-q", "--bare", "-b", "main", str(upstream))
    skipped = dict.fromkeys(defaults(), False)
    set_params(repo, "score", {**QUICK_SCORE, "scorers": {**skipped, **QUICK_SCORE["scorers"]}})
    dvc(repo, "repro", "clean")
    dvc(repo, "remote", "add", "-d", "store", str(remote))
    out = Producer(repo, remote, upstream)
    out.publish("pipeline run, pushed to the local remote")
    # The pipeline's data went to the remote, not to git (which holds DVC's .gitignore files there).
    tracked = git(repo, "ls-files", "data/clean", "data/interim").splitlines()
    assert tracked and all(path.endswith("/.gitignore") for path in tracked), tracked
    return out


def _consumer(path: Path) -> Path:
    """An empty git repository with DVC initialised (no remote of its own)."""
    path.mkdir()
    git(path, "init", "-q")
    dvc(path, "init", "-q")
    dvc(path, "config", "core.analytics", "false")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "dvc init")
    return path


def test_push_puts_every_tracked_output_in_the_remote(producer: Producer) -> None:
    lock = yaml.safe_load((producer.repo / "dvc.lock").read_text())
    outs = {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}
    assert MANIFEST in outs and PIXELS in outs
    # A DVC 3 remote stores each object under files/md5/<first two hex digits>/<the rest> (a folder: <md5>.dir).
    stored = {path: producer.remote / "files" / "md5" / md5[:2] / md5[2:] for path, md5 in outs.items()}
    assert [path for path, obj in stored.items() if not obj.is_file()] == []
    assert stored[MANIFEST].read_bytes() == (producer.repo / MANIFEST).read_bytes()
    status = dvc(producer.repo, "status", "--cloud")
    assert "in sync" in status.stdout, status.stdout


def test_import_and_get_from_a_second_repository(producer: Producer, tmp_path: Path) -> None:
    expected = (producer.repo / MANIFEST).read_bytes()
    consumer = _consumer(tmp_path / "consumer")
    # The producer's own cache is out of reach: whatever arrives must come from the remote.
    cache, aside = producer.repo / ".dvc" / "cache", tmp_path / "producer-cache"
    shutil.move(cache, aside)
    try:
        # The manifest, and the pixel array it indexes, in the producer's layout (dvc wants the folders).
        for rel in (MANIFEST, PIXELS):
            (consumer / rel).parent.mkdir(parents=True)
        dvc(consumer, "import", str(producer.upstream), MANIFEST, "-o", MANIFEST)
        dvc(consumer, "import", str(producer.upstream), PIXELS, "-o", PIXELS)
        # `dvc get`: a plain download, no DVC project needed on the consumer's side.
        dvc(tmp_path, "get", str(producer.upstream), MANIFEST, "-o", "got.parquet")
    finally:
        shutil.move(aside, cache)
    assert (tmp_path / "got.parquet").read_bytes() == expected
    got = consumer / MANIFEST
    assert got.read_bytes() == expected
    frame = pd.read_parquet(got)
    pd.testing.assert_frame_equal(frame, pd.read_parquet(producer.repo / MANIFEST))
    assert {"sample_id", "keep", "drop_reason"} <= set(frame.columns) and len(frame) == 1797
    # The imported pair is a training set: the manifest's pixel digest matches the imported pixels.
    dataset = ManifestDataset(got)
    assert len(dataset) == int(frame["keep"].sum()) > 0
    image, label = dataset[0]
    assert image.size == (8, 8) and 0 <= label < 10

    # The .dvc file pins the producer's commit and the file's hash: a reproducible reference.
    record = yaml.safe_load((consumer / f"{MANIFEST}.dvc").read_text())
    (dep,) = record["deps"]
    assert dep["path"] == MANIFEST
    assert dep["repo"]["url"] == str(producer.upstream)
    assert dep["repo"]["rev_lock"] == git(producer.repo, "rev-parse", "HEAD")
    assert record["outs"][0]["md5"] == hashlib.md5(expected).hexdigest()
    assert "up to date" in dvc(consumer, "status").stdout.lower()

    # A deleted import comes back (from the consumer's own cache).
    got.unlink()
    dvc(consumer, "checkout", f"{MANIFEST}.dvc")
    assert got.read_bytes() == expected


def test_update_follows_the_producers_next_commit(producer: Producer, tmp_path: Path) -> None:
    consumer = _consumer(tmp_path / "consumer")
    dvc(consumer, "import", str(producer.upstream), MANIFEST, "-o", "manifest.parquet")
    before = (consumer / "manifest.parquet").read_bytes()
    first = git(producer.repo, "rev-parse", "HEAD")

    # The producer lowers the near-duplicate threshold for small images (digits are 8x8: no hash
    # candidates, so the hash radius would change nothing): only `params`, `dedup` and `clean`
    # rerun (the manifest's dup_group column changes), then it publishes again.
    set_params(producer.repo, "dedup", {"small_near_threshold": 0.9})
    rerun = dvc(producer.repo, "repro", "clean")
    assert "Running stage 'dedup'" in rerun.stdout and "Running stage 'score'" not in rerun.stdout
    second = producer.publish("near duplicates of small images from similarity 0.9")
    after = (producer.repo / MANIFEST).read_bytes()
    assert after != before

    # Until the consumer updates, it keeps the pinned bytes; `dvc update` moves the pin.
    assert (consumer / "manifest.parquet").read_bytes() == before
    dvc(consumer, "update", "manifest.parquet.dvc")
    assert (consumer / "manifest.parquet").read_bytes() == after
    record = yaml.safe_load((consumer / "manifest.parquet.dvc").read_text())
    assert record["deps"][0]["repo"]["rev_lock"] == second != first
    # An import pinned to the earlier commit still gets the earlier bytes.
    dvc(consumer, "import", str(producer.upstream), MANIFEST, "-o", "old.parquet", "--rev", first)
    assert (consumer / "old.parquet").read_bytes() == before
